import asyncio
import base64
import json

import aiohttp
import pytest
from telcodecs import wav_bytes

from gateway.http.loopback import serve_on_loopback
from gateway.tts.providers.fakes import close_all
from gateway.tts.providers.together.fake import make_app
from gateway.tts.providers.events import (
    ProviderAudio,
    ProviderDone,
    ProviderError,
    ProviderProtocolError,
    ProviderReady,
)
from gateway.tts.providers.together.protocol import (
    ERROR_KINDS,
    MAX_TEXT_CHARS,
    TogetherProtocol,
    connect_params,
    split_text,
)

KEY = "test-key"


def frame(**body) -> str:
    return json.dumps(body)


def delta(item: str, data: bytes, context_id: str | None = None) -> str:
    body = {"type": "conversation.item.audio_output.delta", "item_id": item,
            "delta": base64.b64encode(data).decode()}
    if context_id is not None:
        body["context_id"] = context_id
    return json.dumps(body)


def done(item: str, context_id: str | None = None) -> str:
    body = {"type": "conversation.item.audio_output.done", "item_id": item}
    if context_id is not None:
        body["context_id"] = context_id
    return json.dumps(body)


def begun(p: TogetherProtocol, cid: str) -> str:
    """Begin turn ``cid`` (no message: Together creates a context at its first append)."""
    assert p.begin(cid) == []
    return cid


def ready_protocol() -> TogetherProtocol:
    p = TogetherProtocol()
    assert p.receive(frame(type="session.created", session={"id": "s"})) == [ProviderReady()]
    return p


# ---- connect params -------------------------------------------------------------------


def test_connect_params_puts_key_in_header_only():
    url, headers = connect_params("sk-secret", voice="af_heart", language="EN", speed=1.1)
    assert "sk-secret" not in url
    assert headers == {"Authorization": "Bearer sk-secret"}
    assert url.startswith("wss://api.together.ai/v1/audio/speech/websocket?")
    for part in ("model=hexgrad%2FKokoro-82M", "voice=af_heart", "response_format=pcm",
                 "sample_rate=24000", "segment=never", "language=en", "speed=1.1",
                 "max_partial_length=1000"):
        assert part in url


@pytest.mark.parametrize("fmt", ["mp3", "wav", "opus"])
def test_connect_params_refuses_non_pcm(fmt):
    with pytest.raises(ValueError, match="pcm"):
        connect_params("k", response_format=fmt)


def test_connect_params_refuses_empty_key_and_bad_segment():
    with pytest.raises(ValueError, match="api_key"):
        connect_params("")
    with pytest.raises(ValueError, match="segment"):
        connect_params("k", segment="word")


# ---- client messages ----------------------------------------------------------------


def test_message_shapes():
    p = ready_protocol()
    cid = begun(p, "turn-7")
    assert cid == "turn-7"
    assert [json.loads(m) for m in p.append(cid, "Hello.")] == [
        {"type": "input_text_buffer.append", "text": "Hello.", "context_id": "turn-7"}]
    assert p.append(cid, "") == []
    assert not p.is_flushed(cid)
    assert [json.loads(m) for m in p.commit(cid)] == [
        {"type": "input_text_buffer.commit", "context_id": "turn-7"}]
    assert p.is_flushed(cid)
    assert p.commit(cid) == []  # nothing new appended
    p.append(cid, "More")
    assert json.loads(p.clear(cid)) == {"type": "input_text_buffer.clear", "context_id": "turn-7"}
    assert [json.loads(m) for m in p.cancel(cid)] == [
        {"type": "context.cancel", "context_id": "turn-7"}]
    assert json.loads(p.update_session(voice="af_heart")) == {
        "type": "tts_session.updated", "session": {"voice": "af_heart"}}
    assert json.loads(p.update_session("c2", speed=1.2)) == {
        "type": "tts_session.updated", "session": {"speed": 1.2}, "context_id": "c2"}
    with pytest.raises(ValueError, match="fixed"):
        p.update_session(sample_rate=8000)


def test_begin_refuses_reuse():
    p = ready_protocol()
    a = begun(p, "ctx-1")
    with pytest.raises(ValueError, match="fresh id"):
        begun(p, a)
    with pytest.raises(RuntimeError, match="begin it first"):
        p.append("nope", "hi")


def test_context_limit_per_connection():
    p = TogetherProtocol(max_contexts=3)
    for i in range(3):
        begun(p, f"ctx-{i}")
    assert p.contexts_left == 0
    with pytest.raises(RuntimeError, match="3 contexts"):
        begun(p, "ctx-3")


def test_long_text_append_is_split_within_limit():
    p = TogetherProtocol(max_text_chars=50)
    cid = begun(p, "ctx-1")
    text = "This is the first sentence. " * 6
    messages = [json.loads(m) for m in p.append(cid, text)]
    assert len(messages) > 1
    assert all(len(m["text"]) <= 50 for m in messages)
    joined = "".join(m["text"] for m in messages)
    assert joined.split() == text.split()


def test_split_text():
    assert split_text("") == []
    assert split_text("Short.") == ["Short."]
    pieces = split_text("One two. Three four five. Six.", 12)
    assert all(len(p) <= 12 for p in pieces)
    assert "".join(pieces).split() == "One two. Three four five. Six.".split()
    # a single word longer than the limit is cut hard
    pieces = split_text("x" * 25, 10)
    assert all(len(p) <= 10 for p in pieces) and "".join(pieces).replace(" ", "") == "x" * 25
    assert max(len(p) for p in split_text("A sentence. " * 500)) <= MAX_TEXT_CHARS


# ---- server frames --------------------------------------------------------------------


def test_session_created_then_updated_is_ready_once():
    p = TogetherProtocol()
    assert not p.ready
    assert p.receive(frame(type="session.created", session={"id": "s", "voice": "tara"})) == [
        ProviderReady()]
    assert p.ready and p.session["voice"] == "tara"
    assert p.receive(frame(type="session.updated", session={"voice": "leo"})) == []
    assert p.session["voice"] == "leo"


def test_full_context_lifecycle_audio_then_done():
    p = ready_protocol()
    cid = begun(p, "ctx-1")
    p.append(cid, "Hello there.")
    p.finish(cid)
    assert p.state(cid) == "closing" and not p.is_clean()
    assert p.receive(frame(type="conversation.item.input_text.received", text="Hello there.",
                           context_id=cid)) == []
    assert p.receive(delta("tts_1", b"\x01\x02\x03\x04", cid)) == [
        ProviderAudio(cid, b"\x01\x02\x03\x04", "pcm_s16le", 24000)]
    assert p.receive(frame(type="conversation.item.word_timestamps", item_id="tts_1",
                           words=["Hello"], start_seconds=[0], end_seconds=[0.4])) == []
    assert p.receive(done("tts_1", cid)) == [ProviderDone(cid)]
    assert p.state(cid) == "done" and p.is_clean()


def test_done_waits_for_every_commit():
    p = ready_protocol()
    cid = begun(p, "ctx-1")
    p.append(cid, "One.")
    p.commit(cid)
    p.append(cid, "Two.")
    p.finish(cid)
    assert p.receive(done("tts_1", cid)) == []
    assert p.receive(done("tts_2", cid)) == [ProviderDone(cid)]


def test_a_segment_goes_out_one_sentence_per_commit_and_completes_with_its_last_item():
    p = ready_protocol()
    cid = begun(p, "ctx-1")
    messages = [json.loads(m) for m in p.send(cid, "One here. Two here! Three?")]
    assert [(m["type"].rsplit(".", 1)[-1], m.get("text")) for m in messages] == [
        ("append", "One here."), ("commit", None), ("append", "Two here!"), ("commit", None),
        ("append", "Three?"), ("commit", None)]
    p.send(cid, "Four.")
    p.finish(cid)
    for n in range(1, 4):
        assert p.segments_done(cid) == 0
        assert p.receive(done(f"tts_{n}", cid)) == []
    assert p.segments_done(cid) == 1  # the three items of the first segment
    assert p.receive(done("tts_4", cid)) == [ProviderDone(cid)]


def test_a_sentence_longer_than_the_partial_length_is_committed_in_pieces():
    p = TogetherProtocol(max_text_chars=40)
    p.receive(frame(type="session.created", session={}))
    cid = begun(p, "ctx-1")
    long = "This sentence goes on and on well past the limit of forty characters."
    commits = [json.loads(m)["text"] for m in p.send(cid, "Short. " + long)
               if "text" in json.loads(m)]
    assert commits[0] == "Short." and all(len(c) <= 40 for c in commits)
    assert " ".join(commits[1:]) == long


def test_a_new_item_for_a_finished_context_is_refused_not_dropped_in_silence():
    """The server cut a commit into more items than the gateway expected: the extra
    item's audio comes after the context is over. Its first delta is a protocol error
    (counted by the connection); the rest of it is late audio of a finished turn."""
    p = ready_protocol()
    cid = begun(p, "ctx-1")
    p.send(cid, "Yes; it ships today")  # one sentence to the gateway, two to it
    p.finish(cid)
    assert p.receive(delta("tts_1", b"\x01\x00", cid)) == [
        ProviderAudio(cid, b"\x01\x00", "pcm_s16le", 24000)]
    assert p.receive(done("tts_1", cid)) == [ProviderDone(cid)]
    with pytest.raises(ProviderProtocolError) as refused:
        p.receive(delta("tts_2", b"\x02\x00", cid))
    assert refused.value.kind == "audio_after_done"
    assert p.receive(delta("tts_2", b"\x03\x00", cid)) == [
        ProviderAudio(cid, b"\x03\x00", "pcm_s16le", 24000)]  # dropped: the turn is over
    assert p.receive(done("tts_2", cid)) == []
    # a cancelled context's late items are expected (barge-in), not an error
    cut = begun(p, "ctx-2")
    p.send(cut, "Hello.")
    p.cancel(cut)
    assert p.receive(delta("tts_3", b"\x04\x00", cut))[0].context_id == cut


def test_finish_without_text_is_done_at_once():
    p = ready_protocol()
    cid = begun(p, "ctx-1")
    assert p.finish(cid) == []
    assert p.state(cid) == "done" and p.is_clean()


def test_events_without_context_id_go_to_oldest_pending_context():
    p = ready_protocol()
    a = begun(p, "ctx-1")
    p.append(a, "A.")
    p.finish(a)
    b = begun(p, "ctx-2")
    p.append(b, "B.")
    p.finish(b)
    [audio] = p.receive(delta("tts_1", b"\x00\x00"))
    assert audio.context_id == a
    assert p.receive(done("tts_1")) == [ProviderDone(a)]
    [audio] = p.receive(delta("tts_2", b"\x00\x00"))
    assert audio.context_id == b


def test_odd_byte_carried_and_wav_header_stripped():
    p = ready_protocol()
    cid = begun(p, "ctx-1")
    p.append(cid, "x")
    [a] = p.receive(delta("tts_1", b"\x01\x02\x03", cid))
    assert a.data == b"\x01\x02"
    [b] = p.receive(delta("tts_1", b"\x04", cid))
    assert b.data == b"\x03\x04"
    [c] = p.receive(delta("tts_1", wav_bytes(b"\x05\x06\x07\x08", 24000), cid))
    assert c.data == b"\x05\x06\x07\x08"


def test_cancel_marks_late_audio():
    p = ready_protocol()
    cid = begun(p, "ctx-1")
    p.append(cid, "Long text.")
    p.finish(cid)
    p.receive(delta("tts_1", b"\x00\x00", cid))
    assert p.cancel(cid)
    assert p.is_cancelled(cid) and p.state(cid) == "cancelling" and not p.is_clean()
    assert p.cancel(cid) == []  # idempotent
    [late] = p.receive(delta("tts_1", b"\x01\x00", cid))
    assert late.context_id == cid and p.is_cancelled(cid)
    assert p.receive(frame(type="context.cancelled", context_id=cid)) == []
    assert p.state(cid) == "cancelled" and p.is_clean()
    # audio after the confirmation, even without context_id (item known), still cancelled
    [later] = p.receive(delta("tts_1", b"\x02\x00"))
    assert later.context_id == cid and p.is_cancelled(cid)
    assert p.receive(done("tts_1", cid)) == []


def test_cancel_before_anything_sent_needs_no_message():
    p = ready_protocol()
    cid = begun(p, "ctx-1")
    assert p.cancel(cid) == []
    assert p.is_cancelled(cid) and p.is_clean()


@pytest.mark.parametrize(
    "code, message, kind, fatal",
    [
        ("invalid_api_key", "Invalid API key", "auth", True),
        ("missing_api_key", "Missing API key", "auth", True),
        ("model_not_available", "Model x is not available", "model", True),
        (None, "Voice 'tara' is not available for model 'hexgrad/Kokoro-82M'", "voice", False),
        ("invalid_text", "Text too long: 5000 characters", "text_too_long", False),
        ("invalid_request", "'text' must be a string", "bad_request", False),
        ("too_many_contexts", "Maximum 100 contexts", "too_many_contexts", False),
        ("unknown_context", "Unknown context 'c'", "unknown_context", False),
        ("rate_limit_exceeded", "slow down", "rate_limit", False),
        ("weird", "something", "provider", False),
    ],
)
def test_error_mapping(code, message, kind, fatal):
    p = ready_protocol()
    [err] = p.receive(frame(type="conversation.item.tts.failed",
                            error={"message": message, "type": "invalid_request_error",
                                   "param": None, "code": code}))
    assert isinstance(err, ProviderError)
    assert err.kind == kind and err.kind in ERROR_KINDS
    assert err.fatal is fatal and p.failed is fatal
    assert message in err.message


def test_tts_failed_first_is_fatal():
    p = TogetherProtocol()
    [err] = p.receive(frame(type="conversation.item.tts.failed",
                            error={"message": "bad", "code": "invalid_request"}))
    assert err.fatal and p.failed and not p.is_clean()
    with pytest.raises(RuntimeError, match="replace"):
        begun(p, "ctx-1")


def test_bare_error_is_fatal_and_context_error_ends_context():
    p = ready_protocol()
    cid = begun(p, "ctx-1")
    p.append(cid, "x")
    [err] = p.receive(frame(type="conversation.item.tts.failed", context_id=cid,
                            error={"message": "Text too long", "code": "invalid_text"}))
    assert err.context_id == cid and not err.fatal and p.state(cid) == "done" and p.is_clean()
    [err] = p.receive(frame(type="error", error={"message": "boom", "code": "server_error"}))
    assert err.fatal and err.kind == "server"


@pytest.mark.parametrize(
    "text, kind",
    [
        ("not json", "not_json"),
        ("[1]", "unknown_event"),
        ('{"no_type": 1}', "unknown_event"),
        ('{"type":"conversation.item.audio_output.delta","delta":"AAA="}', "missing_field"),
        ('{"type":"conversation.item.audio_output.delta","item_id":"t","delta":1}',
         "missing_field"),
        ('{"type":"conversation.item.audio_output.delta","item_id":"t","delta":"@@@"}',
         "bad_payload"),
        ('{"type":"conversation.item.audio_output.done"}', "missing_field"),
    ],
)
def test_garbage_raises(text, kind):
    p = ready_protocol()
    with pytest.raises(ProviderProtocolError) as info:
        p.receive(text)
    assert info.value.kind == kind


def test_unknown_event_types_are_ignored():
    assert ready_protocol().receive(frame(type="future.event")) == []


# ---- loopback against the fake ----------------------------------------------------------


class Loopback:
    def __init__(self, **profile):
        self.app = make_app(**profile)

    async def __aenter__(self):
        self.runner, port = await serve_on_loopback(self.app)
        self.endpoint = f"ws://127.0.0.1:{port}/v1/audio/speech/websocket"
        self.session = aiohttp.ClientSession()
        return self

    async def connect(self, key=KEY, **params):
        url, headers = connect_params(key, endpoint=self.endpoint, **params)
        return await self.session.ws_connect(url, headers=headers)

    async def __aexit__(self, *exc):
        await self.session.close()
        await self.runner.cleanup()


async def pump(ws, proto, until, timeout=5.0):
    """Feed frames to the protocol until ``until(events)`` is true; return all events."""
    events = []
    async with asyncio.timeout(timeout):
        while not until(events):
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                events.append(msg)
                break
            events.extend(proto.receive(msg.data))
    return events


async def test_loopback_full_utterance():
    async with Loopback() as lb:
        ws = await lb.connect()
        p = TogetherProtocol()
        events = await pump(ws, p, lambda ev: p.ready)
        assert events == [ProviderReady()]
        cid = begun(p, "ctx-1")
        for m in p.append(cid, "Hello there, this is a test. And a second sentence."):
            await ws.send_str(m)
        for m in p.finish(cid):
            await ws.send_str(m)
        events = await pump(ws, p, lambda ev: any(isinstance(e, ProviderDone) for e in ev))
        audio = b"".join(e.data for e in events if isinstance(e, ProviderAudio))
        assert isinstance(events[-1], ProviderDone) and events[-1].context_id == cid
        assert all(e.context_id == cid and e.sample_rate == 24000 for e in events[:-1])
        [entry] = lb.app["log"]  # segment=never: one item for the commit
        assert entry["context_id"] == cid and len(audio) == entry["bytes"]
        # about 15 chars/s of speech
        seconds = len(audio) / 2 / 24000
        assert 2.0 < seconds < 5.0
        assert p.is_clean()
        await ws.close()


async def test_loopback_sentence_segmentation_and_sample_rate():
    async with Loopback() as lb:
        ws = await lb.connect(segment="sentence", sample_rate=16000)
        p = TogetherProtocol(sample_rate=16000)
        await pump(ws, p, lambda ev: p.ready)
        cid = begun(p, "ctx-1")
        for m in p.append(cid, "One sentence here. Another one there. "):
            await ws.send_str(m)
        # with segment=sentence the server makes several items; finish counts only commits,
        # so wait for both items' done frames via the fake's log instead of ProviderDone.
        await pump(ws, p, lambda ev: len(lb.app["log"]) == 2
                   and sum(isinstance(e, ProviderAudio) for e in ev) > 0)
        assert [e["sample_rate"] for e in lb.app["log"]] == [16000, 16000]
        await ws.close()


async def test_loopback_cancel_mid_utterance():
    async with Loopback(late_chunks=2, burst_factor=2.0) as lb:
        ws = await lb.connect()
        p = TogetherProtocol()
        await pump(ws, p, lambda ev: p.ready)
        cid = begun(p, "ctx-1")
        for m in p.append(cid, "This is a rather long utterance that will be interrupted. " * 2):
            await ws.send_str(m)
        for m in p.finish(cid):
            await ws.send_str(m)
        await pump(ws, p, lambda ev: any(isinstance(e, ProviderAudio) for e in ev))
        for m in p.cancel(cid):
            await ws.send_str(m)
        assert p.is_cancelled(cid)
        # next turn on a fresh id while late audio of the old one may still arrive
        nxt = begun(p, "ctx-2")
        for m in p.append(nxt, "Next."):
            await ws.send_str(m)
        for m in p.finish(nxt):
            await ws.send_str(m)
        events = await pump(ws, p, lambda ev: any(isinstance(e, ProviderDone) for e in ev))
        old = [e for e in events if isinstance(e, ProviderAudio) and e.context_id == cid]
        new = [e for e in events if isinstance(e, ProviderAudio) and e.context_id == nxt]
        assert old, "the fake sends audio after the cancel (documented quirk)"
        assert all(p.is_cancelled(e.context_id) for e in old)
        assert new and not p.is_cancelled(nxt)
        assert not any(isinstance(e, ProviderDone) and e.context_id == cid for e in events)
        assert events[-1] == ProviderDone(nxt)
        assert p.state(cid) == "cancelled" and lb.app["cancels"] == [cid]
        assert p.is_clean()
        await ws.close()


async def test_loopback_without_context_echo():
    async with Loopback(echo_context_id=False) as lb:
        ws = await lb.connect()
        p = TogetherProtocol()
        await pump(ws, p, lambda ev: p.ready)
        cid = begun(p, "ctx-1")
        for m in p.append(cid, "No echo."):
            await ws.send_str(m)
        for m in p.finish(cid):
            await ws.send_str(m)
        events = await pump(ws, p, lambda ev: any(isinstance(e, ProviderDone) for e in ev))
        assert {e.context_id for e in events if isinstance(e, ProviderAudio)} == {cid}
        assert events[-1] == ProviderDone(cid)
        await ws.close()


async def test_loopback_error_frames():
    async with Loopback(max_text_chars=20, max_contexts=1) as lb:
        ws = await lb.connect()
        p = TogetherProtocol(max_text_chars=1000)  # deliberately above the fake's limit
        await pump(ws, p, lambda ev: p.ready)
        cid = begun(p, "ctx-1")
        for m in p.append(cid, "This text is longer than twenty characters"):
            await ws.send_str(m)
        [err] = await pump(ws, p, lambda ev: bool(ev))
        assert err.kind == "text_too_long" and err.context_id == cid and not err.fatal
        assert "too long" in err.message.lower()
        # a second context exceeds the fake's limit of 1
        await ws.send_str(json.dumps({"type": "input_text_buffer.append", "text": "ok",
                                      "context_id": "a"}))
        await ws.send_str(json.dumps({"type": "input_text_buffer.append", "text": "ok",
                                      "context_id": "b"}))
        events = await pump(ws, p, lambda ev: any(isinstance(e, ProviderError) for e in ev))
        assert events[-1].kind == "too_many_contexts"
        # malformed messages are rejected, not accepted
        for bad in ("nope", json.dumps({"type": "input_text_buffer.append"}),
                    json.dumps({"type": "made.up"}),
                    json.dumps({"type": "context.cancel", "context_id": "never-seen"})):
            await ws.send_str(bad)
            [err] = [e for e in await pump(ws, p, lambda ev: bool(ev))]
            assert isinstance(err, ProviderError) and not err.fatal, bad
        assert err.kind == "unknown_context"
        await ws.close()


async def test_loopback_bad_voice_fails_first_and_bad_key_is_401():
    async with Loopback() as lb:
        ws = await lb.connect(voice="tara")
        p = TogetherProtocol()
        events = await pump(ws, p, lambda ev: bool(ev))
        [err] = events
        assert err.kind == "voice" and err.fatal and p.failed and not p.ready
        await ws.close()
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await lb.connect(key="wrong")
        assert info.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await lb.session.ws_connect(lb.endpoint)  # no key at all


async def test_loopback_idle_timeout_closes_socket():
    async with Loopback(idle_timeout_s=0.3) as lb:
        ws = await lb.connect()
        p = TogetherProtocol()
        await pump(ws, p, lambda ev: p.ready)
        events = await pump(ws, p, lambda ev: False, timeout=5.0)
        [closing] = events
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                aiohttp.WSMsgType.CLOSING)
        assert lb.app["closed"] == ["idle timeout"]
        await ws.close()


async def test_loopback_session_update():
    async with Loopback() as lb:
        ws = await lb.connect()
        p = TogetherProtocol()
        await pump(ws, p, lambda ev: p.ready)
        await ws.send_str(p.update_session(voice="af_heart"))
        assert await pump(ws, p, lambda ev: p.session.get("voice") == "af_heart") == []
        await ws.send_str(p.update_session(voice="tara"))  # Orpheus voice on Kokoro
        [err] = await pump(ws, p, lambda ev: bool(ev))
        assert err.kind == "voice" and not err.fatal and not p.failed
        await ws.close()


async def test_loopback_injected_failure_ends_the_context_only():
    async with Loopback(fail_on="FAILME") as lb:
        ws = await lb.connect()
        p = TogetherProtocol()
        await pump(ws, p, lambda ev: p.ready)
        bad = begun(p, "ctx-1")
        for m in p.append(bad, "Please FAILME now."):
            await ws.send_str(m)
        for m in p.finish(bad):
            await ws.send_str(m)
        [err] = await pump(ws, p, lambda ev: bool(ev))
        assert err == ProviderError(bad, "provider",
                                    "Together: synthesis failed (synthesis_failed)")
        assert p.state(bad) == "done" and p.is_clean() and not p.failed
        good = begun(p, "ctx-2")  # the same socket goes on
        for m in p.append(good, "All good."):
            await ws.send_str(m)
        for m in p.finish(good):
            await ws.send_str(m)
        events = await pump(ws, p, lambda ev: any(isinstance(e, ProviderDone) for e in ev))
        assert not any(isinstance(e, ProviderError) for e in events)  # the commit was silent
        audio = [e for e in events if isinstance(e, ProviderAudio)]
        assert audio and all(e.context_id == good for e in audio)
        assert events[-1] == ProviderDone(good)
        [entry] = lb.app["log"]
        assert entry["context_id"] == good and entry["bytes"] == sum(len(e.data) for e in audio)
        await ws.close()


async def test_loopback_failure_drops_work_in_flight():
    # segment=sentence: the first sentence is being synthesized when the failing text comes
    async with Loopback(fail_on="FAILME", burst_factor=1.0) as lb:
        ws = await lb.connect(segment="sentence")
        p = TogetherProtocol()
        await pump(ws, p, lambda ev: p.ready)
        cid = begun(p, "ctx-1")
        for m in p.append(cid, "A first sentence that takes a while to say. "):
            await ws.send_str(m)
        await pump(ws, p, lambda ev: any(isinstance(e, ProviderAudio) for e in ev))
        for m in p.append(cid, "Then FAILME. And more."):
            await ws.send_str(m)
        events = await pump(ws, p, lambda ev: any(isinstance(e, ProviderError) for e in ev))
        assert events[-1].context_id == cid and not events[-1].fatal
        await ws.send_str(json.dumps({"type": "input_text_buffer.commit", "context_id": cid}))
        with pytest.raises(TimeoutError):  # nothing more comes for the failed context
            async with asyncio.timeout(0.5):
                msg = await ws.receive()
                pytest.fail(f"unexpected frame after the failure: {msg}")
        assert [e["text"] for e in lb.app["log"]] == ["A first sentence that takes a while to say."]
        await ws.close()


async def test_loopback_stats_and_close_all():
    async with Loopback() as lb:
        stats = lb.app["stats"]
        ws = await lb.connect()
        p = TogetherProtocol()
        await pump(ws, p, lambda ev: p.ready)
        assert (stats.connections, stats.open) == (1, 1)
        assert await close_all(lb.app) == 1
        [closing] = await pump(ws, p, lambda ev: False)
        assert closing.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1000
        await asyncio.sleep(0.05)
        assert (stats.connections, stats.open) == (1, 0)
