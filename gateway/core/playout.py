"""Real-time pacing: one media clock per process, one playout queue per call.

A call's outbound audio waits in its ``Playout`` as ready-to-send carrier messages, one
per 20 ms frame. Each frame has a play time on the carrier's timeline; the frame is sent
once its play time is within ``lead`` of now. The ``MediaClock`` wakes every 20 ms on
absolute deadlines (never ``sleep(0.02)`` in a loop, which drifts) and pumps every
playout that has work, so a process with hundreds of calls runs one timer, not hundreds.
New audio does not wait for the next tick: ``kick`` sends what is due at once, which keeps
the gateway's own latency to first audio near zero.

Silence is never invented: when an utterance's audio arrives slower than real time the
queue runs dry, an underrun is counted, and the timeline is rebased when audio resumes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from gateway.metrics import Metrics

log = logging.getLogger(__name__)

FRAME_SECONDS = 0.020
# Stop feeding a carrier socket whose unsent backlog exceeds this (about 2 s of Twilio
# messages): one slow reader must never stall the clock for every other call.
MAX_SOCKET_BACKLOG = 32 * 1024


class Cue:
    """A queue entry that takes no playing time: a mark to send, or a moment to note.

    ``message`` (if any) is sent when the cue reaches the head of the queue, right after
    the frames before it; then ``on_reached(now)`` runs.
    """

    __slots__ = ("message", "on_reached")

    def __init__(self, message: str | bytes | None, on_reached: Callable[[float], None]):
        self.message = message
        self.on_reached = on_reached


class Playout:
    """One call's outbound queue, released on the media clock.

    ``send`` writes one message to the carrier (it must not block for long: the clock
    checks ``backlog()`` first). ``on_underrun`` is told when the queue ran dry mid-utterance.
    """

    def __init__(self, clock: MediaClock, send: Callable[[str | bytes], Awaitable[None]],
                 backlog: Callable[[], int], *, lead: float, carrier: str,
                 on_error: Callable[[BaseException], None]):
        self._clock = clock
        self._send = send
        self._backlog = backlog
        self._on_error = on_error
        self.lead = lead
        self.carrier = carrier
        self.queue: deque = deque()
        self.next_play_time = 0.0  # carrier play time of the next frame
        self.in_utterance = False  # frames of an unfinished utterance may still come
        self._playing = False  # a frame of the current utterance has been sent
        self._starved = False
        self._pumping = False
        self.closed = False
        self.frames_sent = 0
        self.underruns = 0
        self.last_activity_monotonic = 0.0  # when a frame last left, for hang-up timing
        m = clock.metrics
        self._frames_metric = m.frames_sent.labels(carrier)
        self._underrun_metric = m.underruns.labels(carrier)
        self._skip_metric = m.backpressure_skips.labels(carrier)

    # -- producer side ----------------------------------------------------------------

    def enqueue(self, item: str | bytes | Cue) -> None:
        if self.closed:
            return
        self.queue.append(item)
        self._clock.activate(self)

    def begin_utterance(self) -> None:
        self.in_utterance = True
        self._playing = False

    def end_utterance(self) -> None:
        """No more frames of the current utterance will be enqueued."""
        self.in_utterance = False
        self._clock.activate(self)

    def queued_seconds(self) -> float:
        return sum(1 for item in self.queue if not isinstance(item, Cue)) * FRAME_SECONDS

    def clear(self) -> list[Cue]:
        """Drop everything queued; return the cues that will now never be reached."""
        dropped = [item for item in self.queue if isinstance(item, Cue)]
        self.queue.clear()
        self.in_utterance = False
        self._playing = False
        self._starved = False
        return dropped

    async def kick(self) -> None:
        """Send what is due now instead of waiting for the next clock tick."""
        await self.pump(self._clock.now())

    # -- clock side ---------------------------------------------------------------------

    async def pump(self, now: float) -> None:
        if self._pumping or self.closed:
            return
        self._pumping = True
        try:
            await self._release_due(now)
        except Exception as exc:  # a dead socket ends this call's playout, not the clock
            self.closed = True
            self.queue.clear()
            self._on_error(exc)
        finally:
            self._pumping = False
        if not self.queue and not self.in_utterance:
            self._clock.deactivate(self)

    async def _release_due(self, now: float) -> None:
        queue = self.queue
        if self.next_play_time < now:
            if not queue and self.in_utterance and self._playing and not self._starved:
                self._starved = True
                self.underruns += 1
                self._underrun_metric.inc()
            self.next_play_time = now
        if not queue:
            return
        self._starved = False
        horizon = now + self.lead
        sent = 0
        while queue:
            item = queue[0]
            if item.__class__ is Cue:
                queue.popleft()
                if item.message is not None:
                    await self._send(item.message)
                item.on_reached(now)
                continue
            if self.next_play_time > horizon:
                break
            if self._backlog() > MAX_SOCKET_BACKLOG:
                self._skip_metric.inc()
                break
            queue.popleft()
            await self._send(item)
            self.next_play_time += FRAME_SECONDS
            sent += 1
        if sent:
            self._playing = self.in_utterance
            self.frames_sent += sent
            self._frames_metric.inc(sent)
            self.last_activity_monotonic = time.monotonic()


class MediaClock:
    """One 20 ms clock for every call in the process."""

    def __init__(self, metrics: Metrics, period: float = FRAME_SECONDS):
        self.metrics = metrics
        self.period = period
        self._active: dict[Playout, None] = {}  # insertion-ordered set
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
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

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="media-clock")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        loop = self._loop
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
                await playout.pump(now)
