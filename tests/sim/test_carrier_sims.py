"""Every simulated carrier against a small gateway stand-in over real loopback sockets.

The stand-in plays the gateway's role by writing each carrier's documented outbound
messages itself (it does not use gateway/carriers), and records what the simulator sends.
Timing bounds are deliberately wide: these tests run on a shared machine.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import struct
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from aiohttp import WSMsgType, WSServerHandshakeError, web

from gateway.cli import main as cli_main
from gateway.http.loopback import serve_on_loopback
from gateway.carriers.registry import CARRIERS
from gateway.sim.carriers import CallClosedError, make_call, media_url
from gateway.sim.carriers.formats import WireFormat
from gateway.sim.dial import dial_and_report
from gateway.carriers.twilio.sim import twilio_signature
from telcodecs import read_wav

ALL = list(CARRIERS)
WITH_MARKS = [c for c in ALL if c != "audiosocket"]
LEAD = 0.2


def tone(fmt: WireFormat, seconds: float, hz: float = 440.0) -> bytes:
    t = np.arange(int(fmt.sample_rate * seconds)) / fmt.sample_rate
    return fmt.from_pcm16((8000 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


# ---- the gateway's end of a connection -------------------------------------------------


@dataclass
class Side:
    carrier: str
    headers: dict[str, str]
    path: str
    query: dict[str, str]
    send_raw: Callable[[str | bytes], Awaitable[None]]
    close: Callable[..., Awaitable[Any]]
    transport: Any = None  # to write hand-made WebSocket frames
    ws: web.WebSocketResponse | None = None
    #: ``(time, kind, data)``: kind text, binary, ping, pong, or tlv with data (kind, payload)
    received: list[tuple[float, str, Any]] = field(default_factory=list)
    start: dict[str, Any] | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None

    @property
    def wire(self) -> Wire:
        return WIRES[self.carrier]

    async def send(self, *messages: str | bytes) -> float:
        for message in messages:
            await self.send_raw(message)
        return time.monotonic()

    def record(self, kind: str, data: Any) -> None:
        self.received.append((time.monotonic(), kind, data))
        if self.start is None:
            self.start = parse_start(self)
            if self.start is not None:
                self.started.set()

    def texts(self) -> list[str]:
        return [data for _, kind, data in self.received if kind == "text"]

    def jsons(self) -> list[dict]:
        out = []
        for text in self.texts():
            try:
                out.append(json.loads(text))
            except ValueError:
                pass
        return out

    def of_kind(self, kind: str) -> list[tuple[float, Any]]:
        return [(t, data) for t, k, data in self.received if k == kind]

    def echoes(self) -> list[tuple[float, str]]:
        return [(t, name) for t, kind, data in self.received
                if (name := self.wire.echo_name(kind, data)) is not None]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("gateway side: condition not met in time")
            await asyncio.sleep(0.01)


def parse_start(side: Side) -> dict[str, Any] | None:
    """Call id, stream id and announced format from the carrier's first messages."""
    if side.carrier == "audiosocket":
        for kind, payload in (data for _, k, data in side.received if k == "tlv"):
            if kind == 0x01:
                return {"call_id": str(uuid.UUID(bytes=payload)), "format": WireFormat("l16", 8000)}
        return None
    for text in side.texts():
        if side.carrier == "asterisk":
            if text.startswith("MEDIA_START "):
                fields = dict(item.split(":", 1) for item in text.split()[1:])
            elif text.startswith("{") and json.loads(text).get("event") == "MEDIA_START":
                fields = json.loads(text)
            else:
                continue
            encoding, rate = {"ulaw": ("mulaw", 8000), "alaw": ("alaw", 8000),
                              "slin": ("l16", 8000), "slin16": ("l16", 16000),
                              "slin24": ("l16", 24000)}[fields["format"]]
            return {"call_id": fields["channel_id"], "fields": fields,
                    "format": WireFormat(encoding, rate)}
        message = json.loads(text)
        event = message.get("event")
        if side.carrier in ("twilio", "signalwire") and event == "start":
            return {"call_id": message["start"]["callSid"], "stream_id": message["streamSid"],
                    "message": message, "format": WireFormat("mulaw", 8000)}
        if side.carrier == "telnyx" and event == "start":
            media = message["start"]["media_format"]
            encoding = {"PCMU": "mulaw", "PCMA": "alaw", "L16": "l16"}[media["encoding"]]
            return {"call_id": message["start"]["call_control_id"], "message": message,
                    "stream_id": message["stream_id"],
                    "format": WireFormat(encoding, media["sample_rate"], "big")}
        if side.carrier == "plivo" and event == "start":
            media = message["start"]["mediaFormat"]
            encoding = {"audio/x-mulaw": "mulaw", "audio/x-l16": "l16"}[media["encoding"]]
            return {"call_id": message["start"]["callId"],
                    "stream_id": message["start"]["streamId"], "message": message,
                    "format": WireFormat(encoding, media["sampleRate"])}
        if side.carrier == "vonage" and event == "websocket:connected":
            rate = int(message["content-type"].split("rate=")[1])
            return {"call_id": message["call_uuid"], "message": message,
                    "format": WireFormat("l16", rate)}
        if side.carrier == "exotel" and event == "start":
            rate = int(message["start"]["media_format"]["sample_rate"])
            return {"call_id": message["start"]["call_sid"], "stream_id": message["stream_sid"],
                    "message": message, "format": WireFormat("l16", rate)}
    return None


# ---- what the gateway writes, per carrier (docs/protocols/carriers.md §1.5 to §6) --


class Wire:
    chunk_seconds = 0.02

    def audio(self, side: Side, chunk: bytes) -> list[str | bytes]:
        raise NotImplementedError

    def mark(self, side: Side, name: str) -> str | bytes:
        raise NotImplementedError

    def clear(self, side: Side) -> str | bytes:
        raise NotImplementedError

    def echo_name(self, kind: str, data: Any) -> str | None:
        message = _json(kind, data)
        return message["mark"]["name"] if message and message.get("event") == "mark" else None

    def dtmf(self, kind: str, data: Any) -> str | None:
        message = _json(kind, data)
        return message["dtmf"]["digit"] if message and message.get("event") == "dtmf" else None


def _json(kind: str, data: Any) -> dict | None:
    if kind != "text" or not data.startswith("{"):
        return None
    return json.loads(data)


class TwilioWire(Wire):
    def audio(self, side, chunk):
        return [json.dumps({"event": "media", "streamSid": side.start["stream_id"],
                            "media": {"payload": b64(chunk)}})]

    def mark(self, side, name):
        return json.dumps({"event": "mark", "streamSid": side.start["stream_id"],
                           "mark": {"name": name}})

    def clear(self, side):
        return json.dumps({"event": "clear", "streamSid": side.start["stream_id"]})


class TelnyxWire(Wire):
    def audio(self, side, chunk):
        return [json.dumps({"event": "media", "media": {"payload": b64(chunk)}})]

    def mark(self, side, name):
        return json.dumps({"event": "mark", "mark": {"name": name}})

    def clear(self, side):
        return '{"event":"clear"}'


class PlivoWire(Wire):
    def audio(self, side, chunk):
        fmt = side.start["format"]
        media = {"contentType": f"audio/x-{'mulaw' if fmt.encoding == 'mulaw' else 'l16'}",
                 "sampleRate": fmt.sample_rate, "payload": b64(chunk)}
        return [json.dumps({"event": "playAudio", "media": media})]

    def mark(self, side, name):
        return json.dumps({"event": "checkpoint", "streamId": side.start["stream_id"],
                           "name": name})

    def clear(self, side):
        return json.dumps({"event": "clearAudio", "streamId": side.start["stream_id"]})

    def echo_name(self, kind, data):
        message = _json(kind, data)
        return message["name"] if message and message.get("event") == "playedStream" else None


class VonageWire(Wire):
    def audio(self, side, chunk):
        size = side.start["format"].frame_bytes
        return [chunk[i : i + size] for i in range(0, len(chunk), size)]

    def mark(self, side, name):
        return json.dumps({"action": "notify", "payload": {"name": name}})

    def clear(self, side):
        return '{"action":"clear"}'

    def echo_name(self, kind, data):
        message = _json(kind, data)
        ok = message and message.get("event") == "websocket:notify"
        return message["payload"]["name"] if ok else None

    def dtmf(self, kind, data):
        message = _json(kind, data)
        return message["digit"] if message and message.get("event") == "websocket:dtmf" else None


class ExotelWire(Wire):
    chunk_seconds = 0.2  # 3200 B at 8 kHz: Exotel's minimum

    def audio(self, side, chunk):
        return [json.dumps({"event": "media", "stream_sid": side.start["stream_id"],
                            "media": {"payload": b64(chunk)}})]

    def mark(self, side, name):
        return json.dumps({"event": "mark", "stream_sid": side.start["stream_id"],
                           "mark": {"name": name}})

    def clear(self, side):
        return json.dumps({"event": "clear", "stream_sid": side.start["stream_id"]})


class AsteriskWire(Wire):
    def audio(self, side, chunk):
        size = side.start["format"].frame_bytes * 400  # well under 65 500 bytes
        return [chunk[i : i + size] for i in range(0, len(chunk), size)]

    def mark(self, side, name):
        return f"MARK_MEDIA {name}"

    def clear(self, side):
        return "FLUSH_MEDIA"

    def echo_name(self, kind, data):
        prefix = "MEDIA_MARK_PROCESSED "
        return data[len(prefix):] if kind == "text" and data.startswith(prefix) else None

    def dtmf(self, kind, data):
        if kind == "text" and data.startswith("DTMF_END "):
            return dict(item.split(":", 1) for item in data.split()[1:])["digit"]
        return None


class AudioSocketWire(Wire):
    def audio(self, side, chunk):
        return [struct.pack("!BH", 0x10, 320) + chunk[i : i + 320]
                for i in range(0, len(chunk), 320)]

    def echo_name(self, kind, data):
        return None

    def dtmf(self, kind, data):
        return data[1].decode() if kind == "tlv" and data[0] == 0x03 else None


WIRES: dict[str, Wire] = {
    "twilio": TwilioWire(), "signalwire": TwilioWire(), "telnyx": TelnyxWire(),
    "plivo": PlivoWire(), "vonage": VonageWire(), "exotel": ExotelWire(),
    "asterisk": AsteriskWire(), "audiosocket": AudioSocketWire()}


async def send_paced(side: Side, audio: bytes, lead: float = LEAD) -> None:
    """``audio`` in the carrier's legal chunks, each sent ``lead`` s before it is due."""
    wire = side.wire
    chunk = round(side.start["format"].bytes_per_second * wire.chunk_seconds)
    t0 = time.monotonic()
    for index, offset in enumerate(range(0, len(audio), chunk)):
        await sleep_until(t0 + index * wire.chunk_seconds - lead)
        await side.send(*wire.audio(side, audio[offset : offset + chunk]))


# ---- the stand-in gateway ------------------------------------------------------------

Script = Callable[[Side], Awaitable[None]]


class FakeGateway:
    """``/v1/media/{carrier}[/...]`` WebSockets and an AudioSocket TCP port on 127.0.0.1;
    runs ``script`` on each connection once the carrier's start message has arrived."""

    def __init__(self, script: Script | None) -> None:
        self.script = script
        self.sides: list[Side] = []
        self.script_errors: list[BaseException] = []
        self.port = self.tcp_port = 0
        self._speeches: list[asyncio.Task] = []

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/media/{carrier}", self._websocket)
        app.router.add_get("/v1/media/{carrier}/{tail:.*}", self._websocket)
        app.router.add_get("/v1/calls/{call_id}", self._get_call)
        app.router.add_post("/v1/calls/{call_id}/speak", self._speak)
        self._runner, self.port = await serve_on_loopback(app, handle_signals=False)
        self._tcp = await asyncio.start_server(self._tcp_connection, "127.0.0.1", 0)
        self.tcp_port = self._tcp.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for speech in self._speeches:
            speech.cancel()
        self._tcp.close()
        await self._runner.cleanup()

    def base_url(self, carrier: str) -> str:
        if carrier == "audiosocket":
            return f"tcp://127.0.0.1:{self.tcp_port}"
        return f"ws://127.0.0.1:{self.port}"

    @property
    def side(self) -> Side:
        assert self.sides, "no call reached the gateway"
        return self.sides[-1]

    def _find(self, call_id: str) -> Side:
        for side in self.sides:
            if side.start and side.start["call_id"] == call_id and not side.closed.is_set():
                return side
        raise web.HTTPNotFound()

    async def _get_call(self, request: web.Request) -> web.Response:
        self._find(request.match_info["call_id"])
        return web.json_response({"id": request.match_info["call_id"]})

    async def _speak(self, request: web.Request) -> web.Response:
        """A control API stand-in: says 0.6 s of tone (and a mark) for any text."""
        side = self._find(request.match_info["call_id"])

        async def say() -> None:
            no_buffer = side.carrier == "audiosocket"
            await send_paced(side, tone(side.start["format"], 0.6), 0.0 if no_buffer else LEAD)
            if not no_buffer:
                await side.send(side.wire.mark(side, "speech-1"))

        self._speeches.append(asyncio.create_task(say()))
        return web.json_response({"speech_id": "speech-1"}, status=202)

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, autoping=False, max_msg_size=0)
        await ws.prepare(request)

        async def send(message: str | bytes) -> None:
            await (ws.send_str(message) if isinstance(message, str) else ws.send_bytes(message))

        side = Side(request.match_info["carrier"], dict(request.headers), request.path,
                    dict(request.query), send, ws.close, request.transport, ws)

        async def read() -> None:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    side.record("text", message.data)
                elif message.type is WSMsgType.BINARY:
                    side.record("binary", message.data)
                elif message.type is WSMsgType.PING:
                    side.record("ping", message.data)
                    await ws.pong(message.data)
                elif message.type is WSMsgType.PONG:
                    side.record("pong", message.data)
            side.close_code = ws.close_code

        await self._serve(side, read())
        return ws

    async def _tcp_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        async def send(message: bytes) -> None:
            writer.write(message)
            await writer.drain()

        async def close(*_: Any) -> None:
            writer.close()

        side = Side("audiosocket", {}, "", {}, send, close, writer.transport)

        async def read() -> None:
            while True:
                try:
                    head = await reader.readexactly(3)
                    payload = await reader.readexactly(struct.unpack("!H", head[1:])[0])
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                side.record("tlv", (head[0], payload))

        await self._serve(side, read())
        writer.close()

    async def _serve(self, side: Side, read: Awaitable[None]) -> None:
        self.sides.append(side)
        reader = asyncio.ensure_future(read)
        started = asyncio.ensure_future(side.started.wait())
        script = None
        try:
            await asyncio.wait({reader, started}, timeout=5.0, return_when=asyncio.FIRST_COMPLETED)
            if side.started.is_set() and self.script is not None:
                script = asyncio.create_task(self.script(side))
            await reader
        finally:
            side.closed.set()
            started.cancel()
            if script is not None:
                if not script.done():
                    script.cancel()
                (outcome,) = await asyncio.gather(script, return_exceptions=True)
                if isinstance(outcome, Exception):
                    self.script_errors.append(outcome)
            reader.cancel()


@pytest.fixture
async def fake_gateway():
    gateways: list[FakeGateway] = []

    async def start(script: Script | None = None) -> FakeGateway:
        gateway = FakeGateway(script)
        await gateway.start()
        gateways.append(gateway)
        return gateway

    yield start
    for gateway in gateways:
        await gateway.stop()
    for gateway in gateways:
        assert not gateway.script_errors, f"gateway script failed: {gateway.script_errors!r}"


def call_options(carrier: str) -> dict[str, Any]:
    """Tolerances for a loaded machine where the carrier has no buffer: a frame may be up to
    100 ms late, or 18 ms early after a late one, before it counts (the model tests check
    the exact rules on a fake clock)."""
    if carrier == "audiosocket":
        return {"burst_tolerance": 0.018, "underrun_tolerance": 0.1}
    return {}


# ---- every carrier -----------------------------------------------------------------------

FORMAT_CASES = [(c, None) for c in ALL] + [
    ("telnyx", "l16/16000"), ("telnyx", "alaw/8000"), ("plivo", "l16/16000"),
    ("vonage", "l16/8000"), ("vonage", "l16/24000"), ("exotel", "l16/16000"),
    ("asterisk", "l16/16000"), ("asterisk", "alaw/8000"),
]


@pytest.mark.parametrize("carrier, media_format", FORMAT_CASES)
async def test_paced_audio_is_heard_and_the_mark_echoes_after_playout(
        fake_gateway, carrier, media_format):
    has_marks = carrier in WITH_MARKS
    lead = LEAD if carrier != "audiosocket" else 0.0

    async def script(side):
        await send_paced(side, tone(side.start["format"], 1.0), lead)
        if has_marks:
            await side.send(side.wire.mark(side, "utt-1"))

    gateway = await fake_gateway(script)
    call = make_call(carrier, gateway.base_url(carrier), media_format=media_format,
                     **call_options(carrier))
    async with call:
        if has_marks:
            assert await call.wait_for_mark(timeout=5) == "utt-1"
        else:
            with pytest.raises(NotImplementedError):
                await call.wait_for_mark(timeout=0.1)
        await call.wait_idle(quiet=0.15, timeout=5)
    result = call.result
    side = gateway.side

    fmt = call.format
    assert side.start["format"] == fmt  # the stream announced the format it uses
    assert side.start["call_id"] == call.call_id == result.call_id
    assert result.sample_rate == fmt.sample_rate
    assert result.heard == tone(fmt, 1.0)
    reference = np.frombuffer(fmt.to_pcm16(tone(fmt, 1.0)), "<i2")
    assert np.array_equal(np.frombuffer(result.heard_pcm16(), "<i2"), reference)
    assert result.violations == [] and result.underruns == 0 and result.bursts == []
    assert not result.closed_by_gateway and result.carrier_hangup is None
    assert 0.0 < result.first_audio_latency < 1.0
    if has_marks:
        echo_at = result.marks_sent_back[0][0]
        assert [name for _, name in result.marks_sent_back] == ["utt-1"]
        assert 0.9 <= echo_at - result.first_media_at <= 1.6  # after ≈1 s of playout
        assert [name for _, name in side.echoes()] == ["utt-1"]
    else:
        gaps = np.diff([t for t, _ in result.frames])
        assert len(result.frames) == 50 and 0.01 < np.median(gaps) < 0.03  # on the 20 ms clock


CLEAR_ACKS = {"plivo": "clearedAudio", "vonage": "websocket:cleared"}
ECHO_ON_CLEAR = {"twilio", "signalwire", "telnyx", "exotel"}


@pytest.mark.parametrize("carrier", WITH_MARKS)
async def test_clear_mid_utterance_per_carrier(fake_gateway, carrier):
    cleared_at = []

    async def script(side):
        audio = tone(side.start["format"], 1.0)
        chunk = round(side.start["format"].bytes_per_second * side.wire.chunk_seconds)
        for offset in range(0, len(audio), chunk):  # the whole second at once
            await side.send(*side.wire.audio(side, audio[offset : offset + chunk]))
        await side.send(side.wire.mark(side, "utt-1"))
        await asyncio.sleep(0.3)
        cleared_at.append(await side.send(side.wire.clear(side)))

    gateway = await fake_gateway(script)
    async with make_call(carrier, gateway.base_url(carrier)) as call:
        await call.wait_for_clear(timeout=5)
        heard_at_clear = len(call.result.heard)
        await asyncio.sleep(0.3)
        assert len(call.result.heard) == heard_at_clear  # nothing plays after the clear
        side = gateway.side
        if carrier in ECHO_ON_CLEAR:
            await side.wait_for(lambda: side.echoes())
        elif carrier in CLEAR_ACKS:
            await side.wait_for(lambda: any(m.get("event") == CLEAR_ACKS[carrier]
                                            for m in side.jsons()))
    result = call.result

    audio = tone(call.format, 1.0)
    assert 0.15 <= result.heard_seconds <= 0.8
    assert result.heard == audio[: len(result.heard)]
    assert result.cleared_bytes == len(audio) - len(result.heard)
    assert result.violations == []
    if carrier in ECHO_ON_CLEAR:
        assert [name for _, name in result.marks_sent_back] == ["utt-1"]
        assert result.marks_sent_back[0][0] - result.clears[0] < 0.25
        assert side.echoes()[0][0] - cleared_at[0] < 0.25
    else:
        assert result.marks_sent_back == [] and side.echoes() == []
        assert [name for _, name in result.marks_dropped] == ["utt-1"]
    if carrier in CLEAR_ACKS:
        assert [kind for _, kind in result.notices_sent] == [CLEAR_ACKS[carrier]]
    else:
        assert result.notices_sent == []


@pytest.mark.parametrize("carrier", ALL)
async def test_dtmf_reaches_the_gateway(fake_gateway, carrier):
    gateway = await fake_gateway()
    async with make_call(carrier, gateway.base_url(carrier)) as call:
        await gateway.side.wait_for(lambda: gateway.side.started.is_set())
        await call.send_dtmf("5#")
        with pytest.raises(ValueError):
            await call.send_dtmf("x")
        side = gateway.side

        def digits() -> list[str]:
            return [digit for _, kind, data in side.received
                    if (digit := side.wire.dtmf(kind, data))]

        await side.wait_for(lambda: len(digits()) == 2)
    assert digits() == ["5", "#"]


GOODBYES = {"twilio": "stop", "signalwire": "stop", "telnyx": "stop", "exotel": "stop"}


@pytest.mark.parametrize("carrier", ALL)
async def test_hangup_ends_the_stream_like_the_carrier(fake_gateway, carrier):
    gateway = await fake_gateway()
    call = make_call(carrier, gateway.base_url(carrier))
    async with call:
        await gateway.side.wait_for(lambda: len(gateway.side.received) >= 5)
        await call.hangup()
        await call.hangup()  # idempotent
        with pytest.raises(CallClosedError):
            await call.send_dtmf("1")
    side = gateway.side
    await asyncio.wait_for(side.closed.wait(), 5)
    assert not call.result.closed_by_gateway and call.result.ended_at is not None
    _, _kind, last = side.received[-1]
    if carrier == "audiosocket":
        assert last == (0x00, b"")  # kind 0x00 hangup, then the TCP close
    elif carrier in GOODBYES:
        stop = json.loads(last)
        assert stop["event"] == "stop"
        if carrier == "exotel":
            assert stop["stop"]["reason"] == "callended"
    else:  # Plivo, Vonage, Asterisk: a bare close, no stop event
        assert all(m.get("event") != "stop" for m in side.jsons())
    if carrier != "audiosocket":
        assert side.close_code == 1000


@pytest.mark.parametrize("carrier", ALL)
async def test_a_dropped_call_vanishes_without_a_goodbye(fake_gateway, carrier):
    gateway = await fake_gateway()
    call = make_call(carrier, gateway.base_url(carrier))
    async with call:
        await gateway.side.wait_for(lambda: len(gateway.side.received) >= 5)
        await call.drop()
    side = gateway.side
    await asyncio.wait_for(side.closed.wait(), 5)
    assert all(m.get("event") != "stop" for m in side.jsons())
    if carrier == "audiosocket":
        assert all(kind != 0x00 for _, (kind, _) in side.of_kind("tlv"))
    else:
        assert side.close_code == 1006  # no close frame: the connection just went away
    assert not call.result.closed_by_gateway


@pytest.mark.parametrize("carrier", ALL)
async def test_the_gateway_ending_the_call_is_recorded_not_raised(fake_gateway, carrier):
    async def script(side):
        await send_paced(side, tone(side.start["format"], 1.0), lead=1.0)  # all at once
        await asyncio.sleep(0.2)
        if carrier == "audiosocket":
            await side.send(struct.pack("!BH", 0x00, 0))  # hangup
        elif carrier == "asterisk":
            await side.send("HANGUP")
        else:
            await side.close()

    gateway = await fake_gateway(script)
    call = make_call(carrier, gateway.base_url(carrier))
    async with call:
        await call.wait_ended(timeout=5)
        with pytest.raises(CallClosedError, match="gateway closed"):
            await call.wait_for_media(frames=10_000, timeout=1)
        frames_sent = call.result.inbound_frames_sent
        await asyncio.sleep(0.1)
        assert call.result.inbound_frames_sent == frames_sent  # the caller audio stopped
    result = call.result
    assert result.closed_by_gateway and result.carrier_hangup is None
    assert result.violations == []
    assert 0 < len(result.heard) < len(tone(call.format, 1.0))
    assert result.discarded_at_close_bytes + len(result.heard) == len(tone(call.format, 1.0))
    await asyncio.wait_for(gateway.side.closed.wait(), 5)


@pytest.mark.parametrize("carrier", [c for c in ALL if c != "audiosocket"])
async def test_a_refused_upgrade_raises_the_handshake_error(carrier):
    async def refuse(request):
        raise web.HTTPUnauthorized()

    app = web.Application()
    app.router.add_get("/v1/media/{tail:.*}", refuse)
    runner, port = await serve_on_loopback(app)
    try:
        with pytest.raises(WSServerHandshakeError) as info:
            async with make_call(carrier, f"ws://127.0.0.1:{port}"):
                pass
        assert info.value.status == 401
    finally:
        await runner.cleanup()


# ---- per carrier: what the stream looks like ---------------------------------------------


async def first_messages(fake_gateway, carrier, count, **options):
    gateway = await fake_gateway()
    async with make_call(carrier, gateway.base_url(carrier), route="demo", token="tok",
                         **options) as call:
        await gateway.side.wait_for(lambda: len(gateway.side.received) >= count)
    return call, gateway.side


async def test_telnyx_stream_shape_and_reordering(fake_gateway):
    call, side = await first_messages(fake_gateway, "telnyx", 14, reorder_every=4,
                                      custom_parameters={"tenant": "acme"})
    messages = side.jsons()
    assert side.path == "/v1/media/telnyx/demo/tok"
    assert messages[0] == {"event": "connected", "version": "1.0.0"}
    start = messages[1]
    assert start["event"] == "start" and start["stream_id"] == call.stream_id
    assert start["start"]["call_control_id"] == call.call_id and call.call_id.startswith("v3:")
    assert start["start"]["media_format"] == {"encoding": "PCMU", "sample_rate": 8000,
                                              "channels": 1}
    assert start["start"]["custom_parameters"] == {"tenant": "acme"}
    chunks = [int(m["media"]["chunk"]) for m in messages if m["event"] == "media"]
    assert chunks[:8] == [1, 2, 4, 3, 5, 6, 8, 7]  # frames 3 and 4 of every 4 swapped
    assert all(isinstance(m["sequence_number"], str) for m in messages[1:])
    assert all(len(base64.b64decode(m["media"]["payload"])) == 160
               for m in messages if m["event"] == "media")


async def test_telnyx_sends_error_frames_for_bad_messages(fake_gateway):
    async def script(side):
        await side.send("not json", '{"event":"media","media":{"payload":"%%%"}}')

    gateway = await fake_gateway(script)
    async with make_call("telnyx", gateway.base_url("telnyx")) as call:
        side = gateway.side
        await side.wait_for(lambda: sum(m.get("event") == "error" for m in side.jsons()) == 2)
    errors = [m for m in side.jsons() if m.get("event") == "error"]
    assert [e["payload"]["code"] for e in errors] == [100003, 100004]
    assert errors[0]["payload"]["title"] == "malformed_frame"
    assert errors[0]["stream_id"] == call.stream_id
    assert [kind for _, kind in call.result.notices_sent] == ["error 100003", "error 100004"]
    assert [code for code, _ in call.result.violations] == ["100003", "100004"]


async def test_telnyx_l16_byte_order_is_a_parameter(fake_gateway):
    async def script(side):  # the gateway sends little-endian L16 on a big-endian stream
        pcm = tone(WireFormat("l16", 16000), 0.2)
        await side.send(*side.wire.audio(side, pcm))

    gateway = await fake_gateway(script)
    async with make_call("telnyx", gateway.base_url("telnyx"), media_format="l16/16000") as call:
        await call.wait_for_media(1)
        await call.wait_idle(quiet=0.1)
    assert call.format.byteorder == "big"
    decoded = np.frombuffer(call.result.heard_pcm16(), "<i2").astype(float)
    reference = np.frombuffer(tone(WireFormat("l16", 16000), 0.2), "<i2").astype(float)
    assert abs(np.corrcoef(decoded, reference)[0, 1]) < 0.5  # heard as noise: wrong order

    async with make_call("telnyx", gateway.base_url("telnyx"), media_format="l16/16000",
                         telnyx_l16_byteorder="little") as call:
        await call.wait_for_media(1)
        await call.wait_idle(quiet=0.1)
    decoded = np.frombuffer(call.result.heard_pcm16(), "<i2").astype(float)
    assert np.corrcoef(decoded, reference)[0, 1] > 0.99


async def test_plivo_stream_shape(fake_gateway):
    _call, side = await first_messages(fake_gateway, "plivo", 4, media_format="l16/16000",
                                      custom_parameters={"userId": "12345"})
    messages = side.jsons()
    start = messages[0]
    assert start["event"] == "start" and start["sequenceNumber"] == 1  # no connected; numbers
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-l16", "sampleRate": 16000}
    assert start["extra_headers"] == "userId=12345"
    media = messages[1]
    assert media["sequenceNumber"] == 2 and media["media"]["chunk"] == 1
    assert isinstance(media["media"]["timestamp"], str)
    assert len(base64.b64decode(media["media"]["payload"])) == 640
    assert all(m["event"] != "stop" for m in messages)


async def test_plivo_rejects_play_audio_in_another_format(fake_gateway):
    async def script(side):
        media = {"contentType": "audio/x-l16", "sampleRate": 8000, "payload": b64(bytes(320))}
        await side.send(json.dumps({"event": "playAudio", "media": media}))
        await side.send(*side.wire.audio(side, tone(side.start["format"], 0.1)))

    gateway = await fake_gateway(script)
    async with make_call("plivo", gateway.base_url("plivo")) as call:
        await call.wait_for_media(1)
        await call.wait_idle(quiet=0.1)
    assert [code for code, _ in call.result.violations] == ["format_mismatch"]
    assert call.result.heard == tone(call.format, 0.1)


async def test_vonage_stream_shape(fake_gateway):
    call, side = await first_messages(fake_gateway, "vonage", 12,
                                      custom_parameters={"route": "demo"})
    connected = json.loads(side.received[0][2])
    assert connected == {"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
                         "call_uuid": call.call_id, "route": "demo"}
    frames = side.of_kind("binary")
    assert frames and all(len(frame) == 640 for _, frame in frames)


async def test_vonage_closes_the_socket_on_a_wrong_frame_size(fake_gateway):
    async def script(side):
        await side.send(bytes(640), bytes(320))

    gateway = await fake_gateway(script)
    async with make_call("vonage", gateway.base_url("vonage")) as call:
        await call.wait_ended(timeout=5)
    result = call.result
    assert "unexpected frame size 320, when required 640" in result.carrier_hangup
    assert not result.closed_by_gateway
    assert [code for code, _ in result.violations] == ["frame_size"]
    await asyncio.wait_for(gateway.side.closed.wait(), 5)
    assert gateway.side.close_code == 1011


async def test_exotel_stream_shape(fake_gateway):
    _call, side = await first_messages(fake_gateway, "exotel", 6, media_format="l16/16000",
                                      custom_parameters={"key1": "value1"})
    messages = side.jsons()
    assert side.query == {"sample-rate": "16000"}
    assert messages[0] == {"event": "connected"}
    start = messages[1]
    assert start["start"]["media_format"] == {"encoding": "audio/x-raw", "sample_rate": "16000",
                                              "bit_rate": "16"}
    assert start["start"]["custom_parameters"] == {"key1": "value1"}
    media = [m for m in messages if m["event"] == "media"]
    assert all(len(base64.b64decode(m["media"]["payload"])) == 3200 for m in media)  # 100 ms
    assert [m["media"]["timestamp"] for m in media[:2]] == ["0", "100"]
    times = [t for t, kind, data in side.received if kind == "text" and '"media"' in data]
    assert (times[3] - times[0]) / 3 > 0.06  # a 100 ms cadence, not 20 ms


async def test_exotel_records_and_drops_short_chunks(fake_gateway):
    async def script(side):
        await side.send(*side.wire.audio(side, bytes(640)))  # 40 ms: below 3.2 KB
        await side.send(*side.wire.audio(side, tone(side.start["format"], 0.2)))

    gateway = await fake_gateway(script)
    async with make_call("exotel", gateway.base_url("exotel")) as call:
        await call.wait_for_media(1)
        await call.wait_idle(quiet=0.1)
    assert [code for code, _ in call.result.violations] == ["chunk_size"]
    assert call.result.heard == tone(call.format, 0.2)


@pytest.mark.parametrize("control_format", ["plain-text", "json"])
async def test_asterisk_media_start_and_marks_in_both_control_formats(fake_gateway, control_format):
    async def script(side):
        await side.send(tone(side.start["format"], 0.1))
        if control_format == "json":
            await side.send(json.dumps({"command": "MARK_MEDIA", "correlation_id": "m1"}))
        else:
            await side.send("MARK_MEDIA m1")

    gateway = await fake_gateway(script)
    async with make_call("asterisk", gateway.base_url("asterisk"), control_format=control_format,
                         custom_parameters={"ROUTE": "demo"}) as call:
        assert await call.wait_for_mark("m1", timeout=5) == "m1"
    side = gateway.side
    fields = side.start["fields"]
    assert fields["format"] == "ulaw" and int(fields["optimal_frame_size"]) == 160
    assert int(fields["ptime"]) == 20 and fields["connection_id"] == "tts-gateway"
    echo = [text for text in side.texts() if "MEDIA_MARK_PROCESSED" in text]
    if control_format == "json":
        assert fields["channel_variables"] == {"ROUTE": "demo"}
        assert json.loads(echo[0]) == {"event": "MEDIA_MARK_PROCESSED",
                                       "channel_id": call.call_id, "correlation_id": "m1"}
    else:
        assert side.texts()[0].startswith("MEDIA_START ")
        assert echo == ["MEDIA_MARK_PROCESSED m1"]
    assert all(len(frame) == 160 for _, frame in side.of_kind("binary"))


async def test_asterisk_records_pings_and_fragmented_messages(fake_gateway):
    async def script(side):
        await side.ws.ping(b"are you there")
        # "MARK_MEDIA f1" as a TEXT frame plus a CONTINUATION frame (server frames are unmasked)
        side.transport.write(b"\x01\x05MARK_")
        side.transport.write(b"\x80\x08MEDIA f1")

    gateway = await fake_gateway(script)
    async with make_call("asterisk", gateway.base_url("asterisk")) as call:
        assert await call.wait_for_mark("f1", timeout=5) == "f1"
        side = gateway.side
        await side.wait_for(lambda: side.of_kind("pong"))
        assert not call.ended
    assert [code for code, _ in call.result.violations] == ["ping", "fragmented"]
    assert side.of_kind("pong")[0][1] == b"are you there"  # answered after recording


async def test_asterisk_legacy_builds_hang_up_on_a_ping(fake_gateway):
    async def script(side):
        await side.ws.ping(b"ping")

    gateway = await fake_gateway(script)
    async with make_call("asterisk", gateway.base_url("asterisk"), legacy_hangups=True) as call:
        await call.wait_ended(timeout=5)
    assert "PING" in call.result.carrier_hangup and not call.result.closed_by_gateway
    assert gateway.side.of_kind("pong") == []


async def test_asterisk_hangs_up_on_an_oversized_message_and_flow_controls(fake_gateway):
    async def script(side):
        for _ in range(3):  # 1200 ulaw frames in 3 messages of 64 000 bytes: XOFF at 900
            await side.send(bytes(64_000))
        await side.wait_for(lambda: "MEDIA_XOFF" in side.texts())
        await side.send(bytes(65_501))

    gateway = await fake_gateway(script)
    async with make_call("asterisk", gateway.base_url("asterisk")) as call:
        await call.wait_ended(timeout=5)
    result = call.result
    assert [code for code, _ in result.violations] == ["message_too_big"]
    assert [kind for _, kind in result.notices_sent] == ["MEDIA_XOFF"]
    assert "65501 bytes" in result.carrier_hangup
    await asyncio.wait_for(gateway.side.closed.wait(), 5)
    assert gateway.side.close_code == 1009


async def test_audiosocket_stream_shape_and_bursts(fake_gateway):
    async def script(side):
        frames = side.wire.audio(side, tone(side.start["format"], 0.2))
        await side.send(*frames)  # 10 frames at once

    gateway = await fake_gateway(script)
    async with make_call("audiosocket", gateway.base_url("audiosocket")) as call:
        await call.wait_for_media(10)
        await call.wait_idle(quiet=0.1)
        with pytest.raises(NotImplementedError):
            await call.wait_for_clear(timeout=0.1)
    side = gateway.side
    kinds = [data[0] for _, data in side.of_kind("tlv")]
    assert kinds[0] == 0x01 and side.of_kind("tlv")[0][1][1] == uuid.UUID(call.call_id).bytes
    assert set(kinds[1:-1]) == {0x10}
    assert all(len(payload) == 320 for _, (kind, payload) in side.of_kind("tlv") if kind == 0x10)
    assert len(call.result.bursts) >= 8
    assert call.result.heard == tone(call.format, 0.2)  # every frame is still played


# ---- make_call and credentials ------------------------------------------------------------


def test_media_urls():
    assert media_url("telnyx", "ws://h:1/", "demo", "tok") == "ws://h:1/v1/media/telnyx/demo/tok"
    assert media_url("plivo", "http://h:1") == "ws://h:1/v1/media/plivo"
    with pytest.raises(ValueError, match="AudioSocket"):
        make_call("audiosocket", "tcp://h:1", route="demo")
    with pytest.raises(ValueError, match="unknown carrier"):
        make_call("bandwidth", "ws://h:1")
    with pytest.raises(ValueError, match="does not offer"):
        make_call("twilio", "ws://h:1", media_format="l16/16000")
    with pytest.raises(ValueError, match="does not offer"):
        make_call("vonage", "ws://h:1", media_format="mulaw/8000")


AUTH_CASES = {
    "twilio": {"auth_token": "tw"},
    "signalwire": {"bearer_token": "sw-bearer"},
    "plivo": {"auth_token": "pl"},
    "vonage": {"signature_secret": "vg"},
    "exotel": {"username": "ex", "password": "pw"},
    "asterisk": {"username": "ast", "password": "pw"},
}


@pytest.mark.parametrize("carrier", list(AUTH_CASES))
async def test_credentials_arrive_on_the_upgrade(fake_gateway, carrier):
    gateway = await fake_gateway()
    async with make_call(carrier, gateway.base_url(carrier), route="demo",
                         auth=AUTH_CASES[carrier]):
        await gateway.side.wait_for(lambda: gateway.side.started.is_set())
    headers = gateway.side.headers
    signed_url = f"wss://127.0.0.1:{gateway.port}/v1/media/{carrier}/demo"
    if carrier == "twilio":
        assert headers["X-Twilio-Signature"] == twilio_signature("tw", signed_url)
    elif carrier == "signalwire":
        assert headers["Authorization"] == "Bearer sw-bearer"
    elif carrier == "plivo":
        nonce = headers["X-Plivo-Signature-V3-Nonce"]
        digest = hmac.new(b"pl", f"{signed_url}.{nonce}".encode(), hashlib.sha256).digest()
        assert headers["X-Plivo-Signature-V3"] == base64.b64encode(digest).decode()
    elif carrier == "vonage":
        scheme, token = headers["Authorization"].split(" ")
        signing_input, _, signature = token.rpartition(".")
        expected = hmac.new(b"vg", signing_input.encode(), hashlib.sha256).digest()
        assert scheme == "Bearer"
        assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected
    else:
        user, password = AUTH_CASES[carrier]["username"], AUTH_CASES[carrier]["password"]
        assert headers["Authorization"] == "Basic " + b64(f"{user}:{password}".encode())


# ---- tts-gateway dial -----------------------------------------------------------------------


@pytest.mark.parametrize("carrier, media_format", [
    ("twilio", None), ("telnyx", "alaw/8000"), ("plivo", "l16/16000"), ("vonage", "l16/24000"),
    ("exotel", None), ("asterisk", "l16/16000"), ("audiosocket", None),
])
async def test_dial_places_the_call_and_writes_what_was_heard(fake_gateway, tmp_path, carrier,
                                                              media_format):
    gateway = await fake_gateway()
    out = tmp_path / "call.wav"
    report = await dial_and_report(
        base_url=gateway.base_url(carrier), carrier=carrier, media_format=media_format,
        route=None if carrier == "audiosocket" else "demo", texts=["hello"], out=str(out),
        quiet_seconds=0.3, max_seconds=10, api_url=f"http://127.0.0.1:{gateway.port}")
    side = gateway.side
    fmt = side.start["format"]
    assert report["call_id"] == side.start["call_id"] and report["speech_ids"] == ["speech-1"]
    assert report["carrier"] == carrier and report["media_format"] == fmt.name
    assert report["violations"] == [] and report["frames_received"] > 0
    assert report["marks_echoed"] == (0 if carrier == "audiosocket" else 1)
    assert report["heard_seconds"] == pytest.approx(0.6, abs=0.01)
    if carrier == "twilio":  # the route travels as Twilio's custom parameter, as before
        assert side.path == "/v1/media/twilio"
        assert side.start["message"]["start"]["customParameters"] == {"route": "demo"}
    elif carrier != "audiosocket":
        assert side.path == f"/v1/media/{carrier}/demo"
    pcm, rate = read_wav(out)
    assert rate == fmt.sample_rate
    expected = np.frombuffer(fmt.to_pcm16(tone(fmt, 0.6)), "<i2")
    heard = np.frombuffer(pcm, "<i2")
    assert len(heard) >= len(expected)  # silence fills any hole in the playout
    assert np.array_equal(heard[heard != 0], expected[expected != 0])


async def test_dial_command_line_with_another_carrier(fake_gateway, tmp_path):
    gateway = await fake_gateway()
    out = tmp_path / "call.wav"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "dial", "--carrier", "vonage", "--format", "l16/8000",
        "--url", gateway.base_url("vonage"), "--route", "demo", "--text", "hi", "--out", str(out),
        "--quiet-seconds", "0.3", "--max-seconds", "10", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, stderr.decode()
    report = json.loads(stdout)
    assert report["carrier"] == "vonage" and report["media_format"] == "l16/8000"
    assert report["call_id"] == gateway.side.start["call_id"]
    assert read_wav(out)[1] == 8000


def test_dial_refuses_a_route_for_audiosocket(capsys):
    assert cli_main(["dial", "--carrier", "audiosocket", "--url", "tcp://127.0.0.1:9",
                     "--route", "demo"]) == 2
    assert "AudioSocket" in capsys.readouterr().err
