"""What the fake provider servers share: socket bookkeeping and a forced close.

Every fake keeps a :class:`FakeStats` at ``app["stats"]`` (a plain string key, like the
fakes' other keys, so tests need not import anything) and wraps its WebSocket handler in
:func:`track_socket`, so all of them count connections the same way. :func:`close_all`
closes every live server socket of one fake: the provider dropping its sockets (a restart,
a load-balancer drain), for tests that check the client heals.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["STATS", "FakeStats", "add_stats", "close_all", "track_socket"]

#: The app key of the :class:`FakeStats` (a plain string on purpose).
STATS = "stats"


@dataclass(eq=False)
class FakeStats:
    """Socket bookkeeping of one fake server.

    ``connections``: WebSocket upgrades accepted so far; ``sockets``: the live server-side
    sockets; ``open``: how many there are. ``stats["connections"]`` also works.
    """

    connections: int = 0
    sockets: set[web.WebSocketResponse] = field(default_factory=set)

    @property
    def open(self) -> int:
        return len(self.sockets)

    def __getitem__(self, key: str) -> object:
        return getattr(self, key)


def add_stats(app: web.Application) -> FakeStats:
    """Put a fresh :class:`FakeStats` at ``app["stats"]`` and return it."""
    stats = FakeStats()
    with warnings.catch_warnings():  # a plain str key on purpose, like app["log"]
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app[STATS] = stats
    return stats


@contextmanager
def track_socket(app: web.Application, ws: web.WebSocketResponse) -> Iterator[FakeStats]:
    """Around a handler, once ``ws.prepare`` succeeded: count the connection and keep
    ``ws`` in ``stats.sockets`` until the handler is done with it."""
    stats: FakeStats = app[STATS]
    stats.connections += 1
    stats.sockets.add(ws)
    try:
        yield stats
    finally:
        stats.sockets.discard(ws)


async def close_all(app: web.Application, code: int = 1000,
                    message: bytes = b"server restart") -> int:
    """Close every live server socket of the fake ``app`` with a close frame ``code`` /
    ``message``, as a provider dropping its connections would; return how many.

    The handlers see the close and end their sessions; each close waits (up to aiohttp's
    close timeout) for the client's answering close frame."""
    stats: FakeStats = app[STATS]
    sockets = [ws for ws in stats.sockets if not ws.closed]
    await asyncio.gather(*(ws.close(code=code, message=message) for ws in sockets),
                         return_exceptions=True)
    return len(sockets)
