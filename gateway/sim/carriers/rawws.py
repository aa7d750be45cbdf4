"""A minimal RFC 6455 WebSocket client that shows what aiohttp hides.

Asterisk's chan_websocket (before the 2026 fixes) hangs up on a PING and on a message
split into CONTINUATION frames; aiohttp answers pings itself and reassembles fragments
silently, so the Asterisk simulator reads frames with this client instead. It also refuses
a handshake response carrying ``Sec-WebSocket-Extensions``, as Asterisk's client does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import ssl as ssl_module
import struct

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.sim.carriers.transport import Message

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT, _BINARY, _CONTINUATION, _CLOSE, _PING, _PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


class RawWebSocket:
    """Client side of one WebSocket over asyncio streams (one reader task at a time)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._send_lock = asyncio.Lock()
        self._close_sent = False
        self._closed = asyncio.Event()
        self._receiving = False
        self.close_code: int | None = None

    @classmethod
    async def open(cls, url: str, headers: dict[str, str], *,
                   protocols: tuple[str, ...] = ()) -> RawWebSocket:
        """Connect and upgrade; a refused upgrade raises ``aiohttp.WSServerHandshakeError``."""
        target = URL(url)
        secure = target.scheme in ("wss", "https")
        reader, writer = await asyncio.open_connection(
            target.host, target.port, ssl=ssl_module.create_default_context() if secure else None)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            lines = [f"GET {target.raw_path_qs} HTTP/1.1", f"Host: {target.host_port_subcomponent}",
                     "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                     "Sec-WebSocket-Version: 13"]
            if protocols:
                lines.append(f"Sec-WebSocket-Protocol: {', '.join(protocols)}")
            lines += [f"{name}: {value}" for name, value in headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            head = await reader.readuntil(b"\r\n\r\n")
            status, reason, response_headers = _parse_response(head)

            def refuse(message: str) -> aiohttp.WSServerHandshakeError:
                info = aiohttp.RequestInfo(target, "GET", CIMultiDictProxy(CIMultiDict(headers)))
                return aiohttp.WSServerHandshakeError(info, (), status=status, message=message,
                                                      headers=response_headers)

            if status != 101:
                raise refuse(reason)
            accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
            if response_headers.get("Sec-WebSocket-Accept") != accept:
                raise refuse("invalid Sec-WebSocket-Accept")
            if "Sec-WebSocket-Extensions" in response_headers:
                raise refuse("response carries Sec-WebSocket-Extensions, which Asterisk rejects")
        except BaseException:
            writer.transport.abort()
            raise
        return cls(reader, writer)

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            await self._send_frame(_TEXT, data.encode())
        else:
            await self._send_frame(_BINARY, bytes(data))

    async def pong(self, data: bytes) -> None:
        await self._send_frame(_PONG, data)

    async def receive(self) -> Message | None:
        """The next data message or ping; ``None`` after a close frame or EOF (a close frame
        from the server is answered)."""
        parts: list[bytes] = []
        first_opcode = None
        self._receiving = True
        try:
            while True:
                fin, opcode, payload = await self._read_frame()
                if opcode == _PING:
                    return Message("ping", payload)
                if opcode == _PONG:
                    continue
                if opcode == _CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    self.close_code = code
                    if not self._close_sent:
                        await self._send_frame(_CLOSE, payload[:2])
                    break
                if opcode != _CONTINUATION:
                    first_opcode = opcode
                parts.append(payload)
                if fin:
                    data = b"".join(parts)
                    fragmented = len(parts) > 1 or opcode == _CONTINUATION
                    if first_opcode == _TEXT:
                        return Message("text", data.decode("utf-8", "replace"), fragmented)
                    return Message("binary", data, fragmented)
        except (asyncio.IncompleteReadError, ConnectionError):
            if self.close_code is None:
                self.close_code = 1006
        finally:
            self._receiving = False
        self._closed.set()
        self._writer.close()
        return None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self._close_sent:
            try:
                await self._send_frame(_CLOSE, struct.pack("!H", code) + reason.encode()[:120])
            except (ConnectionError, RuntimeError):
                pass
        try:  # wait for the server's close frame (or EOF), read by receive()
            if self._receiving:
                await asyncio.wait_for(self._closed.wait(), 2.0)
            else:
                async with asyncio.timeout(2.0):
                    while await self.receive() is not None:
                        pass
        except TimeoutError:
            pass
        self._writer.close()

    async def abort(self) -> None:
        self._writer.transport.abort()

    async def _read_frame(self) -> tuple[bool, int, bytes]:
        head = await self._reader.readexactly(2)
        fin, opcode = bool(head[0] & 0x80), head[0] & 0x0F
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", await self._reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await self._reader.readexactly(8))[0]
        mask = await self._reader.readexactly(4) if head[1] & 0x80 else None
        payload = await self._reader.readexactly(length)
        return fin, opcode, _masked(payload, mask) if mask else payload

    async def _send_frame(self, opcode: int, payload: bytes) -> None:
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        mask = os.urandom(4)
        async with self._send_lock:
            if self._close_sent or self._writer.is_closing():
                raise ConnectionResetError("the WebSocket is closed")
            if opcode == _CLOSE:
                self._close_sent = True
            self._writer.write(head + mask + _masked(payload, mask))
            await self._writer.drain()


def _masked(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(len(payload), "big")


def _parse_response(head: bytes) -> tuple[int, str, CIMultiDictProxy[str]]:
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    _, status, reason = [*status_line.split(" ", 2), "", ""][:3]
    headers: CIMultiDict[str] = CIMultiDict()
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers.add(name.strip(), value.strip())
    return int(status), reason, CIMultiDictProxy(headers)
