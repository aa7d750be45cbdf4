"""Cartesia TTS WebSocket: the sans-I/O protocol, and against its fake."""

import asyncio
import base64
import json

import aiohttp
import pytest
from telcodecs import wav_bytes

from gateway.http.loopback import serve_on_loopback
from gateway.tts.providers.cartesia.fake import PATH, make_app
from gateway.tts.providers.fakes import close_all
from gateway.tts.providers.cartesia.protocol import (
    API_VERSION,
    CartesiaProtocol,
    choose_output_format,
    connect_params,
    split_text,
)
from gateway.tts.providers.events import (
    ProviderAudio,
    ProviderDone,
    ProviderError,
    ProviderProtocolError,
    ProviderWords,
)
from gateway.tts.base import WordTiming

VOICE = "a0e99841-438c-4a64-b679-ae501e7d6091"


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def proto(**kwargs) -> tuple[CartesiaProtocol, Clock]:
    clock = Clock()
    return CartesiaProtocol(voice=VOICE, clock=clock, **kwargs), clock


def chunk(sid, data: bytes, flush_id=1) -> str:
    return json.dumps({"type": "chunk", "data": base64.b64encode(data).decode(), "done": False,
                       "status_code": 206, "step_time": 12.0, "context_id": sid,
                       "flush_id": flush_id})


def frame(kind, sid, **extra) -> str:
    return json.dumps({"type": kind, "context_id": sid, "status_code": 206, **extra})


# ---- connect params and formats ------------------------------------------------------------


def test_connect_params_headers_only():
    url, headers = connect_params("sk-secret")
    assert url == "wss://api.cartesia.ai/tts/websocket"
    assert headers == {"X-API-Key": "sk-secret", "Cartesia-Version": API_VERSION}
    assert connect_params("k", version="2024-11-13")[1]["Cartesia-Version"] == "2024-11-13"
    with pytest.raises(ValueError, match="key is empty"):
        connect_params("")
    with pytest.raises(ValueError, match="Version"):
        connect_params("k", version="")


def test_choose_output_format():
    assert choose_output_format("mulaw", 8000) == ("pcm_mulaw", 8000)
    assert choose_output_format("alaw", 8000) == ("pcm_alaw", 8000)
    assert choose_output_format("l16", 16000) == ("pcm_s16le", 16000)
    assert choose_output_format("l16", 12000) == ("pcm_s16le", 16000)
    assert choose_output_format("l16", 96000) == ("pcm_s16le", 48000)


def test_constructor_and_begin_validate():
    with pytest.raises(ValueError, match="voice"):
        CartesiaProtocol(voice="")
    with pytest.raises(ValueError, match="max_buffer_delay_ms"):
        CartesiaProtocol(voice=VOICE, max_buffer_delay_ms=6000)
    p, _ = proto()
    with pytest.raises(ValueError, match="encoding"):
        p.begin("t", encoding="pcm_f32le", sample_rate=8000)
    with pytest.raises(ValueError, match="sample_rate 8000"):
        p.begin("t", encoding="pcm_mulaw", sample_rate=16000)
    with pytest.raises(ValueError, match="sample_rate"):
        p.begin("t", encoding="pcm_s16le", sample_rate=11025)


def test_split_text_keeps_separators():
    assert split_text("Hello, world!") == ["Hello, world! "]
    assert "".join(split_text("A b. " * 400)).split() == ("A b. " * 400).split()


# ---- client messages ------------------------------------------------------------------------


def test_message_shapes_for_a_turn():
    p, _ = proto(extra={"generation_config": {"speed": 1.1}})
    p.begin("turn-7")
    [text, flush] = [json.loads(m) for m in p.send("turn-7", "Hello, world!")]
    base = {"model_id": "sonic-3.5", "voice": {"mode": "id", "id": VOICE},
            "output_format": {"container": "raw", "encoding": "pcm_mulaw", "sample_rate": 8000},
            "language": "en", "max_buffer_delay_ms": 0, "generation_config": {"speed": 1.1},
            "context_id": "turn-7"}
    assert text == {**base, "transcript": "Hello, world! ", "continue": True}
    assert flush == {**base, "transcript": "", "continue": True, "flush": True}
    [end] = [json.loads(m) for m in p.finish("turn-7")]
    assert end == {**base, "transcript": "", "continue": False}  # every field repeated [C]
    assert p.state("turn-7") == "ending"


def test_per_turn_voice_and_format():
    p, _ = proto(language=None, max_buffer_delay_ms=None)
    p.begin("t", voice="other-voice", encoding="pcm_s16le", sample_rate=24000)
    body = json.loads(p.send("t", "Hi.")[0])
    assert body["voice"] == {"mode": "id", "id": "other-voice"}
    assert body["output_format"]["sample_rate"] == 24000
    assert "language" not in body and "max_buffer_delay_ms" not in body


def test_cancel_message_and_state_errors():
    p, _ = proto()
    p.begin("t")
    assert p.cancel("t") == []  # nothing sent yet: nothing to stop upstream
    p.begin("u")
    p.send("u", "Hi.")
    assert [json.loads(m) for m in p.cancel("u")] == [{"context_id": "u", "cancel": True}]
    assert p.is_cancelled("u") and p.state("u") is None and p.is_clean()
    assert p.cancel("u") == []
    with pytest.raises(RuntimeError, match="unknown"):
        p.cancel("ghost")
    with pytest.raises(RuntimeError, match="already used"):
        p.begin("u")
    with pytest.raises(RuntimeError, match="not open"):
        p.send("ghost", "x")
    p.begin("v")
    p.send("v", "Hi.")
    p.finish("v")
    with pytest.raises(RuntimeError, match="ending"):
        p.send("v", "more")


def test_finish_with_nothing_sent_is_done_at_once():
    p, _ = proto()
    p.begin("t")
    assert p.finish("t") == [] and p.state("t") is None and p.is_clean()


# ---- server messages ------------------------------------------------------------------------


def test_full_turn_chunks_flush_done_then_done():
    p, _clock = proto()
    p.begin("t")
    p.send("t", "Hi there.")
    assert p.receive(chunk("t", b"\x7f" * 80)) == [ProviderAudio("t", b"\x7f" * 80, "mulaw", 8000)]
    assert p.receive(frame("timestamps", "t", word_timestamps={"words": ["Hi"], "start": [0],
                                                               "end": [0.2]})) == [
        ProviderWords("t", (WordTiming("Hi", 0, 0.2),))]
    assert p.receive(frame("flush_done", "t", flush_done=True, flush_id=1, done=False)) == []
    p.finish("t")
    assert p.receive(frame("done", "t", done=True)) == [ProviderDone("t")]
    assert p.is_clean() and p.reusable()


def test_pcm_odd_byte_carried_and_wav_header_stripped():
    p, _ = proto()
    p.begin("t", encoding="pcm_s16le", sample_rate=16000)
    p.send("t", "Hi.")
    [a] = p.receive(chunk("t", b"\x01\x02\x03"))
    assert (a.data, a.encoding, a.sample_rate) == (b"\x01\x02", "pcm_s16le", 16000)
    [b] = p.receive(chunk("t", b"\x04"))
    assert b.data == b"\x03\x04"
    [c] = p.receive(chunk("t", wav_bytes(b"\x05\x06", 16000)))
    assert c.data == b"\x05\x06"


def test_a_quiet_context_rolls_over_to_a_fresh_one():
    p, clock = proto()
    p.begin("t")
    p.send("t", "First sentence.")
    p.receive(chunk("t", b"\x01"))
    p.receive(frame("flush_done", "t", flush_id=1))
    clock.now += 0.2  # the next sentence comes quickly: same context
    assert json.loads(p.send("t", "Second.")[0])["context_id"] == "t"
    p.receive(chunk("t", b"\x02"))
    p.receive(frame("flush_done", "t", flush_id=2))
    clock.now += 0.6  # quiet for longer than the guard: the context may have expired (1 s [C])
    msgs = [json.loads(m) for m in p.send("t", "Third.")]
    assert {m["context_id"] for m in msgs} == {"t~1"}
    assert p.server_contexts("t") == ["t", "t~1"]
    # audio of the new context is the turn's; late audio of the old one too
    assert p.receive(chunk("t~1", b"\x03")) == [ProviderAudio("t", b"\x03", "mulaw", 8000)]
    assert p.receive(chunk("t", b"\x04")) == [ProviderAudio("t", b"\x04", "mulaw", 8000)]
    assert p.receive(frame("done", "t", done=True)) == []  # the old context's done: not the end
    [end] = [json.loads(m) for m in p.finish("t")]
    assert end["context_id"] == "t~1" and end["continue"] is False
    assert p.receive(frame("done", "t~1", done=True)) == [ProviderDone("t")]


def test_no_rollover_while_a_flush_is_outstanding():
    p, clock = proto()
    p.begin("t")
    p.send("t", "A very long sentence that takes a while.")
    clock.now += 5  # still generating (no flush_done yet): the context cannot expire
    assert json.loads(p.send("t", "More.")[0])["context_id"] == "t"


def test_finish_after_a_long_pause_needs_no_message():
    p, clock = proto()
    p.begin("t")
    p.send("t", "Only sentence.")
    p.receive(frame("flush_done", "t", flush_id=1))
    clock.now += 2  # every audio came, and the context expired meanwhile
    assert p.finish("t") == [] and p.state("t") is None


def test_cancel_after_rollover_cancels_the_live_context_and_flags_all():
    p, clock = proto()
    p.begin("t")
    p.send("t", "One.")
    p.receive(frame("flush_done", "t", flush_id=1))
    clock.now += 1
    p.send("t", "Two.")
    assert [json.loads(m) for m in p.cancel("t")] == [{"context_id": "t~1", "cancel": True}]
    [late] = p.receive(chunk("t~1", b"\x01"))
    assert late.context_id == "t" and p.is_cancelled("t")
    [late] = p.receive(chunk("t", b"\x01"))
    assert p.is_cancelled(late.context_id)


def test_cancelled_turn_late_audio_keeps_its_format():
    p, _ = proto()
    p.begin("t", encoding="pcm_s16le", sample_rate=24000)
    p.send("t", "Hi.")
    p.cancel("t")
    [a] = p.receive(chunk("t", b"\x01\x02"))
    assert (a.context_id, a.encoding, a.sample_rate) == ("t", "pcm_s16le", 24000)


@pytest.mark.parametrize("status, message, kind", [
    (400, "Invalid model: The model is not valid, make sure it is a valid model ID.",
     "bad_request"),
    (500, "synthesis failed", "server_error"),
    (429, "Too many concurrent requests", "rate_limited"),
    (400, "Context has expired", "context_expired"),
])
def test_error_for_a_context_ends_that_turn(status, message, kind):
    p, _ = proto()
    p.begin("t")
    p.send("t", "Hi.")
    [ev] = p.receive(json.dumps({"type": "error", "done": True, "error": message,
                                 "status_code": status, "context_id": "t"}))
    assert ev == ProviderError("t", kind, f"Cartesia {status}: {message}")
    assert p.state("t") is None and p.reusable()


def test_auth_error_is_fatal_and_contextless_error_names_no_turn():
    p, _ = proto()
    p.begin("t")
    p.send("t", "Hi.")
    [ev] = p.receive(json.dumps({"type": "error", "done": True, "error": "Invalid JSON",
                                 "status_code": 400}))
    assert ev.context_id is None and not ev.fatal and p.state("t") == "open"
    [ev] = p.receive(json.dumps({"type": "error", "done": True, "error": "Invalid API key",
                                 "status_code": 401, "context_id": "t"}))
    assert ev.kind == "auth" and ev.fatal and p.failed and not p.reusable()
    with pytest.raises(RuntimeError, match="fatal"):
        p.begin("u")


def test_error_for_an_old_context_of_a_live_turn_ends_the_turn():
    p, clock = proto()
    p.begin("t")
    p.send("t", "One.")
    p.receive(frame("flush_done", "t", flush_id=1))
    clock.now += 1
    p.send("t", "Two.")
    [ev] = p.receive(json.dumps({"type": "error", "done": True, "error": "Context has expired",
                                 "status_code": 400, "context_id": "t"}))
    assert ev.context_id == "t" and ev.kind == "context_expired" and p.state("t") is None


@pytest.mark.parametrize("text, kind", [
    ("nope", "not_json"),
    ('{"no": "type"}', "bad_frame"),
    ('{"type": "chunk", "context_id": 3, "data": "AA=="}', "bad_frame"),
    ('{"type": "chunk", "context_id": "t"}', "missing_field"),
    ('{"type": "chunk", "context_id": "t", "data": "@@@"}', "bad_audio"),
    ('{"type": "chunk", "context_id": "ghost", "data": "AA=="}', "unknown_context"),
])
def test_garbage_raises(text, kind):
    p, _ = proto()
    p.begin("t")
    p.send("t", "Hi.")
    with pytest.raises(ProviderProtocolError) as err:
        p.receive(text)
    assert err.value.kind == kind


def test_chunk_without_context_id_goes_to_the_only_turn_and_unknown_types_are_ignored():
    p, _ = proto()
    p.begin("t")
    p.send("t", "Hi.")
    [a] = p.receive(json.dumps({"type": "chunk", "data": base64.b64encode(b"\x01").decode()}))
    assert a.context_id == "t"
    assert p.receive(json.dumps({"type": "phoneme_timestamps", "context_id": "t"})) == []
    assert p.receive(json.dumps({"type": "something_new"})) == []
    assert p.receive(frame("done", "ghost")) == [] and p.receive(frame("flush_done", "ghost")) == []


# ---- loopback against the fake -----------------------------------------------------------


class Fake:
    def __init__(self, **profile):
        self.app = make_app(**profile)

    async def __aenter__(self):
        self.runner, port = await serve_on_loopback(self.app)
        self.url = f"ws://127.0.0.1:{port}{PATH}"
        self.session = aiohttp.ClientSession()
        return self

    async def connect(self, key="test-key"):
        url, headers = connect_params(key, endpoint=self.url)
        return await self.session.ws_connect(url, headers=headers)

    async def __aexit__(self, *exc):
        await self.session.close()
        await self.runner.cleanup()


async def collect(ws, p, until, timeout=5.0):
    events = []
    async with asyncio.timeout(timeout):
        while not until(events):
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                events.append(msg.type)
                break
            events.extend(p.receive(msg.data))
    return events


def done_for(cid):
    return lambda evs: any(isinstance(e, ProviderDone) and e.context_id == cid for e in evs)


async def send_all(ws, messages):
    for m in messages:
        await ws.send_str(m)


async def test_loopback_full_turn_in_ulaw():
    async with Fake() as fake:
        ws = await fake.connect()
        p = CartesiaProtocol(voice=VOICE)
        p.begin("t1")
        text = "Your order has shipped. It arrives on Monday."
        await send_all(ws, p.send("t1", text))
        await send_all(ws, p.finish("t1"))
        events = await collect(ws, p, done_for("t1"))
        chunks = [e for e in events if isinstance(e, ProviderAudio)]
        assert chunks and events[-1] == ProviderDone("t1") and p.is_clean()
        assert b"".join(c.data for c in chunks) == fake.app["log"][0]["audio"]
        assert fake.app["log"][0]["encoding"] == "pcm_mulaw"
        assert sum(len(c.data) for c in chunks) / 8000 == pytest.approx(len(text) / 15, rel=0.1)
        await ws.close()


async def test_loopback_two_turns_interleave_on_one_socket():
    async with Fake() as fake:
        ws = await fake.connect()
        p = CartesiaProtocol(voice=VOICE)
        p.begin("a")
        p.begin("b", encoding="pcm_s16le", sample_rate=16000)
        await send_all(ws, p.send("a", "Hello from turn A."))
        await send_all(ws, p.send("b", "Hello from turn B."))
        await send_all(ws, p.finish("a") + p.finish("b"))
        events = await collect(ws, p, lambda evs: done_for("a")(evs) and done_for("b")(evs))
        for cid in ("a", "b"):
            data = b"".join(e.data for e in events if isinstance(e, ProviderAudio)
                            and e.context_id == cid)
            log = next(e for e in fake.app["log"] if e["context_id"] == cid)
            assert data == log["audio"]
        await ws.close()


async def test_loopback_context_expiry_and_rollover():
    async with Fake() as fake:
        ws = await fake.connect()
        p = CartesiaProtocol(voice=VOICE)
        p.begin("t")
        await send_all(ws, p.send("t", "Thanks for waiting."))
        # wait for all of the first sentence (its flush_done), then stay quiet > 1 s
        await collect(ws, p, lambda evs: p._turns["t"].flushes == 0)
        async with asyncio.timeout(10):  # the fake expires it 1 s after its last audio
            while fake.app["expired"] != ["t"]:
                await asyncio.sleep(0.05)
        await send_all(ws, p.send("t", "Your order has shipped."))  # to t~1
        await send_all(ws, p.finish("t"))
        events = await collect(ws, p, done_for("t"))
        assert not any(isinstance(e, ProviderError) for e in events)
        assert [e["context_id"] for e in fake.app["log"]] == ["t", "t~1"]
        await ws.close()


async def test_loopback_input_on_an_expired_context_is_an_error():
    async with Fake(context_expiry_s=0.2) as fake:
        ws = await fake.connect()
        p = CartesiaProtocol(voice=VOICE, expiry_guard_s=10)  # never rolls over
        p.begin("t")
        await send_all(ws, p.send("t", "One."))
        await collect(ws, p, lambda evs: p._turns["t"].flushes == 0)
        await asyncio.sleep(0.4)
        await send_all(ws, p.send("t", "Two."))
        events = await collect(ws, p, lambda evs: any(isinstance(e, ProviderError) for e in evs))
        [err] = [e for e in events if isinstance(e, ProviderError)]
        assert err.context_id == "t" and err.kind == "context_expired" and p.state("t") is None
        await ws.close()


async def test_loopback_cancel_mid_utterance():
    async with Fake() as fake:
        ws = await fake.connect()
        p = CartesiaProtocol(voice=VOICE)
        p.begin("cut")
        await send_all(ws, p.send("cut", "This is a long answer that is interrupted. " * 3))
        first = await collect(ws, p, lambda evs: any(isinstance(e, ProviderAudio) for e in evs))
        await send_all(ws, p.cancel("cut"))
        p.begin("next")
        await send_all(ws, p.send("next", "Sorry."))
        await send_all(ws, p.finish("next"))
        after = await collect(ws, p, done_for("next"))
        late = [e for e in after if isinstance(e, ProviderAudio) and e.context_id == "cut"]
        assert late and all(p.is_cancelled(e.context_id) for e in late)  # audio after cancel
        cut_bytes = sum(len(e.data) for e in first + after
                        if isinstance(e, ProviderAudio) and e.context_id == "cut")
        assert cut_bytes < fake.app["log"][0]["bytes"]  # the cancel did stop it
        assert fake.app["cancels"] == ["cut"] and p.is_clean()
        await ws.close()


async def next_error(ws, p) -> ProviderError:
    events = await collect(ws, p, lambda evs: any(isinstance(e, ProviderError) for e in evs))
    return next(e for e in events if isinstance(e, ProviderError))


async def test_loopback_error_frames():
    async with Fake(max_contexts=1) as fake:
        ws = await fake.connect()
        p = CartesiaProtocol(voice=VOICE)
        p.begin("t")
        await send_all(ws, p.send("t", "Hi."))
        # a field that changes within the context [C]: an error that ends the context
        body = json.loads(p.send("t", "Hello.")[0])
        body["voice"]["id"] = "another"
        await ws.send_str(json.dumps(body))
        ev = await next_error(ws, p)
        assert ev.kind == "bad_request" and "same" in ev.message and ev.context_id == "t"
        assert p.state("t") is None
        # over the concurrency limit (one live context allowed here)
        p.begin("u")
        p.begin("w")
        await send_all(ws, p.send("u", "Hi."))
        await send_all(ws, p.send("w", "Hi."))
        ev = await next_error(ws, p)
        assert ev.kind == "rate_limited" and ev.context_id == "w" and "429" in ev.message
        await ws.close()
        ws = await fake.connect()
        await ws.send_str(json.dumps({"transcript": "x", "context_id": "v", "model_id": "nope",
                                      "voice": {"mode": "id", "id": VOICE},
                                      "output_format": {"container": "wav",
                                                        "encoding": "pcm_s16le",
                                                        "sample_rate": 8000}}))
        msg = json.loads((await ws.receive(timeout=5)).data)
        assert msg == {"type": "error", "done": True, "status_code": 400, "context_id": "v",
                       "error": "Invalid model: 'nope' is not a valid model ID"}
        await ws.close()


async def test_loopback_injected_failure_ends_the_context_only():
    async with Fake(fail_on="FAILME") as fake:
        ws = await fake.connect()
        p = CartesiaProtocol(voice=VOICE)
        p.begin("bad")
        await send_all(ws, p.send("bad", "Please FAILME now."))
        await send_all(ws, p.finish("bad"))
        events = await collect(ws, p, lambda evs: any(isinstance(e, ProviderError) for e in evs))
        assert events[-1] == ProviderError("bad", "server_error", "Cartesia 500: synthesis failed")
        p.begin("good")
        await send_all(ws, p.send("good", "All good."))
        await send_all(ws, p.finish("good"))
        events = await collect(ws, p, done_for("good"))
        assert b"".join(e.data for e in events if isinstance(e, ProviderAudio)) == \
            fake.app["log"][0]["audio"]
        await ws.close()


async def test_loopback_auth_and_version_refused_before_upgrade():
    async with Fake() as fake:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await fake.connect(key="wrong")
        assert err.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await fake.session.ws_connect(fake.url, headers={"X-API-Key": "test-key"})
        assert err.value.status == 400


async def test_loopback_idle_timeout_closes_socket():
    async with Fake(idle_timeout_s=0.3) as fake:
        ws = await fake.connect()
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.extra == "connection idle timeout"
        assert ws.close_code == 1000


async def test_loopback_stats_and_close_all():
    async with Fake() as fake:
        a, b = await fake.connect(), await fake.connect()
        await asyncio.sleep(0.05)
        assert (fake.app["stats"].connections, fake.app["stats"].open) == (2, 2)
        assert await close_all(fake.app) == 2
        for ws in (a, b):
            assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE


# ---- driver and configuration ----------------------------------------------------------------


def config_with(**provider) -> dict:
    from tests.conftest import base_config

    data = base_config()
    data["providers"]["tts"] = {"type": "cartesia", "api_key_env": "TTS_KEY", "voice": VOICE,
                                **provider}
    data["routes"]["demo"]["provider"] = "tts"
    return data


def test_config_accepts_cartesia_and_judges_its_options():
    from gateway.config import ConfigError, parse_config

    pc = parse_config(config_with(options={"language": "de", "speed": 1.1},
                                  pool={"calls_per_connection": 10}),
                      {"TTS_KEY": "k"}).providers["tts"]
    assert pc.endpoint == "wss://api.cartesia.ai/tts/websocket"
    for provider, words in (({"options": {"colour": 1}}, "colour"),
                            ({"options": {"max_buffer_delay_ms": 9000}}, "max_buffer_delay_ms"),
                            ({"pool": {"calls_per_connection": 11}}, "calls_per_connection")):
        with pytest.raises(ConfigError) as err:
            parse_config(config_with(**provider), {"TTS_KEY": "k"})
        [problem] = err.value.problems
        assert problem.startswith("providers.tts") and words in problem


def test_driver_chooses_the_format_per_turn_on_one_socket():
    from gateway.carriers.events import MediaFormat
    from gateway.tts.providers.driver import RemoteSettings
    from gateway.tts.providers.registry import PROVIDERS

    d = PROVIDERS["cartesia"].new_driver(RemoteSettings(
        name="c", type="cartesia", api_key="k", voice=VOICE,
        endpoint="wss://api.cartesia.ai/tts/websocket",
        options={"version": "2025-04-16", "speed": 1.2, "emotion": "calm",
                 "pronunciation_dict_id": "pd-1"}))
    assert d.pool_key(MediaFormat("mulaw", 8000)) is None is d.pool_key(MediaFormat("l16", 16000))
    assert d.connect(None)[1]["Cartesia-Version"] == "2025-04-16"
    p = d.new_protocol(None)
    assert d.begin(p, "a", None, MediaFormat("mulaw", 8000)) == []
    assert d.begin(p, "b", "voice-b", MediaFormat("l16", 16000)) == []
    a, b = (json.loads(d.send(p, cid, "Hi.")[0]) for cid in ("a", "b"))
    assert a["output_format"]["encoding"] == "pcm_mulaw" and a["voice"]["id"] == VOICE
    assert b["output_format"] == {"container": "raw", "encoding": "pcm_s16le",
                                  "sample_rate": 16000} and b["voice"]["id"] == "voice-b"
    assert a["generation_config"] == {"speed": 1.2, "emotion": "calm"}
    assert a["pronunciation_dict_id"] == "pd-1"
    assert json.loads(d.end(p, "a")[0])["continue"] is False and not d.is_done(p, "a")
    assert json.loads(d.cancel(p, "b")[0]) == {"context_id": "b", "cancel": True}
    assert d.is_done(p, "b") and d.cancel(p, "b") == [] and d.cancel(p, "zz") == []
    assert d.has_room(p) and not d.reusable(p)
    p.receive(frame("done", "a"))
    assert d.is_done(p, "a") and d.reusable(p) and not d.must_replace(p)
