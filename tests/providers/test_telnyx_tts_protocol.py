"""Telnyx TTS streaming WebSocket (docs/protocols/tts-providers.md §5): the sans-I/O protocol, every
frame both ways, errors and quirks; the faithful fake over loopback; and the pool's single-use
sockets (one utterance per socket, the next one warm and handshaken)."""

import asyncio
import base64
import json
import time
from contextlib import aclosing
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from telcodecs import wav_bytes

from gateway.carriers.events import MediaFormat
from gateway.http.loopback import serve_on_loopback
from gateway.metrics import Metrics
from gateway.tts.providers.fakes import close_all
from gateway.tts.providers.telnyx.fake import PATH, make_app
from gateway.tts.providers.events import (
    ProviderAudio,
    ProviderDone,
    ProviderError,
    ProviderProtocolError,
    ProviderReady,
)
from gateway.tts.providers.telnyx.protocol import (
    DEFAULT_ENDPOINT,
    TelnyxProtocol,
    choose_format,
    connect_params,
    strip_markdown,
)
from gateway.tts.providers.driver import RemoteSettings
from gateway.tts.providers.telnyx import SPEC
from gateway.tts.remote.pool import PoolSettings
from gateway.tts.remote.session import RemoteProvider
from tests.e2e.test_twilio_call import metric_value

KEY = "test-key"
VOICE = "Telnyx.NaturalHD.astra"


def chunk(data: bytes | None, **extra) -> str:
    return json.dumps({"audio": base64.b64encode(data).decode() if data is not None else None,
                       "text": None, "isFinal": False, **extra})


FINAL = json.dumps({"audio": None, "text": "", "isFinal": True})


def speaking(**kw) -> TelnyxProtocol:
    p = TelnyxProtocol(**kw)
    assert p.connection_made() == [ProviderReady()]
    p.handshake()
    p.begin("t")
    return p


# ---- connection parameters and formats ----------------------------------------------------


def test_connect_params_url_and_bearer_header():
    url, headers = connect_params("KEY123", voice="azure.en-US-AvaMultilingualNeural",
                                  audio_format="mulaw", sample_rate=8000, language="en-US",
                                  disable_cache=True, inactivity_timeout_s=30)
    assert headers == {"Authorization": "Bearer KEY123"} and "KEY123" not in url
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == DEFAULT_ENDPOINT
    assert parse_qs(parts.query) == {
        "voice": ["azure.en-US-AvaMultilingualNeural"], "audio_format": ["mulaw"],
        "sample_rate": ["8000"], "language": ["en-US"], "disable_cache": ["true"],
        "inactivity_timeout": ["30"]}


@pytest.mark.parametrize("kwargs, match", [
    ({"audio_format": "mp3"}, "mp3"),
    ({"voice": "astra"}, "Provider.Model.VoiceId"),
    ({"endpoint": "https://api.telnyx.com/v2/text-to-speech/speech"}, "ws://"),
    ({"text_type": "html"}, "text or ssml"),
    ({"inactivity_timeout_s": 0}, "positive"),
])
def test_connect_params_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        connect_params("k", **kwargs)
    with pytest.raises(ValueError, match="API key"):
        connect_params("")


@pytest.mark.parametrize("voice, carrier, expected", [
    (VOICE, ("mulaw", 8000), ("linear16", 8000)),  # Telnyx voices: PCM only [C]
    (VOICE, ("pcm_s16le", 16000), ("linear16", 16000)),
    (VOICE, ("pcm_s16le", 12000), ("linear16", 8000)),
    ("azure.en-US-AvaMultilingualNeural", ("mulaw", 8000), ("mulaw", 8000)),
    ("azure.en-US-AvaMultilingualNeural", ("alaw", 8000), ("alaw", 8000)),
    ("elevenlabs.v3.Adam", ("mulaw", 8000), ("mulaw", 8000)),
    ("elevenlabs.v3.Adam", ("alaw", 8000), ("linear16", 8000)),
    ("inworld.Max.Ashley", ("mulaw", 8000), ("linear16", 8000)),
    ("Telnyx.Qwen3TTS.my-clone", ("mulaw", 8000), ("linear16", 24000)),  # fixed 24 kHz
    ("aws.Polly.Generative.Lucia", ("mulaw", 8000), ("linear16", 8000)),
])
def test_choose_format_never_mp3(voice, carrier, expected):
    assert choose_format(voice, *carrier) == expected


def test_driver_options_pool_key_and_voice_lock():
    def driver(voice=VOICE, **options):
        return SPEC.new_driver(RemoteSettings("t", "telnyx", KEY, voice, DEFAULT_ENDPOINT,
                                              options=options))
    assert driver().pool_key(MediaFormat("mulaw", 8000)) == ("linear16", 8000)
    assert driver(audio_format="mulaw").pool_key(MediaFormat("mulaw", 8000)) == ("mulaw", 8000)
    assert driver(sample_rate=16000).pool_key(MediaFormat("mulaw", 8000)) == ("linear16", 16000)
    assert driver(inactivity_timeout_s=45).default_idle_timeout_s == 45.0
    assert SPEC.driver.single_use and SPEC.driver.default_idle_timeout_s == 20.0
    for bad in ({"audio_format": "mp3"}, {"voice_settings": "fast"}, {"disable_cache": "yes"},
                {"colour": "red"}):
        with pytest.raises(ValueError):
            driver(**bad)
    with pytest.raises(ValueError, match=r"Provider\.Model\.VoiceId"):
        driver(voice="astra")
    d = driver()
    p = d.new_protocol(("linear16", 8000))
    assert json.loads(d.handshake(p)[0]) == {"text": " "}
    with pytest.raises(ValueError, match="a provider per voice"):
        d.begin(p, "t", "Telnyx.NaturalHD.luna", MediaFormat("mulaw", 8000))


# ---- markdown ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("## Your **order** has _shipped_!", "Your order has shipped!"),
    ("Call `get_status` or see [the docs](https://example.com/a_(b)).",
     "Call get_status or see the docs."),
    ("- first item\n- second item\n* third", "first item second item third"),
    ("> quoted *and* ***strong***", "quoted and strong"),
    ("```python\nprint(1)\n```", "print(1)"),
    ("![logo](x.png) Welcome 👋 back ✅", "logo Welcome back"),
    ("**Hello.", "Hello."),  # a marker cut off by the sentence split
    ("world**", "world"),
    ("5 * 3 = 15, snake_case stays, ~~old~~ new", "5 * 3 = 15, snake_case stays, old new"),
    ("Plain text.", "Plain text."),
    ("---", ""),
    ("| a | b |\n|---|---|\n| 1 | 2 |", "a b 1 2"),
    ("Visit <https://telnyx.com> now", "Visit https://telnyx.com now"),
])
def test_strip_markdown(text, expected):
    assert strip_markdown(text) == expected


# ---- client frames ---------------------------------------------------------------------------


def test_handshake_frame_first_and_once():
    p = TelnyxProtocol(voice_settings={"voice_speed": 1.1})
    with pytest.raises(RuntimeError, match="handshake"):
        p.begin("t")
    assert json.loads(p.handshake()) == {"text": " ", "voice_settings": {"voice_speed": 1.1}}
    assert p.is_clean()
    with pytest.raises(RuntimeError):
        p.handshake()
    assert json.loads(TelnyxProtocol().handshake()) == {"text": " "}


def test_text_frames_flush_and_the_end_frame():
    p = speaking()
    assert not p.is_clean() and p.spent
    assert [json.loads(m) for m in p.send("t", "Hello **there**.")] == [
        {"text": "Hello there. ", "flush": True}]
    assert p.send("t", "** **") == []  # nothing left to say: no empty text (= the end)
    assert p.finish("t") == ['{"text": ""}'] and p.state("t") == "ending"
    with pytest.raises(RuntimeError):
        p.send("t", "too late")


def test_one_turn_per_socket():
    p = speaking()
    with pytest.raises(RuntimeError, match="one turn"):
        p.begin("u")
    with pytest.raises(RuntimeError):
        p.send("u", "other turn")


def test_a_turn_without_text_ends_at_once_and_sends_nothing():
    p = speaking()
    assert p.finish("t") == [] and p.state("t") is None


def test_markdown_stripping_can_be_turned_off():
    p = speaking(markdown=False)
    assert json.loads(p.send("t", " *Hi* ")[0])["text"] == "*Hi* "


# ---- server frames ---------------------------------------------------------------------------


def test_streamed_provider_chunks_then_text_then_final():
    p = speaking()
    p.send("t", "Hello.")
    p.finish("t")
    a = p.receive(chunk(b"\x01\x00" * 400, cached=False, timeToFirstAudioFrameMs=245))
    b = p.receive(chunk(b"\x02\x00" * 200, cached=False))
    text_only = p.receive(json.dumps({"audio": None, "text": "Hello.", "isFinal": False}))
    assert [(e.context_id, e.encoding, e.sample_rate, len(e.data)) for e in a + b] == [
        ("t", "pcm_s16le", 8000, 800), ("t", "pcm_s16le", 8000, 400)]
    assert text_only == [] and p.time_to_first_audio_ms == 245 and p.cached is False
    assert p.receive(FINAL) == [ProviderDone("t")]
    assert p.state("t") is None and p.closes_by_design
    assert p.connection_lost() == []  # the server's close after the final frame


def test_concatenated_provider_chunk_and_type_discriminator():
    p = speaking(audio_format="mulaw")
    p.send("t", "Hi.")
    [a] = p.receive(json.dumps({"type": "audio_chunk", "audio": base64.b64encode(
        b"\xff" * 800).decode(), "text": "Hi.", "isFinal": False, "cached": True}))
    assert (a.encoding, a.sample_rate, len(a.data), p.cached) == ("mulaw", 8000, 800, True)
    assert p.receive(json.dumps({"type": "final"})) == [ProviderDone("t")]


def test_odd_byte_carried_and_wav_header_stripped():
    p = speaking()
    p.send("t", "Hi.")
    [a] = p.receive(chunk(wav_bytes(b"\x01\x00\x02", 8000)))
    [b] = p.receive(chunk(b"\x00\x03\x00"))
    assert (a.data, b.data) == (b"\x01\x00", b"\x02\x00\x03\x00")


def test_mp3_instead_of_pcm_fails_the_turn_instead_of_playing_noise():
    p = speaking(voice="Telnyx.KokoroTTS.af_heart")
    p.send("t", "Hi.")
    [err] = p.receive(chunk(b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb"))
    assert (err.context_id, err.kind, err.fatal) == ("t", "unsupported_format", False)
    assert "KokoroTTS" in err.message and "linear16" in err.message
    assert p.receive(chunk(b"\xff\xfb\x90\x00")) == []  # the rest is dropped
    assert p.cancel("t") == [] and p.spent


def test_force_on_barge_in_and_late_audio_is_flagged():
    p = speaking()
    p.send("t", "A long answer.")
    p.receive(chunk(b"\x00\x00" * 100))
    assert p.cancel("t") == ['{"force": true}'] and p.is_cancelled("t")
    [late] = p.receive(chunk(b"\x00\x00" * 100))
    assert late.context_id == "t" and p.late_audio_bytes == 200
    assert p.receive(FINAL) == [] and p.cancel("t") == []
    assert not p.closes_by_design and p.spent and not p.is_clean()


@pytest.mark.parametrize("message, kind", [
    ("Error in audio response", "synthesis_failed"),
    ("Error in remaining audio response", "synthesis_failed"),
    ("Invalid voice_id specified", "invalid_voice"),
    ("Invalid message", "invalid_message"),
    ("Something else", "server_error"),
])
def test_error_frame_fails_the_turn(message, kind):
    p = speaking()
    p.send("t", "Hi.")
    [err] = p.receive(json.dumps({"error": message}))
    assert err == ProviderError("t", kind, f"Telnyx: {message}", False)
    assert p.state("t") == "failed" and p.spent
    assert p.connection_lost() == []  # the close that follows is no second error


def test_error_on_an_idle_socket_concerns_the_connection():
    p = TelnyxProtocol()
    p.handshake()
    [err] = p.receive(json.dumps({"type": "error", "error": {"detail": "overloaded"}}))
    assert (err.context_id, err.kind) == (None, "server_error") and "overloaded" in err.message
    assert not p.is_clean()


def test_connection_lost_before_the_final_frame_is_fatal_for_the_turn():
    p = speaking()
    p.send("t", "Hi.")
    p.finish("t")
    [err] = p.connection_lost()
    assert (err.context_id, err.kind, err.fatal) == ("t", "connection_closed", True)
    idle = TelnyxProtocol()
    idle.handshake()
    assert idle.connection_lost() == [] and not idle.is_clean() and idle.spent


@pytest.mark.parametrize("frame, kind", [
    ("not json", "not_json"),
    ("[1]", "bad_message"),
    ('{"hello": 1}', "bad_message"),
    ('{"audio": 5}', "bad_audio"),
    ('{"audio": "!!"}', "bad_audio"),
])
def test_malformed_frames_raise(frame, kind):
    p = speaking()
    with pytest.raises(ProviderProtocolError) as info:
        p.receive(frame)
    assert info.value.kind == kind


def test_audio_before_any_turn_is_a_protocol_error():
    p = TelnyxProtocol()
    p.handshake()
    with pytest.raises(ProviderProtocolError) as info:
        p.receive(chunk(b"\x00\x00"))
    assert info.value.kind == "unexpected_audio"


# ---- loopback against the fake -------------------------------------------------------------


class Fake:
    def __init__(self, **profile):
        self.app = make_app(**profile)

    async def __aenter__(self):
        self.runner, port = await serve_on_loopback(self.app)
        self.endpoint = f"ws://127.0.0.1:{port}{PATH}"
        self.http = aiohttp.ClientSession()
        return self

    async def connect(self, key=KEY, voice=VOICE, audio_format="linear16", sample_rate=8000,
                      **kw):
        url, headers = connect_params(key, endpoint=self.endpoint, voice=voice,
                                      audio_format=audio_format, sample_rate=sample_rate, **kw)
        return await self.http.ws_connect(url, headers=headers)

    async def __aexit__(self, *exc):
        await self.http.close()
        await self.runner.cleanup()


async def collect(ws, p, until=lambda evs: False, timeout=5.0):
    events = []
    async with asyncio.timeout(timeout):
        while not until(events):
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                events.extend(p.connection_lost())
                events.append(msg.type)
                break
            events.extend(p.receive(msg.data))
    return events


async def test_loopback_one_utterance_then_final_then_the_server_closes():
    async with Fake(burst_factor=10) as fake:
        ws = await fake.connect()
        p = TelnyxProtocol()
        await ws.send_str(p.handshake())
        p.begin("t")
        for m in p.send("t", "Your order has shipped.") + p.send(
                "t", "It arrives *Tuesday*.") + p.finish("t"):
            await ws.send_str(m)
        events = await collect(ws, p)
    audio = [e for e in events if isinstance(e, ProviderAudio)]
    assert ProviderDone("t") in events and events[-1] == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1000 and p.closes_by_design
    assert not any(isinstance(e, ProviderError) for e in events)
    log = fake.app["log"]
    assert [e["text"] for e in log] == ["Your order has shipped.", "It arrives Tuesday."]
    assert sum(len(a.data) for a in audio) == sum(e["bytes"] for e in log)
    [sock] = fake.app["sockets"]
    assert sock["texts"] == ["Your order has shipped. ", "It arrives Tuesday. ", ""]
    assert sock["ended"] == "final" and sock["handshake_at"] <= sock["first_text_at"]


async def test_loopback_text_without_handshake_is_an_invalid_message():
    async with Fake() as fake:
        ws = await fake.connect()
        p = TelnyxProtocol()
        p.handshake()  # but not sent
        p.begin("t")
        await ws.send_str(p.send("t", "Hello.")[0])
        events = await collect(ws, p)
    assert events[0] == ProviderError("t", "invalid_message", "Telnyx: Invalid message", False)
    assert events[-1] == aiohttp.WSMsgType.CLOSE


async def test_loopback_plain_text_waits_for_a_flush_or_the_end():
    """Observed (§5.4): text frames without ``flush`` are buffered, no audio comes."""
    async with Fake() as fake:
        ws = await fake.connect()
        await ws.send_str('{"text": " "}')
        await ws.send_str('{"text": "Hello there. How are you? "}')
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.receive(), 0.4)
        await ws.send_str('{"text": ""}')
        p = TelnyxProtocol()
        p.handshake()
        p.begin("t")
        p.sent_text, p.phase = True, "ending"
        events = await collect(ws, p)
    assert ProviderDone("t") in events and any(isinstance(e, ProviderAudio) for e in events)
    assert [e["text"] for e in fake.app["log"]] == ["Hello there. How are you?"]


async def test_loopback_sentence_flush_as_the_docs_describe():
    async with Fake(sentence_flush=True) as fake:
        ws = await fake.connect()
        await ws.send_str('{"text": " "}')
        for piece in ("Hello ", "there. How ", "are"):
            await ws.send_str(json.dumps({"text": piece}))
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert json.loads(msg.data)["audio"]
        await ws.close()
    assert [e["text"] for e in fake.app["log"]] == ["Hello there."]


async def test_loopback_force_stops_the_synthesis_and_late_chunks_are_flagged():
    async with Fake(burst_factor=1, late_chunks=1) as fake:
        ws = await fake.connect()
        p = TelnyxProtocol()
        await ws.send_str(p.handshake())
        p.begin("t")
        await ws.send_str(p.send("t", "A long answer that the caller interrupts. " * 3)[0])
        first = await collect(ws, p, lambda evs: evs)
        await ws.send_str(p.cancel("t")[0])
        late = []
        with pytest.raises(TimeoutError):  # nothing ends the stream: read for a while
            await collect(ws, p, lambda evs: late.extend(evs) or False, timeout=0.6)
        await ws.close()
    assert isinstance(first[0], ProviderAudio)
    assert fake.app["forces"] == [1]
    produced = fake.app["log"][0]
    assert produced["sent"] < produced["bytes"] / 2  # it stopped


async def test_loopback_injected_failure_is_an_error_frame_then_a_close():
    async with Fake(fail_on="FAILME") as fake:
        ws = await fake.connect()
        p = TelnyxProtocol()
        await ws.send_str(p.handshake())
        p.begin("t")
        await ws.send_str(p.send("t", "Please FAILME now.")[0])
        events = await collect(ws, p)
    assert events[0] == ProviderError("t", "synthesis_failed", "Telnyx: Error in audio response",
                                      False)
    assert events[1:] == [aiohttp.WSMsgType.CLOSE] and fake.app["log"] == []


@pytest.mark.parametrize("kw, status", [
    ({"key": "wrong"}, 401),
    ({"voice": "Telnyx.Ultra.aura"}, 403),
    ({"voice": "nobody.Model.x"}, 400),
    ({"sample_rate": 11025}, 400),
])
async def test_loopback_upgrade_refusals(kw, status):
    async with Fake() as fake:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await fake.connect(**kw)
    assert info.value.status == status


async def test_loopback_voice_that_ignores_audio_format_sends_mp3():
    async with Fake() as fake:
        ws = await fake.connect(voice="Telnyx.KokoroTTS.af_heart")
        p = TelnyxProtocol(voice="Telnyx.KokoroTTS.af_heart")
        await ws.send_str(p.handshake())
        p.begin("t")
        await ws.send_str(p.send("t", "Hi there.")[0])
        [err] = await collect(ws, p, lambda evs: evs)
        await ws.close()
    assert err.kind == "unsupported_format"


async def test_loopback_azure_mulaw_arrives_in_one_concatenated_chunk():
    async with Fake() as fake:
        ws = await fake.connect(voice="azure.en-US-AvaMultilingualNeural", audio_format="mulaw")
        p = TelnyxProtocol(audio_format="mulaw")
        await ws.send_str(p.handshake())
        p.begin("t")
        for m in p.send("t", "Hello from Azure.") + p.finish("t"):
            await ws.send_str(m)
        events = await collect(ws, p)
    audio = [e for e in events if isinstance(e, ProviderAudio)]
    assert len(audio) == 1 and audio[0].encoding == "mulaw"
    assert len(audio[0].data) == fake.app["log"][0]["bytes"]
    assert ProviderDone("t") in events


async def test_loopback_cache_and_inactivity_timeout():
    async with Fake(inactivity_timeout_s=60) as fake:
        for _ in range(2):
            ws = await fake.connect()
            p = TelnyxProtocol()
            await ws.send_str(p.handshake())
            p.begin("t")
            for m in p.send("t", "Same words.") + p.finish("t"):
                await ws.send_str(m)
            await collect(ws, p)
        assert [e["cached"] for e in fake.app["log"]] == [False, True]
        assert p.cached is True
        ws = await fake.connect(inactivity_timeout_s=1)
        await ws.send_str('{"text": " "}')
        started = time.monotonic()
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and time.monotonic() - started >= 0.9
    assert fake.app["sockets"][-1]["ended"] == "inactivity"


async def test_loopback_stats_and_close_all():
    async with Fake() as fake:
        ws = await fake.connect()
        await asyncio.sleep(0.05)
        assert (fake.app["stats"].connections, fake.app["stats"].open) == (1, 1)
        assert await close_all(fake.app, code=1012, message=b"going away") == 1
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1012


# ---- the pool's single-use sockets ---------------------------------------------------------


async def started(fake, metrics, **pool) -> RemoteProvider:
    settings = RemoteSettings(name="telnyx", type="telnyx", api_key=KEY, voice=VOICE,
                              endpoint=fake.endpoint)
    provider = RemoteProvider(settings, PoolSettings(**pool))
    provider.use_metrics(metrics)
    await provider.start()
    assert await provider.pool.wait_ready(10)
    return provider


async def say(session, text):
    total = 0
    async with aclosing(session.synthesize(text)) as chunks:
        async for c in chunks:
            assert (c.encoding, c.sample_rate) == ("pcm_s16le", 8000)
            total += len(c.data)
    return total


async def test_pool_gives_each_utterance_a_warm_handshaken_socket_and_counts_no_reconnect():
    async with Fake(handshake_ms=300, burst_factor=20) as fake:
        metrics = Metrics()
        provider = await started(fake, metrics, min_idle=1, max=4)
        try:
            session = await provider.open_session(MediaFormat("mulaw", 8000))
            assert session.connection is None  # nothing is held between utterances
            asked = []
            for text in ("One.", "Two, a little longer.", "Three."):
                await asyncio.sleep(0.5)  # the pool tops up behind each lease meanwhile
                asked.append(time.monotonic())
                assert await say(session, text) > 0
                assert session.connection is None
            assert session.connections_used == 3
            await session.release()
        finally:
            await provider.close()
    socks = {s["n"]: s for s in fake.app["sockets"]}
    used = [socks[e["socket"]] for e in fake.app["log"]]
    assert len({s["n"] for s in used}) == 3  # one socket per utterance
    for sock, t in zip(used, asked):
        # opened and handshaken before the utterance was even asked for
        assert sock["handshake_at"] < t < sock["first_text_at"]
        assert sock["ended"] == "final"
    text = metrics.exposition().decode()
    assert metric_value(text, "tts_gateway_pool_hits_total", provider="telnyx") == 3
    assert metric_value(text, "tts_gateway_pool_misses_total", provider="telnyx") == 0
    assert "tts_gateway_pool_reconnects_total{" not in text


async def test_pool_replays_a_turn_whose_warm_socket_died_before_audio():
    async with Fake(burst_factor=20) as fake:
        provider = await started(fake, Metrics(), min_idle=1, max=4)
        try:
            session = await provider.open_session(MediaFormat("mulaw", 8000))
            [warm] = provider.pool.connections
            await close_all(fake.app)  # the provider drops the warm socket
            assert await say(session, "Still heard.") > 0
            assert warm.closed and [e["text"] for e in fake.app["log"]] == ["Still heard."]
            await session.release()
        finally:
            await provider.close()


def test_config_accepts_telnyx_and_checks_its_options():
    from gateway.config import ConfigError, parse_config

    def config(**provider):
        return {"providers": {"t": {"type": "telnyx", "api_key_env": "K", "voice": VOICE,
                                    **provider}},
                "routes": {"r": {"provider": "t"}}}

    cfg = parse_config(config(options={"voice_settings": {"voice_speed": 1.1}}), {"K": "secret"})
    assert cfg.providers["t"].endpoint == DEFAULT_ENDPOINT
    for bad, words in [({"options": {"audio_format": "mp3"}}, "never mp3"),
                       ({"voice": "astra"}, "Provider.Model.VoiceId"),
                       ({"model": "NaturalHD"}, "no model"),
                       ({"pool": {"calls_per_connection": 2}}, "calls_per_connection")]:
        with pytest.raises(ConfigError, match=words):
            parse_config(config(**bad), {"K": "secret"})
