"""A lean load generator: N simultaneous full-duplex Twilio calls into one gateway.

It exists to measure how many calls one core of the gateway carries, with this generator
pinned to another core, so it must cost several times less per call than the gateway.
:class:`~gateway.carriers.twilio.sim.TwilioCallSim` is faithful but runs aiohttp and three tasks per
call; here a call is one :class:`asyncio.Protocol` on a raw TCP connection and the whole
run has one timer for caller audio:

* **WebSocket by hand.** Each call does its own HTTP/1.1 upgrade
  (``GET /v1/media/twilio/{route}``, ``Sec-WebSocket-Key``, checks ``101`` and
  ``Sec-WebSocket-Accept``) and parses server frames in ``data_received`` (7-, 16- and
  64-bit lengths, fragments, close, ping → pong). No extension is negotiated.
* **One shared ticker** sends every call's next inbound ``media`` message on absolute
  20 ms deadlines from the start (no drift). Calls are spread over ``phases`` slots of the
  20 ms period (4 by default: a tick every 5 ms sends a quarter of the calls), like real
  carriers whose calls do not share a phase; ``phases=1`` sends all calls in one burst.
* **Outbound media is not JSON-parsed.** A gateway ``media`` message is recognized by its
  exact prefix (``{"event":"media","streamSid":"<this call's>","media":{"payload":"``,
  which also checks the stream id and the shape), its audio length is computed from the
  base64 length, and its arrival time is one ``time.monotonic()`` per ``data_received``.
  Anything else (``mark``, ``clear``, a media message in another shape) is parsed and
  validated as strictly as the simulator does (Twilio warnings 31950/31951).
* **A cheap Twilio buffer per call** (:class:`BufferModel`): audio drains at 8000 B/s from
  the arrival times; a ``mark`` is echoed when the audio queued before it has played (one
  ``loop.call_later`` for the earliest pending mark, never per frame); ``clear`` empties
  the buffer and echoes the pending marks at once.

Measurements, per call and overall: ``start`` sent → first media; the lateness of every
media message against the ideal real-time schedule of its utterance (the definition of
:meth:`gateway.carriers.twilio.sim.TwilioCallResult.frame_timing`), kept in fixed 0.1 ms histogram
buckets per 1 s window (constant memory, a timeline for plots); carrier-side underruns;
wrong-size frames and malformed messages (violations); barge-in (interrupt POST → last
media before the ``clear``, and → the ``clear``). It also reports its own CPU time and
the lateness of its own ticker, which tells whether the generator kept up.

Cost (2-vCPU AMD EPYC VM, uvloop, Python 3.11; noisy host, ±30 %): 8-12 µs of CPU per
message sent or received, 55-70 % of it in the kernel (a loopback ``send`` also pays for
the receiver's TCP processing), of which ~0.7 µs (send) and ~1.6 µs (receive) are this
module's Python; about 0.8-1 ms of CPU per call-second, so one core carries about 1000
full-duplex calls (~800 with headroom). The default asyncio loop costs about twice as much.

Bounded in count (``calls`` ≤ 20000) and time (``duration``, plus a few seconds to hang
up); it only connects to the loopback address. All times are ``time.monotonic()`` seconds.

Run: ``python -m gateway.bench.loadgen --url ws://127.0.0.1:8080 --calls 200 --route demo
--duration 30 --json out.json`` (uses uvloop when it is installed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import json
import math
import os
import secrets
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, cast
from urllib.parse import quote, urlsplit

import numpy as np

from gateway.bench.wsheader import frame_header

__all__ = [
    "BufferModel",
    "LoadResult",
    "TwilioLoadCall",
    "WsClientProtocol",
    "main",
    "run_load",
]

BYTES_PER_SECOND = 8000
FRAME_BYTES = 160
FRAME_SECONDS = 0.020
MAX_CALLS = 20000
MAX_DURATION = 3600.0

#: Lateness histogram: 0.1 ms buckets up to 1 s; the last bucket holds everything later.
LATENESS_RESOLUTION = 1e-4
_OVERFLOW = 10000
_PER_BUCKET = 1 / LATENESS_RESOLUTION

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_RESPONSE_HEAD = 16 * 1024
_MAX_FRAME = 1 << 20  # the gateway's messages are < 1 KiB; anything this big is a bug
_LOOPBACK = {"127.0.0.1": "127.0.0.1", "::1": "::1", "localhost": "127.0.0.1"}

# Client frames must be masked (RFC 6455 §5.3). This generator uses the all-zero masking
# key: XOR with zero leaves the payload unchanged, so a masked frame is just the header
# (with the MASK bit and four zero bytes) followed by the plain payload, and a message can
# be built with one bytes formatting instead of a Python-level XOR over every byte. A
# server cannot tell a zero key from a random one (it only unmasks), so this changes
# nothing the gateway sees. The key exists to stop cache-poisoning attacks through
# intermediaries by browser scripts; a predictable key defeats that, so never do this
# outside a load test on loopback.
_ZERO_MASK = b"\x00\x00\x00\x00"
_TEXT_HEADER_16 = [b"\x81\xfe" + n.to_bytes(2, "big") + _ZERO_MASK for n in range(1024)]


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One FIN client frame with the zero masking key (see the comment above)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    return header + _ZERO_MASK + payload


def _text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if 126 <= n < 1024:
        return _TEXT_HEADER_16[n] + payload
    return client_frame(payload)


# ---- WebSocket client protocol -------------------------------------------------------


class WsClientProtocol(asyncio.Protocol):
    """A minimal RFC 6455 client over a raw asyncio transport.

    Subclasses implement :meth:`on_open`, :meth:`on_text` and may override
    :meth:`on_violation` and :meth:`on_closed`. ``handshake`` is a future resolved once the
    upgrade succeeded (or set to an exception); ``closed`` resolves on connection loss.
    Server frames must be unmasked; text frames may be fragmented; a ping is answered with
    a pong; a close frame is answered with a close frame and the connection is closed.
    """

    def __init__(self, host: str, port: int, path: str) -> None:
        loop = asyncio.get_running_loop()
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        self._expected_accept = base64.b64encode(
            hashlib.sha1((key + _WS_GUID).encode("ascii")).digest()
        ).decode("ascii")
        host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode("ascii")
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.is_open = False  # upgraded and not closing
        self.paused = False  # the transport asked us to stop writing
        self.close_code: int | None = None
        self.closed_by_server = False
        self._close_sent = False
        self._head = b""
        self._buf = b""
        self._fragments: list[bytes] | None = None
        self._fragment_size = 0

    # -- hooks ---------------------------------------------------------------------------

    def on_open(self, now: float) -> None:
        """The upgrade succeeded."""

    def on_text(self, payload: bytes, now: float) -> None:
        """One complete text message (UTF-8 bytes, not decoded)."""

    def on_binary(self, payload: bytes, now: float) -> None:
        """One complete binary message."""

    def on_violation(self, code: str, detail: str) -> None:
        """The server broke the WebSocket protocol (or the carrier protocol)."""

    def on_closed(self) -> None:
        """The connection is gone."""

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a TCP connection's transport (uvloop's is not a subclass of asyncio's, so no
        # isinstance check)
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_open = False
        if not self.handshake.done():
            self.handshake.set_exception(
                ConnectionError(f"connection lost during the upgrade: {exc or 'EOF'}")
            )
        if not self.closed.done():
            self.closed.set_result(None)
        self.on_closed()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.is_open:
            self._frames(data, now)
        elif not self.handshake.done():
            self._handshake_data(data, now)
        elif not self._close_sent:  # upgrade failed: ignore the error body
            return
        else:  # closing: still parse, to see the server's close frame
            self._frames(data, now)

    # -- sending -------------------------------------------------------------------------

    def send_text(self, payload: bytes) -> None:
        if self.is_open and self.transport is not None:
            self.transport.write(_text_frame(payload))

    def send_close(self, code: int = 1000) -> None:
        if self._close_sent or self.transport is None or self.transport.is_closing():
            return
        self._close_sent = True
        self.is_open = False
        self.transport.write(client_frame(code.to_bytes(2, "big"), 0x8))

    def abort(self) -> None:
        self.is_open = False
        if self.transport is not None:
            self.transport.abort()
        elif not self.closed.done():  # never connected: nothing will call connection_lost
            self.closed.set_result(None)

    # -- upgrade -------------------------------------------------------------------------

    def _fail_handshake(self, reason: str) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def _handshake_data(self, data: bytes, now: float) -> None:
        head = self._head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > _MAX_RESPONSE_HEAD:
                self._fail_handshake("upgrade response head is too long")
            else:
                self._head = head
            return
        self._head = b""
        lines = head[:end].decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or not status[0].startswith("HTTP/1."):
            self._fail_handshake(f"not an HTTP response: {lines[0][:80]!r}")
            return
        if status[1] != "101":
            reason = status[2] if len(status) > 2 else ""
            self._fail_handshake(f"HTTP {status[1]} {reason}".strip())
            return
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("upgrade", "").lower() != "websocket":
            self._fail_handshake("101 without 'Upgrade: websocket'")
            return
        if "upgrade" not in headers.get("connection", "").lower():
            self._fail_handshake("101 without 'Connection: Upgrade'")
            return
        if headers.get("sec-websocket-accept") != self._expected_accept:
            self._fail_handshake("wrong Sec-WebSocket-Accept")
            return
        if headers.get("sec-websocket-extensions"):
            self._fail_handshake("the server chose an extension nobody asked for")
            return
        self.is_open = True
        self.handshake.set_result(None)
        self.on_open(now)
        rest = head[end + 4 :]
        if rest:
            self._frames(rest, now)

    # -- frames --------------------------------------------------------------------------

    def _frames(self, data: bytes, now: float) -> None:
        if self._buf:
            data = self._buf + data
            self._buf = b""
        n = len(data)
        pos = 0
        while n - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            header = frame_header(data, pos, 0)
            if header is None:
                break
            length, start = header
            if b1 & 0x80:
                self._protocol_error("the server masked a frame (RFC 6455 §5.1 forbids it)")
                return
            if length > _MAX_FRAME:
                self._protocol_error(f"a {length}-byte frame (limit {_MAX_FRAME})")
                return
            end = start + length
            if end > n:
                break
            pos = end
            if b0 == 0x81:  # the common case: one unfragmented text message
                if self._fragments is not None:
                    self._protocol_error("a new text message inside a fragmented one")
                    return
                self.on_text(data[start:end], now)
            elif not self._other_frame(b0, data[start:end], now):
                return
        if pos < n:
            self._buf = data[pos:]

    def _other_frame(self, b0: int, payload: bytes, now: float) -> bool:
        """Every frame but a FIN text frame; returns False if the connection is done."""
        if b0 & 0x70:
            return self._protocol_error("reserved bits set (no extension was negotiated)")
        fin = b0 & 0x80
        opcode = b0 & 0x0F
        if opcode >= 0x8:
            if not fin or len(payload) > 125:
                return self._protocol_error("a fragmented or oversized control frame")
            if opcode == 0x8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                if not self._close_sent:
                    self.closed_by_server = True
                    self.send_close(1000)
                self.is_open = False
                if self.transport is not None:
                    self.transport.close()
                return False
            if opcode == 0x9:
                if self.transport is not None and not self.transport.is_closing():
                    self.transport.write(client_frame(payload, 0xA))
                return True
            if opcode == 0xA:
                return True
            return self._protocol_error(f"unknown control opcode {opcode:#x}")
        if opcode in (0x1, 0x2):
            if self._fragments is not None:
                return self._protocol_error("a new message inside a fragmented one")
            if fin:
                if opcode == 0x2:
                    self.on_binary(payload, now)
                else:
                    self.on_text(payload, now)
                return True
            self._fragments = [bytes((opcode,)), payload]
            self._fragment_size = len(payload)
            return True
        if opcode == 0x0:
            if self._fragments is None:
                return self._protocol_error("a continuation frame without a message")
            self._fragments.append(payload)
            self._fragment_size += len(payload)
            if self._fragment_size > _MAX_FRAME:
                return self._protocol_error("a fragmented message over the size limit")
            if fin:
                first, *parts = self._fragments
                self._fragments = None
                message = b"".join(parts)
                if first[0] == 0x2:
                    self.on_binary(message, now)
                else:
                    self.on_text(message, now)
            return True
        return self._protocol_error(f"unknown opcode {opcode:#x}")

    def _protocol_error(self, detail: str) -> bool:
        self.on_violation("websocket", detail)
        self.send_close(1002)
        self.abort()
        return False


# ---- Twilio's buffer, cheaply --------------------------------------------------------


class BufferModel:
    """Twilio's playout buffer for one call, reduced to what a load test measures.

    Audio drains at 8000 B/s: a run of playout starts when audio arrives at an empty
    buffer, so the buffer runs dry at ``run_end`` = start of the run + bytes of the run /
    8000. Sans-I/O: every method takes ``now`` (monotonic seconds).

    * :meth:`media` returns ``arrival - due`` against the utterance's real-time schedule:
      message ``i`` is due at ``anchor + bytes_before_i / 8000``, where ``anchor`` is the
      arrival of the utterance's first message (for which it returns ``-inf``: it sets
      the schedule). Lateness is ``max(0, arrival - due)``; a negative value is the
      margin by which the message beat its due time. An utterance starts with the first
      media message of the call or after a mark or a clear (as in
      ``TwilioCallResult.frame_timing``).
    * An underrun is counted when the buffer ran dry at ``T`` and the next media message
      of the same utterance arrives after ``T + 1 ms``; one per dry episode.
    * :meth:`mark` returns ``True`` if the mark must be echoed now (nothing is playing),
      otherwise queues it, due when the audio before it has played (:attr:`next_mark_due`);
      :meth:`pop_marks` returns the marks due by a time, in order.
    * :meth:`clear` empties the buffer and returns every pending mark, to echo at once.
    """

    __slots__ = ("anchor", "boundary", "pending", "run_bytes", "run_start", "tolerance",
                 "underruns", "utterance_bytes")

    def __init__(self, tolerance: float = 0.001) -> None:
        # The current run of playout: it started at run_start and holds run_bytes (whole
        # bytes, so run_end does not accumulate float error over a long utterance).
        self.run_start = -math.inf
        self.run_bytes = 0
        self.anchor = 0.0
        self.utterance_bytes = 0
        self.boundary = True  # the next media message starts an utterance
        self.pending: deque[tuple[float, str]] = deque()  # (due, mark name)
        self.underruns = 0
        self.tolerance = tolerance

    @property
    def run_end(self) -> float:
        """When the buffer runs (or ran) dry."""
        return self.run_start + self.run_bytes / BYTES_PER_SECOND

    def media(self, now: float, nbytes: int) -> float:
        """Queue ``nbytes`` of audio that arrived at ``now``; return ``now - due``."""
        run_end = self.run_start + self.run_bytes / BYTES_PER_SECOND
        if self.boundary:
            self.boundary = False
            self.anchor = now
            self.utterance_bytes = nbytes
            late = -math.inf
        else:
            late = now - (self.anchor + self.utterance_bytes / BYTES_PER_SECOND)
            self.utterance_bytes += nbytes
            if now - run_end > self.tolerance:
                self.underruns += 1
        if now >= run_end:
            self.run_start = now
            self.run_bytes = nbytes
        else:
            self.run_bytes += nbytes
        return late

    def mark(self, now: float, name: str) -> bool:
        """A mark arrived: ``True`` = echo it now, ``False`` = queued (see next_mark_due).
        An utterance's own mark ends it (the next media starts a new one); the marks the
        gateway puts after each of its sentences (``<speech id>.<n>``) do not."""
        if "." not in name:
            self.boundary = True
        run_end = self.run_start + self.run_bytes / BYTES_PER_SECOND
        if now >= run_end:
            return True
        self.pending.append((run_end, name))
        return False

    @property
    def next_mark_due(self) -> float | None:
        return self.pending[0][0] if self.pending else None

    def pop_marks(self, until: float) -> list[str]:
        """The pending marks due at or before ``until``, in order."""
        pending = self.pending
        names = []
        while pending and pending[0][0] <= until:
            names.append(pending.popleft()[1])
        return names

    def clear(self, now: float) -> list[str]:
        """``clear``: drop the buffered audio; return the pending marks (echo them now)."""
        self.boundary = True
        names = [name for _, name in self.pending]
        self.pending.clear()
        if self.run_end > now:
            self.run_start = now
            self.run_bytes = 0
        return names

    def buffered_seconds(self, now: float) -> float:
        return max(0.0, self.run_end - now)


# ---- one call ------------------------------------------------------------------------


_monotonic = time.monotonic
_SILENCE_B64 = binascii.b2a_base64(b"\xff" * FRAME_BYTES, newline=False)
#: caller frames remembered for matching a bot's packet to the frame it came from
_SENT_RING = 64
#: the level of the caller's line noise in ``caller_audio="noise"``: above the voice
#: activity detector's quietest speech (-55 dBFS), so it really looks at the windows, and
#: well below any voice (a quiet line; the detector must not take it for the caller)
NOISE_DBFS = -50.0
NOISE_FRAMES = 50


def caller_frames(kind: str) -> tuple[bytes, ...]:
    """The base64 payloads a caller cycles through: one frame of μ-law silence, or a
    second of white noise at ``NOISE_DBFS`` (seeded: every run sends the same)."""
    if kind == "silence":
        return (_SILENCE_B64,)
    if kind != "noise":
        raise ValueError(f"caller audio must be silence or noise, not {kind!r}")
    from telcodecs import Transcoder

    rng = np.random.default_rng(13)
    level = 32768 * 10 ** (NOISE_DBFS / 20)
    pcm = np.clip(rng.normal(0, level, FRAME_BYTES * NOISE_FRAMES), -32768, 32767)
    mulaw = Transcoder("pcm_s16le", 8000, "mulaw", 8000).feed(pcm.astype("<i2").tobytes())
    return tuple(binascii.b2a_base64(mulaw[i:i + FRAME_BYTES], newline=False)
                 for i in range(0, len(mulaw), FRAME_BYTES))


class TwilioLoadCall(WsClientProtocol):
    """One Twilio call: connected + start on open, caller media on the run's ticker,
    gateway messages measured and fed to a :class:`BufferModel`, marks echoed on time."""

    def __init__(self, run: _LoadRun, index: int, path: str) -> None:
        super().__init__(run.host, run.port, path)
        self.run = run
        self.index = index
        self.call_sid = f"CA{run.sid_prefix}{index:016x}"
        self.stream_sid = f"MZ{run.sid_prefix}{index:016x}"
        sid = self.stream_sid.encode()
        self._media_format = (
            b'{"event":"media","sequenceNumber":"%d","streamSid":"' + sid
            + b'","media":{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"}}'
        )
        self._payloads = run.caller_frames
        self._sent_at = [0.0] * _SENT_RING  # when caller frame i went out, at i % _SENT_RING
        self._gateway_media_prefix = (
            b'{"event":"media","streamSid":"' + sid + b'","media":{"payload":"'
        )
        self._gateway_media_prefix_len = len(self._gateway_media_prefix)
        self._payload_offset = 4 + self._gateway_media_prefix_len  # in a 16-bit-length frame
        self.model = BufferModel()
        self._sequence = 0
        self._chunk = 0
        self._mark_timer: asyncio.TimerHandle | None = None
        self._mark_timer_due = 0.0
        self.ticker_group: list[TwilioLoadCall] | None = None
        # measurements
        self.start_sent_at: float | None = None
        self.first_media_at: float | None = None
        self.last_media_at: float | None = None
        self.frames = 0
        self.audio_bytes = 0
        self.received = 0
        self.sent = 0
        self.violations = 0
        self.marks_echoed = 0
        self.clears = 0
        self.interrupt_sent_at: float | None = None
        self.barge_in: float | None = None
        self.clear_latency: float | None = None
        self.stopping = False
        # the bot the gateway dialed for this call (gateway/bench/botserver.py)
        self.bot_started = False
        self.bot_packets = 0
        self._bot_offset: int | None = None  # bot packet k came from caller frame offset + k

    # -- outbound (caller side) ----------------------------------------------------------

    def on_open(self, now: float) -> None:
        self._sequence = 2
        sid = self.stream_sid
        start = {
            "event": "start",
            "sequenceNumber": "2",
            "streamSid": sid,
            "start": {
                "accountSid": self.run.account_sid,
                "streamSid": sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
        assert self.transport is not None  # the upgrade came over it
        self.transport.write(
            _text_frame(b'{"event":"connected","protocol":"Call","version":"1.0.0"}')
            + _text_frame(json.dumps(start, separators=(",", ":")).encode())
        )
        self.sent += 2
        self.start_sent_at = time.monotonic()
        self.run.call_opened(self)

    def send_media(self) -> None:
        """The ticker's call: the next 20 ms of caller audio (μ-law silence)."""
        if self.paused or not self.is_open:
            self.run.send_skips += self.paused
            return
        self._sequence += 1
        chunk = self._chunk = self._chunk + 1
        payloads = self._payloads
        body = self._media_format % (self._sequence, chunk, (chunk - 1) * 20,
                                     payloads[(chunk + self.index) % len(payloads)])
        self._sent_at[chunk % _SENT_RING] = _monotonic()
        assert self.transport is not None  # is_open: connected and upgraded
        self.transport.write(_TEXT_HEADER_16[len(body)] + body)

    def bot_packet(self, now: float) -> float | None:
        """The bot got its next packet of this call's audio at ``now``: the time since the
        caller frame it came from went out (None when that frame is out of memory).

        The gateway turns each ``n`` 20 ms caller frames into one packet from the moment
        the bot's socket listens, so packet k ends with frame ``offset + n k``. The first packet
        is taken to come from the newest frame sent; if a later packet would then precede
        its frame, it came from an earlier one, and the offset moves back. (A packet the
        gateway dropped for a slow reader shifts the match: those are counted there.)"""
        self.bot_packets += 1
        k = self.bot_packets * self.run.frames_per_bot_packet
        chunk = self._chunk
        if self._bot_offset is None or self._bot_offset + k > chunk:
            self._bot_offset = chunk - k
        frame = self._bot_offset + k
        sent_at = self._sent_at
        delay = now - sent_at[frame % _SENT_RING]
        while delay < 0 and frame > 1 and chunk - frame < _SENT_RING - 1:
            self._bot_offset -= 1
            frame -= 1
            delay = now - sent_at[frame % _SENT_RING]
        if frame < 1 or chunk - frame >= _SENT_RING or delay < 0:
            return None
        return delay

    def hang_up(self) -> None:
        """``stop``, then a close frame; the server closes the TCP connection."""
        self.stopping = True
        self._cancel_mark_timer()
        if not self.is_open:
            return
        self._sequence += 1
        stop = (
            '{"event":"stop","sequenceNumber":"%d","streamSid":"%s","stop":'
            '{"accountSid":"%s","callSid":"%s"}}'
            % (self._sequence, self.stream_sid, self.run.account_sid, self.call_sid)
        )
        self.send_text(stop.encode())
        self.sent += 1
        self.send_close(1000)

    def _echo(self, names: list[str]) -> None:
        if not self.is_open:
            return
        sid = self.stream_sid
        for name in names:
            self._sequence += 1
            self.send_text(
                b'{"event":"mark","sequenceNumber":"%d","streamSid":"%s","mark":{"name":%s}}'
                % (self._sequence, sid.encode(), json.dumps(name).encode())
            )
        self.sent += len(names)
        self.marks_echoed += len(names)

    def _schedule_mark(self) -> None:
        due = self.model.next_mark_due
        if due is None or self._mark_timer is not None or self.stopping:
            return
        self._mark_timer_due = due
        self._mark_timer = asyncio.get_running_loop().call_later(
            max(0.0, due - time.monotonic()), self._mark_timer_fired
        )

    def _mark_timer_fired(self) -> None:
        self._mark_timer = None
        # Pop by the due time the timer was set for, not by the clock: a timer may fire a
        # fraction of a millisecond early (uvloop's timers have 1 ms resolution).
        self._echo(self.model.pop_marks(self._mark_timer_due))
        self._schedule_mark()

    def _cancel_mark_timer(self) -> None:
        if self._mark_timer is not None:
            self._mark_timer.cancel()
            self._mark_timer = None

    # -- inbound (gateway side) ----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # Fast path, taken for nearly every chunk: back-to-back unfragmented text frames
        # (16-bit lengths) each holding a media message in the gateway's usual shape (it
        # may write several frames at once). It skips the general frame loop and the
        # method calls of on_text; anything else goes to the general path from there on.
        if not self.is_open or self._buf:
            WsClientProtocol.data_received(self, data)
            return
        n = len(data)
        pos = 0
        now = 0.0
        prefix = self._gateway_media_prefix
        offset = self._payload_offset
        while (
            n - pos > 4
            and data[pos] == 0x81
            and data[pos + 1] == 0x7E
            and data.startswith(prefix, pos + 4)
        ):
            end = pos + 4 + (data[pos + 2] << 8 | data[pos + 3])
            start = pos + offset
            chars = end - 3 - start
            if (
                end > n
                or chars <= 0
                or chars & 3
                or not data.endswith(b'"}}', start, end)
                or data.find(b'"', start, end - 3) >= 0
            ):
                break
            nbytes = (chars >> 2) * 3
            if data[end - 4] == 61:  # '='
                nbytes -= 2 if data[end - 5] == 61 else 1
            if not now:
                now = _monotonic()
            self.received += 1
            self._media(nbytes, now)
            pos = end
        if pos < n:
            WsClientProtocol.data_received(self, data[pos:] if pos else data)

    def on_text(self, payload: bytes, now: float) -> None:
        self.received += 1
        prefix_len = self._gateway_media_prefix_len
        if payload.startswith(self._gateway_media_prefix) and payload.endswith(b'"}}'):
            # The payload is everything between the prefix and '"}}'; base64 has no '"'.
            chars = len(payload) - prefix_len - 3
            if chars > 0 and not chars & 3 and payload.find(b'"', prefix_len, -3) < 0:
                nbytes = (chars >> 2) * 3
                if payload[-4] == 61:  # '='
                    nbytes -= 2 if payload[-5] == 61 else 1
                self._media(nbytes, now)
                return
        self._by_json(payload, now)

    def on_binary(self, payload: bytes, now: float) -> None:
        self.received += 1
        self.on_violation("31950", f"binary frame of {len(payload)} bytes")

    def on_violation(self, code: str, detail: str) -> None:
        self.violations += 1
        self.run.violation(self, code, detail)

    def on_closed(self) -> None:
        self._cancel_mark_timer()
        self.run.call_closed(self)

    def _media(self, nbytes: int, now: float) -> None:
        if self.first_media_at is None:
            self.first_media_at = now
        self.last_media_at = now
        self.frames += 1
        self.audio_bytes += nbytes
        if nbytes != FRAME_BYTES:
            self.on_violation("frame_size", f"a media message of {nbytes} bytes (expected 160)")
        late = self.model.media(now, nbytes)
        run = self.run
        if late > 0.0:
            bucket = int(late * _PER_BUCKET)
            run.hist[bucket if bucket < _OVERFLOW else _OVERFLOW] += 1
        else:
            run.hist[0] += 1
        if late > run.window_worst:
            run.window_worst = late

    def _parse(self, payload: bytes) -> dict[str, Any] | None:
        try:
            message = json.loads(payload)
        except (ValueError, RecursionError):
            self.on_violation("31951", f"text frame is not JSON: {payload[:80]!r}")
            return None
        if type(message) is not dict:
            self.on_violation("31951", f"message is not a JSON object: {payload[:80]!r}")
            return None
        if message.get("streamSid") != self.stream_sid:
            self.on_violation("31951", f"wrong or missing streamSid: {payload[:120]!r}")
            return None
        return message

    def _media_by_json(self, payload: bytes, now: float) -> None:
        message = self._parse(payload)
        if message is not None:
            self._json_media(message, payload, now)

    def _json_media(self, message: dict[str, Any], payload: bytes, now: float) -> None:
        media = message.get("media")
        if set(message) != {"event", "streamSid", "media"} or type(media) is not dict or set(
            media
        ) != {"payload"} or type(media["payload"]) is not str:
            self.on_violation("31951", f"malformed media message: {payload[:120]!r}")
            return
        try:
            audio = binascii.a2b_base64(media["payload"], strict_mode=True)
        except binascii.Error:
            self.on_violation("31951", f"media.payload is not base64: {payload[:120]!r}")
            return
        self._media(len(audio), now)

    def _by_json(self, payload: bytes, now: float) -> None:
        """Any message but a media message in the gateway's usual shape: parse, validate."""
        message = self._parse(payload)
        if message is None:
            return
        event = message.get("event")
        if event == "media":
            self._json_media(message, payload, now)
        elif event == "mark":
            mark = message.get("mark")
            if set(message) != {"event", "streamSid", "mark"} or type(mark) is not dict or set(
                mark
            ) != {"name"} or type(mark["name"]) is not str:
                self.on_violation("31951", f"malformed mark message: {payload[:120]!r}")
                return
            if self.model.mark(now, mark["name"]):
                self._echo([mark["name"]])
            else:
                self._schedule_mark()
        elif event == "clear":
            if set(message) != {"event", "streamSid"}:
                self.on_violation("31951", f"malformed clear message: {payload[:120]!r}")
                return
            self.clears += 1
            self._cancel_mark_timer()
            self._echo(self.model.clear(now))
            sent = self.interrupt_sent_at
            if sent is not None and self.clear_latency is None:
                self.clear_latency = now - sent
                last = self.last_media_at
                self.barge_in = max(0.0, last - sent) if last is not None else 0.0
        else:
            self.on_violation("31951", f"unknown event {event!r}: {payload[:80]!r}")


# ---- the run -------------------------------------------------------------------------


@dataclass
class LoadResult:
    """What a load run measured. Times in seconds; lateness figures are ``None`` when no
    sample fell in the measured part of the run."""

    calls_requested: int
    calls_connected: int
    calls_failed: int
    #: Per connected call that got audio: ``start`` sent → first media message.
    first_media_latency: list[float]
    #: Over the measured part (``measure_from`` s after the last call connected), at 0.1 ms
    #: resolution (rounded down; ``lateness_max`` is exact).
    lateness_p50: float | None
    lateness_p99: float | None
    lateness_max: float | None
    lateness_samples: int
    #: The smallest margin by which a media message beat its due time (negative: the
    #: worst lateness), over the measured part, first messages of utterances aside. With
    #: the gateway's lead of L ms this stays within a frame or two of L while it keeps up;
    #: 20 ms when an utterance starts in the measured part (its 2nd frame comes with its 1st).
    lead_min: float | None
    frames_received: int
    audio_seconds_received: float
    underruns: int
    calls_with_underruns: int
    #: Wrong-size frames, malformed or unexpected messages, WebSocket protocol errors.
    violations: int
    violation_samples: list[str]
    #: Per interrupted call that saw its clear: interrupt sent → last media before the
    #: clear (clamped at 0), and interrupt sent → clear arrived.
    barge_in: list[float]
    clear_latency: list[float]
    interrupts_sent: int
    interrupts_failed: int
    #: Per window (1 s; the window where measuring starts is cut short): ``t`` (start, s
    #: from the run's start), ``seconds``, ``calls`` open at its end, ``frames``,
    #: ``p50_ms``/``p99_ms``/``max_ms`` lateness, ``lead_min_ms`` (see lead_min; ``None``
    #: like the lateness figures in a window without frames), ``gen_late_ms`` (how late the
    #: generator's own ticker woke, max), ``measured``.
    timeline: list[dict[str, Any]]
    duration: float
    ramp_seconds: float | None
    measured_seconds: float
    #: Process CPU time of the generator from the first connection to the stop.
    generator_cpu_seconds: float
    messages_sent: int
    messages_received: int
    #: The same over the measured part only (steady state: every call up).
    steady_cpu_seconds: float
    #: Of which in the kernel (socket calls on loopback cost the sender the receiver's
    #: TCP processing too; os.times() resolution, 10 ms).
    steady_system_seconds: float
    steady_messages_sent: int
    steady_messages_received: int
    #: How late the generator's ticker woke (its own health: if this grows, the
    #: generator, not the gateway, is the bottleneck).
    generator_tick_late_p99: float | None
    generator_tick_late_max: float | None
    send_skips: int
    calls_closed_by_gateway: int
    marks_echoed: int
    clears_received: int
    failure_reasons: dict[str, int] = field(default_factory=dict)
    event_loop: str = ""
    caller_audio: str = "silence"
    #: caller media messages sent, over the whole run
    caller_frames_sent: int = 0
    #: The loopback bot (``bot_port``): sockets the gateway opened and that passed the
    #: signature check, those refused (by reason), those whose first event was a good
    #: ``call.started``, those that got ``call.ended``; packets of caller audio (and of
    #: them the wrong size); events by type; protocol problems seen.
    bot_sockets: int = 0
    bot_refused: dict[str, int] = field(default_factory=dict)
    bot_call_started: int = 0
    bot_call_ended: int = 0
    bot_packets: int = 0
    bot_bad_packets: int = 0
    bot_events: dict[str, int] = field(default_factory=dict)
    bot_violations: list[str] = field(default_factory=list)
    #: Per call (in the order calls were placed): packets its bot got, and whether its
    #: bot got ``call.started``.
    bot_packets_per_call: list[int] = field(default_factory=list)
    bot_started_per_call: list[bool] = field(default_factory=list)
    #: Caller frame sent -> the bot's packet holding it received, over the measured part
    #: (0.1 ms resolution; see TwilioLoadCall.bot_packet): the gateway's delay plus both
    #: loopback hops plus this process's own scheduling.
    bot_delay_p50: float | None = None
    bot_delay_p99: float | None = None
    bot_delay_max: float | None = None
    bot_delay_samples: int = 0

    def summary(self) -> str:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value * 1000:.1f}"

        def quantile(values: list[float], q: float) -> float | None:
            return _nearest_rank(sorted(values), q)

        steady_msgs = self.steady_messages_sent + self.steady_messages_received
        per_msg = (
            f"{self.steady_cpu_seconds / steady_msgs * 1e6:.1f} µs/message"
            if steady_msgs else "-"
        )
        lines = [
            f"calls: {self.calls_connected}/{self.calls_requested} connected, "
            f"{self.calls_failed} failed, {self.calls_closed_by_gateway} closed by the gateway"
            + (f" ({self.failure_reasons})" if self.failure_reasons else ""),
            f"first media: p50 {ms(quantile(self.first_media_latency, 0.5))} ms, "
            f"p99 {ms(quantile(self.first_media_latency, 0.99))} ms "
            f"({len(self.first_media_latency)} calls)",
            f"lateness: p50 {ms(self.lateness_p50)} ms, p99 {ms(self.lateness_p99)} ms, "
            f"max {ms(self.lateness_max)} ms, min lead {ms(self.lead_min)} ms over "
            f"{self.lateness_samples} frames "
            f"({self.measured_seconds:.1f} s measured)",
            f"frames: {self.frames_received} ({self.audio_seconds_received:.1f} s of audio), "
            f"underruns {self.underruns} on {self.calls_with_underruns} calls, "
            f"violations {self.violations}",
        ]
        if self.bot_sockets or self.bot_refused:
            lines.append(
                f"bot: {self.bot_sockets} sockets ({self.bot_call_started} with call.started, "
                f"{self.bot_call_ended} with call.ended, refused {self.bot_refused or 0}), "
                f"{self.bot_packets} packets ({self.bot_bad_packets} of a wrong size), "
                f"caller frame -> bot packet p50 {ms(self.bot_delay_p50)} ms, p99 "
                f"{ms(self.bot_delay_p99)} ms, max {ms(self.bot_delay_max)} ms; "
                f"caller speech events {self.bot_events.get('caller.speech_started', 0)}"
            )
        if self.interrupts_sent:
            lines.append(
                f"barge-in: {len(self.barge_in)}/{self.interrupts_sent} clears seen; "
                f"last media p50 {ms(quantile(self.barge_in, 0.5))} ms, max "
                f"{ms(max(self.barge_in) if self.barge_in else None)} ms; clear p50 "
                f"{ms(quantile(self.clear_latency, 0.5))} ms, max "
                f"{ms(max(self.clear_latency) if self.clear_latency else None)} ms"
            )
        lines.append(
            f"generator ({self.event_loop}): {self.generator_cpu_seconds:.2f} s CPU in "
            f"{self.duration:.1f} s; steady {per_msg} "
            f"({self.steady_system_seconds / max(self.steady_cpu_seconds, 1e-9):.0%} kernel); "
            f"ticker late p99 {ms(self.generator_tick_late_p99)} ms, "
            f"max {ms(self.generator_tick_late_max)} ms"
            f"; send skips {self.send_skips}"
        )
        return "\n".join(lines)


def _nearest_rank(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def _hist_quantiles(hist: np.ndarray, exact_max: float, qs: tuple[float, ...]) -> list[float]:
    total = int(hist.sum())
    cumulative = np.cumsum(hist)
    out = []
    for q in qs:
        bucket = int(np.searchsorted(cumulative, max(1, math.ceil(q * total))))
        out.append(min(bucket * LATENESS_RESOLUTION, exact_max))
    return out


def _parse_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "http"):
        raise ValueError(f"{url!r}: use ws:// (or http://) on loopback; TLS is not supported")
    host = _LOOPBACK.get(parts.hostname or "")
    if host is None:
        raise ValueError(
            f"{url!r}: the load generator only connects to 127.0.0.1, ::1 or localhost"
        )
    return host, parts.port or 80


class _LoadRun:
    def __init__(
        self, base_ws_url: str, *, calls: int, route: str, duration: float,
        ramp_per_second: float, interrupt_after: float | None, interrupt_fraction: float,
        measure_from: float, phases: int, control_token: str | None, connect_timeout: float,
        caller_audio: str = "silence", bot_port: int | None = None,
        bot_secret: str | None = None, bot_path: str = "/bot",
        bot_packet_bytes: int = 640,
    ) -> None:
        if not 0 < calls <= MAX_CALLS:
            raise ValueError(f"calls must be 1..{MAX_CALLS}, not {calls}")
        if not 0 < duration <= MAX_DURATION:
            raise ValueError(f"duration must be in (0, {MAX_DURATION}] s, not {duration}")
        if not ramp_per_second > 0:
            raise ValueError("ramp_per_second must be > 0")
        if not 0.0 <= interrupt_fraction <= 1.0:
            raise ValueError("interrupt_fraction must be within 0..1")
        if not 1 <= phases <= 20:
            raise ValueError("phases must be 1..20")
        self.host, self.port = _parse_url(base_ws_url)
        self.path = "/v1/media/twilio/" + quote(route, safe="")
        self.calls_requested = calls
        self.duration = duration
        self.ramp_per_second = ramp_per_second
        self.interrupt_after = interrupt_after
        self.interrupt_fraction = interrupt_fraction
        self.measure_from = measure_from
        self.phases = phases
        self.control_token = control_token
        self.connect_timeout = connect_timeout
        self.sid_prefix = secrets.token_hex(8)
        self.caller_audio = caller_audio
        self.caller_frames = caller_frames(caller_audio)
        self.calls_by_sid: dict[str, TwilioLoadCall] = {}
        self.bot = None
        self.frames_per_bot_packet = max(1, bot_packet_bytes // 640)  # l16/16000: 640 B/20 ms
        if bot_port is not None:
            from gateway.bench.botserver import LoopbackBot

            self.bot_port = bot_port
            self.bot = LoopbackBot(f"ws://127.0.0.1:{bot_port}{bot_path}", bot_secret,
                                   bot_packet_bytes, self.calls_by_sid, self._bot_delay)
        self.bot_delay_hist = [0] * (_OVERFLOW + 1)
        self.bot_delay_max = 0.0
        self.account_sid = "AC" + secrets.token_hex(16)

        self.calls: list[TwilioLoadCall] = []
        self.groups: list[list[TwilioLoadCall]] = [[] for _ in range(phases)]
        self.open_calls = 0
        self.connected = 0
        self.failed = 0
        self.failure_reasons: dict[str, int] = {}
        self.closed_by_gateway = 0
        self.stopping = False
        self.violations = 0
        self.violation_samples: list[str] = []
        self.send_skips = 0
        self.media_sent = 0
        self.interrupts_sent = 0
        self.interrupts_failed = 0
        self.to_interrupt = 0
        self._interrupt_tasks: set[asyncio.Task[None]] = set()
        self._http: Any = None

        # lateness: the current window's histogram (a plain list: cheapest to bump)
        self.hist = [0] * (_OVERFLOW + 1)
        self.window_worst = -math.inf  # the largest arrival - due (negative: a margin)
        self.window_start = 0.0
        self.window_end = 0.0
        self.window_gen_late = 0.0
        self.measuring = False
        self.measured_hist = np.zeros(_OVERFLOW + 1, dtype=np.int64)
        self.measured_worst = -math.inf
        self.measure_started_at: float | None = None
        self.timeline: list[dict[str, Any]] = []
        self.tick_late_list = [0] * (_OVERFLOW + 1)
        self.tick_late_max = 0.0
        self.ramp_done_at: float | None = None
        # process time, messages sent and received, system time
        self._steady_start: tuple[float, int, int, float] | None = None
        self._done = asyncio.Event()

    # -- callbacks from calls ------------------------------------------------------------

    def _bot_delay(self, delay: float) -> None:
        if not self.measuring:
            return
        bucket = int(delay * _PER_BUCKET)
        self.bot_delay_hist[bucket if bucket < _OVERFLOW else _OVERFLOW] += 1
        if delay > self.bot_delay_max:
            self.bot_delay_max = delay

    def call_opened(self, call: TwilioLoadCall) -> None:
        self.connected += 1
        self.open_calls += 1
        group = self.groups[call.index % self.phases]
        group.append(call)
        call.ticker_group = group

    def call_closed(self, call: TwilioLoadCall) -> None:
        group = call.ticker_group
        if group is not None:
            call.ticker_group = None
            try:
                group.remove(call)
            except ValueError:
                pass
            self.open_calls -= 1
            if not call.stopping:
                self.closed_by_gateway += 1
        if self.open_calls == 0 and self.ramp_done_at is not None:
            self._done.set()

    def violation(self, call: TwilioLoadCall, code: str, detail: str) -> None:
        self.violations += 1
        if len(self.violation_samples) < 20:
            self.violation_samples.append(f"call {call.index} [{code}] {detail}")

    def _fail(self, reason: str) -> None:
        self.failed += 1
        if len(self.failure_reasons) < 50 or reason in self.failure_reasons:
            self.failure_reasons[reason] = self.failure_reasons.get(reason, 0) + 1

    # -- tasks ---------------------------------------------------------------------------

    async def _connect(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        call = TwilioLoadCall(self, index, self.path)
        self.calls.append(call)
        self.calls_by_sid[call.call_sid] = call
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(lambda: call, self.host, self.port)
                await call.handshake
        except TimeoutError:
            self._fail("timeout")
            call.abort()
        except (OSError, ConnectionError) as exc:
            self._fail(str(exc) if isinstance(exc, ConnectionError) and str(exc).startswith(
                ("HTTP", "connection lost")) else type(exc).__name__)
            call.abort()
        else:
            if self._wants_interrupt(index) and self.interrupt_after is not None:
                self._schedule_interrupt(call, self.interrupt_after)

    async def _ramp(self) -> None:
        tasks = []
        try:
            for index in range(self.calls_requested):
                at = self.t0 + index / self.ramp_per_second
                if at >= self.end_at - 0.5:
                    break
                delay = at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.get_running_loop().create_task(self._connect(index)))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        self.ramp_done_at = time.monotonic()
        if self.open_calls == 0:
            self._done.set()
            return
        delay = self.measure_from - (time.monotonic() - self.ramp_done_at)
        if delay > 0:
            await asyncio.sleep(delay)
        self._start_measuring(time.monotonic())

    def _wants_interrupt(self, index: int) -> bool:
        f = self.interrupt_fraction
        return math.floor((index + 1) * f + 1e-9) > math.floor(index * f + 1e-9)

    def _schedule_interrupt(self, call: TwilioLoadCall, interrupt_after: float) -> None:
        # Interrupts go out at the ramp's rate from interrupt_after on, so the gateway
        # never gets hundreds of control requests in the same millisecond.
        at = self.t0 + interrupt_after + self.to_interrupt / self.ramp_per_second
        self.to_interrupt += 1
        if at >= self.end_at - 0.1:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            if self.stopping or not call.is_open:
                return
            task = loop.create_task(self._interrupt(call))
            self._interrupt_tasks.add(task)
            task.add_done_callback(self._interrupt_tasks.discard)

        loop.call_later(max(0.0, at - time.monotonic()), fire)

    async def _open_http(self) -> None:
        """The control-API client, opened before any call (importing aiohttp and making
        the first request take ~0.1 s of CPU that must not stall the ticker mid-run)."""
        import aiohttp

        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        host = f"[{self.host}]" if ":" in self.host else self.host
        try:
            async with self._http.get(f"http://{host}:{self.port}/healthz") as resp:
                await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass

    async def _interrupt(self, call: TwilioLoadCall) -> None:
        import aiohttp

        host = f"[{self.host}]" if ":" in self.host else self.host
        url = f"http://{host}:{self.port}/v1/calls/{call.call_sid}/interrupt"
        headers = {"Authorization": f"Bearer {self.control_token}"} if self.control_token else {}
        self.interrupts_sent += 1
        call.interrupt_sent_at = time.monotonic()
        try:
            async with self._http.post(url, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    self.interrupts_failed += 1
        except (aiohttp.ClientError, OSError, TimeoutError):
            self.interrupts_failed += 1

    async def _ticker(self) -> None:
        period = FRAME_SECONDS / self.phases
        groups = self.groups
        phases = self.phases
        t0 = self.t0
        tick_late = self.tick_late_list
        k = 0
        monotonic = time.monotonic
        sleep = asyncio.sleep
        while True:
            k += 1
            deadline = t0 + k * period
            delay = deadline - monotonic()
            if delay > 0:
                await sleep(delay)
            now = monotonic()
            late = now - deadline
            if late > 0:
                bucket = int(late * _PER_BUCKET)
                tick_late[bucket if bucket < _OVERFLOW else _OVERFLOW] += 1
                if late > self.window_gen_late:
                    self.window_gen_late = late
                    if late > self.tick_late_max:
                        self.tick_late_max = late
            else:
                tick_late[0] += 1
            group = groups[k % phases]
            for call in tuple(group):
                call.send_media()
            self.media_sent += len(group)
            if now >= self.window_end:
                self._roll_window(now)

    # -- lateness windows ----------------------------------------------------------------

    def _roll_window(self, now: float) -> None:
        hist = np.array(self.hist, dtype=np.int64)
        count = int(hist.sum())
        if count == 0 and now - self.window_start < 0.01:
            return  # a sliver (the run stopped right after a roll): nothing to plot
        entry: dict[str, Any] = {
            "t": round(self.window_start - self.t0, 3),
            "seconds": round(now - self.window_start, 3),
            "calls": self.open_calls,
            "frames": count,
            "p50_ms": None,
            "p99_ms": None,
            "max_ms": None,
            "lead_min_ms": None,
            "gen_late_ms": round(self.window_gen_late * 1000, 3),
            "measured": self.measuring,
        }
        worst = self.window_worst
        if count:
            p50, p99 = _hist_quantiles(hist, max(0.0, worst), (0.5, 0.99))
            entry["p50_ms"] = round(p50 * 1000, 2)
            entry["p99_ms"] = round(p99 * 1000, 2)
            entry["max_ms"] = round(max(0.0, worst) * 1000, 3)
            if worst > -math.inf:
                entry["lead_min_ms"] = round(-worst * 1000, 3)
        self.timeline.append(entry)
        if self.measuring:
            self.measured_hist += hist
            self.measured_worst = max(self.measured_worst, worst)
        self.hist = [0] * (_OVERFLOW + 1)
        self.window_worst = -math.inf
        self.window_gen_late = 0.0
        self.window_start = now
        while self.window_end <= now:
            self.window_end += 1.0

    def _start_measuring(self, now: float) -> None:
        if self.measuring or self.stopping:
            return
        self._roll_window(now)  # the warm-up part of this window is not measured
        self.measuring = True
        self.measure_started_at = now
        self._steady_start = (time.process_time(), self._sent(), self._received(),
                              os.times().system)

    def _sent(self) -> int:
        return self.media_sent + sum(call.sent for call in self.calls)

    def _received(self) -> int:
        return sum(call.received for call in self.calls)

    # -- the whole run -------------------------------------------------------------------

    async def run(self) -> LoadResult:
        loop = asyncio.get_running_loop()
        if self.interrupt_after is not None and self.interrupt_fraction > 0:
            await self._open_http()
        if self.bot is not None:
            await self.bot.start(self.bot_port)
        cpu0 = time.process_time()
        self.t0 = t0 = time.monotonic()
        self.end_at = t0 + self.duration
        self.window_start = t0
        self.window_end = t0 + 1.0
        ticker = loop.create_task(self._ticker())
        ramp = loop.create_task(self._ramp())
        try:
            try:
                await asyncio.wait_for(self._done.wait(), self.end_at - time.monotonic())
            except TimeoutError:
                pass
            stop_at = time.monotonic()
            cpu1 = time.process_time()
            system1 = os.times().system
            sent, received = self._sent(), self._received()
            self.stopping = True
            ramp.cancel()
            ticker.cancel()
            await asyncio.gather(ramp, ticker, return_exceptions=True)
            self._roll_window(stop_at)
            # hang up: stop + close on every call, wait (bounded) for the server to close
            for call in self.calls:
                if call.is_open:
                    call.hang_up()
            pending = [c.closed for c in self.calls
                       if c.transport is not None and not c.closed.done()]
            if pending:
                await asyncio.wait(pending, timeout=3.0)
            for call in self.calls:
                if not call.closed.done():
                    call.abort()
            if self._interrupt_tasks:
                await asyncio.wait(self._interrupt_tasks, timeout=2.0)
                for task in self._interrupt_tasks:
                    task.cancel()
            if self.bot is not None:  # the gateway closes the bots' sockets as calls end
                await self.bot.close()
        finally:
            if self.bot is not None:
                await self.bot.close(wait=0)
            ramp.cancel()
            ticker.cancel()
            for call in self.calls:
                if not call.closed.done():
                    call.abort()
            if self._http is not None:
                await self._http.close()

        if self._steady_start is not None:
            steady_cpu = cpu1 - self._steady_start[0]
            steady_sent = sent - self._steady_start[1]
            steady_received = received - self._steady_start[2]
            steady_system = system1 - self._steady_start[3]
            measured_seconds = stop_at - (self.measure_started_at or stop_at)
        else:
            steady_cpu, steady_sent, steady_received, measured_seconds = 0.0, 0, 0, 0.0
            steady_system = 0.0
        samples = int(self.measured_hist.sum())
        worst = self.measured_worst
        lateness: tuple[float | None, float | None, float | None]
        if samples:
            p50, p99 = _hist_quantiles(self.measured_hist, max(0.0, worst), (0.5, 0.99))
            lateness = (p50, p99, max(0.0, worst))
        else:
            lateness = (None, None, None)
        lead_min = -worst if worst > -math.inf else None
        tick_hist = np.array(self.tick_late_list, dtype=np.int64)
        tick_max: float | None
        tick_p99: float | None
        if tick_hist.sum():
            tick_max = self.tick_late_max
            tick_p99 = _hist_quantiles(tick_hist, tick_max, (0.99,))[0]
        else:
            tick_max = tick_p99 = None
        calls = self.calls
        bot_delay = np.array(self.bot_delay_hist, dtype=np.int64)
        bot_delay_samples = int(bot_delay.sum())
        bot_delay_q = (_hist_quantiles(bot_delay, self.bot_delay_max, (0.5, 0.99))
                       if bot_delay_samples else (None, None))
        bot = self.bot.stats if self.bot is not None else None
        return LoadResult(
            calls_requested=self.calls_requested,
            calls_connected=self.connected,
            calls_failed=self.failed,
            first_media_latency=[
                c.first_media_at - c.start_sent_at for c in calls
                if c.first_media_at is not None and c.start_sent_at is not None
            ],
            lateness_p50=lateness[0],
            lateness_p99=lateness[1],
            lateness_max=lateness[2],
            lateness_samples=samples,
            lead_min=lead_min,
            frames_received=sum(c.frames for c in calls),
            audio_seconds_received=sum(c.audio_bytes for c in calls) / BYTES_PER_SECOND,
            underruns=sum(c.model.underruns for c in calls),
            calls_with_underruns=sum(1 for c in calls if c.model.underruns),
            violations=self.violations,
            violation_samples=list(self.violation_samples),
            barge_in=[c.barge_in for c in calls if c.barge_in is not None],
            clear_latency=[c.clear_latency for c in calls if c.clear_latency is not None],
            interrupts_sent=self.interrupts_sent,
            interrupts_failed=self.interrupts_failed,
            timeline=self.timeline,
            duration=stop_at - t0,
            ramp_seconds=None if self.ramp_done_at is None else self.ramp_done_at - t0,
            measured_seconds=measured_seconds,
            generator_cpu_seconds=cpu1 - cpu0,
            messages_sent=sent,
            messages_received=received,
            steady_cpu_seconds=steady_cpu,
            steady_system_seconds=steady_system,
            steady_messages_sent=steady_sent,
            steady_messages_received=steady_received,
            generator_tick_late_p99=tick_p99,
            generator_tick_late_max=tick_max,
            send_skips=self.send_skips,
            calls_closed_by_gateway=self.closed_by_gateway,
            marks_echoed=sum(c.marks_echoed for c in calls),
            clears_received=sum(c.clears for c in calls),
            failure_reasons=dict(self.failure_reasons),
            event_loop=type(loop).__module__.split(".")[0],
            caller_audio=self.caller_audio,
            caller_frames_sent=self.media_sent,
            **({} if bot is None else dict[str, Any](
                bot_sockets=bot.accepted, bot_refused=dict(bot.refused),
                bot_call_started=bot.started, bot_call_ended=bot.ended,
                bot_packets=bot.packets, bot_bad_packets=bot.bad_packets,
                bot_events=dict(bot.events), bot_violations=list(bot.violations),
                bot_packets_per_call=[c.bot_packets for c in calls],
                bot_started_per_call=[c.bot_started for c in calls],
                bot_delay_p50=bot_delay_q[0], bot_delay_p99=bot_delay_q[1],
                bot_delay_max=self.bot_delay_max if bot_delay_samples else None,
                bot_delay_samples=bot_delay_samples)),
        )


async def run_load(
    base_ws_url: str,
    *,
    calls: int,
    route: str,
    duration: float,
    ramp_per_second: float = 50.0,
    interrupt_after: float | None = None,
    interrupt_fraction: float = 0.0,
    measure_from: float = 0.0,
    phases: int = 4,
    control_token: str | None = None,
    connect_timeout: float = 10.0,
    caller_audio: str = "silence",
    bot_port: int | None = None,
    bot_secret: str | None = None,
    bot_path: str = "/bot",
    bot_packet_bytes: int = 640,
) -> LoadResult:
    """Place ``calls`` Twilio calls into ``base_ws_url`` (``ws://127.0.0.1:PORT``) on
    ``/v1/media/twilio/{route}`` and measure them.

    ``duration`` bounds the whole run, counted from the first connection attempt: calls
    are opened at ``ramp_per_second`` (calls not opened by ``duration - 0.5`` s are not
    opened at all), and at ``duration`` every call sends ``stop`` and closes (the result
    is ready at most ~3 s later). Lateness is measured from ``measure_from`` s after the
    last call connected. With ``interrupt_after``, a ``interrupt_fraction`` of the calls
    (evenly spread) get ``POST /v1/calls/{callSid}/interrupt`` at ``interrupt_after`` s
    after the run started, one every ``1 / ramp_per_second`` s. ``phases`` spreads the
    calls' 20 ms caller-audio cadence over that many slots. ``caller_audio`` is what the
    callers say: ``silence`` (μ-law digital silence) or ``noise`` (a quiet line, see
    NOISE_DBFS). With ``bot_port``, a loopback bot (gateway/bench/botserver.py) listens on
    ``ws://127.0.0.1:{bot_port}{bot_path}`` for the sockets the gateway dials, checks their
    signature with ``bot_secret``, and expects packets of ``bot_packet_bytes``.
    """
    run = _LoadRun(
        base_ws_url, calls=calls, route=route, duration=duration,
        ramp_per_second=ramp_per_second, interrupt_after=interrupt_after,
        interrupt_fraction=interrupt_fraction, measure_from=measure_from, phases=phases,
        control_token=control_token, connect_timeout=connect_timeout,
        caller_audio=caller_audio, bot_port=bot_port, bot_secret=bot_secret,
        bot_path=bot_path, bot_packet_bytes=bot_packet_bytes,
    )
    return await run.run()


# ---- command line --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.bench.loadgen",
        description="N simultaneous full-duplex Twilio calls into a gateway on loopback.",
    )
    parser.add_argument("--url", required=True, help="the gateway, ws://127.0.0.1:PORT")
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--route", required=True)
    parser.add_argument("--duration", type=float, required=True,
                        help="seconds from the first call to hanging up all of them")
    parser.add_argument("--ramp", type=float, default=50.0, help="calls opened per second")
    parser.add_argument("--measure-from", type=float, default=0.0,
                        help="ignore lateness until this long after the last call connected")
    parser.add_argument("--interrupt-after", type=float,
                        help="seconds after the start to interrupt calls")
    parser.add_argument("--interrupt-fraction", type=float, default=0.0)
    parser.add_argument("--phases", type=int, default=4,
                        help="spread the calls' 20 ms cadence over this many slots")
    parser.add_argument("--token", help="control API bearer token (for interrupts)")
    parser.add_argument("--cpu", type=int, help="pin this process to this CPU")
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                        help="event loop (auto: uvloop when installed)")
    parser.add_argument("--json", help="write the full result here")
    parser.add_argument("--caller-audio", choices=["silence", "noise"], default="silence",
                        help="what the callers send: digital silence or a quiet line's noise")
    parser.add_argument("--bot-port", type=int,
                        help="run a loopback bot on this port for the sockets the gateway dials")
    parser.add_argument("--bot-path", default="/bot")
    parser.add_argument("--bot-secret-env",
                        help="environment variable holding the secret the upgrade is signed with")
    parser.add_argument("--bot-packet-bytes", type=int, default=640,
                        help="the size of one packet of caller audio (640: l16/16000, 20 ms)")
    args = parser.parse_args(argv)
    bot_secret = None
    if args.bot_secret_env:
        bot_secret = os.environ.get(args.bot_secret_env)
        if not bot_secret:
            parser.error(f"--bot-secret-env: {args.bot_secret_env} is not set")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.interrupt_fraction and args.interrupt_after is None:
        parser.error("--interrupt-fraction needs --interrupt-after")
    coro = run_load(
        args.url, calls=args.calls, route=args.route, duration=args.duration,
        ramp_per_second=args.ramp, interrupt_after=args.interrupt_after,
        interrupt_fraction=args.interrupt_fraction, measure_from=args.measure_from,
        phases=args.phases, control_token=args.token, caller_audio=args.caller_audio,
        bot_port=args.bot_port, bot_secret=bot_secret, bot_path=args.bot_path,
        bot_packet_bytes=args.bot_packet_bytes,
    )
    loop_factory = None
    if args.loop != "asyncio":
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            if args.loop == "uvloop":
                parser.error("uvloop is not installed")
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            result = runner.run(coro)
    except ValueError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    if args.json:
        with open(args.json, "w") as out:
            json.dump(asdict(result), out, indent=1)
    return 0 if result.calls_connected else 1


if __name__ == "__main__":
    sys.exit(main())
