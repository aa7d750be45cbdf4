"""The carrier's playout buffer, without I/O: a FIFO of wire bytes drained in real time.

Every buffering carrier (Twilio, Telnyx, Plivo, Vonage, Exotel, Asterisk chan_websocket) plays
what the gateway sends through one of these; only validation, limits and the wire form of
the echoes differ, and those live in the carrier's model. Times are seconds on a clock the
caller passes in (never decreasing).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

# Slack when turning elapsed seconds into whole bytes played (1/1000 byte): a deadline
# from next_deadline() must be reached when advance() is called at exactly that time.
_BYTE_EPSILON = 1e-3


@dataclass(frozen=True, slots=True)
class Reached:
    """A mark whose turn came: everything queued before it has played (or, on a clear of a
    carrier that echoes cleared marks, was flushed). ``data`` is what the carrier keeps with
    it (Vonage: the notify payload; Asterisk: which event to answer with)."""

    name: str
    data: Any = None


class Playout:
    """A FIFO of audio and in-band marks, played at ``bytes_per_second`` while it holds audio.

    * A run of playout starts when audio reaches an empty FIFO (at its arrival time) and
      ends when the FIFO runs dry; :attr:`heard` gets the played bytes in order and
      :attr:`heard_segments` one ``(start, byte count)`` per run (runs less than the underrun
      tolerance apart count as one, unless ``join_close_runs`` is false).
    * A mark is reached when the playout passes the point where it was queued; a mark queued
      while nothing plays is reached at once.
    * :meth:`clear_queue` drops the buffered audio; pending marks are reached at once when
      ``marks_on_clear == "echo"``, or dropped (listed in :attr:`marks_dropped`) when ``"drop"``.
    * Underrun: the FIFO ran dry at ``T`` and the next audio arrived at ``t > T + tolerance``
      with no mark and no clear since the audio before (a mark or a clear is an utterance
      boundary, where silence is expected); recorded in :attr:`underrun_gaps` as ``(T, t - T)``.
      :attr:`utterance_starts` indexes :attr:`arrivals` where an utterance begins.
    * :meth:`end` stops playout: what is still buffered is never heard, pending marks never
      reached.
    """

    def __init__(self, bytes_per_second: int, now: float = 0.0, *, marks_on_clear: str = "echo",
                 underrun_tolerance: float = 0.001, join_close_runs: bool = True) -> None:
        if marks_on_clear not in ("echo", "drop"):
            raise ValueError(f"marks_on_clear must be 'echo' or 'drop', not {marks_on_clear!r}")
        self.bytes_per_second = bytes_per_second
        self.marks_on_clear = marks_on_clear
        self.underrun_tolerance = underrun_tolerance
        self.join_close_runs = join_close_runs
        self.heard = bytearray()
        #: ``(arrival time, payload as on the wire)`` of every accepted media message
        self.arrivals: list[tuple[float, bytes]] = []
        self.utterance_starts: list[int] = []
        self.marks_received: list[tuple[float, str]] = []
        self.marks_echoed: list[tuple[float, str]] = []
        self.marks_dropped: list[tuple[float, str]] = []
        self.clears: list[float] = []
        self.underrun_gaps: list[tuple[float, float]] = []
        self.cleared_bytes = 0
        self.discarded_at_close_bytes = 0
        self.closed_at: float | None = None

        self._now = now
        self._chunks: deque[bytes] = deque()
        self._head_offset = 0
        self._enqueued = 0  # bytes ever queued, minus cleared ones
        self._played = 0
        self._marks: deque[tuple[int, Reached]] = deque()  # (value of _enqueued when queued, mark)
        self._playing = False
        self._run_start = now
        self._run_played = 0
        self._segments: list[list[float | int]] = []
        self._ran_dry_at: float | None = None
        self._boundary_since_media = True

    # ---- state -----------------------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        return self._enqueued - self._played

    @property
    def playing(self) -> bool:
        """The FIFO holds audio: the caller is hearing the gateway right now."""
        return self._playing

    @property
    def pending_marks(self) -> tuple[str, ...]:
        return tuple(mark.name for _, mark in self._marks)

    @property
    def underruns(self) -> int:
        return len(self.underrun_gaps)

    @property
    def heard_segments(self) -> list[tuple[float, int]]:
        return [(float(start), int(count)) for start, count in self._segments]

    def next_deadline(self) -> float | None:
        """When the next mark is due or, without pending marks, when the FIFO runs dry."""
        if not self._playing:
            return None
        target = self._marks[0][0] if self._marks else self._enqueued
        return self._time_when_played(target)

    def when_buffered_at_most(self, nbytes: int) -> float | None:
        """When the playout will have brought the buffer down to ``nbytes`` (None: not
        playing or already there)."""
        if not self._playing or self.buffered_bytes <= nbytes:
            return None
        return self._time_when_played(self._enqueued - nbytes)

    # ---- input -----------------------------------------------------------------

    def play_until(self, now: float) -> list[Reached]:
        """Play out up to ``now``; return the marks the playout passed, in order."""
        if now < self._now:
            raise ValueError(f"time went backwards: {now!r} < {self._now!r}")
        self._now = now
        reached: list[Reached] = []
        marks = self._marks
        while self._playing:
            while marks and marks[0][0] <= self._played:
                mark = marks.popleft()[1]
                reached.append(mark)
                self.marks_echoed.append((self._drain_point(), mark.name))
            buffered = self._enqueued - self._played
            if buffered == 0:
                self._ran_dry_at = self._drain_point()
                self._playing = False
                break
            elapsed = (now - self._run_start) * self.bytes_per_second
            playable = math.floor(elapsed + _BYTE_EPSILON) - self._run_played
            if playable <= 0:
                break
            count = min(buffered, playable)
            if marks:
                count = min(count, marks[0][0] - self._played)
            self._play(count)
        return reached

    def queue_audio(self, audio: bytes, now: float, wire: bytes | None = None, *,
                    limit: int | None = None) -> int:
        """Queue ``audio`` (call :meth:`play_until` first); ``wire`` is the message payload
        recorded in :attr:`arrivals` when it differs from what is queued (bytes dropped).

        With ``limit``, only what keeps the buffer within ``limit`` bytes is queued; the
        arrival still counts (utterance start, underrun). Returns the bytes left out."""
        self.arrivals.append((now, bytes(audio if wire is None else wire)))
        if not audio:
            return 0
        if self._boundary_since_media:
            self.utterance_starts.append(len(self.arrivals) - 1)
        elif not self._playing and self._ran_dry_at is not None:
            gap = now - self._ran_dry_at
            if gap > self.underrun_tolerance:
                self.underrun_gaps.append((self._ran_dry_at, gap))
        self._boundary_since_media = False
        left_out = 0
        if limit is not None and len(audio) > limit - self.buffered_bytes:
            room = max(0, limit - self.buffered_bytes)
            left_out = len(audio) - room
            audio = audio[:room]
            if not audio:
                return left_out
        if not self._playing:
            self._playing = True
            self._run_start = now
            self._run_played = 0
            dry_for = math.inf if self._ran_dry_at is None else now - self._ran_dry_at
            if not (self.join_close_runs and dry_for <= self.underrun_tolerance and self._segments):
                self._segments.append([now, 0])  # else too short a hole to hear: same segment
        self._chunks.append(bytes(audio))
        self._enqueued += len(audio)
        return left_out

    def queue_mark(self, name: str, now: float, data: Any = None) -> list[Reached]:
        """Queue a mark; returns it at once if nothing is playing."""
        self.marks_received.append((now, name))
        self._boundary_since_media = True
        mark = Reached(name, data)
        if self._playing:
            self._marks.append((self._enqueued, mark))
            return []
        self.marks_echoed.append((now, name))
        return [mark]

    def boundary(self) -> None:
        """The next audio starts an utterance (for carriers without marks: a long pause)."""
        self._boundary_since_media = True

    def clear_queue(self, now: float) -> list[Reached]:
        """Drop the buffered audio; returns the pending marks if the carrier echoes them."""
        self.clears.append(now)
        self._boundary_since_media = True
        reached: list[Reached] = []
        while self._marks:
            mark = self._marks.popleft()[1]
            if self.marks_on_clear == "echo":
                reached.append(mark)
                self.marks_echoed.append((now, mark.name))
            else:
                self.marks_dropped.append((now, mark.name))
        self.cleared_bytes += self.buffered_bytes
        self._drop_buffer()
        return reached

    def end(self, now: float) -> None:
        """The call ended at ``now``: play out to ``now``, then discard the rest."""
        if self.closed_at is not None:
            return
        self.play_until(now)
        self.discarded_at_close_bytes = self.buffered_bytes
        self._drop_buffer()
        self._marks.clear()
        self.closed_at = now

    # ---- internals -------------------------------------------------------------

    def _time_when_played(self, position: int) -> float:
        ahead = self._run_played + position - self._played
        return self._run_start + ahead / self.bytes_per_second

    def _drain_point(self) -> float:
        if not self._playing:
            return self._now
        return self._run_start + self._run_played / self.bytes_per_second

    def _drop_buffer(self) -> None:
        if self._playing:
            self._ran_dry_at = self._now
        self._chunks.clear()
        self._head_offset = 0
        self._enqueued = self._played
        self._playing = False

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
