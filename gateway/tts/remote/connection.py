"""One WebSocket to a provider: the socket, its sans-I/O protocol, and a reader task that
routes each event to the turn it belongs to.

Audio for a turn nobody listens to any more (cancelled by a barge-in, or abandoned) is
dropped here, whatever the provider keeps sending: no late audio reaches a call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable

import aiohttp

from gateway.tts.base import TtsError
from gateway.tts.providers.events import (
    ProviderAudio,
    ProviderError,
    ProviderEvent,
    ProviderProtocolError,
    ProviderReady,
)
from gateway.tts.remote.drivers import Driver

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # base64 audio of a long flush can be megabytes


class ConnectionLost:
    """Turn-queue sentinel: the socket closed before the turn ended."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


class ProviderConnection:
    def __init__(self, driver: Driver, key: Hashable, proto, ws: aiohttp.ClientWebSocketResponse,
                 *, on_closed: Callable[[ProviderConnection], None] | None = None,
                 on_protocol_error: Callable[[str], None] | None = None):
        self.driver = driver
        self.key = key
        self.proto = proto
        self.ws = ws
        self.turns: dict[str, asyncio.Queue] = {}
        self.leases = 0
        self.opened_at = self.idle_since = time.monotonic()
        self.closed = False
        self.close_reason = ""
        self.retire = False  # no new leases; closed when the last one is released
        self.late_chunks_dropped = 0
        self._ready = asyncio.Event()
        self._handshake_error: ProviderError | None = None
        self._on_closed = on_closed
        self._on_protocol_error = on_protocol_error
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self._dispatch(driver.connection_made(proto))

    @classmethod
    async def open(cls, driver: Driver, key: Hashable, http: aiohttp.ClientSession, *,
                   timeout_s: float, **callbacks) -> ProviderConnection:
        """Connect and handshake; raise :class:`TtsError` (kind ``connect`` or ``handshake``)."""
        url, headers = driver.connect(key)
        proto = driver.new_protocol(key)
        try:
            ws = await asyncio.wait_for(
                http.ws_connect(url, headers=headers, autoping=True, compress=0,
                                max_msg_size=MAX_MESSAGE_BYTES,
                                timeout=aiohttp.ClientWSTimeout(ws_close=2.0)),
                timeout_s)
        except aiohttp.WSServerHandshakeError as exc:
            raise TtsError("connect", f"{driver.settings.name}: the provider refused the "
                           f"WebSocket upgrade with HTTP {exc.status}"
                           + (" (check the API key)" if exc.status in (401, 403) else "")) from None
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise TtsError("connect", f"{driver.settings.name}: cannot connect to the provider "
                           f"({type(exc).__name__}: {exc})") from None
        conn = cls(driver, key, proto, ws, **callbacks)
        try:
            await asyncio.wait_for(conn._ready.wait(), timeout_s)
        except asyncio.TimeoutError:
            await conn.close("handshake timeout")
            raise TtsError("handshake", f"{driver.settings.name}: no session set-up message "
                           f"within {timeout_s:.1f} s") from None
        if conn._handshake_error is not None or conn.closed:
            err = conn._handshake_error
            await conn.close("handshake failed")
            raise TtsError("handshake", f"{driver.settings.name}: "
                           + (err.message if err else f"closed during set-up ({conn.close_reason})"))
        return conn

    # -- turns ------------------------------------------------------------------------------

    def register(self, cid: str) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self.turns[cid] = queue
        return queue

    def unregister(self, cid: str) -> None:
        self.turns.pop(cid, None)

    async def send(self, messages: list[str]) -> None:
        """Write the messages; a dead socket shows up as :class:`ConnectionLost` on the turn."""
        try:
            for message in messages:
                await self.ws.send_str(message)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            self._lost(f"send failed: {exc}")

    def send_soon(self, messages: list[str]) -> None:
        """Send without waiting (cancellation paths, which must not block)."""
        if messages and not self.closed:
            asyncio.get_running_loop().create_task(self.send(messages))

    @property
    def usable(self) -> bool:
        return not self.closed and not self.retire

    # -- reading ----------------------------------------------------------------------------

    async def _read(self) -> None:
        ws = self.ws
        reason = "closed by the provider"
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    try:
                        events = self.proto.receive(msg.data)
                    except ProviderProtocolError as exc:
                        log.warning("%s: unreadable provider frame (%s): %s",
                                    self.driver.settings.name, exc.kind, exc)
                        if self._on_protocol_error:
                            self._on_protocol_error(exc.kind)
                        continue
                    self._dispatch(events)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    log.warning("%s: unexpected binary frame of %d bytes ignored",
                                self.driver.settings.name, len(msg.data))
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    reason = f"socket error: {ws.exception()}"
                    break
            if ws.close_code is not None:
                reason = f"closed by the provider (code {ws.close_code})"
        except asyncio.CancelledError:
            reason = "closed by the gateway"
            raise
        except Exception as exc:  # never let one socket's surprise kill the process
            log.exception("%s: reader failed", self.driver.settings.name)
            reason = f"reader failed: {exc}"
        finally:
            self._lost(reason)

    def _dispatch(self, events: list[ProviderEvent]) -> None:
        for event in events:
            if type(event) is ProviderAudio:
                queue = self.turns.get(event.context_id)
                if queue is None or self.driver.is_cancelled(self.proto, event.context_id):
                    self.late_chunks_dropped += 1
                    continue
                queue.put_nowait(event)
            elif type(event) is ProviderReady:
                self._ready.set()
            elif type(event) is ProviderError and (event.fatal or event.context_id is None):
                if not self._ready.is_set():
                    self._handshake_error = event
                    self._ready.set()
                self.retire = True
                for queue in self.turns.values():
                    queue.put_nowait(event)
                if event.fatal:
                    asyncio.get_running_loop().create_task(self.close(f"fatal error: {event.kind}"))
            else:
                queue = self.turns.get(getattr(event, "context_id", None))
                if queue is not None:
                    queue.put_nowait(event)

    def _lost(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._ready.set()
        self._dispatch([e for e in self.driver.connection_lost(self.proto)
                        if not (type(e) is ProviderError and e.context_id is None)])
        for queue in self.turns.values():
            queue.put_nowait(ConnectionLost(reason))
        if self._on_closed:
            self._on_closed(self)

    async def close(self, reason: str = "closed by the gateway") -> None:
        if not self.closed:
            self._lost(reason)
        if not self.ws.closed:
            try:
                await self.ws.close()
            except Exception:
                pass
        if not self._reader.done() and self._reader is not asyncio.current_task():
            self._reader.cancel()

