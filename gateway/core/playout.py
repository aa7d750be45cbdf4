"""Real-time pacing: one media clock per process, one playout queue per call.

A call's outbound audio waits in its ``Playout`` as raw frames in the carrier's format,
each one carrier media message long (20 ms for most carriers, more where the carrier
wants bigger chunks, e.g. Exotel's 3.2 KB minimum). Each frame has a play time on the
carrier's timeline; the frame is sent once its play time is within ``lead`` of now. The
``MediaClock`` wakes every 20 ms on absolute deadlines (never ``sleep(0.02)`` in a loop,
which drifts) and pumps every playout that has work, so a process with hundreds of calls
runs one timer, not hundreds. New audio does not wait for the next tick: ``kick`` sends
what is due at once, which keeps the gateway's own latency to first audio near zero.

Frames become carrier messages only when they leave (``build_media``), and everything a
call sends in one tick goes to its socket in one write. Silence is never invented: when
an utterance's audio arrives slower than real time the queue runs dry, an underrun is
counted, and the timeline is rebased when audio resumes.

Nor is audio held without bound: a call waits for ``room`` before it takes more audio from
its provider while the queue holds more than ``limits.max_buffered_audio_s`` (back-pressure;
the provider's own buffer is bounded where it is read, gateway/tts/remote/connection.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import final
from collections import deque
from collections.abc import Callable

from gateway.metrics import Metrics

log = logging.getLogger(__name__)

FRAME_SECONDS = 0.020
TICK_SLACK = FRAME_SECONDS / 2
# Stop feeding a carrier socket whose unsent backlog exceeds this (about 2 s of Twilio
# messages): one slow reader must never hold up the clock or grow memory without bound.
MAX_SOCKET_BACKLOG = 32 * 1024


@final  # so that ``type(item) is Cue`` tells a Cue from bytes in the queue
class Cue:
    """A queue entry that takes no playing time: a mark to send, or a moment to note.

    ``message`` (if any) is sent right after the frames queued before it; then
    ``on_reached(now)`` runs. By then ``play_time`` says when the frames before it finish
    playing (the play time of the frame after it) and ``frames`` how many 20 ms frames the
    playout had sent up to it: where it falls on the call's media clock.
    """

    __slots__ = ("frames", "message", "on_reached", "play_time")

    def __init__(self, message: bytes | None, on_reached: Callable[[float], None]):
        self.message = message
        self.on_reached = on_reached
        self.play_time = 0.0
        self.frames = 0


class Playout:
    """One call's outbound queue, released on the media clock.

    ``write(messages)`` sends carrier messages in one go and raises if the socket is gone;
    ``backlog()`` says how many bytes the socket has not sent yet; ``build_media(frame)``
    turns one raw frame into the carrier's media message.
    """

    def __init__(self, clock: MediaClock, write: Callable[[list[bytes]], None],
                 backlog: Callable[[], int], build_media: Callable[[bytes], bytes], *,
                 lead: float, carrier: str, on_error: Callable[[BaseException], None],
                 frames_per_write: int = 1, frame_seconds: float = FRAME_SECONDS):
        self._clock = clock
        self._write = write
        self._backlog = backlog
        self._build = build_media
        self._on_error = on_error
        self.lead = lead
        self.frame_seconds = frame_seconds
        self._frames_per_item = max(1, round(frame_seconds / FRAME_SECONDS))
        # Wait until this many frames are due, then send them in one write: half the system
        # calls at 2, while the carrier still holds at least lead - 20 ms * (n - 1).
        self._batch_slack = (frames_per_write - 1) * frame_seconds
        self.carrier = carrier
        self.queue: deque[bytes | Cue] = deque()
        self.next_play_time = 0.0  # carrier play time of the next frame (loop clock)
        self.in_utterance = False  # frames of an unfinished utterance may still come
        self._playing = False  # a frame of the current utterance has been sent
        self._starved = False
        self.closed = False
        self.paused = False  # the carrier asked us to hold off (flow control)
        self.frames_sent = 0
        self.underruns = 0
        self.last_activity_monotonic = 0.0  # when a frame last left, for hang-up timing
        self._room: asyncio.Future | None = None  # a producer waiting for the queue to drain
        self._room_entries = 0  # ... until it holds at most this many entries

    # -- producer side ----------------------------------------------------------------

    def queued_seconds(self) -> float:
        """Playing time of what is queued (a cue counts as a frame: an upper bound)."""
        return len(self.queue) * self.frame_seconds

    async def room(self, seconds: float) -> None:
        """Return once the queue holds at most ``seconds`` of audio (or the playout is
        closed): a producer's back-pressure. While the carrier is paused this waits."""
        self._room_entries = max(1, int(seconds / self.frame_seconds))
        while len(self.queue) > self._room_entries and not self.closed:
            self._room = asyncio.get_running_loop().create_future()
            try:
                await self._room
            finally:
                self._room = None

    def _wake_producer(self) -> None:
        room = self._room
        if room is not None and not room.done() and (
                len(self.queue) <= self._room_entries or self.closed):
            room.set_result(None)

    def enqueue(self, item: bytes | Cue) -> None:
        if not self.closed:
            self.queue.append(item)
            self._clock.activate(self)

    def extend(self, frames) -> None:
        if not self.closed:
            self.queue.extend(frames)
            self._clock.activate(self)

    def begin_utterance(self) -> None:
        self.in_utterance = True
        self._playing = False

    def end_utterance(self) -> None:
        """No more frames of the current utterance will be enqueued."""
        self.in_utterance = False
        self._clock.activate(self)

    def clear(self) -> list[Cue]:
        """Drop everything queued; return the cues that will now never be reached."""
        dropped = [item for item in self.queue if item.__class__ is Cue]
        self.queue.clear()
        self.in_utterance = False
        self._playing = False
        self._starved = False
        self._wake_producer()
        return dropped

    def drop_tail(self, count: int) -> list[Cue]:
        """Take back up to ``count`` of the entries queued last (those not sent yet);
        return the cues among them. Failover uses it to drop the audio of a cut sentence."""
        queue = self.queue
        dropped = []
        for _ in range(min(count, len(queue))):
            item = queue.pop()
            if item.__class__ is Cue:
                dropped.append(item)
        self._wake_producer()
        return dropped

    def pause(self, paused: bool) -> None:
        """Flow control: hold frames while ``paused``; when resumed, play on from now."""
        self.paused = paused
        if not paused:
            self._clock.activate(self)

    def kick(self) -> None:
        """Send what is due now instead of waiting for the next clock tick."""
        self.pump(self._clock.now())

    def close(self) -> None:
        self.closed = True
        self.queue.clear()
        self._clock.deactivate(self)
        self._wake_producer()

    # -- clock side ---------------------------------------------------------------------

    def pump(self, now: float) -> None:
        if self.closed:
            return
        try:
            self._release_due(now)
        except Exception as exc:  # a dead socket ends this call's playout, not the clock
            self.close()
            self._on_error(exc)
            return
        if not self.queue and not self.in_utterance:
            self._clock.deactivate(self)
        if self._room is not None:
            self._wake_producer()

    def _release_due(self, now: float) -> None:
        queue = self.queue
        if self.paused:
            self.next_play_time = max(self.next_play_time, now)
            return
        if self.next_play_time < now:
            if not queue and self.in_utterance and self._playing and not self._starved:
                self._starved = True
                self.underruns += 1
                self._clock.count_underrun(self.carrier)
            self.next_play_time = now
        if not queue:
            return
        self._starved = False
        # A frame is due in the tick nearest its play time: ticks wake a little late by a
        # varying amount, and without this half-tick slack a tick that is less late than
        # the one before would find nothing due and leave a 20 ms hole (lead 0 carriers).
        horizon = now + self.lead + TICK_SLACK
        batch_start = horizon - self._batch_slack
        if self.next_play_time > batch_start and type(queue[0]) is not Cue:
            return  # nothing due: most ticks of a batching playout end here
        out: list[bytes] = []
        reached: list[Cue] = []
        frames = 0
        build = self._build
        while queue:
            item = queue[0]
            if type(item) is Cue:
                queue.popleft()
                if item.message is not None:
                    out.append(item.message)
                item.play_time = self.next_play_time
                item.frames = self.frames_sent + frames * self._frames_per_item
                reached.append(item)
                continue
            if self.next_play_time > horizon:
                break
            if frames == 0:
                if self.next_play_time > batch_start:
                    break
                if self._backlog() > MAX_SOCKET_BACKLOG:
                    self._clock.count_skip(self.carrier)
                    break
            queue.popleft()
            out.append(build(item))
            self.next_play_time += self.frame_seconds
            frames += 1
        if out:
            self._write(out)
        if frames:
            self._playing = self.in_utterance
            frames *= self._frames_per_item  # counted in 20 ms frames whatever the chunk
            self.frames_sent += frames
            self._clock.count_frames(self.carrier, frames)
            self.last_activity_monotonic = time.monotonic()
        for cue in reached:
            cue.on_reached(now)


class MediaClock:
    """One 20 ms clock for every call in the process.

    Counters are summed per tick and handed to Prometheus once per tick, not per frame.
    """

    def __init__(self, metrics: Metrics, period: float = FRAME_SECONDS):
        self.metrics = metrics
        self.period = period
        self._active: dict[Playout, None] = {}  # insertion-ordered set
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._frames: dict[str, int] = {}
        self._underruns: dict[str, int] = {}
        self._skips: dict[str, int] = {}
        self.ticks = 0

    def now(self) -> float:
        return self._loop.time() if self._loop else asyncio.get_running_loop().time()

    def activate(self, playout: Playout) -> None:
        self._active[playout] = None

    def deactivate(self, playout: Playout) -> None:
        self._active.pop(playout, None)

    @property
    def active_count(self) -> int:
        return len(self._active)

    def count_frames(self, carrier: str, n: int) -> None:
        self._frames[carrier] = self._frames.get(carrier, 0) + n

    def count_underrun(self, carrier: str) -> None:
        self._underruns[carrier] = self._underruns.get(carrier, 0) + 1

    def count_skip(self, carrier: str) -> None:
        self._skips[carrier] = self._skips.get(carrier, 0) + 1

    def flush_counters(self) -> None:
        m = self.metrics
        for counts, metric in ((self._frames, m.frames_sent), (self._underruns, m.underruns),
                               (self._skips, m.backpressure_skips)):
            if counts:
                for carrier, n in counts.items():
                    metric.labels(carrier).inc(n)
                counts.clear()

    def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(loop), name="media-clock")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.flush_counters()

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        lateness = self.metrics.pacing_lateness
        deadline = loop.time()
        while True:
            deadline += self.period
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            late = now - deadline
            lateness.observe(late if late > 0 else 0.0)
            if late > self.period:
                deadline = now  # missed whole ticks: resume from now rather than burst to catch up
            self.ticks += 1
            for playout in tuple(self._active):
                playout.pump(now)
            self.flush_counters()
