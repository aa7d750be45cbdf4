"""Uplift AI multi-stream TTS (docs/protocols/tts-providers.md §4): the sans-I/O protocol, every
message both ways, errors and quirks; then the Socket.IO socket against the faithful fake."""

import asyncio
import base64
import json

import aiohttp
import pytest
from telcodecs import wav_bytes

from gateway.http.loopback import serve_on_loopback
from gateway.tts.providers.fakes import close_all
from gateway.tts.providers.uplift.fake import PATH, make_app
from gateway.tts.base import TtsError
from gateway.tts.providers.events import (
    ProviderAudio,
    ProviderDone,
    ProviderError,
    ProviderProtocolError,
    ProviderReady,
)
from gateway.tts.providers.uplift.protocol import (
    DEFAULT_ENDPOINT,
    MAX_TEXT_CHARS,
    NAMESPACE,
    UpliftProtocol,
    choose_format,
    connect_params,
    split_text,
)
from gateway.tts.remote.connection import SocketIOWebSocket

KEY = "test-key"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def audio(rid, data: bytes, seq=None):
    body = {"type": "audio", "requestId": rid, "audio": base64.b64encode(data).decode()}
    if seq is not None:
        body["sequence"] = seq
    return body


def end(rid):
    return {"type": "audio_end", "requestId": rid, "timestamp": 2}


def error(code, message="boom", rid=None):
    body = {"type": "error", "code": code, "message": message}
    if rid is not None:
        body["requestId"] = rid
    return body


def ready_proto(**kw) -> UpliftProtocol:
    p = UpliftProtocol("v_meklc281", **kw)
    assert p.connection_made() == []
    assert p.receive({"type": "ready", "sessionId": "session_abc"}) == [ProviderReady()]
    assert p.session_id == "session_abc"
    return p


def sent(messages):
    return [json.loads(m) for m in messages]


# ---- connection parameters, formats, text ---------------------------------------------------


def test_connect_params_split_the_documented_url_into_server_and_namespace():
    params = connect_params("sk_api_secret")
    assert DEFAULT_ENDPOINT == "wss://api.upliftai.org/text-to-speech/multi-stream"
    assert params.url == "wss://api.upliftai.org"
    assert params.namespace == NAMESPACE == "/text-to-speech/multi-stream"
    assert params.socketio_path == "socket.io"
    assert params.auth == {"token": "sk_api_secret"}
    assert "sk_api_secret" not in repr(params) and "sk_api_secret" not in params.url
    local = connect_params("k", "ws://127.0.0.1:9999/text-to-speech/multi-stream/")
    assert (local.url, local.namespace) == ("ws://127.0.0.1:9999", NAMESPACE)
    assert connect_params("k", "wss://api.upliftai.org").namespace == NAMESPACE


@pytest.mark.parametrize("key, endpoint, match", [
    ("", DEFAULT_ENDPOINT, "API key"),
    ("k", "https//nohost", "ws:// or wss://"),
    ("k", "ftp://api.upliftai.org/x", "ws:// or wss://"),
    ("k", "wss://api.upliftai.org/socket.io/", "namespace"),
])
def test_connect_params_rejects(key, endpoint, match):
    with pytest.raises(ValueError, match=match):
        connect_params(key, endpoint)


def test_choose_format_passes_mulaw_through_and_takes_pcm_otherwise():
    assert choose_format("mulaw", 8000) == "ULAW_8000_8"
    assert choose_format("alaw", 8000) == "PCM_22050_16"  # Uplift has no A-law
    assert choose_format("pcm_s16le", 16000) == "PCM_22050_16"


def test_constructor_validates():
    with pytest.raises(ValueError, match="voice_id"):
        UpliftProtocol("")
    with pytest.raises(ValueError, match="speed"):
        UpliftProtocol("v_meklc281", speed=3.0)
    with pytest.raises(ValueError, match="speed"):
        UpliftProtocol("v_meklc281", speed=True)
    with pytest.raises(ValueError, match="max_text_chars"):
        UpliftProtocol("v_meklc281", max_text_chars=20_000)


def test_split_text_respects_the_10000_character_limit():
    text = ("A sentence of some length. " * 800).strip()
    pieces = split_text(text)
    assert len(text) > MAX_TEXT_CHARS and len(pieces) == 3
    assert all(len(p) <= MAX_TEXT_CHARS and p.endswith(".") for p in pieces)
    assert " ".join(pieces) == text


# ---- client messages ------------------------------------------------------------------------


def test_synthesize_message_shape_with_options_and_unique_request_ids():
    p = ready_proto(speed=1.2, phrase_replacement_config_id="prc_1")
    p.begin("t1", encoding="ULAW_8000_8")
    first = sent(p.send("t1", "سلام، آپ کیسے ہیں؟"))
    second = sent(p.send("t1", "Second."))
    assert first == [{"type": "synthesize", "requestId": "t1.1", "text": "سلام، آپ کیسے ہیں؟",
                      "voiceId": "v_meklc281", "outputFormat": "ULAW_8000_8",
                      "phraseReplacementConfigId": "prc_1", "speed": 1.2}]
    assert second[0]["requestId"] == "t1.2"
    assert "سلام" in p.send("t1", "سلام")[0]  # not \\u-escaped
    # another turn in another voice and format
    p.begin("t2", "v_30s70t3a", encoding="PCM_22050_16")
    [m] = sent(p.send("t2", "Hi."))
    assert (m["voiceId"], m["outputFormat"], m["requestId"]) == ("v_30s70t3a", "PCM_22050_16",
                                                                 "t2.1")
    assert p.send("t2", "   ") == []  # nothing to say is no request
    assert set(p.live_requests) == {"t1.1", "t1.2", "t1.3", "t2.1"}


def test_long_segment_is_split_into_requests_within_the_limit():
    p = ready_proto()
    p.begin("t", encoding="ULAW_8000_8")
    text = ("Word " * 1500 + "end. ") * 4  # four sentences of 7,505 characters
    messages = sent(p.send("t", text))
    assert len(messages) == 4 and all(len(m["text"]) <= MAX_TEXT_CHARS for m in messages)
    assert " ".join(m["text"] for m in messages) == text.strip()


def test_outbound_state_errors():
    p = ready_proto()
    with pytest.raises(ValueError, match="MP3"):
        p.begin("t", encoding="MP3_22050_32")
    p.begin("t", encoding="ULAW_8000_8")
    with pytest.raises(ValueError, match="already used"):
        p.begin("t", encoding="ULAW_8000_8")
    with pytest.raises(RuntimeError, match="not open"):
        p.send("nope", "Hi.")
    assert p.finish("t") == [] and p.state("t") is None  # no text: over at once
    with pytest.raises(RuntimeError):
        p.send("t", "late")
    p.begin("u")
    with pytest.raises(TypeError):
        p.send("u", b"bytes")


def test_cancel_sends_cancel_for_each_request_in_flight_only():
    p = ready_proto()
    p.begin("t", encoding="ULAW_8000_8")
    p.send("t", "One.")
    p.send("t", "Two.")
    p.send("t", "Three.")
    p.receive(end("t.1"))  # the first is complete already
    assert sent(p.cancel("t")) == [{"type": "cancel", "requestId": "t.2"},
                                   {"type": "cancel", "requestId": "t.3"}]
    assert p.is_cancelled("t") and p.state("t") == "cancelled"
    assert p.is_clean() and p.cancel("t") == []
    # audio still under way for a cancelled request comes back flagged with the turn id
    [late] = p.receive(audio("t.2", b"\x7f" * 160))
    assert isinstance(late, ProviderAudio) and late.context_id == "t" and p.is_cancelled("t")
    assert p.receive(end("t.3")) == []  # and no end is waited for
    assert p.late_audio_bytes == 160


def test_cancel_limit_per_minute_is_respected():
    clock = Clock()
    p = ready_proto(cancels_per_minute=2, clock=clock)
    p.begin("t", encoding="ULAW_8000_8")
    for i in range(3):
        p.send("t", f"Sentence {i}.")
    assert len(p.cancel("t")) == 2  # the third request's late audio is dropped all the same
    assert p.receive(audio("t.3", b"\x7f")) and p.is_cancelled("t")


# ---- server messages ------------------------------------------------------------------------


def test_ready_once_and_unknown_types_raise():
    p = ready_proto()
    assert p.receive(json.dumps({"type": "ready", "sessionId": "again"})) == []  # a str too
    with pytest.raises(ProviderProtocolError) as info:
        p.receive({"type": "surprise"})
    assert info.value.kind == "unknown_type"


def test_full_request_audio_then_done():
    p = ready_proto()
    p.begin("t", encoding="ULAW_8000_8")
    p.send("t", "Hello.")
    assert p.receive({"type": "audio_start", "requestId": "t.1", "timestamp": 1}) == []
    events = p.receive(audio("t.1", b"\x01" * 800, 0)) + p.receive(audio("t.1", b"\x02" * 400, 1))
    assert [(e.context_id, e.encoding, e.sample_rate, len(e.data)) for e in events] == [
        ("t", "mulaw", 8000, 800), ("t", "mulaw", 8000, 400)]
    assert p.receive(end("t.1")) == []  # the turn is not finished yet
    assert p.finish("t") == [] and p.state("t") is None and p.is_clean()


def test_done_comes_with_the_last_audio_end_after_finish():
    p = ready_proto()
    p.begin("t", encoding="ULAW_8000_8")
    p.send("t", "Hello.")
    p.finish("t")
    assert p.state("t") == "finishing" and not p.is_clean()
    assert p.receive(end("t.1")) == [ProviderDone("t")] and p.is_clean()


def test_interleaved_requests_of_two_turns_are_demultiplexed():
    p = ready_proto()
    p.begin("a", encoding="ULAW_8000_8")
    p.begin("b", encoding="PCM_22050_16")
    p.send("a", "For call A.")
    p.send("b", "For call B.")
    p.finish("a")
    p.finish("b")
    frames = [audio("a.1", b"A1"), audio("b.1", b"B1"), audio("a.1", b"A2"),
              audio("b.1", b"B2"), end("b.1"), audio("a.1", b"A3"), end("a.1")]
    events = [e for f in frames for e in p.receive(f)]
    a = b"".join(e.data for e in events if isinstance(e, ProviderAudio) and e.context_id == "a")
    b = b"".join(e.data for e in events if isinstance(e, ProviderAudio) and e.context_id == "b")
    assert (a, b) == (b"A1A2A3", b"B1B2")
    assert [e for e in events if isinstance(e, ProviderDone)] == [ProviderDone("b"),
                                                                 ProviderDone("a")]
    assert all(e.encoding == "pcm_s16le" and e.sample_rate == 22050
               for e in events if isinstance(e, ProviderAudio) and e.context_id == "b")


def test_pipelined_requests_of_one_turn_play_in_submission_order():
    p = ready_proto()
    p.begin("t", encoding="ULAW_8000_8")
    p.send("t", "First sentence.")
    p.send("t", "Second sentence.")
    p.send("t", "Third.")
    p.finish("t")
    out = []
    out += p.receive(audio("t.2", b"22"))  # the second request is faster: held
    out += p.receive(audio("t.1", b"11"))
    out += p.receive(audio("t.3", b"33"))  # held
    out += p.receive(end("t.3"))  # ended behind the head: still held
    out += p.receive(audio("t.2", b"2b"))  # held
    assert [e.data for e in out] == [b"11"]
    out += p.receive(end("t.1"))  # releases t.2's audio so far
    assert [e.data for e in out] == [b"11", b"22", b"2b"]
    out += p.receive(audio("t.2", b"2c"))  # now at the head: straight through
    out += p.receive(end("t.2"))  # releases t.3, which had ended: the turn is done
    assert [getattr(e, "data", e) for e in out] == [b"11", b"22", b"2b", b"2c", b"33",
                                                     ProviderDone("t")]


def test_pcm_odd_byte_is_carried_per_request_and_wav_header_stripped():
    p = ready_proto()
    p.begin("t", encoding="PCM_22050_16")
    p.send("t", "Hi.")
    [a] = p.receive(audio("t.1", b"\x01\x02\x03"))
    [b] = p.receive(audio("t.1", b"\x04\x05\x06"))
    assert (a.data, b.data) == (b"\x01\x02", b"\x03\x04\x05\x06")
    [c] = p.receive(audio("t.1", wav_bytes(b"\x10\x00\x20\x00", 22050)))
    assert c.data == b"\x10\x00\x20\x00"


def test_sequence_gaps_are_counted_and_audio_kept():
    p = ready_proto()
    p.begin("t", encoding="ULAW_8000_8")
    p.send("t", "Hi.")
    p.receive(audio("t.1", b"\x01", 0))
    assert p.receive(audio("t.1", b"\x02", 2))  # sequence 1 missing: kept, counted
    assert p.sequence_gaps == 1


@pytest.mark.parametrize("code, kind", [
    ("synthesis_failed", "synthesis_failed"),
    ("duplicate_request", "duplicate_request"),
    ("text_too_long", "text_too_long"),
    ("rate_limit_exceeded", "rate_limit_exceeded"),
    ("something_new", "server_error"),
])
def test_error_for_a_request_fails_its_turn_only(code, kind):
    p = ready_proto()
    p.begin("t", encoding="ULAW_8000_8")
    p.begin("other", encoding="ULAW_8000_8")
    p.send("t", "One.")
    p.send("t", "Two.")
    p.send("other", "Fine.")
    [err] = p.receive(error(code, "it broke", rid="t.1"))
    assert err == ProviderError("t", kind, f"Uplift: it broke (code {code})", False)
    assert p.state("t") == "failed" and p.state("other") == "open"
    assert sent(p.cancel("t")) == [{"type": "cancel", "requestId": "t.2"}]
    assert p.receive(error(code, rid="t.1")) == []  # a repeat about a forgotten request
    assert (p.budget_low() is (kind == "rate_limit_exceeded"))


def test_auth_failed_is_fatal_for_the_connection():
    p = UpliftProtocol("v_meklc281")
    [err] = p.receive(error("auth_failed", "Invalid API key"))
    assert err == ProviderError(None, "auth_failed", "Uplift: Invalid API key (code auth_failed)",
                                True)
    assert p.failed and not p.is_clean()
    with pytest.raises(RuntimeError):
        p.begin("t")


def test_error_naming_no_live_request_concerns_the_connection():
    p = ready_proto()
    [err] = p.receive(error("synthesis_failed", "overloaded"))
    assert (err.context_id, err.kind, err.fatal) == (None, "synthesis_failed", False)
    [err] = p.receive({"type": "error"})
    assert (err.kind, err.message) == ("server_error",
                                       "Uplift: error without a message (code unknown)")


def test_rate_budget_holds_segments_back_and_merges_them_at_finish():
    clock = Clock()
    p = ready_proto(requests_per_minute=2, clock=clock)
    p.begin("t", encoding="ULAW_8000_8")
    assert len(p.send("t", "One.")) == 1
    assert len(p.send("t", "Two.")) == 1
    assert p.requests_left() == 0 and p.budget_low()
    assert p.send("t", "Three.") == [] and p.send("t", "Four.") == []
    assert p.merged_segments == 2
    [last] = sent(p.finish("t"))  # sent whatever the budget: no text is lost
    assert last["text"] == "Three. Four." and last["requestId"] == "t.3"
    clock.now += 61  # a minute later the window is free again
    assert p.requests_left() == 2 and not p.budget_low()
    p.begin("u", encoding="ULAW_8000_8")
    assert len(p.send("u", "Five.")) == 1


def test_held_text_goes_out_with_the_next_segment_once_the_budget_frees():
    clock = Clock()
    p = ready_proto(requests_per_minute=1, clock=clock)
    p.begin("t", encoding="ULAW_8000_8")
    p.send("t", "One.")
    assert p.send("t", "Two.") == []
    clock.now += 60
    [m] = sent(p.send("t", "Three."))
    assert m["text"] == "Two. Three."


@pytest.mark.parametrize("message, kind", [
    ("not json", "not_json"),
    ([1, 2], "bad_message"),
    ({"type": "audio", "audio": "AAAA"}, "missing_field"),
    ({"type": "audio", "requestId": "nobody", "audio": "AAAA"}, "unknown_request"),
    ({"type": "audio", "requestId": "t.1"}, "missing_field"),
    ({"type": "audio", "requestId": "t.1", "audio": "!!not base64"}, "bad_audio"),
    ({"type": "audio_end"}, "missing_field"),
])
def test_malformed_messages_raise(message, kind):
    p = ready_proto()
    p.begin("t", encoding="ULAW_8000_8")
    p.send("t", "Hi.")
    with pytest.raises(ProviderProtocolError) as info:
        p.receive(message)
    assert info.value.kind == kind
    assert p.live_requests == ["t.1"]  # state unchanged


def test_connection_lost_fails_live_turns():
    p = ready_proto()
    p.begin("t", encoding="ULAW_8000_8")
    p.send("t", "Hi.")
    [err] = p.connection_lost()
    assert (err.context_id, err.kind, err.fatal) == ("t", "connection_closed", True)
    assert p.closed and not p.is_clean() and p.live_requests == []


# ---- the Socket.IO socket against the fake ---------------------------------------------------


class Fake:
    def __init__(self, **profile):
        self.app = make_app(**profile)

    async def __aenter__(self):
        self.runner, port = await serve_on_loopback(self.app)
        self.endpoint = f"ws://127.0.0.1:{port}{PATH}"
        self.http = aiohttp.ClientSession()
        return self

    async def connect(self, key=KEY, timeout_s=5.0) -> SocketIOWebSocket:
        return await SocketIOWebSocket.connect("uplift", connect_params(key, self.endpoint),
                                               self.http, timeout_s=timeout_s)

    async def __aexit__(self, *exc):
        await self.http.close()
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


async def send(ws, messages):
    for m in messages:
        await ws.send_str(m)


def done(*tids):
    return lambda evs: set(tids) <= {e.context_id for e in evs if isinstance(e, ProviderDone)}


async def ready_socket(fake):
    ws = await fake.connect()
    p = UpliftProtocol("v_meklc281")
    assert await collect(ws, p, lambda evs: evs) == [ProviderReady()]
    return ws, p


async def test_socketio_full_utterance_through_the_fake():
    async with Fake() as fake:
        ws, p = await ready_socket(fake)
        p.begin("t", encoding="ULAW_8000_8")
        text = "Your order has shipped. It arrives on Tuesday."
        await send(ws, p.send("t", text) + p.finish("t"))
        events = await collect(ws, p, done("t"))
        await ws.close()
    data = b"".join(e.data for e in events if isinstance(e, ProviderAudio))
    [entry] = fake.app["log"]
    assert data == entry["audio"] and entry["text"] == text and entry["format"] == "ULAW_8000_8"
    assert abs(len(data) / 8000 - len(text) / 15) < 0.1
    assert fake.app["received"][0] == ("synthesize", {
        "type": "synthesize", "requestId": "t.1", "text": text, "voiceId": "v_meklc281",
        "outputFormat": "ULAW_8000_8"})
    assert p.is_clean()


async def test_socketio_two_overlapping_requests_interleave_and_are_demultiplexed():
    async with Fake(burst_factor=4) as fake:
        ws, p = await ready_socket(fake)
        p.begin("a", encoding="ULAW_8000_8")
        p.begin("b", encoding="PCM_22050_16")
        await send(ws, p.send("a", "The first caller hears this sentence."))
        await send(ws, p.send("b", "The second caller hears another one."))
        await send(ws, p.finish("a") + p.finish("b"))
        events = await collect(ws, p, done("a", "b"))
        await ws.close()
    wire = [rid for _, rid in fake.app["wire"]]
    assert wire != sorted(wire), "the fake did not interleave the two requests"
    log = {e["request_id"]: e["audio"] for e in fake.app["log"]}
    for tid in ("a", "b"):
        heard = b"".join(e.data for e in events if isinstance(e, ProviderAudio)
                         and e.context_id == tid)
        assert heard == log[f"{tid}.1"]
    assert log["a.1"] != log["b.1"][:len(log["a.1"])]  # the two voices differ


async def test_socketio_pipelined_requests_of_one_turn_come_out_in_order():
    async with Fake(burst_factor=3) as fake:
        ws, p = await ready_socket(fake)
        p.begin("t", encoding="ULAW_8000_8")
        await send(ws, p.send("t", "A rather long first sentence, to be slow.")
                   + p.send("t", "Short second.") + p.finish("t"))
        events = await collect(ws, p, done("t"))
        await ws.close()
    wire = [rid for _, rid in fake.app["wire"]]
    assert wire.index("t.2") < len(wire) - 1 - wire[::-1].index("t.1")  # they overlapped
    log = {e["request_id"]: e["audio"] for e in fake.app["log"]}
    assert b"".join(e.data for e in events if isinstance(e, ProviderAudio)) == \
        log["t.1"] + log["t.2"]


async def test_socketio_cancel_mid_utterance_flags_late_audio():
    async with Fake(burst_factor=2, late_chunks=2) as fake:
        ws, p = await ready_socket(fake)
        p.begin("t", encoding="ULAW_8000_8")
        await send(ws, p.send("t", "This is a long answer the caller interrupts. " * 3))
        first = await collect(ws, p, lambda evs: evs)
        assert isinstance(first[0], ProviderAudio)
        await send(ws, p.cancel("t"))
        await asyncio.sleep(0.6)
        # the next turn on the same socket is unaffected
        p.begin("u", encoding="ULAW_8000_8")
        await send(ws, p.send("u", "Sorry, go ahead.") + p.finish("u"))
        after = await collect(ws, p, done("u"))
        await ws.close()
    late = [e for e in after if isinstance(e, ProviderAudio) and e.context_id == "t"]
    assert 1 <= len(late) <= 2 and all(p.is_cancelled(e.context_id) for e in late)
    assert fake.app["cancels"] == ["t.1"]
    assert sum(len(e.data) for e in after if isinstance(e, ProviderAudio)
               and e.context_id == "u") == fake.app["log"][-1]["bytes"]


async def test_socketio_error_messages_from_the_fake():
    async with Fake(requests_per_minute=3, fail_on="FAILME") as fake:
        ws, p = await ready_socket(fake)
        p.begin("t", encoding="ULAW_8000_8")
        await send(ws, p.send("t", "Please FAILME now."))
        [err] = await collect(ws, p, lambda evs: evs)
        assert (err.context_id, err.kind, err.fatal) == ("t", "synthesis_failed", False)
        p.cancel("t")
        # a reused request id, a text over the limit, an unknown voice: raw messages
        base = {"type": "synthesize", "voiceId": "v_meklc281", "outputFormat": "ULAW_8000_8"}
        await ws.send_str(json.dumps({**base, "requestId": "t.1", "text": "again"}))
        await ws.send_str(json.dumps({**base, "requestId": "x", "text": "a" * 10_001}))
        await ws.send_str(json.dumps({**base, "requestId": "y", "text": "Hi.", "voiceId": "v_no"}))
        await ws.send_str(json.dumps({**base, "requestId": "z", "text": "Over the limit."}))
        codes = []
        async with asyncio.timeout(5):
            while len(codes) < 4:
                msg = await ws.receive()
                if msg.data.get("type") == "error":
                    codes.append((msg.data.get("requestId"), msg.data["code"]))
        await ws.close()
    assert codes == [("t.1", "duplicate_request"), ("x", "text_too_long"),
                     ("y", "synthesis_failed"), ("z", "rate_limit_exceeded")]
    assert fake.app["log"] == []


async def test_socketio_bad_token_is_refused_at_connect():
    async with Fake() as fake:
        with pytest.raises(TtsError) as info:
            await fake.connect(key="wrong")
    assert info.value.kind == "connect"
    assert "Invalid API key (auth_failed)" in str(info.value) and "check the API key" in str(
        info.value)
    assert "wrong" not in str(info.value)


async def test_socketio_bad_token_as_an_error_message():
    async with Fake(auth_error="message") as fake:
        ws = await fake.connect(key="wrong")
        p = UpliftProtocol("v_meklc281")
        events = await collect(ws, p, lambda evs: False)
    assert events[0] == ProviderError(None, "auth_failed",
                                      "Uplift: Invalid API key (code auth_failed)", True)
    assert events[-1] == aiohttp.WSMsgType.CLOSE and ws.close_code == 1000


async def test_socketio_idle_timeout_and_close_all_end_the_connection():
    async with Fake(idle_timeout_s=0.3) as fake:
        ws, _p = await ready_socket(fake)
        assert (fake.app["stats"].connections, fake.app["stats"].open) == (1, 1)
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and "server disconnect" in msg.extra
        assert fake.app["closed"] == [(1, "idle timeout")]
    async with Fake() as fake:
        ws, _p = await ready_socket(fake)
        assert await close_all(fake.app) == 1
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.closed
        assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSED
        with pytest.raises(ConnectionError):
            await ws.send_str(json.dumps({"type": "cancel", "requestId": "x"}))
        await asyncio.sleep(0.05)
        assert fake.app["stats"].open == 0


async def test_socketio_unreachable_server_is_a_connect_error():
    async with aiohttp.ClientSession() as http:
        with pytest.raises(TtsError) as info:
            await SocketIOWebSocket.connect(
                "uplift", connect_params(KEY, "ws://127.0.0.1:9/text-to-speech/multi-stream"),
                http, timeout_s=2.0)
    assert info.value.kind == "connect"


# ---- configuration and the pool -------------------------------------------------------------


def test_config_accepts_uplift_and_checks_its_options():
    from gateway.config import ConfigError, parse_config

    def config(**provider):
        return {"providers": {"u": {"type": "uplift", "api_key_env": "K", "voice": "v_meklc281",
                                    **provider}},
                "routes": {"r": {"provider": "u"}}}

    cfg = parse_config(config(options={"speed": 1.1}, pool={"calls_per_connection": 4}),
                       {"K": "secret"})
    assert cfg.providers["u"].endpoint == DEFAULT_ENDPOINT
    for bad, words in [({"options": {"speed": 9}}, "speed"),
                       ({"options": {"colour": "red"}}, "unknown uplift options"),
                       ({"model": "x"}, "no model"),
                       ({"pool": {"calls_per_connection": 5}}, "calls_per_connection")]:
        with pytest.raises(ConfigError, match=words):
            parse_config(config(**bad), {"K": "secret"})


async def test_pool_moves_a_call_to_a_fresh_connection_when_the_request_budget_runs_low():
    from contextlib import aclosing

    from gateway.carriers.events import MediaFormat
    from gateway.metrics import Metrics
    from gateway.tts.providers.driver import RemoteSettings
    from gateway.tts.remote.pool import PoolSettings
    from gateway.tts.remote.session import RemoteProvider

    async with Fake(burst_factor=20) as fake:
        settings = RemoteSettings("uplift", "uplift", KEY, "v_meklc281", fake.endpoint,
                                  options={"requests_per_minute": 12})
        provider = RemoteProvider(settings, PoolSettings(min_idle=1, max=4))
        provider.use_metrics(Metrics())
        await provider.start()
        try:
            assert await provider.pool.wait_ready(5)
            session = await provider.open_session(MediaFormat("mulaw", 8000))
            for n in range(4):
                async with aclosing(session.synthesize(f"Utterance number {n}.")) as chunks:
                    assert [c async for c in chunks]
            # 12 a minute, 10 kept in reserve: after three requests the socket has 9 left
            assert session.connections_used == 2
            await session.release()
        finally:
            await provider.close()
    assert [e["socket"] for e in fake.app["log"]] == [1, 1, 1, 2]
