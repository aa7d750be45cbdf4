"""Write whole WebSocket frames straight to the transport, several per write.

The media clock releases about one frame per call per tick; going through aiohttp's
writer costs a coroutine and a system call per message. Server-to-client frames are
unmasked (RFC 6455 §5.1), so a frame is a two-to-four byte header and the payload: the
playout builds them itself and hands the socket everything due in a tick at once. This is
safe beside aiohttp's own writer because every write is whole frames and the response is
created with compression off (a compressed stream could not be written around).
"""

from __future__ import annotations

import random
import struct
from typing import Any

import numpy as np
from aiohttp import web

from gateway.carriers.events import Binary

_TEXT_FIN = 0x81
_BINARY_FIN = 0x82
_LEN16 = struct.Struct("!BBH")
_MASKED_LEN16 = struct.Struct("!BBH4s")
_WORDS = np.dtype("<u4")
_mask_key = random.Random().getrandbits  # as aiohttp's own client writer draws its keys


def ws_frame(payload: bytes) -> bytes:
    """One unmasked, final frame: binary for a :class:`Binary` message, else text.

    Never fragmented (Asterisk hangs up on continuation frames), payloads up to 64 KiB,
    plenty for carrier messages."""
    opcode = _BINARY_FIN if payload.__class__ is Binary else _TEXT_FIN
    n = len(payload)
    if n < 126:
        return bytes((opcode, n)) + payload
    if n < 65536:
        return _LEN16.pack(opcode, 126, n) + payload
    raise ValueError(f"carrier message of {n} bytes is too large for one frame here")


def masked_binary_frame(payload: bytes) -> bytes:
    """One final binary frame from a client (RFC 6455 §5.3: the payload XOR a fresh
    32-bit key), payloads up to 64 KiB."""
    n = len(payload)
    if n >= 65536:
        raise ValueError(f"message of {n} bytes is too large for one frame here")
    key = _mask_key(32)
    # the key's bytes in little-endian order: byte i of the payload is XORed with byte i % 4
    # of them, which is the payload's 32-bit little-endian words XORed with ``key``
    key_bytes = key.to_bytes(4, "little")
    if n & 3 == 0:  # whole words (every audio packet): one numpy XOR, the cheapest
        body = (np.frombuffer(payload, _WORDS) ^ np.uint32(key)).tobytes()
    else:
        stream = int.from_bytes((key_bytes * ((n + 3) >> 2))[:n], "little")
        body = (int.from_bytes(payload, "little") ^ stream).to_bytes(n, "little")
    if n < 126:
        return bytes((_BINARY_FIN, 0x80 | n)) + key_bytes + body
    return _MASKED_LEN16.pack(_BINARY_FIN, 0x80 | 126, n, key_bytes) + body


class DirectFrames:
    """Binary frames written straight to an aiohttp WebSocket's transport (a server's
    ``WebSocketResponse`` unmasked, a client's ``ClientWebSocketResponse`` masked), while
    the socket keeps up: a sender that would wait on aiohttp's coroutine and a task switch
    per packet costs more than the packet. Safe beside aiohttp's writer for the reasons
    above (whole frames, no compression). ``send`` says False when the socket has
    ``max_backlog`` bytes waiting or is gone: the caller queues instead."""

    def __init__(self, transport: Any, *, masked: bool, max_backlog: int):
        self._transport = transport
        self._frame = masked_binary_frame if masked else (lambda p: ws_frame(Binary(p)))
        self._max_backlog = max_backlog

    @classmethod
    def of(cls, ws: Any, *, max_backlog: int) -> DirectFrames | None:
        """For ``ws``, or None where its transport cannot be reached or is compressed."""
        writer = getattr(ws, "_writer", None)
        transport = getattr(writer, "transport", None)
        if transport is None or getattr(writer, "compress", None):
            return None
        return cls(transport, masked=not isinstance(ws, web.WebSocketResponse),
                   max_backlog=max_backlog)

    def send(self, payload: bytes) -> bool:
        transport = self._transport
        if transport.is_closing() or transport.get_write_buffer_size() > self._max_backlog:
            return False
        transport.write(self._frame(payload))
        return True


class WebSocketSink:
    """The write side of one carrier socket, for the playout."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request):
        self._ws = ws
        self._transport = request.transport

    def write(self, messages: list[bytes]) -> None:
        """Send ``messages`` (text, or :class:`Binary`) as frames in one write; raise if
        the socket is gone."""
        transport = self._transport
        if transport is None or transport.is_closing() or self._ws.closed:
            raise ConnectionResetError("the carrier socket is closed")
        if len(messages) == 1:
            transport.write(ws_frame(messages[0]))
        else:
            transport.write(b"".join(map(ws_frame, messages)))

    def backlog(self) -> int:
        """Bytes written but not yet accepted by the kernel (huge once the socket is gone)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return 1 << 30
        return transport.get_write_buffer_size()


class StreamSink:
    """The write side of a plain TCP carrier connection (AudioSocket): messages are raw."""

    def __init__(self, writer):
        self._writer = writer

    def write(self, messages: list[bytes]) -> None:
        transport = self._writer.transport
        if transport.is_closing():
            raise ConnectionResetError("the carrier connection is closed")
        transport.write(b"".join(messages))

    def backlog(self) -> int:
        transport = self._writer.transport
        return 1 << 30 if transport.is_closing() else transport.get_write_buffer_size()
