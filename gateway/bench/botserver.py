"""A lean loopback bot for the bench: the server end of the socket the gateway dials when a
call starts on a route with ``bot:`` (gateway/bot/dialer.py), one per call.

It runs in the load generator's process, on its event loop, so it must cost little per
packet: like the load's calls it is an :class:`asyncio.Protocol` that speaks WebSocket by
hand. It checks what a real bot checks and no more:

* **The signed upgrade.** ``GET`` with ``Upgrade: websocket``, ``Sec-WebSocket-Key``, the
  call id, and (with a secret) ``X-TTS-Gateway-Signature: v1=<HMAC-SHA256(secret,
  f"{timestamp}.{url}")>`` within a 300 s window; a wrong or missing one gets ``401``.
* **Events.** Text frames are unmasked and parsed: the first must be ``call.started`` for
  the call id of the upgrade and announce the audio format the bench asked for; every
  event is counted by type (``caller.speech_started`` would say the load's noise barged in).
* **Audio.** Binary frames are counted and their size checked (one packet each), without
  unmasking: the bench needs how many packets came and when, not the samples.

Per packet it tells the load's call (:meth:`TwilioLoadCall.bot_packet`), which matches it to
the caller frame it came from and returns the delay on the load side. Bounded: one upgrade
head of 16 KiB, text frames of 64 KiB, frames no bigger than 1 MiB; loopback only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any, cast

from gateway.bench.wsheader import frame_header

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SIGNATURE_WINDOW_S = 300
MAX_HEAD = 16 * 1024
MAX_TEXT = 64 * 1024
MAX_FRAME = 1 << 20
#: the event types counted by name (anything else is counted as "other")
EVENT_TYPES = frozenset({
    "call.started", "call.ended", "speech.started", "speech.first_audio", "speech.done",
    "speech.failover", "mark", "dtmf", "caller.speech_started", "caller.speech_stopped",
    "error"})


def expected_signature(secret: str, timestamp: str, url: str) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.{url}".encode(), hashlib.sha256)
    return "v1=" + digest.hexdigest()


def unmask(payload: bytes, mask: bytes) -> bytes:
    """A client frame's payload, unmasked (RFC 6455 §5.3) in one big-integer XOR."""
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        n, "little")


class BotStats:
    """What every bot socket of a run saw, together."""

    def __init__(self) -> None:
        self.accepted = 0
        self.refused: dict[str, int] = {}
        self.started = 0  # sockets whose first event was a good call.started
        self.ended = 0  # sockets that got call.ended
        self.packets = 0
        self.bad_packets = 0  # not exactly one packet long
        self.events: dict[str, int] = {}
        self.violations: list[str] = []
        self.open = 0

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def violation(self, detail: str) -> None:
        if len(self.violations) < 20:
            self.violations.append(detail)


class LoopbackBot:
    """The bench's bot server: ``await start(port)``, ``close()``. ``calls`` maps a call id
    to the load's call; ``on_delay(seconds)`` takes each packet's load-side delay."""

    def __init__(self, url: str, secret: str | None, packet_bytes: int,
                 calls: dict[str, Any], on_delay) -> None:
        self.url = url
        self.secret = secret
        self.packet_bytes = packet_bytes
        self.calls = calls
        self.on_delay = on_delay
        self.stats = BotStats()
        self.sockets: set[BotSocket] = set()
        self._server: asyncio.base_events.Server | None = None

    async def start(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: BotSocket(self), "127.0.0.1", port)

    async def close(self, wait: float = 3.0) -> None:
        """Stop accepting; give the gateway ``wait`` s to close its sockets, then drop them."""
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + wait
        while self.sockets and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for sock in list(self.sockets):
            sock.abort()


class BotSocket(asyncio.Protocol):
    """One gateway → bot socket, server side."""

    def __init__(self, bot: LoopbackBot) -> None:
        self.bot = bot
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.call_id = ""
        self.call: Any = None
        self.got_started = False
        self._head = b""
        self._buf = b""

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a TCP connection's transport (uvloop's is not a subclass of asyncio's, so no
        # isinstance check)
        self.transport = cast(asyncio.Transport, transport)
        self.bot.sockets.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.bot.sockets.discard(self)
        if self.upgraded:
            self.bot.stats.open -= 1

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            self._frames(data)
        else:
            self._upgrade(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # what arrives comes over the transport, so every answer has one to go to
    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def _close(self) -> None:
        assert self.transport is not None
        self.transport.close()

    # -- the upgrade ---------------------------------------------------------------------

    def _refuse(self, reason: str, status: str = "401 Unauthorized") -> None:
        self.bot.stats.refuse(reason)
        self._write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n"
                    "Connection: close\r\n\r\n".encode())
        self._close()

    def _upgrade(self, data: bytes) -> None:
        head = self._head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > MAX_HEAD:
                self._refuse("head_too_long", "431 Request Header Fields Too Large")
            else:
                self._head = head
            return
        self._head = b""
        lines = head[:end].decode("latin-1").split("\r\n")
        if not lines[0].startswith("GET "):
            self._refuse("not_get", "405 Method Not Allowed")
            return
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        key = headers.get("sec-websocket-key")
        if headers.get("upgrade", "").lower() != "websocket" or not key:
            self._refuse("not_websocket", "400 Bad Request")
            return
        timestamp = headers.get("x-tts-gateway-timestamp", "")
        if self.bot.secret is not None:
            signature = headers.get("x-tts-gateway-signature", "")
            good = expected_signature(self.bot.secret, timestamp, self.bot.url)
            if not hmac.compare_digest(signature.encode(), good.encode()):
                self._refuse("signature")
                return
            if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > SIGNATURE_WINDOW_S:
                self._refuse("timestamp")
                return
        self.call_id = headers.get("x-tts-gateway-call-id", "")[:128]
        self.call = self.bot.calls.get(self.call_id)
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self._write(
            ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        self.upgraded = True
        stats = self.bot.stats
        stats.accepted += 1
        stats.open += 1
        rest = head[end + 4:]
        if rest:
            self._frames(rest)

    # -- frames --------------------------------------------------------------------------

    def _frames(self, data: bytes) -> None:
        if self._buf:
            data = self._buf + data
            self._buf = b""
        n = len(data)
        pos = 0
        now = 0.0
        while n - pos >= 6:
            b0 = data[pos]
            if not data[pos + 1] & 0x80:
                self._fail("an unmasked client frame (RFC 6455 §5.1)")
                return
            header = frame_header(data, pos, 4)
            if header is None:
                break
            length, start = header
            if length > MAX_FRAME:
                self._fail(f"a {length}-byte frame")
                return
            end = start + length
            if end > n:
                break
            if b0 == 0x82:  # one packet of caller audio: counted, never unmasked
                if not now:
                    now = time.monotonic()
                self._packet(length, now)
            elif not self._other(b0, data[start - 4:start], data[start:end]):
                return
            pos = end
        if pos < n:
            self._buf = data[pos:]

    def _packet(self, length: int, now: float) -> None:
        stats = self.bot.stats
        stats.packets += 1
        if length != self.bot.packet_bytes:
            stats.bad_packets += 1
            stats.violation(f"call {self.call_id}: a {length}-byte packet")
        if not self.got_started:
            stats.violation(f"call {self.call_id}: audio before call.started")
        if self.call is not None:
            delay = self.call.bot_packet(now)
            if delay is not None:
                self.bot.on_delay(delay)

    def _other(self, b0: int, mask: bytes, payload: bytes) -> bool:
        opcode = b0 & 0x0F
        if opcode == 0x1 and b0 & 0x80:
            if len(payload) > MAX_TEXT:
                return self._fail(f"a {len(payload)}-byte event")
            self._event(unmask(payload, mask))
            return True
        if opcode == 0x8:  # close: answer it, then the gateway closes the TCP connection
            self._write(b"\x88\x02\x03\xe8")
            self._close()
            return False
        if opcode == 0x9:  # ping (aiohttp's heartbeat)
            self._write(bytes((0x8A, len(payload))) + unmask(payload, mask))
            return True
        if opcode == 0xA:
            return True
        return self._fail(f"an unexpected frame (first byte {b0:#x})")

    def _event(self, text: bytes) -> None:
        stats = self.bot.stats
        try:
            event = json.loads(text)
            kind = event["type"]
        except (ValueError, KeyError, TypeError):
            stats.violation(f"call {self.call_id}: not an event: {text[:100]!r}")
            return
        name = kind if kind in EVENT_TYPES else "other"
        stats.events[name] = stats.events.get(name, 0) + 1
        if not self.got_started:
            audio = event.get("audio") or {}
            if kind != "call.started" or event.get("call_id") != self.call_id:
                stats.violation(f"call {self.call_id}: first event {kind!r}, "
                                f"call_id {str(event.get('call_id'))[:40]!r}")
            elif audio.get("format") is None:
                stats.violation(f"call {self.call_id}: call.started announces no audio")
            else:
                stats.started += 1
            self.got_started = True
            if self.call is not None:
                self.call.bot_started = True
        elif kind == "call.ended":
            stats.ended += 1

    def _fail(self, detail: str) -> bool:
        self.bot.stats.violation(f"call {self.call_id}: {detail}")
        self.abort()
        return False
