"""Deepgram Aura streaming TTS (/v1/speak): the sans-I/O protocol, and against its fake."""

import asyncio
import json

import aiohttp
import pytest
from telcodecs import wav_bytes

from gateway.http.loopback import serve_on_loopback
from gateway.tts.providers.fakes import close_all
from gateway.tts.providers.deepgram.fake import PATH, make_app
from gateway.tts.providers.deepgram.protocol import (
    FLUSH_LIMIT,
    FLUSH_RESERVE,
    DeepgramProtocol,
    choose_format,
    connect_params,
    split_text,
)
from gateway.tts.providers.events import (
    ProviderAudio,
    ProviderDone,
    ProviderError,
    ProviderProtocolError,
)

FLUSHED = json.dumps({"type": "Flushed", "sequence_id": 0})
CLEARED = json.dumps({"type": "Cleared", "sequence_id": 0})


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def proto(**kwargs) -> tuple[DeepgramProtocol, Clock]:
    clock = Clock()
    return DeepgramProtocol(clock=clock, **kwargs), clock


# ---- connect params and formats ------------------------------------------------------------


def test_connect_params_token_auth_and_query():
    url, headers = connect_params("dg-secret", speed=1.2, mip_opt_out=True)
    assert headers == {"Authorization": "Token dg-secret"} and "dg-secret" not in url
    assert url == ("wss://api.deepgram.com/v1/speak?model=aura-2-thalia-en&encoding=mulaw"
                   "&sample_rate=8000&speed=1.2&mip_opt_out=true")
    url, _ = connect_params("k", endpoint="wss://api.eu.deepgram.com/v1/speak?tag=x",
                            model="aura-2-apollo-en", encoding="linear16", sample_rate=16000)
    assert url == ("wss://api.eu.deepgram.com/v1/speak?tag=x&model=aura-2-apollo-en"
                   "&encoding=linear16&sample_rate=16000")


@pytest.mark.parametrize("kwargs, match", [
    ({"api_key": ""}, "key is empty"),
    ({"model": ""}, "model is required"),
    ({"encoding": "mp3"}, "streaming encoding"),
    ({"encoding": "mulaw", "sample_rate": 16000}, "8000"),
    ({"encoding": "linear16", "sample_rate": 22050}, "sample_rate"),
    ({"speed": 2.0}, "speed"),
])
def test_connect_params_rejects_bad_config(kwargs, match):
    args = {"api_key": "k", **kwargs}
    with pytest.raises(ValueError, match=match):
        connect_params(args.pop("api_key"), **args)


def test_choose_format():
    assert choose_format("mulaw", 8000) == ("mulaw", 8000)
    assert choose_format("alaw", 8000) == ("alaw", 8000)
    assert choose_format("l16", 16000) == ("linear16", 16000)
    assert choose_format("l16", 22050) == ("linear16", 24000)
    assert choose_format("l16", 96000) == ("linear16", 48000)


def test_split_text():
    assert split_text("Hello there.") == ["Hello there. "]
    pieces = split_text("Word. " * 1000)
    assert all(len(p) <= 2000 for p in pieces) and len(pieces) > 1


# ---- client messages ------------------------------------------------------------------------


def test_message_shapes_for_a_turn():
    p, _ = proto()
    p.begin("t1")
    assert [json.loads(m) for m in p.send("t1", "Hello there.")] == [
        {"type": "Speak", "text": "Hello there. "}, {"type": "Flush"}]
    assert p.finish("t1") == []  # everything was flushed already
    assert p.state("t1") == "ending"
    assert json.loads(p.close_message()) == {"type": "Close"}


def test_one_live_turn_per_socket():
    p, _ = proto()
    p.begin("a")
    with pytest.raises(RuntimeError, match="one turn at a time"):
        p.begin("b")
    p.send("a", "Hi.")
    assert [json.loads(m) for m in p.cancel("a")] == [{"type": "Clear"}]
    p.begin("b")  # a cancelling turn does not block the next one
    with pytest.raises(RuntimeError, match="already used"):
        p.begin("a")


def test_state_errors():
    p, _ = proto()
    with pytest.raises(RuntimeError, match="not live"):
        p.send("ghost", "x")
    with pytest.raises(RuntimeError, match="unknown"):
        p.cancel("ghost")
    p.begin("t")
    p.send("t", "Hi.")
    p.finish("t")
    with pytest.raises(RuntimeError, match="ending"):
        p.send("t", "more")


def test_finish_without_text_is_done_at_once_and_cancel_without_text_sends_nothing():
    p, _ = proto()
    p.begin("t")
    assert p.finish("t") == [] and p.state("t") is None
    p.begin("u")
    assert p.cancel("u") == [] and p.is_cancelled("u") and p.is_clean()
    assert p.cancel("u") == []


def test_flush_budget_keeps_a_reserve_for_the_ends_of_turns():
    p, clock = proto()
    budget = FLUSH_LIMIT - FLUSH_RESERVE
    p.begin("t")
    for i in range(budget):
        assert p.send("t", f"Sentence {i}.")[-1] == '{"type": "Flush"}'
    # the budget for sentence flushes is spent: text waits for the end of the turn
    assert [json.loads(m)["type"] for m in p.send("t", "One more.")] == ["Speak"]
    assert p.finish("t") == ['{"type": "Flush"}']  # the end of a turn always flushes
    assert p.flushes_in_window() == budget + 1
    clock.now += 61  # the window slides
    assert p.flushes_in_window() == 0


# ---- server messages ------------------------------------------------------------------------


def test_binary_audio_belongs_to_the_waiting_turn_and_flushed_ends_it():
    p, _ = proto()
    p.receive(json.dumps({"type": "Metadata", "request_id": "r", "model_name": "aura-2-thalia-en",
                          "model_version": "v", "model_uuid": "u"}))
    assert p.metadata["model_name"] == "aura-2-thalia-en"
    p.begin("t")
    p.send("t", "One.")
    p.send("t", "Two.")
    p.finish("t")
    assert p.receive_binary(b"\xff" * 160) == [ProviderAudio("t", b"\xff" * 160, "mulaw", 8000)]
    assert p.receive(FLUSHED) == []  # the first of two flushes
    assert p.receive_binary(b"\x7f") == [ProviderAudio("t", b"\x7f", "mulaw", 8000)]
    assert p.receive(FLUSHED) == [ProviderDone("t")]
    assert p.is_clean() and p.reusable()


def test_linear16_odd_byte_carried_and_wav_header_stripped():
    p, _ = proto(encoding="linear16", sample_rate=24000)
    p.begin("t")
    p.send("t", "Hi.")
    [a] = p.receive_binary(b"\x01\x02\x03")
    assert (a.data, a.encoding, a.sample_rate) == (b"\x01\x02", "pcm_s16le", 24000)
    [b] = p.receive_binary(b"\x04")
    assert b.data == b"\x03\x04"
    [c] = p.receive_binary(wav_bytes(b"\x05\x06", 24000))
    assert c.data == b"\x05\x06"


def test_clear_flags_audio_until_cleared_then_the_next_turn_owns_the_stream():
    p, _ = proto()
    p.begin("cut")
    p.send("cut", "A long answer.")
    p.finish("cut")
    p.cancel("cut")
    assert p.state("cut") == "cancelling" and p.cancel("cut") == []
    p.begin("next")
    p.send("next", "Sorry.")
    [late] = p.receive_binary(b"\x01")
    assert late.context_id == "cut" and p.is_cancelled("cut")
    assert p.receive(CLEARED) == []  # the Clear dropped cut's unanswered flush
    [audio] = p.receive_binary(b"\x02")
    assert audio.context_id == "next" and not p.is_cancelled("next")
    p.finish("next")
    assert p.receive(FLUSHED) == [ProviderDone("next")] and p.is_clean()


def test_flushed_before_cleared_is_counted_for_the_cut_turn():
    p, _ = proto()
    p.begin("cut")
    p.send("cut", "Short.")
    p.cancel("cut")
    p.begin("next")
    p.send("next", "Hi.")
    assert p.receive(FLUSHED) == []  # cut's flush finished before the Clear arrived
    assert p.receive(CLEARED) == []
    p.finish("next")
    assert p.receive(FLUSHED) == [ProviderDone("next")]


def test_audio_with_no_turn_waiting_is_a_protocol_error():
    p, _ = proto()
    with pytest.raises(ProviderProtocolError) as err:
        p.receive_binary(b"\x01")
    assert err.value.kind == "unknown_context"
    assert p.receive(FLUSHED) == [] and p.receive(CLEARED) == []  # nobody waits: ignored


@pytest.mark.parametrize("warning", [
    {"type": "Warning", "description": "Flush limit exceeded", "code": "FLUSH_LIMIT"},
    {"type": "Warning", "warn_msg": "cannot process any more flush messages",
     "warn_code": "W001"},
])
def test_a_flush_limit_warning_fails_the_turn_and_the_socket(warning):
    p, _ = proto()
    p.begin("t")
    p.send("t", "Hi.")
    [ev] = p.receive(json.dumps(warning))
    assert ev.context_id == "t" and ev.kind == "flush_limit" and ev.fatal
    assert p.failed and not p.reusable()


def test_other_warnings_are_informational():
    p, _ = proto()
    assert p.receive(json.dumps({"type": "Warning", "description": "Text contains unsupported "
                                 "characters", "code": "W002"})) == []
    assert p.warnings == ["W002: Text contains unsupported characters"] and not p.failed


def test_error_message_is_fatal():
    p, _ = proto()
    [ev] = p.receive(json.dumps({"type": "Error", "description": "synthesis failed",
                                 "message": "x", "variant": "SYNTH"}))
    assert ev.context_id is None and ev.fatal and ev.kind == "synthesis_failed"
    assert "synthesis failed" in ev.message and p.failed


@pytest.mark.parametrize("text, kind", [
    ("nope", "not_json"),
    ("[]", "bad_frame"),
    ('{"type": 1}', "bad_frame"),
])
def test_garbage_raises(text, kind):
    p, _ = proto()
    with pytest.raises(ProviderProtocolError) as err:
        p.receive(text)
    assert err.value.kind == kind


def test_unknown_types_are_ignored_and_connection_lost_forgets_everything():
    p, _ = proto()
    assert p.receive(json.dumps({"type": "SomethingNew"})) == []
    p.begin("t")
    p.send("t", "Hi.")
    assert p.connection_lost() == []
    assert p.is_clean() and p.failed and not p.reusable()


# ---- loopback against the fake -----------------------------------------------------------


class Fake:
    def __init__(self, **profile):
        self.app = make_app(**profile)

    async def __aenter__(self):
        self.runner, port = await serve_on_loopback(self.app)
        self.url = f"ws://127.0.0.1:{port}{PATH}"
        self.session = aiohttp.ClientSession()
        return self

    async def connect(self, key="test-key", **kwargs):
        url, headers = connect_params(key, endpoint=self.url, **kwargs)
        return await self.session.ws_connect(url, headers=headers)

    async def __aexit__(self, *exc):
        await self.session.close()
        await self.runner.cleanup()


async def collect(ws, p, until, timeout=5.0):
    events = []
    async with asyncio.timeout(timeout):
        while not until(events):
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                events.extend(p.receive_binary(msg.data))
            elif msg.type == aiohttp.WSMsgType.TEXT:
                events.extend(p.receive(msg.data))
            else:
                events.append(msg.type)
                break
    return events


def done_for(cid):
    return lambda evs: any(isinstance(e, ProviderDone) and e.context_id == cid for e in evs)


async def send_all(ws, messages):
    for m in messages:
        await ws.send_str(m)


async def test_loopback_full_turn_in_mulaw():
    async with Fake() as fake:
        ws = await fake.connect()
        p = DeepgramProtocol()
        p.begin("t")
        text = "Your order has shipped. It arrives on Monday."
        await send_all(ws, p.send("t", text) + p.finish("t"))
        events = await collect(ws, p, done_for("t"))
        chunks = [e for e in events if isinstance(e, ProviderAudio)]
        assert chunks and events[-1] == ProviderDone("t") and p.is_clean()
        assert b"".join(c.data for c in chunks) == fake.app["log"][0]["audio"]
        assert fake.app["connects"] == [{"model": "aura-2-thalia-en", "encoding": "mulaw",
                                         "sample_rate": 8000}]
        assert p.metadata["model_name"] == "aura-2-thalia-en"
        await ws.close()


async def test_loopback_sentences_of_one_turn_and_linear16():
    async with Fake() as fake:
        ws = await fake.connect(encoding="linear16", sample_rate=16000)
        p = DeepgramProtocol(encoding="linear16", sample_rate=16000)
        p.begin("t")
        await send_all(ws, p.send("t", "First sentence."))
        await send_all(ws, p.send("t", "Second one."))
        await send_all(ws, p.finish("t"))
        events = await collect(ws, p, done_for("t"))
        data = b"".join(e.data for e in events if isinstance(e, ProviderAudio))
        assert data == b"".join(e["audio"] for e in fake.app["log"])
        assert [e["text"] for e in fake.app["log"]] == ["First sentence.", "Second one."]
        await ws.close()


async def test_loopback_nothing_is_spoken_before_a_flush():
    async with Fake() as fake:
        ws = await fake.connect()
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "Metadata"
        await ws.send_str(json.dumps({"type": "Speak", "text": "Waiting for a flush."}))
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.3)
        assert fake.app["log"] == []
        await ws.close()


async def test_loopback_clear_mid_utterance():
    async with Fake() as fake:
        ws = await fake.connect()
        p = DeepgramProtocol()
        p.begin("cut")
        await send_all(ws, p.send("cut", "This is a long answer that is interrupted. " * 3)
                       + p.finish("cut"))
        first = await collect(ws, p, lambda evs: any(isinstance(e, ProviderAudio) for e in evs))
        await send_all(ws, p.cancel("cut"))
        p.begin("next")
        await send_all(ws, p.send("next", "Sorry.") + p.finish("next"))
        after = await collect(ws, p, done_for("next"))
        late = [e for e in after if isinstance(e, ProviderAudio) and e.context_id == "cut"]
        assert late and all(p.is_cancelled(e.context_id) for e in late)  # audio after Clear
        nxt = b"".join(e.data for e in after if isinstance(e, ProviderAudio)
                       and e.context_id == "next")
        assert nxt == fake.app["log"][-1]["audio"]  # the next turn's audio, exactly
        cut = sum(len(e.data) for e in first + after
                  if isinstance(e, ProviderAudio) and e.context_id == "cut")
        assert cut < fake.app["log"][0]["bytes"] and fake.app["clears"] == [0]
        assert p.is_clean()
        await ws.close()


async def test_loopback_flush_limit_warning():
    async with Fake(flush_limit=2) as fake:
        ws = await fake.connect()
        p = DeepgramProtocol(flush_limit=3, flush_reserve=0)  # more than the server allows
        p.begin("t")
        await send_all(ws, p.send("t", "One.") + p.send("t", "Two.") + p.send("t", "Three."))
        events = await collect(ws, p, lambda evs: any(isinstance(e, ProviderError) for e in evs))
        [ev] = [e for e in events if isinstance(e, ProviderError)]
        assert ev.kind == "flush_limit" and ev.fatal and p.failed
        assert fake.app["warnings"] == ["FLUSH_LIMIT"]
        await ws.close()


async def test_loopback_injected_failure_is_a_close_frame_with_a_reason():
    async with Fake(fail_on="FAILME") as fake:
        ws = await fake.connect()
        p = DeepgramProtocol()
        p.begin("t")
        await send_all(ws, p.send("t", "Please FAILME now.") + p.finish("t"))
        msg = await ws.receive(timeout=5)
        while msg.type == aiohttp.WSMsgType.TEXT:  # the Metadata
            msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and fake.app["log"] == []
        assert (msg.data, msg.extra) == (1011, "synthesis failed")


async def test_loopback_close_message_closes_at_once():
    async with Fake() as fake:
        ws = await fake.connect()
        await ws.send_str(DeepgramProtocol.close_message())
        msg = await ws.receive(timeout=5)
        while msg.type == aiohttp.WSMsgType.TEXT:  # the Metadata
            msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1000


async def test_loopback_malformed_and_binary_close_the_socket():
    async with Fake() as fake:
        ws = await fake.connect()
        await ws.send_str('{"type": "Shout"}')
        msgs = [await ws.receive(timeout=5) for _ in range(2)]
        assert msgs[-1].type == aiohttp.WSMsgType.CLOSE and msgs[-1].data == 1008
        assert "unknown message type" in msgs[-1].extra
        ws = await fake.connect()
        await ws.send_bytes(b"\x00")
        msgs = [await ws.receive(timeout=5) for _ in range(2)]
        assert msgs[-1].type == aiohttp.WSMsgType.CLOSE and msgs[-1].data == 1003


async def test_loopback_auth_and_format_refused_before_upgrade():
    async with Fake() as fake:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await fake.connect(key="wrong")
        assert err.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await fake.session.ws_connect(fake.url + "?encoding=mp3",
                                          headers={"Authorization": "Token test-key"})
        assert err.value.status == 400
        assert fake.app["stats"].connections == 0


async def test_loopback_idle_timeout_closes_the_socket():
    async with Fake(idle_timeout_s=0.3) as fake:
        ws = await fake.connect()
        msg = await ws.receive(timeout=5)
        while msg.type == aiohttp.WSMsgType.TEXT:
            msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1011
        assert msg.extra.startswith("NET-0001")


async def test_loopback_stats_and_close_all():
    async with Fake() as fake:
        a, b = await fake.connect(), await fake.connect()
        await asyncio.sleep(0.05)
        assert (fake.app["stats"].connections, fake.app["stats"].open) == (2, 2)
        assert await close_all(fake.app) == 2
        for ws in (a, b):
            msg = await ws.receive(timeout=5)
            while msg.type == aiohttp.WSMsgType.TEXT:
                msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE


# ---- driver and configuration ----------------------------------------------------------------


def config_with(**provider) -> dict:
    from tests.conftest import base_config

    data = base_config()
    data["providers"]["tts"] = {"type": "deepgram", "api_key_env": "TTS_KEY",
                                "voice": "aura-2-thalia-en", **provider}
    data["routes"]["demo"]["provider"] = "tts"
    return data


def test_config_accepts_deepgram_and_judges_its_options():
    from gateway.config import ConfigError, parse_config

    pc = parse_config(config_with(options={"speed": 1.1}), {"TTS_KEY": "k"}).providers["tts"]
    assert pc.endpoint == "wss://api.deepgram.com/v1/speak"
    for provider, words in (({"options": {"speed": 3}}, "speed"),
                            ({"options": {"encoding": "mp3"}}, "encoding"),
                            ({"model": "aura-2-apollo-en"}, "voice is the model"),
                            ({"pool": {"calls_per_connection": 2}}, "calls_per_connection")):
        with pytest.raises(ConfigError) as err:
            parse_config(config_with(**provider), {"TTS_KEY": "k"})
        [problem] = err.value.problems
        assert problem.startswith("providers.tts") and words in problem


def test_driver_socket_per_format_and_turn_messages():
    from gateway.carriers.events import MediaFormat
    from gateway.tts.providers.driver import RemoteSettings
    from gateway.tts.providers.registry import PROVIDERS

    d = PROVIDERS["deepgram"].new_driver(RemoteSettings(
        name="dg", type="deepgram", api_key="k", voice="aura-2-thalia-en",
        endpoint="wss://api.deepgram.com/v1/speak", options={"mip_opt_out": True}))
    key = d.pool_key(MediaFormat("mulaw", 8000))
    assert key == ("mulaw", 8000) and d.pool_key(MediaFormat("l16", 16000)) == ("linear16", 16000)
    url, headers = d.connect(key)
    assert "model=aura-2-thalia-en&encoding=mulaw&sample_rate=8000&mip_opt_out=true" in url
    assert headers == {"Authorization": "Token k"}
    p = d.new_protocol(key)
    assert d.begin(p, "t", None, MediaFormat()) == []
    assert [json.loads(m)["type"] for m in d.send(p, "t", "Hi.")] == ["Speak", "Flush"]
    assert d.end(p, "t") == [] and not d.is_done(p, "t")
    assert d.cancel(p, "t") == ['{"type": "Clear"}'] and d.cancel(p, "zz") == []
    assert not d.reusable(p) and not d.has_room(p)
    p.receive(CLEARED)
    assert d.is_done(p, "t") and d.reusable(p)
    with pytest.raises(ValueError, match="voice in the socket URL"):
        d.begin(p, "u", "aura-2-apollo-en", MediaFormat())
    d.connection_lost(p)
    assert d.must_replace(p)
