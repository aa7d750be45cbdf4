"""Metric labels from fixed sets (issue 12, finding 5), through the real server.

* 20,000 Telnyx ``error`` frames with 20,000 distinct codes make no new series: they are
  counted under ``code="other"``, and ``/metrics`` stays the size it was;
* after a fuzz-ish run (random messages on every carrier endpoint, AudioSocket errors with
  random codes, bad control requests) every label value of every ``tts_gateway_*``
  series is one its metric declares (gateway/metrics.py ``LABEL_VALUES``);
* every label value the code names (a literal at a ``.labels(...)`` site, an error kind a
  carrier or provider module raises, a fault code a carrier module reports) is declared,
  so a declared set cannot silently fall behind the code.
"""

from __future__ import annotations

import ast
import asyncio
import json
import random
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.carriers.asterisk.protocol import AsteriskProtocol
from gateway.carriers.audiosocket.protocol import (KIND_ERROR, KIND_UUID, AudioSocketProtocol,
                                                   encode_message)
from gateway.carriers.events import CarrierFault
from gateway.carriers.telnyx.protocol import TelnyxProtocol
from gateway.http.keys import CONFIG, METRICS
from gateway.metrics import (CARRIER_ERROR_KINDS, CARRIER_FAULT_CODES, OTHER,
                             PROVIDER_FRAME_KINDS, TTS_ERROR_KINDS, BoundedLabels, Metrics)
from tests.conftest import running_gateway
from tests.e2e.test_twilio_call import metric_value
from tests.ops.test_drain import free_port
from tests.security.test_logs import until_closed

ROOT = Path(__file__).resolve().parents[2]
WS_CARRIERS = ("twilio", "signalwire", "telnyx", "plivo", "vonage", "exotel", "asterisk")


def labels_config(audiosocket_port: int) -> dict:
    return {
        "server": {"host": "127.0.0.1", "port": 0},
        "providers": {"fake": {"type": "fake", "handshake_ms": 0, "first_audio_ms": 20,
                               "chars_per_second": 50.0}},
        "carriers": {**{c: {} for c in WS_CARRIERS},
                     "audiosocket": {"host": "127.0.0.1", "port": audiosocket_port,
                                     "route": "bot"}},
        "routes": {"bot": {"provider": "fake"}},
        "default_route": "bot",
        "logging": {"level": "WARNING"},
    }


@pytest.fixture
async def gw():
    async with running_gateway(labels_config(free_port())) as gateway:
        yield gateway


def telnyx_start(call_id: str) -> str:
    return json.dumps({"event": "start", "sequence_number": "1", "stream_id": "s",
                       "start": {"call_control_id": call_id,
                                 "media_format": {"encoding": "PCMU", "sample_rate": 8000,
                                                  "channels": 1}}})


ASTERISK_START = ("MEDIA_START connection_id:c1 channel:WebSocket/c1/0x1 channel_id:1.1 "
                  "format:ulaw optimal_frame_size:160 ptime:20")


def telnyx_error(code) -> str:
    return json.dumps({"event": "error", "stream_id": "s",
                       "payload": {"code": code, "title": "malformed_frame", "detail": "d"}})


async def telnyx_stream(gw, messages) -> None:
    async with gw.session.ws_connect(f"{gw.ws_url}/v1/media/telnyx") as ws:
        await ws.send_str(telnyx_start(f"v3:{uuid.uuid4()}"))
        for message in messages:
            await ws.send_str(message)
        await ws.send_str(json.dumps({"event": "stop", "stream_id": "s"}))
        await until_closed(ws)


async def test_twenty_thousand_fault_codes_make_no_new_series(gw):
    before = await gw.metrics_text()
    codes = [str(1_000_000 + i) for i in range(20_000)]
    await telnyx_stream(gw, [telnyx_error(code) for code in codes] + [telnyx_error(100003)] * 3)
    text = await gw.metrics_text()
    series = [line for line in text.splitlines()
              if line.startswith("tts_gateway_carrier_faults_total{")]
    print(f"\n/metrics: {len(before)} bytes before, {len(text)} after 20,003 Telnyx errors; "
          f"carrier_faults series: {series}")
    assert len(series) == 2
    assert metric_value(text, "tts_gateway_carrier_faults_total", carrier="telnyx",
                        code=OTHER) == 20_000
    assert metric_value(text, "tts_gateway_carrier_faults_total", carrier="telnyx",
                        code="100003") == 3
    assert len(text) < len(before) + 5_000


# ---- the fuzz-ish run, then every label of every series -----------------------------


def junk(rng: random.Random) -> str | bytes:
    """A random carrier message: valid-looking JSON with random fields, or garbage."""
    choice = rng.randrange(6)
    word = "".join(rng.choice("abcdefgh_\n\x1b{}\"") for _ in range(rng.randrange(1, 40)))
    if choice == 0:
        return rng.randbytes(rng.randrange(1, 400))
    if choice == 1:
        return word
    if choice == 2:
        return json.dumps({"event": word, word: word})
    if choice == 3:
        return json.dumps({"event": rng.choice(["start", "media", "mark", "dtmf", "stop",
                                                "error", "connected", "websocket:media"]),
                           rng.choice(["start", "media", "payload", "mark"]):
                               rng.choice([word, 7, None, [word], {word: word}])})
    if choice == 4:
        return telnyx_error(rng.choice([word, rng.randrange(10**9), "", None, 100004]))
    return f"ERROR channel_id:x error_text:{word}"


async def fuzz_websocket(gw, carrier: str, rng: random.Random, count: int) -> None:
    async with gw.session.ws_connect(f"{gw.ws_url}/v1/media/{carrier}") as ws:
        if carrier == "telnyx":
            await ws.send_str(telnyx_start(f"v3:{uuid.uuid4()}"))
        elif carrier == "asterisk":
            await ws.send_str(ASTERISK_START)
        for _ in range(count):
            message = junk(rng)
            if ws.closed:
                break
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(message)
        await ws.close()


async def fuzz_audiosocket(port: int, rng: random.Random, count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_message(KIND_UUID, uuid.uuid4().bytes))
    for _ in range(count):
        payload = rng.choice([b"", bytes([rng.randrange(256)]), rng.randbytes(rng.randrange(2, 9))])
        writer.write(encode_message(KIND_ERROR, payload))
    writer.write(encode_message(0x00))
    await writer.drain()
    async with asyncio.timeout(10):
        await reader.read()
    writer.close()


async def fuzz_control(gw, rng: random.Random, count: int) -> None:
    for _ in range(count):
        call = rng.choice(["nope", "x" * rng.randrange(1, 300), "%0a"])
        body = rng.choice([b"{", b"[]", b'{"text": 5}', rng.randbytes(20)])
        async with gw.session.post(f"{gw.http_url}/v1/calls/{call}/speak", data=body,
                                   headers={"Content-Type": "application/json"}) as resp:
            assert resp.status < 500


async def test_every_label_value_comes_from_its_declared_set_after_a_fuzz_run(gw):
    rng = random.Random(12)
    config = gw.app[CONFIG]
    audiosocket_port = config.carriers["audiosocket"].options["port"]
    for carrier in WS_CARRIERS:
        await fuzz_websocket(gw, carrier, rng, 300)
    await fuzz_audiosocket(audiosocket_port, rng, 300)
    await fuzz_control(gw, rng, 30)
    await telnyx_stream(gw, [telnyx_error(100002), telnyx_error("rate_limit_reached")])

    declared = declared_labels(gw.app)
    text = await gw.metrics_text()
    checked = 0
    series = 0
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("tts_gateway_"):
            continue
        # no entry: a metric without labels ("_created": the parser's family of a
        # counter's or histogram's creation times, with the same labels)
        allowed = declared.get(family.name.removesuffix("_created"), {})
        for sample in family.samples:
            series += 1
            for name, value in sample.labels.items():
                if name == "le":  # a histogram's bucket
                    continue
                values = allowed[name]
                if values is None:
                    values = set(config.providers)
                assert value in values, f"{family.name}{{{name}={value!r}}} is not declared"
                checked += 1
    faults = {s.labels["code"] for f in text_string_to_metric_families(text)
              if f.name == "tts_gateway_carrier_faults" for s in f.samples}
    errors = {s.labels["kind"] for f in text_string_to_metric_families(text)
              if f.name == "tts_gateway_carrier_errors" for s in f.samples}
    print(f"\nfuzz run: {series} tts_gateway series, {checked} label values checked, "
          f"{len(text)} bytes of /metrics; fault codes {sorted(faults)}; "
          f"error kinds {sorted(errors)}")
    assert OTHER in faults and {"100002", "rate_limit_reached"} <= faults
    assert len(errors) > 2
    assert series < 400


def declared_labels(app) -> dict[str, dict[str, frozenset | None]]:
    """Family name (without ``_total``) -> label -> its declared values (None: names from
    the configuration)."""
    declared = {}
    for metric in vars(app[METRICS]).values():
        if isinstance(metric, BoundedLabels):
            name = metric.metric._name
            declared[name.removesuffix("_total")] = metric.allowed
    return declared


# ---- the declared sets keep up with the code ------------------------------------------


def _literals(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _literals(node.body) + _literals(node.orelse)
    return []


def _gateway_trees():
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        if {"sim", "bench"} & set(path.relative_to(ROOT / "gateway").parts):
            continue  # the simulators and benchmarks stand for carriers and load, not us
        yield path, ast.parse(path.read_text())


def test_every_literal_label_value_in_the_code_is_declared():
    metrics = Metrics()
    undeclared = []
    sites = 0
    for path, tree in _gateway_trees():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "labels"
                    and isinstance(node.func.value, ast.Attribute)):
                continue
            metric = getattr(metrics, node.func.value.attr, None)
            if not isinstance(metric, BoundedLabels):
                continue
            sites += 1
            for name, arg in zip(metric.metric._labelnames, node.args):
                allowed = metric.allowed[name]
                for value in _literals(arg):
                    if allowed is not None and value not in allowed - {OTHER}:
                        undeclared.append(f"{path.name}:{node.lineno} {name}={value!r}")
    print(f"\n{sites} label sites checked")
    assert sites > 20
    assert not undeclared, ("declare them in gateway/metrics.py LABEL_VALUES: "
                            + ", ".join(undeclared))


def _raised_kinds(names: dict[str, int], trees, *, tables: bool = False) -> set[str]:
    """String literals passed at position ``names[call]`` to the named calls and, with
    ``tables``, assigned to a variable named ``kind`` or found in a table whose name ends
    in ``KINDS``."""
    found: set[str] = set()
    for _, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                callee = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if callee in names and len(node.args) > names[callee]:
                    found.update(_literals(node.args[names[callee]]))
            elif tables and isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    parts = target.elts if isinstance(target, ast.Tuple) else [target]
                    values = (node.value.elts if isinstance(node.value, ast.Tuple)
                              and isinstance(target, ast.Tuple) else [node.value] * len(parts))
                    for part, value in zip(parts, values):
                        name = getattr(part, "id", getattr(part, "attr", ""))
                        if name == "kind" and value is not None:
                            found.update(_literals(value))
                        elif name.endswith("KINDS") and value is not None:
                            for const in ast.walk(value):
                                if isinstance(const, ast.Constant) and isinstance(const.value, str):
                                    found.add(const.value)
    return found


def test_every_error_kind_the_carriers_and_providers_raise_is_declared():
    trees = list(_gateway_trees())
    carrier = [(p, t) for p, t in trees if "carriers" in p.parts]
    tts = [(p, t) for p, t in trees if {"tts", "core"} & set(p.parts)]
    carrier_kinds = _raised_kinds({"CarrierProtocolError": 0}, carrier)
    fault_codes = _raised_kinds({"CarrierFault": 0}, carrier) - {"other"}
    frame_kinds = _raised_kinds({"ProviderProtocolError": 0}, tts)
    tts_kinds = _raised_kinds({"TtsError": 0, "ProviderError": 1}, tts, tables=True)
    print(f"\ncarrier kinds {sorted(carrier_kinds)}\nfault codes {sorted(fault_codes)}\n"
          f"provider frame kinds {sorted(frame_kinds)}\ntts kinds {len(tts_kinds)}")
    assert len(carrier_kinds) > 4 and len(frame_kinds) > 4 and len(tts_kinds) > 20
    assert carrier_kinds <= CARRIER_ERROR_KINDS, carrier_kinds - CARRIER_ERROR_KINDS
    assert fault_codes <= CARRIER_FAULT_CODES, fault_codes - CARRIER_FAULT_CODES
    assert frame_kinds <= PROVIDER_FRAME_KINDS, frame_kinds - PROVIDER_FRAME_KINDS
    # a provider's table of its own error codes maps them to kinds: only the kinds count
    tts_kinds -= {"input_timeout_exceeded", "max_active_conversations", "invalid_api_key",
                  "unauthorized", "quota_exceeded", "too_many_concurrent_requests",
                  "rate_limit_exceeded", "policy_violation"} - TTS_ERROR_KINDS
    assert tts_kinds <= TTS_ERROR_KINDS, tts_kinds - TTS_ERROR_KINDS


def test_the_carriers_documented_fault_codes_are_their_own_series():
    for code in (100002, 100003, 100004, 100005):
        proto = TelnyxProtocol()
        proto.receive_text(telnyx_start("v3:x"))
        fault = proto.receive_text(telnyx_error(code))
        assert isinstance(fault, CarrierFault) and fault.code in CARRIER_FAULT_CODES
    for byte in range(1, 8):
        proto = AudioSocketProtocol()
        events = proto.feed(encode_message(KIND_UUID, uuid.uuid4().bytes)
                            + encode_message(KIND_ERROR, bytes([byte])))
        assert events[-1].code in CARRIER_FAULT_CODES
    for text in ("ERROR channel_id:x error_text:cannot do that in passthrough mode",
                 "ERROR channel_id:x error_text:Unable to parse JSON command"):
        proto = AsteriskProtocol()
        proto.receive_text(ASTERISK_START)
        assert proto.receive_text(text).code in CARRIER_FAULT_CODES


def test_a_labelled_metric_without_declared_values_is_refused():
    from prometheus_client import CollectorRegistry, Counter

    from gateway import metrics as module

    class Partial(Metrics):
        def __init__(self):
            self.registry = CollectorRegistry()
            self.surprise = Counter("surprise_total", "x", ["whatever"],
                                    registry=self.registry)
            module._bound_labels(self)

    with pytest.raises(ValueError, match="declare the values of its label 'whatever'"):
        Partial()
    bounded = Metrics().carrier_errors
    bounded.labels("telnyx", "x" * 1000).inc()
    bounded.labels("not-a-carrier", ["unhashable"]).inc()
    assert {tuple(k) for k in bounded.metric._metrics} == {("telnyx", OTHER), (OTHER, OTHER)}

