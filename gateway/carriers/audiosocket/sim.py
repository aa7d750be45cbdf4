"""Fake Asterisk AudioSocket (docs/protocols/carriers.md §6.4; asterisk ``res/res_audiosocket.c``).

Plain TCP; every message is ``kind (1 byte) | length (2 bytes, big-endian) | payload``.
Asterisk → gateway: kind 0x01 with the call's 16-byte UUID first, then kind 0x10 audio
(16-bit LE PCM at 8 kHz, 320 B) every 20 ms and kind 0x03 DTMF (one ASCII byte). Gateway →
Asterisk: kind 0x10 audio, kind 0x00 hangup. Anything else (or an empty audio message)
makes Asterisk leave the AudioSocket application, which the simulator treats as the call
ending.

There is no buffer: each frame is written to the channel when it arrives. The model
records every arrival; a frame that comes while the previous one is still playing (by
more than ``burst_tolerance``) is a *burst* (``bursts``: arrival, seconds early), a
later one a gap (an *underrun* beyond ``underrun_tolerance``) — unless the pause exceeds
``utterance_gap``, which is taken as the end of an utterance. There are no marks and no
clear.

When the caller hangs up the simulator sends kind 0x00 and closes (``send_hangup=False``:
only close, as ``app_audiosocket`` itself does).
"""

from __future__ import annotations

import asyncio
import struct
import uuid

from yarl import URL

from gateway.sim.carriers.call import CarrierCall
from gateway.sim.carriers.model import CarrierModel, Echo, EndCall, Output
from gateway.sim.carriers.transport import Message

KIND_HANGUP, KIND_UUID, KIND_DTMF, KIND_AUDIO, KIND_ERROR = 0x00, 0x01, 0x03, 0x10, 0xFF


def tlv(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack("!BH", kind, len(payload)) + payload


class AudioSocketModel(CarrierModel):
    """What Asterisk does with AudioSocket messages. Violations: ``odd_length`` (half a
    sample, dropped), ``empty_audio`` and ``unknown_kind`` (both end the call)."""

    carrier = "audiosocket"

    def __init__(self, fmt, now: float = 0.0, *, burst_tolerance: float = 0.005,
                 underrun_tolerance: float = 0.005, utterance_gap: float = 0.25) -> None:
        super().__init__(fmt, now, underrun_tolerance=underrun_tolerance)
        self.burst_tolerance = burst_tolerance
        self.utterance_gap = utterance_gap
        self._previous: tuple[float, float] | None = None  # (arrival, seconds) of the last frame

    def on_bytes(self, data: bytes, now: float, out: list[Output]) -> None:
        kind, payload = data[0], data[3:]
        if kind == KIND_HANGUP:
            out.append(EndCall(1000, "hangup (kind 0x00)", by_gateway=True))
        elif kind != KIND_AUDIO or not payload:
            code = "unknown_kind" if kind != KIND_AUDIO else "empty_audio"
            detail = (f"message kind 0x{kind:02x} with {len(payload)} bytes; Asterisk takes audio "
                      "(0x10, non-empty) and hangup (0x00) and leaves AudioSocket() otherwise")
            self.violate(code, detail)
            out.append(EndCall(1000, detail))
        else:
            if len(payload) % 2:
                self.violate("odd_length", f"audio of {len(payload)} bytes: half a sample")
            audio = payload[: len(payload) // 2 * 2]
            self._time_frame(now, len(audio) / self.format.bytes_per_second)
            self.play(audio, now, wire=payload)

    def _time_frame(self, now: float, seconds: float) -> None:
        if self._previous is not None:
            arrival, previous_seconds = self._previous
            interval = now - arrival
            if interval > self.utterance_gap:
                self.playout.boundary()
            elif interval < previous_seconds - self.burst_tolerance:
                self.bursts.append((now, previous_seconds - interval))
        self._previous = (now, seconds)


class AudioSocketTransport:
    """One AudioSocket TCP connection; ``receive()`` returns whole messages (header included)."""

    close_code = None

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, url: str) -> AudioSocketTransport:
        target = URL(url)
        if target.scheme != "tcp" or not target.host or not target.port:
            raise ValueError(f"AudioSocket needs tcp://host:port, not {url!r}")
        return cls(*await asyncio.open_connection(target.host, target.port))

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            raise TypeError("AudioSocket carries binary messages only")
        if self._writer.is_closing():
            raise ConnectionResetError("the AudioSocket connection is closed")
        self._writer.write(data)
        await self._writer.drain()

    async def receive(self) -> Message | None:
        try:
            head = await self._reader.readexactly(3)
            payload = await self._reader.readexactly(struct.unpack("!H", head[1:])[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return Message("binary", head + payload)

    async def pong(self, data: bytes) -> None:
        raise TypeError("AudioSocket has no pings")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 2.0)
        except (TimeoutError, ConnectionError):
            pass

    async def abort(self) -> None:
        self._writer.transport.abort()


class AudioSocketCall(CarrierCall):
    carrier = "audiosocket"
    formats = ("l16/8000",)
    dtmf_digits = "0123456789*#ABCD"
    has_marks = False
    has_clear = False

    def __init__(self, url: str, *, burst_tolerance: float = 0.005,
                 underrun_tolerance: float = 0.005, utterance_gap: float = 0.25,
                 send_hangup: bool = True, **options) -> None:
        self.burst_tolerance = burst_tolerance
        self.utterance_gap = utterance_gap
        self.send_hangup = send_hangup
        super().__init__(url, underrun_tolerance=underrun_tolerance, **options)
        uuid.UUID(self.call_id)  # Asterisk sends the call id as a 16-byte UUID

    def new_call_id(self) -> str:
        return str(uuid.uuid4())

    def make_model(self, now: float) -> AudioSocketModel:
        return AudioSocketModel(self.format, now, burst_tolerance=self.burst_tolerance,
                                underrun_tolerance=self.underrun_tolerance,
                                utterance_gap=self.utterance_gap)

    async def open_transport(self) -> AudioSocketTransport:
        return await AudioSocketTransport.open(self.url)

    def hello(self) -> list[bytes]:
        return [tlv(KIND_UUID, uuid.UUID(self.call_id).bytes)]

    def media_messages(self, index: int, frame: bytes) -> list[bytes]:
        return [tlv(KIND_AUDIO, frame)]

    def dtmf_messages(self, digit: str) -> list[bytes]:
        return [tlv(KIND_DTMF, digit.encode())]

    def echo_message(self, echo: Echo) -> bytes:
        raise AssertionError("AudioSocket has no marks")

    def goodbye(self) -> list[bytes]:
        return [tlv(KIND_HANGUP)] if self.send_hangup else []
