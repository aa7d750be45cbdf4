"""Call events for bots: fanned out to control WebSockets and to a route's ``events_url``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE_LIMIT = 1000
WEBHOOK_TIMEOUT = aiohttp.ClientTimeout(total=5)
REPLAY_EVENTS = 200  # STAND-IN (helper T) for helper P's seq/replay: the last events kept


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
        self.history: list[dict[str, Any]] = []  # the last few, for GET /v1/calls/{id}
        # STAND-IN (helper T) for helper P's version: events numbered 1, 2, 3 ... and the
        # last REPLAY_EVENTS of them kept for a bot socket that reconnects
        self.seq = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=REPLAY_EVENTS)

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(SUBSCRIBER_QUEUE_LIMIT)
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        if queue in self._subscribers:
            self._subscribers.remove(queue)

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        event = {"type": kind, "call_id": self.call_id, "ts": round(time.time(), 3),
                 "seq": self.seq, **fields}
        self.recent.append(event)
        self.history.append(event)
        del self.history[:-20]
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)
        if self._events_url:
            self._post(event)
        return event

    def _post(self, event: dict[str, Any]) -> None:
        if self._webhook_queue is None:
            self._webhook_queue = asyncio.Queue(SUBSCRIBER_QUEUE_LIMIT)
            self._webhook_task = asyncio.get_running_loop().create_task(self._deliver())
        if not self._webhook_queue.full():
            self._webhook_queue.put_nowait(event)

    async def _deliver(self) -> None:
        while True:
            event = await self._webhook_queue.get()
            if event is None:
                return
            try:
                async with self._http.post(self._events_url, json=event,
                                           timeout=WEBHOOK_TIMEOUT) as resp:
                    if resp.status >= 300:
                        raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
            except Exception as exc:
                log.warning("call %s: events_url %s failed for %s: %s", self.call_id,
                            self._events_url, event["type"], exc)
                if self._on_webhook_error:
                    self._on_webhook_error()

    async def close(self) -> None:
        """Flush pending webhook deliveries (bounded) and stop."""
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)  # tells control sockets the call is over
        if self._webhook_task:
            self._webhook_queue.put_nowait(None)
            try:
                await asyncio.wait_for(self._webhook_task, timeout=5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._webhook_task.cancel()
