"""Call events for bots: fanned out to bot sockets and to a route's ``events_url``.

Each event carries ``seq``, 1, 2, 3 ... per call in emit order: a bot that reconnects asks
for the events after the last one it got (``replay``), and drops any it sees twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE_LIMIT = 1000
REPLAY_LIMIT = 200  # events kept for a bot that reconnects
HISTORY_LIMIT = 20  # events shown by GET /v1/calls/{id}
WEBHOOK_TIMEOUT = aiohttp.ClientTimeout(total=5)


class EventHub:
    """Delivers one call's events, in order, to every subscriber.

    A subscriber that stops reading loses its oldest events rather than holding the call
    up. Webhook delivery (``events_url``) runs in one task per call so events arrive in order;
    a failing webhook is logged and counted, never retried forever.
    """

    def __init__(self, call_id: str, *, events_url: str | None = None,
                 http: aiohttp.ClientSession | None = None, on_webhook_error=None):
        self.call_id = call_id
        self._subscribers: list[asyncio.Queue] = []
        self._events_url = events_url if http is not None else None
        self._http = http
        self._webhook_queue: asyncio.Queue | None = None
        self._webhook_task: asyncio.Task | None = None
        self._on_webhook_error = on_webhook_error
        self._replay: deque[dict[str, Any]] = deque(maxlen=REPLAY_LIMIT)
        self.seq = 0  # of the last event emitted
        self.started: dict[str, Any] | None = None  # the call.started event
        self.closed = False

    @property
    def history(self) -> list[dict[str, Any]]:
        """The last few events, for GET /v1/calls/{id}."""
        return list(self._replay)[-HISTORY_LIMIT:]

    def replay(self, after_seq: int = 0) -> list[dict[str, Any]]:
        """The events kept (at most the last ``REPLAY_LIMIT``) with ``seq`` after
        ``after_seq``, oldest first. Taken together with ``subscribe`` (no await between),
        they and the queue's events follow each other without a gap or a repeat."""
        return [event for event in self._replay if event["seq"] > after_seq]

    def subscribe(self) -> asyncio.Queue:
        """A queue of the events emitted from now on, and ``None`` once the call is over
        (at once for a call already over)."""
        queue: asyncio.Queue = asyncio.Queue(SUBSCRIBER_QUEUE_LIMIT)
        if self.closed:
            queue.put_nowait(None)
            return queue
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        if queue in self._subscribers:
            self._subscribers.remove(queue)

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        event = {"type": kind, "call_id": self.call_id, "ts": round(time.time(), 3),
                 "seq": self.seq, **fields}
        self._replay.append(event)
        if kind == "call.started":
            self.started = event
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)
        if self._events_url:
            self._post(event)
        return event

    def _post(self, event: dict[str, Any]) -> None:
        if self._webhook_queue is None:
            assert self._http is not None and self._events_url  # the URL is kept with a session
            self._webhook_queue = asyncio.Queue(SUBSCRIBER_QUEUE_LIMIT)
            self._webhook_task = asyncio.get_running_loop().create_task(
                self._deliver(self._webhook_queue, self._http, self._events_url))
        if not self._webhook_queue.full():
            self._webhook_queue.put_nowait(event)

    async def _deliver(self, queue: asyncio.Queue, http: aiohttp.ClientSession,
                       url: str) -> None:
        while True:
            event = await queue.get()
            if event is None:
                return
            try:
                async with http.post(url, json=event, timeout=WEBHOOK_TIMEOUT) as resp:
                    if resp.status >= 300:
                        raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
            except Exception as exc:
                log.warning("call %s: events_url %s failed for %s: %s", self.call_id,
                            self._events_url, event["type"], exc)
                if self._on_webhook_error:
                    self._on_webhook_error()

    async def close(self) -> None:
        """Flush pending webhook deliveries (bounded) and stop."""
        self.closed = True
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)  # tells control sockets the call is over
        if self._webhook_task and self._webhook_queue is not None:
            self._webhook_queue.put_nowait(None)
            try:
                await asyncio.wait_for(self._webhook_task, timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                self._webhook_task.cancel()
