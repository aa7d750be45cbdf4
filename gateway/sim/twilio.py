"""A faithful fake Twilio: the carrier side of a Media Streams call, for tests and ``dial``.

Two layers, like the gateway's own carrier code:

* :class:`TwilioPlayoutModel` (sans-I/O) is what Twilio does with what the gateway sends:
  it validates every message as strictly as Twilio (warnings 31950/31951), queues μ-law in
  a FIFO that plays out at 8000 bytes/s on a clock the caller passes in, echoes marks when
  the playout passes them, flushes on ``clear``, caps the buffer at 10 minutes (31931),
  and records what the caller hears.
* :class:`TwilioCallSim` (asyncio + aiohttp) places one call: it opens the WebSocket,
  sends ``connected`` and ``start``, streams caller audio every 20 ms like a carrier,
  feeds the gateway's messages into the model and sends the mark echoes on time.

All times are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

__all__ = [
    "BYTES_PER_SECOND",
    "CallClosedError",
    "FrameTiming",
    "TwilioCallResult",
    "TwilioCallSim",
    "TwilioPlayoutModel",
    "twilio_signature",
]

#: μ-law at 8 kHz: one byte per sample.
BYTES_PER_SECOND = 8000
FRAME_BYTES = 160
FRAME_SECONDS = 0.020
MULAW_SILENCE = b"\xff"

# Floating-point slack when turning elapsed seconds into whole bytes played (1/1000 of a
# byte, 125 ns): a deadline computed by next_deadline() must always be reached when
# advance() is called at that time, even with large monotonic clock values.
_BYTE_EPSILON = 1e-3

_OUTBOUND_SHAPES = {  # event -> (inner object key, its only field)
    "media": ("media", "payload"),
    "mark": ("mark", "name"),
    "clear": (None, None),
}


def _preview(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text if len(text) <= limit else text[:limit] + "…")


class TwilioPlayoutModel:
    """Twilio's handling of the gateway → Twilio direction of one stream, without I/O.

    Every entry point takes ``now`` (seconds, never decreasing; a smaller value raises
    :class:`ValueError`) and returns the names of the marks Twilio echoes at that moment,
    in order. The driver must send those echoes back to the gateway.

    **Validation** (strict, per Twilio's error pages): a text frame must be a JSON object
    with exactly ``event`` and ``streamSid`` plus, for ``media``, ``media`` =
    ``{"payload": <base64>}``, for ``mark``, ``mark`` = ``{"name": <str>}``, for
    ``clear``, nothing else; ``streamSid`` must be this stream's. Anything else (non-JSON,
    unknown event, missing/extra/mistyped field, bad base64, wrong streamSid) is recorded
    in :attr:`violations` as ``("31951", detail)`` and dropped; a binary frame is recorded
    as ``("31950", detail)`` and dropped. (Real Twilio notifies each code once per stream;
    the model records every occurrence.)

    **Playout**: accepted media is appended to a FIFO that drains at 8000 bytes/s while it
    holds audio. A run of playout starts when audio arrives at an empty FIFO (at the
    arrival time) and ends when the FIFO runs dry. Bytes played are appended to
    :attr:`heard` in order; :attr:`heard_segments` holds ``(start_time, byte_count)`` per
    run. Audio that would take the buffered total beyond 10 minutes is dropped (counted in
    :attr:`dropped_bytes`; one ``("31931", detail)`` violation per overflow episode).

    **Marks**: a mark is echoed when the playout passes the point in the FIFO where it was
    queued; a mark queued while the FIFO holds no audio is echoed at once (Twilio's docs do
    not say; Telnyx's clone documents this, and it is the only reading consistent with
    "echoed when the audio sent before it has played"). :attr:`marks_echoed` records
    ``(time the playout passed it, name)``.

    **Clear**: empties the FIFO (the audio is never heard; :attr:`cleared_bytes`) and
    echoes every pending mark at once, in order.

    **Underrun** (a hole the caller hears): the FIFO ran dry at drain point ``T``, and the
    next media message arrived at ``t > T + 1 ms`` with no ``mark`` and no ``clear``
    received since the previous media message. A mark or a clear between them marks an
    utterance boundary, where silence is expected. Each underrun is recorded in
    :attr:`underrun_gaps` as ``(T, t - T)``.

    **Utterances** (for frame timing): a media message starts an utterance if it is the
    first one, or a mark or a clear was received since the previous media message; the
    indices into :attr:`arrivals` are in :attr:`utterance_starts`.

    **End of call**: :meth:`close` stops playout; audio still buffered is never heard and
    pending marks are never echoed (the socket is gone). Frames fed after ``close`` are
    ignored.
    """

    max_buffered_bytes = 10 * 60 * BYTES_PER_SECOND
    underrun_tolerance = 0.001

    def __init__(self, stream_sid: str, now: float = 0.0) -> None:
        self.stream_sid = stream_sid
        #: μ-law bytes the caller heard, in order (gaps between runs are not filled).
        self.heard = bytearray()
        #: ``(arrival time, payload)`` of every accepted media message, in order.
        self.arrivals: list[tuple[float, bytes]] = []
        self.utterance_starts: list[int] = []
        self.marks_received: list[tuple[float, str]] = []
        self.marks_echoed: list[tuple[float, str]] = []
        self.clears: list[float] = []
        self.violations: list[tuple[str, str]] = []
        self.underrun_gaps: list[tuple[float, float]] = []
        self.cleared_bytes = 0
        self.dropped_bytes = 0
        self.discarded_at_close_bytes = 0
        self.closed_at: float | None = None

        self._now = now
        self._chunks: deque[bytes] = deque()
        self._head_offset = 0
        self._enqueued = 0  # bytes ever queued, minus cleared ones
        self._played = 0
        self._marks: deque[tuple[int, str]] = deque()  # (value of _enqueued when queued, name)
        self._playing = False  # the FIFO holds audio
        self._run_start = now
        self._run_played = 0
        self._segments: list[list[float | int]] = []
        self._ran_dry_at: float | None = None
        self._boundary_since_media = True
        self._overflowing = False

    # ---- state -----------------------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        return self._enqueued - self._played

    @property
    def buffered_seconds(self) -> float:
        return self.buffered_bytes / BYTES_PER_SECOND

    @property
    def pending_marks(self) -> tuple[str, ...]:
        return tuple(name for _, name in self._marks)

    @property
    def playing(self) -> bool:
        """The FIFO holds audio, so the caller is hearing the gateway right now."""
        return self._playing

    @property
    def underruns(self) -> int:
        return len(self.underrun_gaps)

    @property
    def heard_segments(self) -> list[tuple[float, int]]:
        return [(float(start), int(count)) for start, count in self._segments]

    def next_deadline(self) -> float | None:
        """When the next mark is due or, without pending marks, when the FIFO runs dry.

        ``None`` when nothing is playing. A driver that calls :meth:`advance` at this time
        gets the mark echo (or sees the FIFO empty).
        """
        if not self._playing:
            return None
        target = self._marks[0][0] if self._marks else self._enqueued
        return self._run_start + (self._run_played + target - self._played) / BYTES_PER_SECOND

    # ---- input -----------------------------------------------------------------

    def advance(self, now: float) -> list[str]:
        """Play out up to ``now``; return the marks the playout passed, in order."""
        if now < self._now:
            raise ValueError(f"time went backwards: {now!r} < {self._now!r}")
        self._now = now
        echoes: list[str] = []
        marks = self._marks
        while self._playing:
            while marks and marks[0][0] <= self._played:
                name = marks.popleft()[1]
                echoes.append(name)
                self.marks_echoed.append((self._drain_point(), name))
            buffered = self._enqueued - self._played
            if buffered == 0:
                self._ran_dry_at = self._drain_point()
                self._playing = False
                break
            elapsed = (now - self._run_start) * BYTES_PER_SECOND
            playable = math.floor(elapsed + _BYTE_EPSILON) - self._run_played
            if playable <= 0:
                break
            count = min(buffered, playable)
            if marks:
                count = min(count, marks[0][0] - self._played)
            self._play(count)
        return echoes

    def receive_text(self, text: str, now: float) -> list[str]:
        """One text frame from the gateway; returns the marks to echo now."""
        if self.closed_at is not None:
            return []
        echoes = self.advance(now)
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            self._violate("31951", f"text frame is not JSON: {_preview(text)}")
            return echoes
        if type(message) is not dict:
            self._violate("31951", f"message is not a JSON object: {_preview(text)}")
            return echoes
        event = message.get("event")
        if event not in _OUTBOUND_SHAPES:
            self._violate(
                "31951",
                f"unknown event {event!r}; Twilio accepts media, mark and clear: "
                f"{_preview(text)}",
            )
            return echoes
        problem = self._shape_problem(message, event)
        if problem is not None:
            self._violate("31951", problem)
            return echoes
        if event == "media":
            payload = message["media"]["payload"]
            try:
                audio = binascii.a2b_base64(payload, strict_mode=True)
            except binascii.Error as exc:
                self._violate(
                    "31951", f"media.payload is not base64 ({exc}): {_preview(payload, 40)}"
                )
                return echoes
            self._queue_audio(audio, now)
        elif event == "mark":
            self._queue_mark(message["mark"]["name"], now, echoes)
        else:
            self._clear(now, echoes)
        return echoes

    def receive_bytes(self, data: bytes, now: float) -> list[str]:
        """One binary frame from the gateway: always a 31950 violation; dropped."""
        if self.closed_at is not None:
            return []
        echoes = self.advance(now)
        self._violate(
            "31950",
            f"binary frame of {len(data)} bytes; Twilio accepts only JSON text frames",
        )
        return echoes

    def close(self, now: float) -> None:
        """The call ended at ``now``: play out to ``now``, then discard the rest."""
        if self.closed_at is not None:
            return
        self.advance(now)
        self.discarded_at_close_bytes = self.buffered_bytes
        self._drop_buffer()
        self._marks.clear()
        self.closed_at = now

    # ---- internals -------------------------------------------------------------

    def _shape_problem(self, message: dict[str, Any], event: str) -> str | None:
        inner_key, inner_field = _OUTBOUND_SHAPES[event]
        expected = {"event", "streamSid"}
        if inner_key is not None:
            expected.add(inner_key)
        if message.keys() != expected:
            return (
                f"{event} message has keys {sorted(message)}; Twilio accepts exactly "
                f"{sorted(expected)}"
            )
        if message["streamSid"] != self.stream_sid:
            return (
                f"{event} for streamSid {message['streamSid']!r}; this stream is "
                f"{self.stream_sid!r}"
            )
        if inner_key is not None:
            inner = message[inner_key]
            if type(inner) is not dict or inner.keys() != {inner_field}:
                return (
                    f"{event}.{inner_key} must be exactly {{{inner_field!r}: <string>}}, "
                    f"got {_preview(inner)}"
                )
            if type(inner[inner_field]) is not str:
                return (
                    f"{event}.{inner_key}.{inner_field} must be a string, "
                    f"got {_preview(inner[inner_field])}"
                )
        return None

    def _violate(self, code: str, detail: str) -> None:
        self.violations.append((code, detail))

    def _drain_point(self) -> float:
        if not self._playing:
            return self._now
        return self._run_start + self._run_played / BYTES_PER_SECOND

    def _queue_audio(self, audio: bytes, now: float) -> None:
        self.arrivals.append((now, audio))
        if not audio:
            return
        if self._boundary_since_media:
            self.utterance_starts.append(len(self.arrivals) - 1)
        elif not self._playing and self._ran_dry_at is not None:
            gap = now - self._ran_dry_at
            if gap > self.underrun_tolerance:
                self.underrun_gaps.append((self._ran_dry_at, gap))
        self._boundary_since_media = False

        room = self.max_buffered_bytes - self.buffered_bytes
        if len(audio) > room:
            self.dropped_bytes += len(audio) - room
            if not self._overflowing:
                self._overflowing = True
                self._violate(
                    "31931",
                    f"more than 10 minutes of audio buffered; dropped {len(audio) - room} "
                    "bytes (Twilio accepts no more until the buffer drains)",
                )
            audio = audio[:room]
            if not audio:
                return
        else:
            self._overflowing = False

        if not self._playing:
            self._playing = True
            self._run_start = now
            self._run_played = 0
            self._segments.append([now, 0])
        self._chunks.append(audio)
        self._enqueued += len(audio)

    def _queue_mark(self, name: str, now: float, echoes: list[str]) -> None:
        self.marks_received.append((now, name))
        self._boundary_since_media = True
        if self._playing:
            self._marks.append((self._enqueued, name))
        else:
            echoes.append(name)
            self.marks_echoed.append((now, name))

    def _clear(self, now: float, echoes: list[str]) -> None:
        self.clears.append(now)
        self._boundary_since_media = True
        while self._marks:
            name = self._marks.popleft()[1]
            echoes.append(name)
            self.marks_echoed.append((now, name))
        self.cleared_bytes += self.buffered_bytes
        self._drop_buffer()

    def _drop_buffer(self) -> None:
        if self._playing:
            self._ran_dry_at = self._now
        self._chunks.clear()
        self._head_offset = 0
        self._enqueued = self._played
        self._playing = False
        self._overflowing = False

    def _play(self, count: int) -> None:
        remaining = count
        chunks = self._chunks
        while remaining:
            head = chunks[0]
            start = self._head_offset
            take = min(len(head) - start, remaining)
            self.heard += memoryview(head)[start : start + take]
            remaining -= take
            if start + take == len(head):
                chunks.popleft()
                self._head_offset = 0
            else:
                self._head_offset = start + take
        self._played += count
        self._run_played += count
        self._segments[-1][1] += count


# ---- results ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrameTiming:
    """Lateness of media arrivals, in seconds (see :meth:`TwilioCallResult.frame_timing`)."""

    count: int
    p50: float
    p99: float
    max: float


@dataclass
class TwilioCallResult:
    """What happened on one simulated call. Times are ``time.monotonic()`` seconds."""

    call_sid: str
    stream_sid: str
    connected_at: float | None = None
    start_sent_at: float | None = None
    first_media_at: float | None = None
    ended_at: float | None = None
    #: Outbound media payloads (decoded), with their arrival time, in order.
    frames: list[tuple[float, bytes]] = field(default_factory=list)
    #: Indices into ``frames`` that start an utterance (see TwilioPlayoutModel).
    utterance_starts: list[int] = field(default_factory=list)
    #: μ-law the caller heard, in order; cleared or discarded audio is not in it.
    heard: bytes = b""
    #: ``(start time, byte count)`` of each uninterrupted run of playout.
    heard_segments: list[tuple[float, int]] = field(default_factory=list)
    #: Marks the gateway sent, with their arrival time.
    marks_received: list[tuple[float, str]] = field(default_factory=list)
    #: Mark echoes actually sent to the gateway, with the time they were sent.
    marks_sent_back: list[tuple[float, str]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    violations: list[tuple[str, str]] = field(default_factory=list)
    underruns: int = 0
    underrun_gaps: list[tuple[float, float]] = field(default_factory=list)
    cleared_bytes: int = 0
    dropped_bytes: int = 0
    discarded_at_close_bytes: int = 0
    inbound_frames_sent: int = 0
    closed_by_gateway: bool = False
    close_code: int | None = None

    @property
    def first_audio_latency(self) -> float | None:
        """Seconds from sending ``start`` to the first outbound media message."""
        if self.first_media_at is None or self.start_sent_at is None:
            return None
        return self.first_media_at - self.start_sent_at

    @property
    def heard_seconds(self) -> float:
        return len(self.heard) / BYTES_PER_SECOND

    def frame_timing(self) -> FrameTiming | None:
        """Lateness of each media message against an ideal real-time schedule.

        Within an utterance (see ``utterance_starts``), message ``i`` should arrive no
        later than ``t0 + b_i / 8000``, where ``b_i`` is the bytes of that utterance that
        arrived before message ``i`` (so a 160-byte frame is due 20 ms after the previous
        one) and ``t0`` is when the utterance starts playing: the arrival of its first
        message, or later if audio queued before it (an earlier utterance sent ahead) was
        still playing then; a clear drops that queued audio. Lateness is
        ``max(0, arrival - due)``: arriving early (a lead) is not late. Returns the 50th
        and 99th percentiles (nearest rank) and the maximum over all messages, or ``None``
        with no media.
        """
        if not self.frames:
            return None
        starts = set(self.utterance_starts)
        clears = sorted(self.clears)
        next_clear = 0
        lateness: list[float] = []
        anchor = self.frames[0][0]
        bytes_before = 0
        playout_end = -math.inf  # when the audio that arrived so far finishes playing
        for index, (arrival, payload) in enumerate(self.frames):
            while next_clear < len(clears) and clears[next_clear] <= arrival:
                playout_end = min(playout_end, clears[next_clear])
                next_clear += 1
            if index in starts:
                anchor = max(arrival, playout_end)
                bytes_before = 0
            lateness.append(max(0.0, arrival - (anchor + bytes_before / BYTES_PER_SECOND)))
            bytes_before += len(payload)
            playout_end = max(playout_end, arrival) + len(payload) / BYTES_PER_SECOND
        lateness.sort()

        def rank(q: float) -> float:
            return lateness[min(len(lateness) - 1, max(0, math.ceil(q * len(lateness)) - 1))]

        return FrameTiming(len(lateness), rank(0.50), rank(0.99), lateness[-1])

    def heard_with_silence(self) -> bytes:
        """What the caller heard from the first played byte on, with μ-law silence where
        the playout was idle between runs (for writing a WAV that sounds like the call)."""
        out = bytearray()
        offset = 0
        previous_end: float | None = None
        for start, count in self.heard_segments:
            if previous_end is not None:
                out += MULAW_SILENCE * max(0, round((start - previous_end) * BYTES_PER_SECOND))
            out += self.heard[offset : offset + count]
            offset += count
            previous_end = start + count / BYTES_PER_SECOND
        return bytes(out)


# ---- asyncio client --------------------------------------------------------------


class CallClosedError(ConnectionError):
    """The call ended (either side hung up) before the awaited thing happened, or a
    message was sent on an ended call."""


def twilio_signature(auth_token: str, url: str) -> str:
    """``X-Twilio-Signature`` for a WebSocket upgrade: base64(HMAC-SHA1(token, url)).

    ``url`` is the full ``wss://`` URL as configured in the TwiML (an upgrade is a GET, so
    no POST parameters are appended).
    """
    digest = hmac.new(auth_token.encode(), url.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _as_wss(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return "wss://" + rest if sep and scheme in ("ws", "wss", "http", "https") else url


_T = TypeVar("_T")


class TwilioCallSim:
    """One simulated Twilio call into a gateway's media WebSocket.

    ``async with TwilioCallSim(url) as sim`` connects (raising :class:`TimeoutError` after
    ``connect_timeout`` s, or ``aiohttp.WSServerHandshakeError`` if the gateway refuses the
    upgrade), sends ``connected`` and ``start``, then until the call ends:

    * sends one inbound ``media`` message every 20 ms on absolute deadlines from the start
      (160 bytes of ``inbound_audio``, looped, or μ-law silence; ``track`` ``inbound``;
      ``sequenceNumber``/``chunk``/``timestamp`` as incrementing strings, timestamp in ms);
    * feeds every gateway message into a :class:`TwilioPlayoutModel` and sends each mark
      echo (``{"event":"mark","sequenceNumber":…,"streamSid":…,"mark":{"name":…}}``) when
      the model's playout passes it.

    The call ends when the test calls :meth:`hangup` (``stop``, then close; also done on
    exit) or when the gateway closes the socket (recorded as ``closed_by_gateway``; no
    exception). Either way, audio still buffered is not heard. Every wait is bounded; a
    wait that can no longer succeed because the call ended raises :class:`CallClosedError`.
    :attr:`result` is a snapshot that can be read during or after the call.

    ``auth_token`` adds ``X-Twilio-Signature`` computed over ``signature_url`` (default:
    ``url`` with a ``wss://`` scheme, which is what Twilio signs).
    """

    def __init__(
        self,
        url: str,
        call_sid: str | None = None,
        stream_sid: str | None = None,
        custom_parameters: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        inbound_audio: bytes | None = None,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        signature_url: str | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        if inbound_audio is not None and not inbound_audio:
            raise ValueError("inbound_audio is empty; pass None to send silence")
        self.url = url
        self.call_sid = call_sid or "CA" + secrets.token_hex(16)
        self.stream_sid = stream_sid or "MZ" + secrets.token_hex(16)
        self.account_sid = account_sid or "AC" + secrets.token_hex(16)
        self.custom_parameters = dict(custom_parameters or {})
        self.headers = dict(headers or {})
        if auth_token is not None:
            signed_url = signature_url or _as_wss(url)
            self.headers["X-Twilio-Signature"] = twilio_signature(auth_token, signed_url)
        self.connect_timeout = connect_timeout
        self._inbound_audio = inbound_audio

        self._model = TwilioPlayoutModel(self.stream_sid, time.monotonic())
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._receiver: asyncio.Task[None] | None = None
        self._sid_json = json.dumps(self.stream_sid)
        self._sequence = 0
        self._connected_at: float | None = None
        self._start_sent_at: float | None = None
        self._ended_at: float | None = None
        self._ended = False
        self._hung_up = False
        self._closed_by_gateway = False
        self._close_code: int | None = None
        self._inbound_frames_sent = 0
        self._marks_sent_back: list[tuple[float, str]] = []
        self._marks_returned = 0  # cursor of wait_for_mark(None)
        self._background_error: BaseException | None = None
        self._state_changed = asyncio.Event()
        self._wake_clock = asyncio.Event()

    # ---- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> TwilioCallSim:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await self.hangup()
        if exc_type is None and self._background_error is not None:
            raise self._background_error

    async def connect(self) -> None:
        """Open the socket, send ``connected`` and ``start``, start streaming."""
        if self._session is not None:
            raise RuntimeError("TwilioCallSim.connect() called twice; one sim is one call")
        self._session = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(self.connect_timeout):
                self._ws = await self._session.ws_connect(
                    self.url,
                    headers=self.headers,
                    autoping=True,
                    heartbeat=None,
                    max_msg_size=0,  # Twilio documents no per-message limit
                    timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                )
        except TimeoutError:
            await self._session.close()
            raise TimeoutError(
                f"could not open the media WebSocket {self.url} within "
                f"{self.connect_timeout} s"
            ) from None
        except BaseException:
            await self._session.close()
            raise
        self._connected_at = time.monotonic()
        await self._send_text('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        await self._send_text(self._start_message())
        self._start_sent_at = time.monotonic()
        self._receiver = asyncio.create_task(self._receive(), name="twilio-sim-receive")
        self._tasks = [
            self._receiver,
            asyncio.create_task(self._stream_inbound_media(), name="twilio-sim-media"),
            asyncio.create_task(self._run_playout_clock(), name="twilio-sim-clock"),
        ]

    async def hangup(self) -> None:
        """The caller hangs up: send ``stop`` and close. Idempotent; safe after the
        gateway has closed (then it only releases resources)."""
        if self._hung_up:
            return
        self._hung_up = True
        if self._session is None:
            return
        if not self._ended:
            self._end(time.monotonic(), by_gateway=False)
            await self._send_text(self._stop_message())
        if self._ws is not None and not self._ws.closed:
            try:
                await asyncio.wait_for(self._ws.close(), 3.0)
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                pass
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=3.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._session.close()

    async def drop(self) -> None:
        """The network drops the call: no ``stop``, no WebSocket close frame, the TCP
        connection just goes away (what a carrier-side crash looks like to the gateway)."""
        if self._hung_up:
            return
        self._hung_up = True
        if not self._ended:
            self._end(time.monotonic(), by_gateway=False)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # ---- what the test does ----------------------------------------------------

    async def wait_for_media(self, frames: int = 1, timeout: float = 10.0) -> int:
        """Wait until ``frames`` media messages in total have arrived from the gateway;
        return the count."""

        def enough() -> int | None:
            count = len(self._model.arrivals)
            return count if count >= frames else None

        return await self._wait_until(enough, timeout, f"{frames} media message(s)")

    async def wait_for_mark(self, name: str | None = None, timeout: float = 10.0) -> str:
        """Wait for a mark echo sent back to the gateway and return its name.

        With ``name``: returns once that mark has been echoed (at any time during the call,
        including before this call). Without: returns the next echo not yet returned by an
        earlier ``wait_for_mark()`` without a name, in order.
        """

        def echoed() -> str | None:
            sent = self._marks_sent_back
            if name is not None:
                return name if any(n == name for _, n in sent) else None
            if self._marks_returned < len(sent):
                self._marks_returned += 1
                return sent[self._marks_returned - 1][1]
            return None

        what = f"echo of mark {name!r}" if name is not None else "mark echo"
        return await self._wait_until(echoed, timeout, what)

    async def wait_for_clear(self, timeout: float = 5.0) -> float:
        """Wait until the gateway has sent a ``clear``; return when the last one arrived."""
        return await self._wait_until(lambda: self.result.clears[-1] if self.result.clears
                                      else None, timeout, "clear")

    async def wait_idle(self, quiet: float = 0.5, timeout: float = 30.0) -> None:
        """Wait until no media has arrived for ``quiet`` seconds and the playout FIFO has
        drained (or the call has ended)."""

        def last_activity() -> float:
            arrivals = self._model.arrivals
            if arrivals:
                return arrivals[-1][0]
            return self._start_sent_at or time.monotonic()

        def idle() -> bool | None:
            if self._ended:
                return True
            quiet_for = time.monotonic() - last_activity()
            return True if quiet_for >= quiet and not self._model.playing else None

        def next_check() -> float:
            # Until the quiet period is over, recheck when it ends; after that only the
            # FIFO running dry is missing, and the playout clock reports that.
            left = last_activity() + quiet - time.monotonic()
            return max(0.001, left) if left > 0 else math.inf

        await self._wait_until(idle, timeout, f"{quiet} s of quiet", next_check, allow_ended=True)

    async def send_dtmf(self, digits: str) -> None:
        """Send one ``dtmf`` event per digit (``0``-``9``, ``*``, ``#``)."""
        for digit in digits:
            if digit not in "0123456789*#":
                raise ValueError(f"Twilio reports DTMF digits 0-9, * and #, not {digit!r}")
        for digit in digits:
            await self._send_or_raise(
                '{"event":"dtmf","sequenceNumber":"%s","streamSid":%s,'
                '"dtmf":{"track":"inbound_track","digit":"%s"}}'
                % (self._next_sequence(), self._sid_json, digit)
            )

    async def send_raw_text(self, text: str) -> None:
        """Send any text frame as is (for testing the gateway's error handling)."""
        await self._send_or_raise(text)

    async def send_raw_bytes(self, data: bytes) -> None:
        """Send a binary frame (Twilio never does; for testing the gateway)."""
        if self._ended or self._ws is None:
            raise CallClosedError("the call has ended; cannot send a binary frame")
        try:
            await self._ws.send_bytes(data)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise CallClosedError(f"the socket closed while sending: {exc}") from None

    @property
    def model(self) -> TwilioPlayoutModel:
        """The live playout model (read-only use)."""
        return self._model

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def result(self) -> TwilioCallResult:
        """A snapshot of everything recorded so far."""
        model = self._model
        return TwilioCallResult(
            call_sid=self.call_sid,
            stream_sid=self.stream_sid,
            connected_at=self._connected_at,
            start_sent_at=self._start_sent_at,
            first_media_at=model.arrivals[0][0] if model.arrivals else None,
            ended_at=self._ended_at,
            frames=list(model.arrivals),
            utterance_starts=list(model.utterance_starts),
            heard=bytes(model.heard),
            heard_segments=model.heard_segments,
            marks_received=list(model.marks_received),
            marks_sent_back=list(self._marks_sent_back),
            clears=list(model.clears),
            violations=list(model.violations),
            underruns=model.underruns,
            underrun_gaps=list(model.underrun_gaps),
            cleared_bytes=model.cleared_bytes,
            dropped_bytes=model.dropped_bytes,
            discarded_at_close_bytes=model.discarded_at_close_bytes,
            inbound_frames_sent=self._inbound_frames_sent,
            closed_by_gateway=self._closed_by_gateway,
            close_code=self._close_code,
        )

    # ---- background tasks ------------------------------------------------------

    async def _receive(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            async for message in ws:
                now = time.monotonic()
                if message.type == aiohttp.WSMsgType.TEXT:
                    echoes = self._model.receive_text(message.data, now)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    echoes = self._model.receive_bytes(message.data, now)
                else:  # ERROR: the connection is broken
                    break
                await self._send_echoes(echoes)
                self._wake_clock.set()
                self._notify()
        except (aiohttp.ClientError, ConnectionError):
            pass
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self._background_error = exc
            raise
        finally:
            self._close_code = ws.close_code
            self._end(time.monotonic(), by_gateway=not self._hung_up)

    async def _stream_inbound_media(self) -> None:
        prefix = '{"event":"media","sequenceNumber":"'
        middle = '","streamSid":' + self._sid_json + ',"media":{"track":"inbound","chunk":"'
        silence = binascii.b2a_base64(MULAW_SILENCE * FRAME_BYTES, newline=False).decode()
        start = time.monotonic()
        index = 0
        try:
            while not self._ended:
                delay = start + index * FRAME_SECONDS - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._ended:
                    break
                if self._inbound_audio is None:
                    payload = silence
                else:
                    frame = self._inbound_frame(index)
                    payload = binascii.b2a_base64(frame, newline=False).decode()
                text = (
                    f'{prefix}{self._next_sequence()}{middle}{index + 1}","timestamp":"'
                    f'{index * 20}","payload":"{payload}"}}}}'
                )
                if not await self._send_text(text):
                    break
                index += 1
                self._inbound_frames_sent = index
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self._background_error = exc
            raise

    async def _run_playout_clock(self) -> None:
        try:
            while not self._ended:
                self._wake_clock.clear()
                echoes = self._model.advance(time.monotonic())
                await self._send_echoes(echoes)
                self._notify()
                deadline = self._model.next_deadline()
                # A 1 ms floor keeps a deadline that float rounding left a hair unreached
                # from turning into a busy loop.
                delay = 0.1 if deadline is None else max(0.001, deadline - time.monotonic())
                try:
                    await asyncio.wait_for(self._wake_clock.wait(), delay)
                except TimeoutError:
                    pass
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self._background_error = exc
            raise

    # ---- helpers ---------------------------------------------------------------

    def _end(self, now: float, *, by_gateway: bool) -> None:
        if self._ended:
            return
        self._ended = True
        self._ended_at = now
        self._closed_by_gateway = by_gateway
        self._model.close(now)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not self._receiver and task is not current:
                task.cancel()
        self._wake_clock.set()
        self._notify()

    def _notify(self) -> None:
        self._state_changed.set()
        self._state_changed = asyncio.Event()

    async def _wait_until(
        self,
        check: Callable[[], _T | None],
        timeout: float,
        what: str,
        next_check: Callable[[], float] | None = None,
        allow_ended: bool = False,
    ) -> _T:
        deadline = time.monotonic() + timeout
        while True:
            if self._background_error is not None:
                raise self._background_error
            value = check()
            if value is not None:
                return value
            if self._ended and not allow_ended:
                who = "the gateway closed the socket" if self._closed_by_gateway else "hung up"
                raise CallClosedError(f"call ended ({who}) before {what}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {what} within {timeout} s")
            wait = remaining if next_check is None else min(remaining, next_check())
            changed = self._state_changed
            try:
                await asyncio.wait_for(changed.wait(), wait)
            except TimeoutError:
                pass

    async def _send_echoes(self, names: list[str]) -> None:
        for name in names:
            text = (
                '{"event":"mark","sequenceNumber":"%s","streamSid":%s,"mark":{"name":%s}}'
                % (self._next_sequence(), self._sid_json, json.dumps(name))
            )
            if await self._send_text(text):
                self._marks_sent_back.append((time.monotonic(), name))

    async def _send_text(self, text: str) -> bool:
        ws = self._ws
        if ws is None or ws.closed:
            return False
        try:
            await ws.send_str(text)
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            return False
        return True

    async def _send_or_raise(self, text: str) -> None:
        if self._ended:
            raise CallClosedError("the call has ended; cannot send")
        if not await self._send_text(text):
            raise CallClosedError("the socket closed while sending")

    def _next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    def _inbound_frame(self, index: int) -> bytes:
        audio = self._inbound_audio
        assert audio is not None
        start = (index * FRAME_BYTES) % len(audio)
        frame = audio[start : start + FRAME_BYTES]
        while len(frame) < FRAME_BYTES:
            frame += audio[: FRAME_BYTES - len(frame)]
        return frame

    def _start_message(self) -> str:
        return json.dumps(
            {
                "event": "start",
                "sequenceNumber": str(self._next_sequence()),
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": self.custom_parameters,
                    "mediaFormat": {
                        "encoding": "audio/x-mulaw",
                        "sampleRate": 8000,
                        "channels": 1,
                    },
                },
            },
            separators=(",", ":"),
        )

    def _stop_message(self) -> str:
        return json.dumps(
            {
                "event": "stop",
                "sequenceNumber": str(self._next_sequence()),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            },
            separators=(",", ":"),
        )
