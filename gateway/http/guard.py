"""Connection limits in front of the handlers: what one client address may hold open, how
long an HTTP request's head may take, how many media streams may be open at once, and
the log and metric that say why a connection was refused.

An attacker (or a broken client) must not be able to hold the gateway's file descriptors:
every connection is counted per client address (HTTP, WebSocket and AudioSocket alike)
and refused beyond ``limits.max_connections_per_address``; an HTTP request whose head has
not arrived ``limits.header_timeout_s`` after its first byte (or after the connection
opened) is closed. aiohttp has no such timeout of its own, so :class:`GuardedRunner` (used
by ``tts-gateway serve`` and the loopback helper alike) gives every connection a
:class:`GuardedRequestHandler`. The media endpoint counts its streams here too, from the
upgrade on (``limits.max_calls``).

Every refusal is counted in ``tts_gateway_connections_refused_total{reason}`` and logged,
at most one line per reason every 10 seconds with the count of those it held back
(gateway/logs.py's RateLimitedLog).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.config import LimitsConfig
from gateway.logs import RateLimitedLog
from gateway.metrics import CONNECTION_REFUSALS, Metrics

log = logging.getLogger(__name__)

#: idle keep-alive HTTP connections are closed after this (aiohttp's run_app default;
#: a bare AppRunner keeps them for an hour)
KEEPALIVE_TIMEOUT_S = 75.0
#: how long a refused HTTP connection is kept for its client to read the answer
LINGER_S = 1.0


class ConnectionGuard:
    """The connection counts of one application, at ``app[CONNECTIONS]``."""

    def __init__(self, limits: LimitsConfig, metrics: Metrics):
        self.limits = limits
        self.metrics = metrics
        # one line per reason every 10 s, with the count of those held back
        self.log = RateLimitedLog(log, burst=1, interval=10.0)
        self._per_address: dict[str, int] = {}
        #: media streams open (WebSocket upgraded or AudioSocket accepted), started or not
        self.media_streams = 0
        for reason in CONNECTION_REFUSALS:  # every series at 0 before the first refusal
            metrics.connections_refused.labels(reason)

    def refuse(self, reason: str, message: str, *args: Any) -> None:
        """Count a refusal (``reason`` from :data:`CONNECTION_REFUSALS`) and log it,
        rate-limited."""
        self.metrics.connections_refused.labels(reason).inc()
        self.log.warning(reason, message, *args)

    def open(self, address: str) -> bool:
        """Count a new connection from ``address``; False (and not counted) beyond the limit."""
        count = self._per_address.get(address, 0)
        if count >= self.limits.max_connections_per_address:
            self.refuse("per_address", "refused a connection from %s: it has %d open "
                        "(limits.max_connections_per_address)", address, count)
            return False
        self._per_address[address] = count + 1
        return True

    def close(self, address: str) -> None:
        count = self._per_address.get(address, 0) - 1
        if count > 0:
            self._per_address[address] = count
        else:
            self._per_address.pop(address, None)

    def connections_from(self, address: str) -> int:
        return self._per_address.get(address, 0)


CONNECTIONS = web.AppKey("connections", ConnectionGuard)


def peer_address(transport: asyncio.BaseTransport) -> str:
    """The client's address without its port ("" when there is none, a Unix socket)."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, (tuple, list)) and peer else ""


def raw_json_error(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 error response in the API's JSON shape, for a connection that is
    refused before aiohttp has parsed a request; it closes the connection."""
    body = json.dumps({"error": {"status": status, "message": message}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler with the per-address limit and the header timeout.

    The head timer runs while the connection waits for a request head: from the connection's
    start, and on a kept-alive connection from the first byte of the next request (an idle
    kept-alive connection is aiohttp's ``keepalive_timeout``'s business). It stops once a
    head has been parsed; an upgraded connection (a media or control WebSocket) never
    restarts it."""

    __slots__ = ("_address", "_guard", "_head_timer", "_linger")

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._address: str | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None  # set once refused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        address = peer_address(transport)
        if not self._guard.open(address):
            limit = self._guard.limits.max_connections_per_address
            self._refuse(raw_json_error(
                429, "Too Many Requests",
                f"too many connections from this address (at most {limit} open at once)"))
            return
        self._address = address
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._linger is not None:
            self._linger.cancel()
        if self._address is not None:
            self._guard.close(self._address)
            self._address = None
        super().connection_lost(exc)

    def _refuse(self, response: bytes) -> None:
        """Answer ``response`` and close, without losing the answer: closing with request
        bytes unread makes the kernel reset the connection, and the client may never read
        it. So the write side is shut, what still arrives is discarded, and the connection
        is cut after :data:`LINGER_S` if the client has not closed it by then."""
        transport = self.transport
        if transport is None or self._linger is not None:
            return
        transport.write(response)
        if transport.can_write_eof():
            transport.write_eof()
        self._linger = self._loop.call_later(LINGER_S, self.force_close)

    def data_received(self, data: bytes) -> None:
        if self._linger is not None:
            return  # refused: discarded
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads or self._upgraded:
            self._disarm()
        elif data and self._head_timer is None and self._waiting_for_head():
            self._arm()

    def _waiting_for_head(self) -> bool:
        """Idle between requests (not handling one, nothing queued)."""
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _arm(self) -> None:
        self._head_timer = self._loop.call_later(self._guard.limits.header_timeout_s,
                                                 self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is None or self._force_close:
            return
        timeout = self._guard.limits.header_timeout_s
        self._guard.refuse("header_timeout", "closed an HTTP connection from %s: no whole "
                           "request head within %g s (limits.header_timeout_s)",
                           self._address, timeout)
        self._refuse(raw_json_error(
            408, "Request Timeout", f"the request head did not arrive within {timeout:g} s"))


class _GuardedServer(web.Server):
    """aiohttp's server, giving every connection a :class:`GuardedRequestHandler`."""

    guard: ConnectionGuard

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, guard=self.guard, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` with the connection limits of the application's
    :class:`ConnectionGuard` (``app[CONNECTIONS]``, set by ``create_app``); for any other
    application (the providers' fakes) it is a plain ``AppRunner``."""

    def __init__(self, app: web.Application, **kwargs: Any):
        self._guard = app.get(CONNECTIONS)
        if self._guard is not None:
            kwargs.setdefault("keepalive_timeout", KEEPALIVE_TIMEOUT_S)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        if self._guard is not None:
            # the same server with one method more specific: aiohttp offers no hook for
            # the handler class, and _make_server is where the application starts up
            server.__class__ = _GuardedServer
            cast(_GuardedServer, server).guard = self._guard
        return server
