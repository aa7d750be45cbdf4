"""Bad input never gets a 500 or a traceback (issue 12, findings 9 and 10), through the real
server on loopback: speak bodies that crashed the handler (``provider: []``, JSON nested
300,000 deep, a 5,000-digit integer), the same on the control socket (which stays open),
Vonage's answer webhook with deeply nested JSON, a request aiohttp cannot parse, the
router's own errors, and a control socket that breaks while events flow to it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket

import pytest

from gateway.core.call import Call
from gateway.metrics import CONTROL_ERROR_KINDS
from gateway.http.keys import CALLS
from gateway.sim.carriers.rawws import RawWebSocket
from gateway.carriers.twilio.sim import TwilioCallSim
from tests.conftest import running_gateway
from tests.e2e.test_twilio_call import metric_value, open_control

DEEP_ALLOWED = b"[" * 100_000 + b"]" * 100_000  # within the body limit: the parser's recursion
DEEP_HUGE = b"[" * 300_000 + b"]" * 300_000  # the issue's: over the body limit
BAD_BODIES = {
    "provider is a list": (b'{"text": "Hello.", "provider": []}', 400),
    "provider is an object": (b'{"text": "Hello.", "provider": {}}', 400),
    "nested 100,000 deep": (DEEP_ALLOWED, 400),
    "nested 300,000 deep": (DEEP_HUGE, 413),
    "a 5,000-digit integer": (b'{"text": "Hello.", "interrupt": ' + b"9" * 5000 + b"}", 400),
    "not UTF-8": (b'{"text": "\xff\xfe"}', 400),
    "not an object": (b'"Hello."', 400),
    "text is a number": (b'{"text": 5}', 400),
    "voice is a list": (b'{"text": "Hello.", "voice": ["a"]}', 400),
    "voice is a novel": (b'{"text": "Hello.", "voice": "' + b"v" * 5000 + b'"}', 400),
    "text over max_text_chars": (b'{"text": "' + b"a" * 20_001 + b'"}', 400),
}


@pytest.fixture
def fake_config(gateway_config):
    gateway_config["providers"] = {"fake": {"type": "fake", "handshake_ms": 0,
                                            "first_audio_ms": 20, "chars_per_second": 15}}
    gateway_config["routes"] = {"demo": {"provider": "fake",
                                         "greeting": "Hello there. How can I help you today?"}}
    return gateway_config


@pytest.fixture
async def fake_gateway(fake_config):
    async with running_gateway(fake_config) as gw:
        yield gw


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def assert_no_traceback(caplog) -> None:
    bad = [f"{r.name} {r.levelname}: {r.getMessage()}" for r in caplog.records
           if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, "\n".join(bad)


async def test_bad_speak_bodies_get_a_4xx_json_error(fake_gateway, log):
    gw = fake_gateway
    async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/demo") as sim:
        await open_control(gw, sim.call_sid)
        url = f"{gw.http_url}/v1/calls/{sim.call_sid}/speak"
        for name, (body, expected) in BAD_BODIES.items():
            async with gw.session.post(url, data=body,
                                       headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == expected, name
                assert resp.content_type == "application/json", name
                error = (await resp.json())["error"]
            assert error["status"] == expected and error["message"], name
            assert len(error["message"]) < 400, name  # the client's value is not echoed whole
        # the call is unharmed and takes good speech
        status, body = await gw.post_json(f"/v1/calls/{sim.call_sid}/speak", {"text": "Hi."})
        assert status == 202 and body["speech_id"]
        await sim.hangup()
    metrics = await gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_control_errors_total", kind="bad_request") == 10
    assert metric_value(metrics, "tts_gateway_control_errors_total", kind="too_large") == 1
    kinds = set(re.findall(r'^tts_gateway_control_errors_total\{kind="([^"]*)"\}', metrics, re.M))
    assert kinds and kinds <= CONTROL_ERROR_KINDS
    assert_no_traceback(log)


async def test_bad_messages_on_the_control_socket_get_an_error_and_it_stays_open(fake_gateway,
                                                                                   log):
    gw = fake_gateway
    messages = [body for body, _ in BAD_BODIES.values()]
    messages = [b'{"type": "speak", ' + m[1:] if m.startswith(b"{") else m for m in messages]
    messages += [b'{"type": []}', b'{"type": "dance"}', b"null", b"[]", b""]
    async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/demo") as sim:
        control = await open_control(gw, sim.call_sid)
        for message in messages:
            try:
                text = message.decode()
            except UnicodeDecodeError:
                await control.ws.send_bytes(message)  # a text frame must be UTF-8
            else:
                await control.ws.send_str(text)
            error = await control.next_event("error", timeout=10)
            assert error["message"] and len(error["message"]) < 400, message[:60]
        await control.ws.send_str(json.dumps({"type": "interrupt"}))
        assert (await control.next_event("interrupt.done"))["type"] == "interrupt.done"
        await control.ws.send_str(json.dumps({"type": "speak", "text": "Still here.",
                                              "flush": True}))
        assert (await control.next_event("speak.accepted"))["flushed"] is True
        await control.ws.close()
        await sim.hangup()
    assert_no_traceback(log)


async def test_vonage_answer_with_deeply_nested_json_gets_its_document(fake_gateway, log):
    gw = fake_gateway
    for body in (DEEP_ALLOWED, DEEP_HUGE, b'{"uuid": ' + b"1" * 5000 + b"}"):
        async with gw.session.post(f"{gw.http_url}/v1/answer/vonage/demo", data=body,
                                   headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 200
            ncco = await resp.json()
        assert ncco[0]["action"] == "connect" and "call_uuid" not in ncco[0]["endpoint"][0].get(
            "headers", {})
    assert_no_traceback(log)


def _raw_exchange(port: int, *requests: bytes) -> list[bytes]:
    """Send each request on one kept-alive connection; the answer to each (what arrived)."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        for request in requests:
            conn.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            answers.append(data)
    return answers


async def test_an_unparsable_request_is_answered_400_and_logged_in_one_line(fake_gateway, log):
    gw = fake_gateway
    healthz = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
    # an unknown method after a first request on the connection, and a malformed header
    for second in (b"FOO /healthz HTTP/1.1\r\nHost: gw\r\n\r\n",
                   b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n"):
        first, answer = await asyncio.to_thread(_raw_exchange, gw.port, healthz, second)
        assert first.startswith(b"HTTP/1.1 200")
        assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))
    assert_no_traceback(log)
    lines = [r.getMessage() for r in log.records if r.name == "aiohttp.server"]
    assert len(lines) == 2 and all(line.startswith("bad HTTP request from 127.0.0.1 (400)")
                                   for line in lines), lines
    assert all("\n" not in line and "FOO" not in line for line in lines)


async def test_router_errors_come_in_the_json_error_shape(fake_gateway, log):
    gw = fake_gateway
    async with gw.session.get(f"{gw.http_url}/nothing/here") as resp:
        assert resp.status == 404 and (await resp.json())["error"]["status"] == 404
    async with gw.session.patch(f"{gw.http_url}/v1/calls") as resp:
        assert resp.status == 405 and (await resp.json())["error"]["status"] == 405
        assert "GET" in resp.headers["Allow"]
    async with gw.session.get(f"{gw.http_url}/v1/calls/nobody") as resp:
        assert resp.status == 404 and "nobody" in (await resp.json())["error"]["message"]
    assert_no_traceback(log)


async def test_a_control_socket_that_breaks_while_events_flow_logs_no_traceback(fake_gateway,
                                                                                  log):
    gw = fake_gateway
    async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/demo") as sim:
        await open_control(gw, sim.call_sid)
        url = f"{gw.ws_url}/v1/calls/{sim.call_sid}/control"
        for how in ("bad frame", "bad frame mid-speech", "vanished"):
            raw = await RawWebSocket.open(url, {})
            assert json.loads((await raw.receive()).data)["type"] == "control.ready"
            if how != "bad frame":  # events are on their way to the socket as it breaks
                await raw.send(json.dumps({"type": "speak", "text": "One. Two. Three.",
                                           "flush": True}))
                await gw.post_json(f"/v1/calls/{sim.call_sid}/interrupt")
            if how == "vanished":
                await raw.abort()
            else:
                await raw._send_frame(0x3, b"reserved opcode")  # a protocol error
                while await raw.receive() is not None:
                    pass
                assert raw.close_code == 1002
        await asyncio.sleep(0.2)  # let the server finish with the sockets
        # the call and its other sockets go on
        status, _ = await gw.post_json(f"/v1/calls/{sim.call_sid}/speak", {"text": "Hi."})
        assert status == 202
        await sim.hangup()
    assert_no_traceback(log)


async def test_a_bug_is_answered_500_in_the_json_shape_and_logged_with_its_traceback(
        fake_gateway, log, monkeypatch):
    gw = fake_gateway
    async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/demo") as sim:
        async with asyncio.timeout(10):
            while sim.call_sid not in gw.app[CALLS]:
                await asyncio.sleep(0.01)

        def broken(self):
            raise RuntimeError("a bug")

        monkeypatch.setattr(Call, "summary", broken)
        status, body = await gw.get_json("/v1/calls")
        monkeypatch.undo()
        await sim.hangup()
    assert status == 500 and body == {"error": {"status": 500, "message": "internal error"}}
    (record,) = [r for r in log.records if r.exc_info]
    assert record.name == "gateway.http.errors" and "GET /v1/calls" in record.getMessage()
