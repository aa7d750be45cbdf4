"""The caller's audio for one bot: converted from the carrier's format, cut into packets,
queued for the bot's socket.

A :class:`CallerAudioFeed` is a ``CallerAudio`` subscriber (gateway/core/caller.py): it
runs on the media path, once per carrier frame, so it only converts and hands on. A packet
goes straight to the socket (``direct``) while the socket keeps up and nothing waits
before it; otherwise packets wait in a bounded queue for the socket's sender; when the bot
reads too slowly
the queue keeps the newest second and drops the oldest packets, counted in
``tts_gateway_bot_audio_dropped_seconds_total{reason="slow_reader"}``: a bot that falls
behind hears the caller as they are now, with a gap, rather than ever further behind.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from telcodecs import Framer, Transcoder, silence_byte

from gateway.carriers.events import MediaFormat

QUEUE_SECONDS = 1.0  # the most audio waiting for one bot's socket
MIN_QUEUE_PACKETS = 4


def bot_format(name: str) -> MediaFormat:
    """``"l16/16000"`` as a MediaFormat."""
    encoding, _, rate = name.partition("/")
    return MediaFormat(encoding, int(rate))


def packet_bytes(fmt: MediaFormat, packet_ms: int) -> int:
    return fmt.bytes_per_20ms * packet_ms // 20


class CallerAudioFeed:
    """The caller's audio in ``audio`` (one of ``BOT_AUDIO_FORMATS``), in packets of
    exactly ``packet_ms``, for one reader. ``on_drop(seconds)`` counts what a slow reader
    lost. Raises ValueError for an inbound format telcodecs cannot convert."""

    def __init__(self, source: MediaFormat, audio: str, packet_ms: int, *,
                 on_drop: Callable[[float], None],
                 arrived_at: Callable[[], float] = time.monotonic):
        fmt = bot_format(audio)
        self.format = fmt
        self.packet_ms = packet_ms
        self.packet_bytes = packet_bytes(fmt, packet_ms)
        # μ-law 8 kHz to mulaw/8000 passes through byte for byte; 8 -> 16 kHz is the
        # polyphase resampler (interpolated, delayed by ``delay_seconds``)
        self._transcoder = Transcoder(source.encoding, source.sample_rate, fmt.encoding,
                                      fmt.sample_rate)
        self._framer = Framer(self.packet_bytes, silence_byte(fmt.encoding))
        # A packet longer than a frame is converted in one piece when its input is all in:
        # one conversion per packet instead of one per frame, and no later (the resampler's
        # output never depends on how its input is cut).
        self._input_bytes = source.bytes_per_20ms * packet_ms // 20
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.capacity = max(MIN_QUEUE_PACKETS, round(QUEUE_SECONDS * 1000 / packet_ms))
        self._packets: deque[bytes] = deque()
        # when the newest carrier frame in each queued packet arrived (``arrived_at()``,
        # read as the frame is fed): the sender measures the delay the gateway added
        self._arrivals: deque[float] = deque()
        self._arrived_at = arrived_at
        self.packet_arrived_at = 0.0  # of the packet next_packet() returned last
        self._on_drop = on_drop
        #: ``direct(packet, arrived)`` sends a packet now and says True, or says False
        #: (the socket is behind): then it is queued for the sender
        self.direct: Callable[[bytes, float], bool] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.packets = 0  # made
        self.dropped = 0  # of those, lost to a slow reader

    @property
    def delay_seconds(self) -> float:
        """How late the conversion puts the audio (the resampler's group delay)."""
        return self._transcoder.delay_seconds

    def __call__(self, payload: bytes) -> None:
        """One carrier frame (the media path): convert, cut, send or queue; never waits."""
        if self._pending_bytes + len(payload) < self._input_bytes:
            self._pending.append(payload)
            self._pending_bytes += len(payload)
            return
        if self._pending:
            self._pending.append(payload)
            payload = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
        converted = self._transcoder.feed(payload)
        if len(converted) == self.packet_bytes and not self._framer.pending:
            packets = [converted]  # one whole packet, nothing held (every frame, mostly)
        else:
            packets = self._framer.push(converted)
        if not packets:
            return
        queue, arrivals, direct = self._packets, self._arrivals, self.direct
        arrived = self._arrived_at()
        for packet in packets:
            if direct is not None and not queue and direct(packet, arrived):
                self.packets += 1
                continue
            if len(queue) >= self.capacity:
                queue.popleft()
                if arrivals:
                    arrivals.popleft()
                self.dropped += 1
                self._on_drop(self.packet_ms / 1000)
            queue.append(packet)
            arrivals.append(arrived)
            self.packets += 1
        waiter = self._waiter
        if queue and waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_packet(self) -> bytes:
        """The oldest packet queued; waits until there is one. (One at a time: what the
        sender holds while the socket is slow stays out of the bounded queue's count.)"""
        while not self._packets:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._arrivals:
            self.packet_arrived_at = self._arrivals.popleft()
        return self._packets.popleft()
