"""What happened on one simulated call, the same for every carrier."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gateway.sim.carriers.formats import WireFormat


@dataclass(frozen=True, slots=True)
class FrameTiming:
    """Lateness of media arrivals, in seconds (see :meth:`CarrierCallResult.frame_timing`)."""

    count: int
    p50: float
    p99: float
    max: float


@dataclass
class CarrierCallResult:
    """A snapshot of one call. Times are ``time.monotonic()`` seconds; audio is in the
    carrier's wire format (``format``) unless a method says PCM."""

    carrier: str
    call_id: str
    stream_id: str
    format: WireFormat
    connected_at: float | None = None
    #: when the message that starts the stream (start, websocket:connected, MEDIA_START,
    #: the AudioSocket UUID) was sent
    start_sent_at: float | None = None
    first_media_at: float | None = None
    ended_at: float | None = None
    #: ``(arrival time, payload)`` of each accepted media message from the gateway
    frames: list[tuple[float, bytes]] = field(default_factory=list)
    #: indices into ``frames`` that start an utterance
    utterance_starts: list[int] = field(default_factory=list)
    #: what the caller heard, in order (cleared or discarded audio is not in it)
    heard: bytes = b""
    #: ``(start time, byte count)`` of each uninterrupted run of playout
    heard_segments: list[tuple[float, int]] = field(default_factory=list)
    marks_received: list[tuple[float, str]] = field(default_factory=list)
    #: mark echoes actually sent to the gateway, with the time they were sent
    marks_sent_back: list[tuple[float, str]] = field(default_factory=list)
    #: marks a clear removed without an echo (Plivo, Vonage, Asterisk)
    marks_dropped: list[tuple[float, str]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    #: carrier messages other than echoes that were sent: ``(time, kind)``, e.g.
    #: ``clearedAudio``, ``websocket:cleared``, ``MEDIA_XOFF``, ``error 100003``
    notices_sent: list[tuple[float, str]] = field(default_factory=list)
    violations: list[tuple[str, str]] = field(default_factory=list)
    underruns: int = 0
    underrun_gaps: list[tuple[float, float]] = field(default_factory=list)
    #: ``(arrival time, seconds early)`` of frames that arrived faster than real time where
    #: nothing buffers them (AudioSocket)
    bursts: list[tuple[float, float]] = field(default_factory=list)
    gateway_dtmf: list[tuple[float, str]] = field(default_factory=list)
    cleared_bytes: int = 0
    dropped_bytes: int = 0
    discarded_at_close_bytes: int = 0
    inbound_frames_sent: int = 0
    closed_by_gateway: bool = False
    close_code: int | None = None
    #: why the simulated carrier itself ended the call (e.g. a wrong Vonage frame size)
    carrier_hangup: str | None = None

    @property
    def call_sid(self) -> str:
        return self.call_id

    @property
    def stream_sid(self) -> str:
        return self.stream_id

    @property
    def sample_rate(self) -> int:
        return self.format.sample_rate

    @property
    def bytes_per_second(self) -> int:
        return self.format.bytes_per_second

    @property
    def heard_seconds(self) -> float:
        return len(self.heard) / self.bytes_per_second

    @property
    def first_audio_latency(self) -> float | None:
        """Seconds from starting the stream to the first media message."""
        if self.first_media_at is None or self.start_sent_at is None:
            return None
        return self.first_media_at - self.start_sent_at

    def heard_pcm16(self, with_silence: bool = False) -> bytes:
        """What the caller heard as 16-bit little-endian PCM at ``sample_rate``."""
        return self.format.to_pcm16(self.heard_with_silence() if with_silence else self.heard)

    def heard_with_silence(self) -> bytes:
        """``heard`` with silence where the playout was idle between runs (wire format)."""
        out = bytearray()
        offset = 0
        previous_end: float | None = None
        width = self.format.sample_width
        for start, count in self.heard_segments:
            if previous_end is not None:
                gap = max(0, round((start - previous_end) * self.bytes_per_second))
                out += self.format.silence(gap // width * width)
            out += self.heard[offset : offset + count]
            offset += count
            previous_end = start + count / self.bytes_per_second
        return bytes(out)

    def frame_timing(self) -> FrameTiming | None:
        """Lateness of each media message against an ideal real-time schedule.

        Within an utterance, message ``i`` is due at ``t0 + b_i / bytes_per_second`` where
        ``b_i`` counts the utterance's bytes before it and ``t0`` is when the utterance
        starts playing (its first arrival, or later if earlier audio was still playing; a
        clear drops that). Lateness is ``max(0, arrival - due)``. Returns the 50th and 99th
        percentiles and the maximum, or ``None`` without media.
        """
        if not self.frames:
            return None
        rate = self.bytes_per_second
        starts = set(self.utterance_starts)
        clears = sorted(self.clears)
        next_clear = 0
        lateness: list[float] = []
        anchor = self.frames[0][0]
        bytes_before = 0
        playout_end = -math.inf
        for index, (arrival, payload) in enumerate(self.frames):
            while next_clear < len(clears) and clears[next_clear] <= arrival:
                playout_end = min(playout_end, clears[next_clear])
                next_clear += 1
            if index in starts:
                anchor = max(arrival, playout_end)
                bytes_before = 0
            lateness.append(max(0.0, arrival - (anchor + bytes_before / rate)))
            bytes_before += len(payload)
            playout_end = max(playout_end, arrival) + len(payload) / rate
        lateness.sort()

        def rank(q: float) -> float:
            return lateness[min(len(lateness) - 1, max(0, math.ceil(q * len(lateness)) - 1))]

        return FrameTiming(len(lateness), rank(0.50), rank(0.99), lateness[-1])
