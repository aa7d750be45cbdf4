"""Graceful drain: what the gateway does between SIGTERM and its exit.

Operators deploy new versions in the middle of a business day; a deploy must not cut
calls. On the first SIGTERM (or SIGINT) the gateway

1. turns not-ready: ``GET /readyz`` answers 503 with ``"status": "draining"``, so
   Kubernetes and load balancers stop sending it new calls;
2. refuses new media streams with 503 and a message that says it is draining (an
   AudioSocket connection is hung up instead: it has no status code). The calls in
   progress go on untouched: their media, their control API, ``/metrics``;
3. waits for those calls to end by themselves, for at most ``server.drain_timeout_s``;
4. hangs up the calls still there when the limit passes: speech already accepted may
   play on for up to ``playout.hangup_mark_timeout_s``, then it is cut (the carrier's
   buffer cleared), the carrier's hang-up is sent and the socket closed. A second SIGTERM
   (or SIGINT) at any point cuts this short: the remaining calls are interrupted and hung
   up at once;
5. stops the HTTP server; the application's cleanup closes the provider pools; the
   process exits 0.

So the longest a drain takes is ``drain_timeout_s + hangup_mark_timeout_s`` plus a few
seconds of shutdown; Kubernetes' ``terminationGracePeriodSeconds`` must be longer than
that plus the ``preStop`` pause (deploy/k8s/deployment.yaml).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.core.call import Call

log = logging.getLogger(__name__)


class Drain:
    """The drain state of one application, at ``app[DRAIN]``.

    ``calls`` is the application's live mapping of calls in progress (``app[CALLS]``): the
    media endpoint removes a call from it when the call ends, which is what :meth:`run`
    waits for.
    """

    poll_s = 0.05
    report_every_s = 15.0

    def __init__(self, calls: dict[str, Call], limit_s: float, hangup_timeout_s: float):
        self.calls = calls
        self.limit_s = limit_s
        self.hangup_timeout_s = hangup_timeout_s
        self.started_at: float | None = None  # time.monotonic() of the first signal
        self.reason = ""
        self._forced = asyncio.Event()

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    @property
    def forced(self) -> bool:
        return self._forced.is_set()

    def seconds_left(self) -> float | None:
        """Until the limit hangs up the remaining calls; None when not draining."""
        if self.started_at is None:
            return None
        return max(0.0, self.started_at + self.limit_s - time.monotonic())

    def begin(self, reason: str = "SIGTERM") -> None:
        """Stop taking calls (idempotent). The calls in progress go on."""
        if self.started_at is not None:
            return
        self.started_at = time.monotonic()
        self.reason = reason
        log.warning("%s: draining; not ready, new calls are refused; %d call(s) in progress "
                    "may go on for up to %.0f s (server.drain_timeout_s); send it again to "
                    "hang them up now", reason, len(self.calls), self.limit_s)

    def force(self, reason: str = "second signal") -> None:
        """End the drain now: the remaining calls are interrupted and hung up."""
        self.begin(reason)
        if not self._forced.is_set():
            self._forced.set()
            log.warning("%s: drain cut short; hanging up %d call(s) now", reason,
                        len(self.calls))

    def refusal(self) -> str | None:
        """Why a new media stream is refused while draining, else None."""
        if self.started_at is None:
            return None
        return ("draining: this gateway instance is shutting down and takes no new calls; "
                "place the call on another instance")

    def status(self) -> dict:
        left = self.seconds_left()
        return {"draining": self.draining, "active_calls": len(self.calls),
                "drain_seconds_left": None if left is None else round(left, 1)}

    async def run(self) -> int:
        """Drain: wait for the calls to end, up to the limit, then hang up the rest.

        Returns how many calls the drain itself had to hang up (0 when every call ended by
        itself). Every wait is bounded: the limit, then the hang-up bound.
        """
        self.begin()
        assert self.started_at is not None
        deadline = self.started_at + self.limit_s
        next_report = time.monotonic() + self.report_every_s
        while self.calls and not self._forced.is_set():
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= next_report:
                next_report = now + self.report_every_s
                log.info("draining: %d call(s) in progress, %.0f s left", len(self.calls),
                         deadline - now)
            try:
                await asyncio.wait_for(self._forced.wait(), min(self.poll_s, deadline - now))
            except TimeoutError:
                pass
        waited = time.monotonic() - self.started_at
        if not self.calls:
            log.info("drained: every call ended by itself within %.1f s", waited)
            return 0
        return await self._hang_up_remaining(waited)

    async def _hang_up_remaining(self, waited: float) -> int:
        """Hang up what is left: speech already accepted may play for up to
        ``hangup_timeout_s`` (none when forced), then it is cut (the carrier's buffer
        cleared) and the call closed. Bounded: ``hangup_timeout_s`` + 2 s."""
        calls = list(self.calls.values())
        cut = self._forced.is_set()
        log.warning("drain %s after %.1f s: hanging up %d call(s)%s",
                    "cut short" if cut else "limit reached", waited, len(calls),
                    "" if cut else f", letting accepted speech play for up to "
                                   f"{self.hangup_timeout_s:g} s")
        for call in calls:
            if cut:
                await call.interrupt()
            call.request_hangup()
        grace_ends = time.monotonic() + (0.0 if cut else self.hangup_timeout_s)
        deadline = grace_ends + 2.0
        while self.calls and time.monotonic() < deadline:
            if not cut and (self._forced.is_set() or time.monotonic() >= grace_ends):
                cut = True  # a hang-up waits for the speech it accepted: stop that speech
                for call in list(self.calls.values()):
                    await call.interrupt()
            await asyncio.sleep(self.poll_s)
        if self.calls:
            log.warning("%d call(s) did not close in time; they end with the server",
                        len(self.calls))
        return len(calls)
