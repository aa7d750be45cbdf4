"""The lean load generator: its WebSocket client, its Twilio buffer model, and a short
real run against the gateway (embedded voice) with barge-in."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import math
import random

import pytest

from gateway.bench.loadgen import (
    BufferModel,
    TwilioLoadCall,
    WsClientProtocol,
    _LoadRun,
    _parse_url,
    client_frame,
    run_load,
)
from gateway.carriers.twilio.sim import TwilioCallResult, TwilioPlayoutModel
from tests.conftest import base_config, start_gateway

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


class Recorder(WsClientProtocol):
    def __init__(self) -> None:
        super().__init__("127.0.0.1", 8080, "/v1/media/twilio/demo")
        self.texts: list[bytes] = []
        self.binaries: list[bytes] = []
        self.violations: list[str] = []
        self.opened = 0

    def on_open(self, now: float) -> None:
        self.opened += 1

    def on_text(self, payload: bytes, now: float) -> None:
        self.texts.append(payload)

    def on_binary(self, payload: bytes, now: float) -> None:
        self.binaries.append(payload)

    def on_violation(self, code: str, detail: str) -> None:
        self.violations.append(detail)


def server_frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    """An unmasked server frame, with the shortest length form."""
    first = bytes(((0x80 if fin else 0) | opcode,))
    n = len(payload)
    if n < 126:
        return first + bytes((n,)) + payload
    if n < 65536:
        return first + b"\x7e" + n.to_bytes(2, "big") + payload
    return first + b"\x7f" + n.to_bytes(8, "big") + payload


def upgrade_response(request: bytes, accept: str | None = None) -> bytes:
    key = next(line.split(":", 1)[1].strip() for line in request.decode().split("\r\n")
               if line.lower().startswith("sec-websocket-key:"))
    if accept is None:
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode()


def opened(protocol: WsClientProtocol) -> FakeTransport:
    transport = FakeTransport()
    protocol.connection_made(transport)
    protocol.data_received(upgrade_response(transport.written[0]))
    assert protocol.is_open
    return transport


def unmask_client_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Parse client frames; they must be masked (we use the zero key, so the payload is plain)."""
    frames = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        assert b1 & 0x80, "client frames must be masked"
        n = b1 & 0x7F
        pos += 2
        if n == 126:
            n = int.from_bytes(data[pos:pos + 2], "big")
            pos += 2
        elif n == 127:
            n = int.from_bytes(data[pos:pos + 8], "big")
            pos += 8
        mask = data[pos:pos + 4]
        pos += 4
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data[pos:pos + n]))
        frames.append((b0 & 0x0F, payload))
        pos += n
    return frames


# ---- WebSocket client -------------------------------------------------------------


async def test_upgrade_request_and_accept_check():
    protocol = Recorder()
    transport = FakeTransport()
    protocol.connection_made(transport)
    request = transport.written[0].decode()
    assert request.startswith("GET /v1/media/twilio/demo HTTP/1.1\r\n")
    assert "Upgrade: websocket" in request and "Sec-WebSocket-Version: 13" in request
    # the response and the first frame in one chunk
    protocol.data_received(upgrade_response(transport.written[0]) + server_frame(b"hello"))
    assert protocol.handshake.done() and protocol.handshake.exception() is None
    assert protocol.opened == 1
    assert protocol.texts == [b"hello"]


@pytest.mark.parametrize("response, reason", [
    (None, "wrong Sec-WebSocket-Accept"),
    (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", "HTTP 503"),
])
async def test_failed_upgrades(response, reason):
    protocol = Recorder()
    transport = FakeTransport()
    protocol.connection_made(transport)
    if response is None:
        response = upgrade_response(transport.written[0], accept="bm90IHRoZSBhY2NlcHQ=")
    protocol.data_received(response)
    with pytest.raises(ConnectionError, match=reason):
        protocol.handshake.result()
    assert transport.closed and not protocol.is_open and protocol.opened == 0


async def test_frames_split_anywhere_and_every_length_form():
    messages = [b"x" * 5, b"y" * 125, b"z" * 126, b"m" * 300, b"w" * 65535, b"q" * 70000]
    stream = b"".join(server_frame(m) for m in messages)
    assert stream[2 + 5 + 2 + 125 + 1] == 126  # 16-bit length form
    assert b"\x81\x7f" in stream  # 64-bit length form (70000 bytes)
    rng = random.Random(7)
    for chunking in ("bytewise", "random"):
        protocol = Recorder()
        opened(protocol)
        if chunking == "bytewise":
            head = stream[:2000]  # byte by byte through the short and 16-bit frames
            for i in range(len(head)):
                protocol.data_received(head[i:i + 1])
            rest = stream[2000:]
        else:
            rest = stream
        pos = 0
        while pos < len(rest):
            step = rng.randint(1, 3000)
            protocol.data_received(rest[pos:pos + step])
            pos += step
        assert protocol.texts == messages, chunking
        assert protocol.violations == []


async def test_ping_gets_a_masked_pong_and_fragments_are_joined():
    protocol = Recorder()
    transport = opened(protocol)
    sent_before = len(transport.written)
    protocol.data_received(server_frame(b"are you there", opcode=0x9)
                           + server_frame(b"hel", opcode=0x1, fin=False)
                           + server_frame(b"", opcode=0xA)  # a pong in the middle is allowed
                           + server_frame(b"lo", opcode=0x0, fin=True))
    frames = unmask_client_frames(b"".join(transport.written[sent_before:]))
    assert frames == [(0xA, b"are you there")]
    assert transport.written[sent_before][1] & 0x80  # masked
    assert protocol.texts == [b"hello"]


async def test_close_frame_is_answered_and_masked_server_frames_are_refused():
    protocol = Recorder()
    transport = opened(protocol)
    protocol.data_received(server_frame((1000).to_bytes(2, "big"), opcode=0x8))
    assert protocol.close_code == 1000 and protocol.closed_by_server
    assert unmask_client_frames(transport.written[-1]) == [(0x8, (1000).to_bytes(2, "big"))]
    assert transport.closed and not protocol.is_open

    protocol = Recorder()
    transport = opened(protocol)
    protocol.data_received(b"\x81\x85" + b"\x01\x02\x03\x04" + b"hello")
    assert protocol.violations and "masked" in protocol.violations[0]
    assert transport.aborted and protocol.texts == []


def test_client_frames_use_every_length_form_and_the_zero_mask():
    for size in (0, 125, 126, 65535, 65536):
        frame = client_frame(b"a" * size)
        assert unmask_client_frames(frame) == [(0x1, b"a" * size)]
        header = len(frame) - size
        assert frame[header - 4:header] == b"\0\0\0\0"


# ---- the Twilio buffer model --------------------------------------------------------


def test_mark_is_due_when_the_audio_before_it_has_played():
    model = BufferModel()
    # 200 ms of audio in one burst at t=1: the first frame sets the schedule, the others
    # are early by 20, 40, ... ms
    assert [model.media(1.0, 160) for _ in range(10)] == pytest.approx(
        [-math.inf] + [-0.02 * k for k in range(1, 10)])
    assert model.mark(1.001, "m1") is False
    assert model.next_mark_due == pytest.approx(1.2)
    assert model.pop_marks(1.199) == []
    assert model.pop_marks(1.2) == ["m1"]
    # nothing playing any more: a mark is echoed at once
    assert model.mark(1.3, "m2") is True
    assert model.underruns == 0


def test_paced_frames_lateness_and_underruns():
    model = BufferModel()
    assert model.media(0.0, 160) == -math.inf
    assert model.media(0.02, 160) == 0.0
    # due at 0.04; the buffer ran dry at 0.04 too: 10 ms late and one underrun
    assert model.media(0.05, 160) == pytest.approx(0.01)
    assert model.underruns == 1
    # due at 0.06; the buffer holds audio until 0.07 (the run restarted at 0.05)
    assert model.media(0.07, 160) == pytest.approx(0.01)
    assert model.underruns == 1
    # a mark ends the utterance: silence after it is no underrun, the schedule restarts
    assert model.mark(0.071, "u1") is False
    assert model.media(0.5, 160) == -math.inf
    assert model.media(0.52, 160) == 0.0
    assert model.underruns == 1


def test_clear_echoes_pending_marks_and_starts_a_new_utterance():
    model = BufferModel()
    for _ in range(5):
        model.media(0.0, 160)
    model.mark(0.0, "a")
    for _ in range(5):
        model.media(0.0, 160)
    model.mark(0.0, "b")
    assert [name for _, name in model.pending] == ["a", "b"]
    assert model.clear(0.05) == ["a", "b"]
    assert model.pending == type(model.pending)() and model.buffered_seconds(0.05) == 0.0
    assert model.media(0.3, 160) == -math.inf  # a new utterance, no underrun
    assert model.underruns == 0


def test_buffer_model_agrees_with_the_faithful_simulator():
    """Random arrivals, marks and clears: the same underruns, mark times and lateness as
    gateway.carriers.twilio.sim's TwilioPlayoutModel and TwilioCallResult.frame_timing."""
    rng = random.Random(42)
    sid = "MZ" + "0" * 32
    sim = TwilioPlayoutModel(sid, now=0.0)
    model = BufferModel()
    payload = base64.b64encode(b"\x7f" * 160).decode()
    t = 0.0
    lateness = []
    due: dict[str, float] = {}
    for i in range(600):
        t += rng.choice([0.0, 0.0, 0.005, 0.02, 0.02, 0.021, 0.03, 0.06])
        model.pop_marks(t)  # the call's timer would have echoed these by now
        roll = rng.random()
        if roll < 0.05:
            sim.receive_text(json.dumps({"event": "mark", "streamSid": sid,
                                         "mark": {"name": f"m{i}"}}), t)
            due[f"m{i}"] = t if model.mark(t, f"m{i}") else model.pending[-1][0]
        elif roll < 0.07:
            sim.receive_text(json.dumps({"event": "clear", "streamSid": sid}), t)
            for name in model.clear(t):
                due[name] = t
        else:
            sim.receive_text(json.dumps({"event": "media", "streamSid": sid,
                                         "media": {"payload": payload}}), t)
            lateness.append(max(0.0, model.media(t, 160)))
    sim.advance(t + 100.0)
    assert sim.violations == []
    assert model.underruns == sim.underruns > 0
    echoed = dict((name, at) for at, name in sim.marks_echoed)
    assert echoed.keys() == due.keys()
    for name, at in echoed.items():
        assert due[name] == pytest.approx(at, abs=1e-6), name
    result = TwilioCallResult(call_sid="CA", stream_sid=sid, frames=list(sim.arrivals),
                              utterance_starts=list(sim.utterance_starts))
    timing = result.frame_timing()
    assert timing.count == len(lateness)
    lateness.sort()
    assert max(lateness) == pytest.approx(timing.max, abs=1e-9)
    assert lateness[len(lateness) // 2 - 1] <= timing.p50 <= lateness[len(lateness) // 2 + 1]


# ---- one call, without sockets -------------------------------------------------------


def make_call() -> tuple[TwilioLoadCall, FakeTransport, _LoadRun]:
    run = _LoadRun("ws://127.0.0.1:1", calls=1, route="demo", duration=1.0,
                   ramp_per_second=10.0, interrupt_after=None, interrupt_fraction=0.0,
                   measure_from=0.0, phases=1, control_token=None, connect_timeout=1.0)
    run.t0 = 0.0
    call = TwilioLoadCall(run, 0, run.path)
    transport = opened(call)
    return call, transport, run


def gateway_media(call: TwilioLoadCall, audio: bytes) -> bytes:
    return server_frame(json.dumps(
        {"event": "media", "streamSid": call.stream_sid,
         "media": {"payload": base64.b64encode(audio).decode()}}, separators=(",", ":")).encode())


async def test_call_sends_connected_start_and_media_and_measures_frames():
    call, transport, run = make_call()
    sent = unmask_client_frames(b"".join(transport.written[1:]))
    assert [json.loads(p)["event"] for _, p in sent] == ["connected", "start"]
    start = json.loads(sent[1][1])
    assert start["start"]["callSid"] == call.call_sid and start["streamSid"] == call.stream_sid
    assert run.groups[0] == [call]

    call.send_media()
    call.send_media()
    media = [json.loads(p) for _, p in unmask_client_frames(b"".join(transport.written[-2:]))]
    assert [(m["sequenceNumber"], m["media"]["chunk"], m["media"]["timestamp"]) for m in media] \
        == [("3", "1", "0"), ("4", "2", "20")]
    assert base64.b64decode(media[0]["media"]["payload"]) == b"\xff" * 160

    call.data_received(gateway_media(call, b"\x01" * 160))  # fast path
    spaced = json.dumps({"event": "media", "streamSid": call.stream_sid,
                         "media": {"payload": base64.b64encode(b"\x02" * 160).decode()}})
    call.data_received(server_frame(spaced.encode()))  # another shape: parsed as JSON
    call.data_received(gateway_media(call, b"\x03" * 100))  # wrong size
    assert call.frames == 3 and call.audio_bytes == 420
    assert call.violations == 1 and "100 bytes" in run.violation_samples[0]
    other = json.dumps({"event": "media", "streamSid": "MZother",
                        "media": {"payload": binascii.b2a_base64(b"1" * 160).decode()}})
    call.data_received(server_frame(other.encode()))
    assert call.frames == 3 and call.violations == 2  # wrong streamSid: dropped
    assert sum(run.hist) == 3

    # the gateway may write several frames at once, and chunks may end mid-frame
    mark = server_frame(json.dumps({"event": "mark", "streamSid": call.stream_sid,
                                    "mark": {"name": "u1"}}).encode())
    two = gateway_media(call, b"\x04" * 160) * 2
    call.data_received(two + mark + two[:100])
    assert call.frames == 5 and len(call.model.pending) == 1
    call.data_received(two[100:])
    assert call.frames == 7 and call.audio_bytes == 420 + 4 * 160 and call.violations == 2
    assert sum(run.hist) == 7


async def test_call_echoes_a_mark_after_its_audio_and_pending_marks_on_clear():
    call, transport, _run = make_call()
    for _ in range(3):  # 60 ms of audio
        call.data_received(gateway_media(call, b"\x01" * 160))
    mark = {"event": "mark", "streamSid": call.stream_sid, "mark": {"name": "utt-1"}}
    before = len(transport.written)
    call.data_received(server_frame(json.dumps(mark).encode()))
    assert len(transport.written) == before  # not yet: the audio is still playing
    await asyncio.sleep(0.1)
    echoes = [json.loads(p) for _, p in unmask_client_frames(b"".join(transport.written[before:]))]
    assert [(e["event"], e["mark"]["name"], e["streamSid"]) for e in echoes] \
        == [("mark", "utt-1", call.stream_sid)]

    for _ in range(50):  # one second of audio, then a mark, then a clear
        call.data_received(gateway_media(call, b"\x01" * 160))
    mark["mark"]["name"] = "utt-2"
    call.data_received(server_frame(json.dumps(mark).encode()))
    before = len(transport.written)
    call.interrupt_sent_at = call.last_media_at - 0.01
    call.data_received(server_frame(json.dumps({"event": "clear",
                                                "streamSid": call.stream_sid}).encode()))
    echoes = [json.loads(p) for _, p in unmask_client_frames(b"".join(transport.written[before:]))]
    assert [e["mark"]["name"] for e in echoes] == ["utt-2"]  # at once
    assert call.clears == 1 and call._mark_timer is None
    assert call.barge_in == pytest.approx(0.01) and call.clear_latency >= 0.01
    assert call.violations == 0 and call.model.underruns == 0


def test_only_loopback_urls():
    assert _parse_url("ws://127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert _parse_url("ws://localhost:81") == ("127.0.0.1", 81)
    assert _parse_url("ws://[::1]:82") == ("::1", 82)
    for url in ("ws://example.com:8080", "ws://10.0.0.1:8080", "wss://127.0.0.1:443"):
        with pytest.raises(ValueError):
            _parse_url(url)


# ---- a real run -----------------------------------------------------------------------


async def test_three_calls_into_the_real_gateway_with_barge_in():
    gw = await start_gateway(base_config())
    try:
        # the interrupt waits long enough for a greeting even on a busy machine (the suite
        # runs on four workers sharing two cores)
        result = await run_load(gw.ws_url, calls=3, route="demo", duration=6.0,
                                interrupt_after=4.0, interrupt_fraction=1.0)
    finally:
        await gw.session.close()
        await gw.runner.cleanup()

    assert result.calls_connected == 3 and result.calls_failed == 0, result.failure_reasons
    assert result.violations == 0, result.violation_samples
    assert result.frames_received > 0
    assert result.audio_seconds_received * 8000 == result.frames_received * 160  # 160 B each
    # The embedded voice synthesizes on two threads: with three calls starting at once the
    # last one may not speak before the interrupt at 4 s cancels its greeting.
    assert 1 <= len(result.first_media_latency) <= 3
    assert all(0 < latency < 6.0 for latency in result.first_media_latency)
    assert result.lateness_samples == result.frames_received
    assert 0 <= result.lateness_p50 <= result.lateness_p99 <= result.lateness_max < 1.0
    assert result.lead_min is not None
    assert result.timeline and result.timeline[-1]["calls"] == 3
    assert result.messages_sent > 3 * 150  # 50 media messages a second per call
    assert result.generator_cpu_seconds > 0
    # barge-in: every call got its clear, quickly, and no media after the interrupt
    assert result.interrupts_sent == 3 and result.interrupts_failed == 0
    assert result.clears_received == 3
    assert len(result.barge_in) == 3 and all(0 <= b < 1.0 for b in result.barge_in)
    assert len(result.clear_latency) == 3 and all(0 < c < 1.0 for c in result.clear_latency)
    assert result.calls_closed_by_gateway == 0
