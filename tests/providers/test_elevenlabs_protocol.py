"""ElevenLabs multi-context stream-input: the sans-I/O protocol, and against its fake."""

import asyncio
import base64
import json

import aiohttp
import pytest
from telcodecs import wav_bytes

from gateway.http.loopback import serve_on_loopback
from gateway.tts.providers.fakes import close_all
from gateway.tts.providers.elevenlabs.fake import PATH, make_app
from gateway.tts.providers.elevenlabs.protocol import (
    DEFAULT_ENDPOINT,
    MAX_TEXT_CHARS,
    ElevenLabsProtocol,
    choose_output_format,
    connect_params,
    split_text,
)
from gateway.tts.providers.events import (
    ProviderAudio,
    ProviderDone,
    ProviderError,
    ProviderProtocolError,
)

VOICE = "21m00Tcm4TlvDq8ikWAM"


def begun(p: ElevenLabsProtocol, cid: str) -> tuple[str, str]:
    """Begin turn ``cid``: its id and its init message."""
    [message] = p.begin(cid)
    return cid, message


def audio(cid, data: bytes, **extra) -> str:
    return json.dumps({"audio": base64.b64encode(data).decode(), "isFinal": False,
                       "normalizedAlignment": None, "alignment": None, "contextId": cid, **extra})


def final(cid) -> str:
    return json.dumps({"isFinal": True, "contextId": cid})


# ---- connect params and formats ------------------------------------------------------------


def test_connect_params_voice_in_path_key_in_header_only():
    url, headers = connect_params("sk-secret", VOICE, language_code="de",
                                  apply_text_normalization="off", enable_logging=False)
    assert headers == {"xi-api-key": "sk-secret"} and "sk-secret" not in url
    assert url.startswith(f"wss://api.elevenlabs.io/v1/text-to-speech/{VOICE}/multi-stream-input?")
    for part in ("model_id=eleven_flash_v2_5", "output_format=ulaw_8000", "inactivity_timeout=180",
                 "auto_mode=true", "language_code=de", "apply_text_normalization=off",
                 "enable_logging=false"):
        assert part in url
    assert DEFAULT_ENDPOINT.endswith("/v1/text-to-speech/{voice_id}/multi-stream-input")


def test_connect_params_endpoint_without_template_and_odd_voice():
    url, _ = connect_params("k", "a/b", endpoint="wss://eu.example/v1/x?region=eu")
    assert url.startswith("wss://eu.example/v1/x?region=eu&model_id=")
    url, _ = connect_params("k", "a/b")
    assert "/text-to-speech/a%2Fb/" in url


@pytest.mark.parametrize("kwargs, match", [
    ({"api_key": ""}, "key is empty"),
    ({"voice": ""}, "voice id is required"),
    ({"model": "eleven_v3"}, "multi-context"),
    ({"output_format": "mp3_44100_128"}, "decoder"),
    ({"inactivity_timeout": 181}, "1-180"),
    ({"inactivity_timeout": 0}, "1-180"),
    ({"apply_text_normalization": "maybe"}, "apply_text_normalization"),
])
def test_connect_params_rejects_bad_config(kwargs, match):
    args = {"api_key": "k", "voice": VOICE, **kwargs}
    with pytest.raises(ValueError, match=match):
        connect_params(args.pop("api_key"), args.pop("voice"), **args)


def test_choose_output_format():
    assert choose_output_format("mulaw", 8000) == "ulaw_8000"
    assert choose_output_format("alaw", 8000) == "alaw_8000"
    assert choose_output_format("l16", 8000) == "pcm_8000"
    assert choose_output_format("l16", 16000) == "pcm_16000"
    assert choose_output_format("l16", 12000) == "pcm_16000"  # next higher, resampled locally
    assert choose_output_format("l16", 48000) == "pcm_44100"


def test_protocol_validates_settings():
    with pytest.raises(ValueError, match="output_format"):
        ElevenLabsProtocol(output_format="mp3_44100_128")
    with pytest.raises(ValueError, match="unknown"):
        ElevenLabsProtocol(voice_settings={"pitch": 1})
    with pytest.raises(ValueError, match="speed"):
        ElevenLabsProtocol(voice_settings={"speed": 2.0})
    with pytest.raises(ValueError, match="stability"):
        ElevenLabsProtocol(voice_settings={"stability": 1.5})
    with pytest.raises(ValueError, match="chunk_length_schedule"):
        ElevenLabsProtocol(generation_config={"chunk_length_schedule": [10]})


def test_split_text_ends_every_piece_with_a_space():
    assert split_text("Hello there.") == ["Hello there. "]
    text = "One sentence here. " * 100
    pieces = split_text(text)
    assert all(len(p) <= MAX_TEXT_CHARS and p.endswith(". ") for p in pieces)
    assert "".join(pieces).split() == text.split()
    assert split_text("   ") == []


# ---- client messages ------------------------------------------------------------------------


def test_message_shapes():
    p = ElevenLabsProtocol(voice_settings={"stability": 0.5, "speed": 1.1},
                           generation_config={"chunk_length_schedule": [50, 120]})
    cid, init = begun(p, "turn-1")
    assert cid == "turn-1"
    assert json.loads(init) == {"text": " ", "context_id": "turn-1",
                                "voice_settings": {"stability": 0.5, "speed": 1.1},
                                "generation_config": {"chunk_length_schedule": [50, 120]}}
    [text] = p.send(cid, "Hello there.")
    assert json.loads(text) == {"text": "Hello there. ", "context_id": "turn-1", "flush": True}
    [unflushed] = p.send(cid, "More.", flush=False)
    assert json.loads(unflushed) == {"text": "More. ", "context_id": "turn-1"}
    assert json.loads(p.flush_message(cid)) == {"context_id": "turn-1", "flush": True}
    assert json.loads(p.keepalive_message(cid)) == {"text": "", "context_id": "turn-1"}
    assert json.loads(p.close_message(cid)) == {"context_id": "turn-1", "close_context": True}
    assert p.keepalive_message(cid) is None  # closing: no keepalive
    assert json.loads(p.close_socket_message()) == {"close_socket": True}
    assert p.state(cid) == "closing" and not p.is_clean()


def test_init_without_settings():
    p = ElevenLabsProtocol()
    a, init = begun(p, "ctx-1")
    b, _ = begun(p, "ctx-2")
    assert a != b and json.loads(init) == {"text": " ", "context_id": a}


def test_long_text_is_split_and_only_the_last_piece_flushes():
    p = ElevenLabsProtocol()
    cid, _ = begun(p, "ctx-1")
    messages = [json.loads(m) for m in p.send(cid, "A sentence that repeats. " * 80)]
    assert len(messages) > 1
    assert [m.get("flush") for m in messages] == [None] * (len(messages) - 1) + [True]


def test_outbound_state_errors():
    p = ElevenLabsProtocol()
    with pytest.raises(RuntimeError, match="not open"):
        p.send("ghost", "hi")
    cid, _ = begun(p, "x")
    with pytest.raises(RuntimeError, match="already open"):
        begun(p, "x")
    p.close_message(cid)
    with pytest.raises(RuntimeError, match="after close_context"):
        p.send(cid, "late")
    with pytest.raises(RuntimeError, match="after close_context"):
        p.flush_message(cid)
    with pytest.raises(RuntimeError, match="twice"):
        p.close_message(cid)
    with pytest.raises(RuntimeError, match="unknown"):
        p.cancel_message("ghost")


def test_five_contexts_per_socket():
    p = ElevenLabsProtocol()
    for i in range(5):
        begun(p, f"ctx-{i}")
    assert not p.can_open()
    with pytest.raises(RuntimeError, match="5 contexts"):
        begun(p, "ctx-5")


# ---- server messages ------------------------------------------------------------------------


def test_full_turn_audio_then_final():
    p = ElevenLabsProtocol()
    cid, _ = begun(p, "c1")
    p.send(cid, "Hi.")
    p.close_message(cid)
    assert p.receive(audio("c1", b"\x7f" * 160)) == [
        ProviderAudio("c1", b"\x7f" * 160, "mulaw", 8000)]
    # alignment-only / empty-audio frames carry nothing to play
    assert p.receive(json.dumps({"audio": None, "isFinal": False, "contextId": "c1",
                                 "alignment": {"chars": ["H"]}})) == []
    assert p.receive(final("c1")) == [ProviderDone("c1")]
    assert p.is_clean() and p.state("c1") is None


def test_final_frame_may_carry_audio_and_snake_case_id_is_accepted():
    p = ElevenLabsProtocol()
    begun(p, "c1")
    p.close_message("c1")
    events = p.receive(json.dumps({"audio": base64.b64encode(b"\x01").decode(), "isFinal": True,
                                   "context_id": "c1"}))
    assert events == [ProviderAudio("c1", b"\x01", "mulaw", 8000), ProviderDone("c1")]


def test_pcm_odd_byte_carried_and_wav_header_stripped():
    p = ElevenLabsProtocol(output_format="pcm_16000")
    begun(p, "c1")
    [a] = p.receive(audio("c1", b"\x01\x02\x03"))
    assert (a.data, a.encoding, a.sample_rate) == (b"\x01\x02", "pcm_s16le", 16000)
    [b] = p.receive(audio("c1", b"\x04"))
    assert b.data == b"\x03\x04"
    [c] = p.receive(audio("c1", wav_bytes(b"\x05\x06", 16000)))
    assert c.data == b"\x05\x06"


def test_audio_without_context_id_goes_to_the_only_context():
    p = ElevenLabsProtocol()
    begun(p, "only")
    [a] = p.receive(json.dumps({"audio": base64.b64encode(b"\x01").decode()}))
    assert a.context_id == "only"
    begun(p, "second")
    with pytest.raises(ProviderProtocolError) as err:
        p.receive(json.dumps({"audio": base64.b64encode(b"\x01").decode()}))
    assert err.value.kind == "missing_field"


def test_cancel_closes_the_context_and_flags_its_late_audio():
    p = ElevenLabsProtocol()
    cid, _ = begun(p, "cut")
    p.send(cid, "A long answer.")
    assert json.loads(p.cancel_message(cid)) == {"context_id": "cut", "close_context": True}
    assert p.is_cancelled(cid) and p.cancel_message(cid) is None
    nxt, _ = begun(p, "next")  # the next turn starts at once
    [late] = p.receive(audio("cut", b"\x7f"))
    assert late.context_id == "cut" and p.is_cancelled("cut") and not p.is_cancelled(nxt)
    assert p.receive(final("cut")) == [ProviderDone("cut")]
    assert p.is_cancelled("cut")  # still known after it is over
    # a cancel after the end of input (close_context already sent) only marks
    p.close_message(nxt)
    assert p.cancel_message(nxt) is None and p.is_cancelled(nxt)
    p.receive(final(nxt))
    assert p.cancel_message(nxt) is None  # over: nothing to send


@pytest.mark.parametrize("frame, kind", [
    ({"message": "Have not received a new text input within the timeout of 20 seconds. "
                 "Streaming input terminated...", "error": "input_timeout_exceeded",
      "code": 1008}, "idle_timeout"),
    ({"message": "Maximum simultaneous contexts per WebSocket connection exceeded (5). Please "
                 "close an existing context before opening a new one.",
      "error": "max_active_conversations", "code": 1008}, "too_many_contexts"),
    ({"message": "Invalid API key", "error": "invalid_api_key", "code": 1008}, "auth"),
    ({"message": "synthesis failed", "error": "synthesis_failed", "code": 1011},
     "synthesis_failed"),
    ({"message": "voices can only be set in the first message", "error": "policy_violation",
      "code": 1008}, "policy"),
    ({"error": "something_new"}, "provider_error"),
])
def test_error_frames_are_fatal(frame, kind):
    p = ElevenLabsProtocol()
    begun(p, "c1")
    [ev] = p.receive(json.dumps(frame))
    assert isinstance(ev, ProviderError) and ev.kind == kind and ev.fatal
    assert ev.context_id is None and p.failed and not p.reusable()
    assert frame.get("message", frame["error"]) in ev.message
    with pytest.raises(RuntimeError, match="fatal"):
        begun(p, "ctx-1")


def test_error_naming_a_context_reports_it():
    p = ElevenLabsProtocol()
    begun(p, "c1")
    [ev] = p.receive(json.dumps({"message": "boom", "error": "x", "contextId": "c1"}))
    assert ev.context_id == "c1" and ev.fatal


@pytest.mark.parametrize("frame, kind", [
    ("not json", "not_json"),
    ("[1]", "bad_frame"),
    ('{"contextId": 5, "audio": "AA=="}', "bad_frame"),
    ('{"contextId": "c1", "audio": "***"}', "bad_audio"),
    ('{"contextId": "zz", "audio": "AA=="}', "unknown_context"),
    ('{"contextId": "c1", "audio": 5}', "bad_frame"),
    ('{"hello": "world"}', "bad_frame"),
])
def test_malformed_frames_raise(frame, kind):
    p = ElevenLabsProtocol()
    begun(p, "c1")
    with pytest.raises(ProviderProtocolError) as err:
        p.receive(frame)
    assert err.value.kind == kind
    assert p.state("c1") == "open"


def test_unknown_final_is_ignored_and_drain_and_reset():
    p = ElevenLabsProtocol()
    assert p.receive(final("ghost")) == []
    begun(p, "c1")
    assert p.drain("c1") == [ProviderDone("c1")] and p.drain("c1") == []
    begun(p, "c2")
    p.reset()
    assert p.is_clean()


# ---- loopback against the fake -----------------------------------------------------------


class Fake:
    def __init__(self, **profile):
        self.app = make_app(**profile)

    async def __aenter__(self):
        self.runner, port = await serve_on_loopback(self.app)
        self.endpoint = f"ws://127.0.0.1:{port}{PATH}"
        self.session = aiohttp.ClientSession()
        return self

    async def connect(self, key="test-key", **kwargs):
        url, headers = connect_params(key, VOICE, endpoint=self.endpoint, **kwargs)
        return await self.session.ws_connect(url, headers=headers)

    async def __aexit__(self, *exc):
        await self.session.close()
        await self.runner.cleanup()


async def collect(ws, p, until, timeout=5.0):
    """Read frames into events until ``until(events)``; a close ends it too."""
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


async def test_loopback_full_turn_in_ulaw():
    async with Fake() as fake:
        ws = await fake.connect()
        p = ElevenLabsProtocol(voice_settings={"stability": 0.5})
        cid, init = begun(p, "ctx-1")
        await ws.send_str(init)
        text = "Your order has shipped. It arrives on Monday."
        for m in p.send(cid, text):
            await ws.send_str(m)
        await ws.send_str(p.close_message(cid))
        events = await collect(ws, p, done_for(cid))
        chunks = [e for e in events if isinstance(e, ProviderAudio)]
        assert chunks and isinstance(events[-1], ProviderDone) and p.is_clean()
        assert b"".join(c.data for c in chunks) == fake.app["log"][0]["audio"]  # untouched
        assert all((c.encoding, c.sample_rate) == ("mulaw", 8000) for c in chunks)
        assert sum(len(c.data) for c in chunks) / 8000 == pytest.approx(len(text) / 15, rel=0.1)
        assert fake.app["connects"][0]["output_format"] == "ulaw_8000"
        assert fake.app["connects"][0]["voice_id"] == VOICE
        await ws.close()


async def test_loopback_pcm_and_keepalive():
    async with Fake() as fake:
        ws = await fake.connect(output_format="pcm_16000", inactivity_timeout=2)
        p = ElevenLabsProtocol(output_format="pcm_16000")
        cid, init = begun(p, "ctx-1")
        await ws.send_str(init)
        for _ in range(6):  # 3 s without text, but the keepalive holds the socket
            await asyncio.sleep(0.5)
            await ws.send_str(p.keepalive_message(cid))
        for m in p.send(cid, "Still here."):
            await ws.send_str(m)
        await ws.send_str(p.close_message(cid))
        events = await collect(ws, p, done_for(cid))
        data = b"".join(e.data for e in events if isinstance(e, ProviderAudio))
        assert data == fake.app["log"][0]["audio"] and len(data) % 2 == 0
        await ws.close()


async def test_loopback_cancel_mid_utterance_audio_keeps_coming():
    async with Fake() as fake:
        ws = await fake.connect()
        p = ElevenLabsProtocol()
        cid, init = begun(p, "ctx-1")
        await ws.send_str(init)
        for m in p.send(cid, "This is a long answer that the caller interrupts. " * 3):
            await ws.send_str(m)
        first = await collect(ws, p, lambda evs: any(isinstance(e, ProviderAudio) for e in evs))
        await ws.send_str(p.cancel_message(cid))  # barge-in
        nxt, init2 = begun(p, "ctx-2")
        await ws.send_str(init2)
        after = await collect(ws, p, done_for(cid))
        late = [e for e in after if isinstance(e, ProviderAudio) and e.context_id == cid]
        # close_context keeps flushing what was flushed (asyncapi): late audio, flagged
        assert late and all(p.is_cancelled(e.context_id) for e in late)
        got = sum(len(e.data) for e in first + after if isinstance(e, ProviderAudio))
        assert got == fake.app["log"][0]["bytes"]
        await ws.send_str(p.close_message(nxt))
        await collect(ws, p, done_for(nxt))
        assert p.is_clean()
        await ws.close()


async def test_loopback_unflushed_text_is_dropped_by_close_context():
    async with Fake() as fake:
        ws = await fake.connect()
        p = ElevenLabsProtocol()
        cid, init = begun(p, "ctx-1")
        await ws.send_str(init)
        for m in p.send(cid, "Never said", flush=False):
            await ws.send_str(m)
        await ws.send_str(p.close_message(cid))
        events = await collect(ws, p, done_for(cid))
        assert events == [ProviderDone(cid)] and fake.app["log"] == []
        await ws.close()


async def test_loopback_sixth_context_closes_the_socket():
    async with Fake() as fake:
        ws = await fake.connect()
        p = ElevenLabsProtocol(max_contexts=6)  # let the server enforce its limit
        for i in range(6):
            await ws.send_str(begun(p, f"ctx-{i}")[1])
        events = await collect(ws, p, lambda evs: False)
        assert events[0].kind == "too_many_contexts" and events[0].fatal
        assert events[-1] in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1008


async def test_loopback_voice_settings_after_the_first_message_is_a_policy_violation():
    async with Fake() as fake:
        ws = await fake.connect()
        p = ElevenLabsProtocol()
        await ws.send_str(json.dumps({"text": "", "context_id": "k"}))  # keepalive first
        await ws.send_str(json.dumps({"text": " ", "context_id": "k",
                                      "voice_settings": {"stability": 0.5}}))
        [ev, _closed] = await collect(ws, p, lambda evs: False)
        assert ev.kind == "policy" and ws.close_code == 1008


async def test_loopback_idle_timeout_closes_with_1008():
    async with Fake() as fake:
        ws = await fake.connect(inactivity_timeout=1)
        p = ElevenLabsProtocol()
        events = await collect(ws, p, lambda evs: False)
        assert events[0].kind == "idle_timeout" and "timeout of 1 seconds" in events[0].message
        assert ws.close_code == 1008 and fake.app["closed"] == ["input_timeout_exceeded"]


async def test_loopback_injected_failure_closes_the_socket():
    async with Fake(fail_on="FAILME") as fake:
        ws = await fake.connect()
        p = ElevenLabsProtocol()
        cid, init = begun(p, "ctx-1")
        await ws.send_str(init)
        for m in p.send(cid, "Please FAILME now."):
            await ws.send_str(m)
        events = await collect(ws, p, lambda evs: False)
        assert isinstance(events[0], ProviderError) and events[0].kind == "synthesis_failed"
        assert "synthesis failed" in events[0].message and ws.close_code == 1011
        assert fake.app["log"] == []


async def test_loopback_close_socket_finishes_flushed_contexts():
    async with Fake() as fake:
        ws = await fake.connect()
        p = ElevenLabsProtocol()
        cid, init = begun(p, "ctx-1")
        await ws.send_str(init)
        for m in p.send(cid, "Goodbye now."):
            await ws.send_str(m)
        await ws.send_str(p.close_socket_message())
        events = await collect(ws, p, lambda evs: False)
        assert any(isinstance(e, ProviderAudio) for e in events)
        assert ProviderDone(cid) in events and ws.close_code == 1000


async def test_loopback_auth_and_bad_query_refused_before_upgrade():
    async with Fake() as fake:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await fake.connect(key="wrong")
        assert err.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await fake.session.ws_connect(fake.endpoint.replace("{voice_id}", VOICE)
                                          + "?inactivity_timeout=500",
                                          headers={"xi-api-key": "test-key"})
        assert err.value.status == 400
        assert fake.app["stats"].connections == 0


async def test_loopback_stats_and_close_all():
    async with Fake() as fake:
        stats = fake.app["stats"]
        a, b = await fake.connect(), await fake.connect()
        await asyncio.sleep(0.05)
        assert (stats.connections, stats.open) == (2, 2)
        assert await close_all(fake.app) == 2
        for ws in (a, b):
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1000
        await asyncio.sleep(0.05)
        assert stats.open == 0


# ---- driver and configuration ----------------------------------------------------------------


def config_with(**provider) -> dict:
    from tests.conftest import base_config

    data = base_config()
    data["providers"]["tts"] = {"type": "elevenlabs", "api_key_env": "TTS_KEY", "voice": VOICE,
                                **provider}
    data["routes"]["demo"]["provider"] = "tts"
    return data


def problems_of(data) -> list[str]:
    from gateway.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as err:
        parse_config(data, {"TTS_KEY": "k"})
    return err.value.problems


def test_config_accepts_elevenlabs_with_defaults_and_options():
    from gateway.config import parse_config

    pc = parse_config(config_with(options={"stability": 0.4, "speed": 1.1,
                                           "inactivity_timeout": 60}),
                      {"TTS_KEY": "k"}).providers["tts"]
    assert pc.endpoint == DEFAULT_ENDPOINT and pc.pool.calls_per_connection == 1


@pytest.mark.parametrize("provider, words", [
    ({"options": {"colour": "blue"}}, "colour"),
    ({"options": {"inactivity_timeout": 500}}, "1-180"),
    ({"options": {"speed": 3}}, "speed"),
    ({"model": "eleven_v3"}, "multi-context"),
    ({"pool": {"calls_per_connection": 5}}, "calls_per_connection"),
])
def test_config_problems(provider, words):
    [problem] = problems_of(config_with(**provider))
    assert problem.startswith("providers.tts") and words in problem


def driver(**options):
    from gateway.tts.providers.driver import RemoteSettings
    from gateway.tts.providers.registry import PROVIDERS

    return PROVIDERS["elevenlabs"].new_driver(RemoteSettings(
        name="el", type="elevenlabs", api_key="k", voice=VOICE, endpoint=DEFAULT_ENDPOINT,
        options=options))


def test_driver_socket_per_format_and_turn_messages():
    from gateway.carriers.events import MediaFormat

    d = driver(inactivity_timeout=90, similarity_boost=0.7, language_code="en")
    key = d.pool_key(MediaFormat("mulaw", 8000))
    assert key == "ulaw_8000" and d.pool_key(MediaFormat("l16", 16000)) == "pcm_16000"
    url, headers = d.connect(key)
    assert f"/{VOICE}/multi-stream-input?" in url and "inactivity_timeout=90" in url
    assert "language_code=en" in url and headers == {"xi-api-key": "k"}
    assert (d.default_idle_timeout_s, d.keepalive_s) == (90.0, 30.0)
    p = d.new_protocol(key)
    [init] = d.begin(p, "c1", None, MediaFormat())
    assert json.loads(init)["voice_settings"] == {"similarity_boost": 0.7}
    assert json.loads(d.send(p, "c1", "Hi.")[0])["flush"] is True
    assert json.loads(d.keepalive(p, "c1")[0]) == {"text": "", "context_id": "c1"}
    assert json.loads(d.end(p, "c1")[0])["close_context"] is True
    assert d.cancel(p, "c1") == [] and d.keepalive(p, "c1") == []
    assert d.cancel(p, "never-opened") == []  # never raises on the session's cleanup path
    assert not d.is_done(p, "c1") and not d.reusable(p)
    p.receive(final("c1"))
    assert d.is_done(p, "c1") and d.reusable(p)
    with pytest.raises(ValueError, match="voice in the socket URL"):
        d.begin(p, "c2", "another-voice", MediaFormat())


def test_driver_room_for_sharing_within_five_contexts():
    d = driver()
    p = d.new_protocol("ulaw_8000")
    for i in range(3):
        begun(p, f"c{i}")
    assert d.has_room(p)
    begun(p, "c3")
    assert not d.has_room(p)
