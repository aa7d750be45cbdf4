"""Write whole WebSocket text frames straight to the transport, several per write.

The media clock releases about one frame per call per tick; going through aiohttp's
writer costs a coroutine and a system call per message. Server-to-client frames are
unmasked (RFC 6455 §5.1), so a frame is a two-to-four byte header and the payload: the
playout builds them itself and hands the socket everything due in a tick at once. This is
safe beside aiohttp's own writer because every write is whole frames and the response is
created with compression off (a compressed stream could not be written around).
"""

from __future__ import annotations

import struct

from aiohttp import web

_TEXT_FIN = 0x81
_LEN16 = struct.Struct("!BBH")


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final text frame (payloads up to 64 KiB, plenty for carrier messages)."""
    n = len(payload)
    if n < 126:
        return bytes((_TEXT_FIN, n)) + payload
    if n < 65536:
        return _LEN16.pack(_TEXT_FIN, 126, n) + payload
    raise ValueError(f"carrier message of {n} bytes is too large for one frame here")


class WebSocketSink:
    """The write side of one carrier socket, for the playout."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request):
        self._ws = ws
        self._transport = request.transport

    def write_text(self, messages: list[bytes]) -> None:
        """Send ``messages`` (UTF-8 JSON) as text frames in one write; raise if the socket is gone."""
        transport = self._transport
        if transport is None or transport.is_closing() or self._ws.closed:
            raise ConnectionResetError("the carrier socket is closed")
        if len(messages) == 1:
            transport.write(text_frame(messages[0]))
        else:
            transport.write(b"".join([text_frame(m) for m in messages]))

    def backlog(self) -> int:
        """Bytes written but not yet accepted by the kernel (huge once the socket is gone)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return 1 << 30
        return transport.get_write_buffer_size()
