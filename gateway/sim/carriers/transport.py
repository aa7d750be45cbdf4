"""The connection under a simulated call: one small interface, three implementations
(aiohttp WebSocket here, a raw WebSocket in ``rawws.py``, and plain TCP in the simulator of
the carrier that uses it, AudioSocket)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import aiohttp


@dataclass(frozen=True, slots=True)
class Message:
    """One message from the gateway: ``type`` is ``text``, ``binary`` (an AudioSocket TLV
    message too) or ``ping``; ``fragmented`` when it came in several WebSocket frames."""

    type: str
    data: str | bytes
    fragmented: bool = False


class Transport(Protocol):
    @property
    def close_code(self) -> int | None:
        """The close code the gateway sent (``None``: none, or not closed yet)."""

    async def send(self, data: str | bytes) -> None:
        """``str``: a text frame; ``bytes``: a binary frame (TCP: written as is)."""

    async def receive(self) -> Message | None:
        """The next message; ``None`` once the connection is closed."""

    async def pong(self, data: bytes) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close in order (close handshake); idempotent."""

    async def abort(self) -> None:
        """Drop the connection without a close handshake."""


class AiohttpTransport:
    """A WebSocket opened with aiohttp; with ``autoping=False`` pings are reported (and the
    driver answers them)."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self._session = session
        self._ws = ws

    @classmethod
    async def open(cls, url: str, headers: dict[str, str], *, protocols: tuple[str, ...] = (),
                   autoping: bool = True) -> AiohttpTransport:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(
                url, headers=headers, protocols=protocols, autoping=autoping, heartbeat=None,
                max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            await self._ws.send_str(data)
        else:
            await self._ws.send_bytes(data)

    async def receive(self) -> Message | None:
        while True:
            message = await self._ws.receive()
            if message.type is aiohttp.WSMsgType.TEXT:
                return Message("text", message.data)
            if message.type is aiohttp.WSMsgType.BINARY:
                return Message("binary", message.data)
            if message.type is aiohttp.WSMsgType.PING:
                return Message("ping", message.data)
            if message.type is not aiohttp.WSMsgType.PONG:
                return None  # CLOSE, CLOSING, CLOSED, ERROR

    async def pong(self, data: bytes) -> None:
        await self._ws.pong(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self._ws.closed:
            try:
                await asyncio.wait_for(self._ws.close(code=code, message=reason.encode()), 3.0)
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                pass
        await self._session.close()

    async def abort(self) -> None:
        # Closing the session closes its connections' sockets: no close frame is sent.
        await self._session.close()
