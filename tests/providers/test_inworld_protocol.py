import asyncio
import base64
import json

import aiohttp
import pytest
from telcodecs import wav_bytes

from gateway.http.loopback import serve_on_loopback
from gateway.tts.providers.fakes import close_all
from gateway.tts.providers.inworld.fake import PATH, make_app
from gateway.tts.providers.events import (
    ProviderAudio,
    ProviderDone,
    ProviderError,
    ProviderProtocolError,
)
from gateway.tts.providers.inworld.protocol import (
    DEFAULT_ENDPOINT,
    MAX_TEXT_CHARS,
    InworldProtocol,
    choose_audio_format,
    connect_params,
    split_text,
)

OK = {"code": 0, "message": "", "details": []}


def result(context_id, **payload):
    return json.dumps({"result": {"contextId": context_id, **payload, "status": OK}})


def chunk(context_id, data: bytes):
    return result(context_id, audioChunk={
        "audioContent": base64.b64encode(data).decode(),
        "usage": {"processedCharactersCount": 5, "modelId": "m"}})


def status_error(context_id, code, message):
    return json.dumps({"result": {"contextId": context_id,
                                  "status": {"code": code, "message": message, "details": []}}})


def begun(p: InworldProtocol, cid: str) -> tuple[str, str]:
    """Begin turn ``cid``: its id and its ``create`` message."""
    [message] = p.begin(cid)
    return cid, message


def proto(**kw) -> InworldProtocol:
    return InworldProtocol(voice="Ashley", **kw)


# ---- connection parameters and formats ------------------------------------------------


def test_connect_params_sends_key_as_basic_credential():
    url, headers = connect_params("QUJDOmRlZg==", request_id="r-1")
    assert url == DEFAULT_ENDPOINT
    assert headers == {"Authorization": "Basic QUJDOmRlZg==", "X-Request-Id": "r-1"}


@pytest.mark.parametrize("kwargs, match", [
    ({"encoding": "MP3", "sample_rate": 48000}, "decoder"),
    ({"encoding": "MULAW", "sample_rate": 16000}, "8000 Hz only"),
    ({"encoding": "PCM", "sample_rate": 96000}, "8000–48000"),
    ({"model": ""}, "modelId"),
])
def test_connect_params_rejects_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        connect_params("key", **kwargs)
    with pytest.raises(ValueError, match="empty"):
        connect_params("")


def test_choose_audio_format():
    assert choose_audio_format("mulaw", 8000) == ("MULAW", 8000)
    assert choose_audio_format("alaw", 8000) == ("ALAW", 8000)
    assert choose_audio_format("pcm_s16le", 16000) == ("PCM", 16000)
    assert choose_audio_format("pcm_s16le", 96000) == ("PCM", 48000)


# ---- outbound messages --------------------------------------------------------------------


def test_begin_create_message_shape():
    p = proto(model="inworld-tts-1.5-mini", create_options={"autoMode": True})
    cid, text = begun(p, "ctx-1")
    assert cid == "ctx-1"
    assert json.loads(text) == {"create": {
        "autoMode": True, "voiceId": "Ashley", "modelId": "inworld-tts-1.5-mini",
        "audioConfig": {"audioEncoding": "MULAW", "sampleRateHertz": 8000}},
        "contextId": "ctx-1"}
    assert p.state(cid) == "open" and not p.is_clean()


def test_send_flush_close_keepalive_shapes():
    p = proto()
    cid, _ = begun(p, "a")
    assert [json.loads(m) for m in p.keepalive(cid)] == [
        {"send_text": {"text": ""}, "contextId": "a"}]
    [hello] = p.send(cid, "Hello. ", flush=False)
    assert json.loads(hello) == {
        "send_text": {"text": "Hello. "}, "contextId": "a"}
    [bye] = p.send(cid, "Bye. ")
    assert json.loads(bye) == {
        "send_text": {"text": "Bye. ", "flush_context": {}}, "contextId": "a"}
    assert p.state(cid) == "flushed"
    assert json.loads(p.flush_message(cid)) == {"flush_context": {}, "contextId": "a"}
    assert json.loads(p.close_message(cid)) == {"close_context": {}, "contextId": "a"}
    assert p.state(cid) == "closing"
    assert p.keepalive(cid) == []  # no open context: a keepalive would be an error


def test_outbound_state_errors():
    p = proto()
    with pytest.raises(RuntimeError, match="not open"):
        p.send("nope", "hi")
    cid, _ = begun(p, "ctx-1")
    pieces = [json.loads(m)["send_text"]["text"] for m in p.send(cid, "x" * (MAX_TEXT_CHARS + 1))]
    assert len(pieces) == 2 and all(len(piece) <= MAX_TEXT_CHARS for piece in pieces)
    p.close_message(cid)
    with pytest.raises(RuntimeError, match="after close_context"):
        p.send(cid, "hi", flush=False)
    with pytest.raises(RuntimeError, match="twice"):
        p.close_message(cid)


def test_context_limit_is_enforced_locally():
    p = proto()
    for i in range(5):
        begun(p, f"ctx-{i}")
    assert not p.can_create()
    with pytest.raises(RuntimeError, match="5 contexts"):
        begun(p, "ctx-5")


def test_split_text_respects_limit_and_sentences():
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    pieces = split_text(text)
    assert all(len(p) <= MAX_TEXT_CHARS for p in pieces)
    assert all(p.endswith(". ") for p in pieces)
    assert "".join(pieces).split() == text.split()
    long_word = "a" * 2500
    pieces = split_text(f"Hi. {long_word} end.", limit=1000)
    assert all(len(p) <= 1000 for p in pieces)
    assert "".join(pieces).replace(" ", "") == f"Hi.{long_word}end."
    assert split_text("") == []


# ---- inbound frames --------------------------------------------------------------------------


def test_full_turn_parses_to_audio_then_done():
    p = proto()
    cid, _ = begun(p, "ctx-1")
    p.send(cid, "Hello there. ")
    p.close_message(cid)
    assert p.receive(result(cid, contextCreated={"voiceId": "Ashley"})) == []
    assert p.receive(chunk(cid, b"\x7f" * 160)) == [
        ProviderAudio(cid, b"\x7f" * 160, "mulaw", 8000)]
    assert p.receive(result(cid, flushCompleted={})) == []
    assert not p.is_clean()
    assert p.receive(result(cid, contextClosed={})) == [ProviderDone(cid)]
    assert p.is_clean() and p.state(cid) is None
    assert p.receive(json.dumps({"done": True})) == []
    assert p.receive(result(cid, contextUpdated={})) == []


def test_timestamp_only_chunk_is_ignored():
    p = proto()
    cid, _ = begun(p, "ctx-1")
    frame = result(cid, audioChunk={"timestampInfo": {"wordAlignment": {"words": ["hi"]}}})
    assert p.receive(frame) == []


def test_linear16_wav_header_stripped_and_odd_byte_carried():
    p = proto(encoding="LINEAR16", sample_rate=16000)
    cid, _ = begun(p, "ctx-1")
    pcm = bytes(range(10))
    [ev] = p.receive(chunk(cid, wav_bytes(pcm, 16000)))
    assert ev == ProviderAudio(cid, pcm, "pcm_s16le", 16000)
    [ev] = p.receive(chunk(cid, b"\x01\x02\x03"))
    assert ev.data == b"\x01\x02"
    [ev] = p.receive(chunk(cid, b"\x04"))
    assert ev.data == b"\x03\x04"


def test_context_created_echo_updates_format():
    p = proto(encoding="PCM", sample_rate=8000)
    cid, _ = begun(p, "ctx-1")
    p.receive(result(cid, contextCreated={"audioConfig": {"audioEncoding": "PCM",
                                                          "sampleRateHertz": 24000}}))
    [ev] = p.receive(chunk(cid, b"\0\0"))
    assert ev.sample_rate == 24000


def test_a_context_created_echo_with_an_encoding_that_is_not_a_string_is_ignored():
    """Found by the provider fuzz test: a dict there raised TypeError (unhashable)."""
    p = proto(encoding="PCM", sample_rate=8000)
    cid, _ = begun(p, "ctx-1")
    assert p.receive(result(cid, contextCreated={"audioConfig": {"audioEncoding": {"a": 1},
                                                                 "sampleRateHertz": 24000}})) == []
    [ev] = p.receive(chunk(cid, b"\0\0"))
    assert ev.sample_rate == 8000


def test_cancel_marks_context_and_late_audio_is_flagged():
    p = proto()
    cid, _ = begun(p, "ctx-1")
    p.send(cid, "A long answer. ")
    p.receive(chunk(cid, b"\x01" * 160))
    assert json.loads(p.cancel_message(cid)) == {"close_context": {}, "contextId": cid}
    assert p.is_cancelled(cid) and p.cancel_message(cid) is None
    [late] = p.receive(chunk(cid, b"\x02" * 160))  # close still flushes: audio arrives
    assert isinstance(late, ProviderAudio) and p.is_cancelled(late.context_id)
    p.receive(result(cid, flushCompleted={}))
    assert p.receive(result(cid, contextClosed={})) == [ProviderDone(cid)]
    assert p.is_clean() and p.is_cancelled(cid)
    [ev] = p.receive(chunk(cid, b"\x03" * 10))  # even after done
    assert p.is_cancelled(ev.context_id)
    other, _ = begun(p, "ctx-2")
    assert not p.is_cancelled(other)


def test_early_close_ack_defers_done_until_audio():
    # docs/protocols/tts-providers.md §1.4 race (#5110): contextClosed before any audio of the final
    # flush.
    p = proto()
    cid, _ = begun(p, "ctx-1")
    p.send(cid, "Hi. ", flush=False)
    p.close_message(cid)
    assert p.receive(result(cid, contextClosed={})) == []
    assert p.state(cid) == "closed_early" and not p.is_clean()
    assert p.open_contexts == 0
    assert len(p.receive(chunk(cid, b"\x01" * 80))) == 1
    assert p.receive(result(cid, flushCompleted={})) == [ProviderDone(cid)]
    assert p.is_clean()


def test_drain_forces_done():
    p = proto()
    cid, _ = begun(p, "ctx-1")
    p.send(cid, "Hi. ", flush=False)
    p.close_message(cid)
    p.receive(result(cid, contextClosed={}))
    assert p.drain(cid) == [ProviderDone(cid)] and p.is_clean()
    assert p.drain(cid) == []


@pytest.mark.parametrize("code, message, kind, fatal, gone", [
    (5, "Context not found", "context_not_found", False, True),
    (8, "Max contexts limit reached", "too_many_contexts", False, True),
    (3, "text exceeds 1000 characters", "invalid_argument", False, False),
    (9, "no open context; create a context first", "no_context", False, False),
    (16, "bad key", "auth", True, False),
    (13, "boom", "server_error", False, False),
    (99, "??", "provider_error", False, False),
])
def test_status_errors(code, message, kind, fatal, gone):
    p = proto()
    cid, _ = begun(p, "ctx-1")
    p.receive(result(cid, contextCreated={}))
    [ev] = p.receive(status_error(cid, code, message))
    assert ev == ProviderError(cid, kind, f"Inworld status {code}: {message}", fatal=fatal)
    assert p.is_clean() is gone


def test_error_before_context_created_means_create_failed():
    p = proto()
    cid, _ = begun(p, "ctx-1")
    [ev] = p.receive(status_error(cid, 3, "voiceId is required"))
    assert ev.kind == "invalid_argument" and p.is_clean()


def test_top_level_errors_are_fatal():
    p = proto()
    [ev] = p.receive(json.dumps({"error": {"code": 10, "message": "Paused due to inactivity"}}))
    assert ev.kind == "session_paused" and ev.fatal and ev.context_id is None
    [ev] = p.receive(json.dumps({"error": {"code": 2, "message": {"message": "nested"}}}))
    assert ev.kind == "server_error" and "nested" in ev.message and ev.fatal


@pytest.mark.parametrize("frame, kind", [
    ("not json", "not_json"),
    ("[1]", "bad_frame"),
    ("{}", "bad_frame"),
    (json.dumps({"result": {"contextId": "x", "status": OK}}), "bad_frame"),
    (json.dumps({"result": {"contextId": "ctx-1", "audioChunk": {"audioContent": "!!!"}}}),
     "bad_audio"),
    (chunk("stranger", b"\0"), "unknown_context"),
    (json.dumps({"result": {"audioChunk": {"audioContent": "AAA="}}}), "missing_field"),
])
def test_malformed_frames_raise(frame, kind):
    p = proto()
    begun(p, "ctx-1")
    with pytest.raises(ProviderProtocolError) as info:
        p.receive(frame)
    assert info.value.kind == kind


def test_reset_forgets_contexts():
    p = proto()
    begun(p, "ctx-1")
    p.reset()
    assert p.is_clean()


# ---- loopback against the fake ----------------------------------------------------------------


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
    """Read frames into events until ``until(events)`` is true."""
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


async def test_loopback_full_utterance():
    async with Fake() as fake:
        ws = await fake.connect()
        p = proto()
        cid, opening = begun(p, "ctx-1")
        await ws.send_str(opening)  # pipelined: no wait for contextCreated
        text = "Your order has shipped. It arrives on Monday."
        for piece in split_text(text):
            for message in p.send(cid, piece):
                await ws.send_str(message)
        await ws.send_str(p.close_message(cid))
        events = await collect(ws, p, done_for(cid))
        audio = [e for e in events if isinstance(e, ProviderAudio)]
        assert audio and isinstance(events[-1], ProviderDone)
        assert all(a.encoding == "mulaw" and a.sample_rate == 8000 for a in audio)
        total = sum(len(a.data) for a in audio)
        assert total == fake.app["log"][0]["bytes"]
        assert total / 8000 == pytest.approx(len(text) / 15, rel=0.1)  # ~15 chars/s
        assert p.is_clean()
        await ws.close()


async def test_loopback_pcm_and_linear16_header_stripped():
    async with Fake() as fake:
        ws = await fake.connect()
        p = proto(encoding="LINEAR16", sample_rate=16000)
        cid, opening = begun(p, "ctx-1")
        await ws.send_str(opening)
        for message in p.send(cid, "Hello there. "):
            await ws.send_str(message)
        await ws.send_str(p.close_message(cid))
        events = await collect(ws, p, done_for(cid))
        data = b"".join(e.data for e in events if isinstance(e, ProviderAudio))
        assert b"RIFF" not in data and len(data) == fake.app["log"][0]["bytes"]
        await ws.close()


async def test_loopback_cancel_mid_utterance():
    async with Fake() as fake:
        ws = await fake.connect()
        p = proto()
        cid, opening = begun(p, "ctx-1")
        await ws.send_str(opening)
        for message in p.send(cid, "This is a long answer that the caller interrupts. " * 2):
            await ws.send_str(message)
        first = await collect(ws, p, lambda evs: any(isinstance(e, ProviderAudio) for e in evs))
        await ws.send_str(p.cancel_message(cid))  # barge-in
        assert p.is_cancelled(cid)
        nxt, create2 = begun(p, "ctx-2")  # the next turn starts on a fresh context at once
        await ws.send_str(create2)
        after = await collect(ws, p, done_for(cid))
        late = [e for e in after if isinstance(e, ProviderAudio) and e.context_id == cid]
        # close_context flushes: the rest of the utterance still arrives, flagged cancelled.
        assert late and all(p.is_cancelled(e.context_id) for e in late)
        assert not p.is_cancelled(nxt)
        got = sum(len(e.data) for e in first + after if isinstance(e, ProviderAudio))
        assert got == fake.app["log"][0]["bytes"]
        await ws.send_str(p.close_message(nxt))
        await collect(ws, p, done_for(nxt))
        assert p.is_clean()
        await ws.close()


async def test_loopback_early_close_ack():
    async with Fake(early_close_ack=True) as fake:
        ws = await fake.connect()
        p = proto()
        cid, opening = begun(p, "ctx-1")
        await ws.send_str(opening)
        for message in p.send(cid, "Short one. ", flush=False):
            await ws.send_str(message)
        await ws.send_str(p.close_message(cid))
        events = await collect(ws, p, done_for(cid))
        assert any(isinstance(e, ProviderAudio) for e in events)  # not lost to the race
        assert isinstance(events[-1], ProviderDone) and p.is_clean()
        await ws.close()


async def test_loopback_error_frames():
    async with Fake() as fake:
        ws = await fake.connect()
        p = proto()
        # unknown context: build the frame by hand, the protocol refuses to
        await ws.send_str(json.dumps({"flush_context": {}, "contextId": "ghost"}))
        [ev] = await collect(ws, p, lambda evs: evs)
        assert ev.kind == "context_not_found" and ev.context_id == "ghost"
        # text too long
        cid, opening = begun(p, "ctx-1")
        await ws.send_str(opening)
        await ws.send_str(json.dumps({"send_text": {"text": "x" * 1001}, "contextId": cid}))
        [ev] = await collect(ws, p, lambda evs: evs)
        assert ev == ProviderError(cid, "invalid_argument",
                                   "Inworld status 3: text exceeds 1000 characters")
        # malformed: two operations, unknown field, snake_case accepted
        await ws.send_str(json.dumps({"flush_context": {}, "close_context": {}, "contextId": cid}))
        [ev] = await collect(ws, p, lambda evs: evs)
        assert ev.kind == "invalid_argument"
        await ws.send_str(json.dumps({"send_text": {"txt": "hi"}, "contextId": cid}))
        [ev] = await collect(ws, p, lambda evs: evs)
        assert ev.kind == "invalid_argument" and "txt" in ev.message
        # a 6th context
        for i in range(4):
            await ws.send_str(json.dumps({"create": {
                "voice_id": "Ashley", "model_id": "m",
                "audio_config": {"audio_encoding": "MULAW", "sample_rate_hertz": 8000}},
                "context_id": f"snake-{i}"}))
        await ws.send_str(json.dumps({"create": {"voiceId": "A", "modelId": "m"},
                                      "contextId": "sixth"}))
        [ev] = await collect(ws, p, lambda evs: evs)
        assert ev.kind == "too_many_contexts" and ev.context_id == "sixth"
        await ws.close()


async def test_loopback_keepalive_without_context_is_an_error():
    async with Fake() as fake:
        ws = await fake.connect()
        p = proto()
        await ws.send_str(json.dumps({"send_text": {"text": ""}}))
        [ev] = await collect(ws, p, lambda evs: evs)
        assert ev.kind == "no_context"
        await ws.close()


async def test_loopback_bad_auth_is_401():
    async with Fake() as fake:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await fake.connect(key="wrong")
        assert info.value.status == 401


async def test_loopback_idle_timeout_closes_socket():
    async with Fake(idle_timeout_s=0.3) as fake:
        ws = await fake.connect()
        p = proto()
        events = await collect(ws, p, lambda evs: False)
        assert events[0].kind == "session_paused" and events[0].fatal
        assert events[-1] in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                              aiohttp.WSMsgType.ERROR)


async def test_loopback_context_expiry():
    async with Fake(context_idle_s=0.1) as fake:
        ws = await fake.connect()
        p = proto()
        cid, opening = begun(p, "ctx-1")
        await ws.send_str(opening)
        assert p.receive((await ws.receive()).data) == []  # contextCreated
        await asyncio.sleep(0.3)
        for message in p.send(cid, "Anyone there? ", flush=False):
            await ws.send_str(message)
        [ev] = await collect(ws, p, lambda evs: evs)
        assert ev.kind == "context_not_found" and p.is_clean()
        await ws.close()


async def test_loopback_injected_failure_drops_the_context_and_socket_goes_on():
    async with Fake(fail_on="FAILME") as fake:
        ws = await fake.connect()
        p = proto()
        bad, opening = begun(p, "ctx-1")
        await ws.send_str(opening)
        for message in p.send(bad, "Please FAILME now. "):
            await ws.send_str(message)
        await ws.send_str(p.close_message(bad))
        events = await collect(ws, p, lambda evs: p.is_clean())
        errors = [e for e in events if isinstance(e, ProviderError)]
        assert not any(isinstance(e, (ProviderAudio, ProviderDone)) for e in events)
        assert errors[0] == ProviderError(bad, "server_error",
                                          "Inworld status 13: Internal error: synthesis failed")
        # the context is gone server side: the close is answered "Context not found"
        assert [(e.context_id, e.kind, e.fatal) for e in errors[1:]] == [
            (bad, "context_not_found", False)]
        assert fake.app["log"] == []
        good, opening = begun(p, "ctx-2")  # the same socket still works
        await ws.send_str(opening)
        for message in p.send(good, "All good. "):
            await ws.send_str(message)
        await ws.send_str(p.close_message(good))
        events = await collect(ws, p, done_for(good))
        audio = [e for e in events if isinstance(e, ProviderAudio)]
        assert audio and all(e.context_id == good for e in audio)
        assert sum(len(e.data) for e in audio) == fake.app["log"][0]["bytes"]
        await ws.close()


async def test_loopback_stats_and_close_all():
    async with Fake() as fake:
        stats = fake.app["stats"]
        a, b = await fake.connect(), await fake.connect()
        await asyncio.sleep(0.05)  # let the handlers register
        assert (stats.connections, stats.open, stats["connections"]) == (2, 2, 2)
        assert await close_all(fake.app) == 2
        for ws in (a, b):
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.extra == "server restart"
            assert ws.close_code == 1000
        await asyncio.sleep(0.05)
        assert (stats.connections, stats.open, stats.sockets) == (2, 0, set())
        ws = await fake.connect()
        await asyncio.sleep(0.05)
        assert (stats.connections, stats.open) == (3, 1)
        await ws.close()
