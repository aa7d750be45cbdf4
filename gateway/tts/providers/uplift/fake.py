"""A faithful fake of Uplift AI's multi-stream TTS over Socket.IO (docs/protocols/tts-providers.md
§4, fake: §4.5), built on python-socketio's ``AsyncServer`` attached to an aiohttp app.

``make_app(**profile)`` returns an aiohttp app serving Socket.IO at ``/socket.io/`` with the
namespace ``/text-to-speech/multi-stream`` (point a client at ``ws://host:port`` + :data:`PATH`,
the way Uplift's docs write the endpoint). Behaviour, with the spec's tags:

* auth: the Socket.IO auth payload ``{"token": <key>}``; a bad or missing token refuses the
  namespace connection (``connect_error`` with ``{"message": "Invalid API key", "data":
  {"code": "auth_failed"}}``) [I], or with ``auth_error="message"`` accepts it, sends an
  ``error`` message with code ``auth_failed`` [C code table] and disconnects;
* ``{"type":"ready","sessionId"}`` on the ``message`` event after ``ready_ms`` [C];
* ``synthesize`` (event name [T livekit]) validated: ``requestId`` required and unique on the
  connection (``duplicate_request``), ``text`` of at most ``max_text_chars``
  (``text_too_long``), at most ``requests_per_minute`` per connection over a sliding minute
  (``rate_limit_exceeded``) [C seed 003]; an unknown voice or output format is
  ``synthesis_failed`` [I];
* each request runs **concurrently** with the others on the connection, so the chunks of
  overlapping requests **interleave** on the wire [T]: ``audio_start``, then after
  ``first_audio_ms`` ``audio`` chunks of ``chunk_ms`` with ``sequence`` 0..K-1, sent
  ``burst_factor`` times faster than real time, then ``audio_end`` [C];
* ``cancel`` (event name [I]) stops a request: ``late_chunks`` chunks already under way
  still come, no ``audio_end`` [I]; more than ``cancels_per_minute`` is rate limited [C];
* output formats: ``ULAW_8000_8`` raw μ-law 8 kHz, ``PCM_22050_16`` raw s16le, ``WAV_*``
  with a header on the first chunk, ``MP3_*`` a whole (fake) MP3 file per request [C/O];
* the audio is a voiced, syllable-like signal whose pitch depends on the text, so two
  requests' audio differ and a test can tell them apart byte for byte;
* with ``idle_timeout_s`` set, a connection with no client event and nothing being
  synthesized for that long is disconnected [I: undocumented];
* the ping interval and timeout are Socket.IO's (``ping_interval``, ``ping_timeout``).

``app["log"]`` records each synthesis (request id, text, voice, format, rate, the audio bytes
sent, the socket's serial number ``socket``), ``app["wire"]`` the ``(socket, requestId)`` of
each audio chunk in the order sent, ``app["received"]`` every client event ``(event,
payload)``, ``app["cancels"]`` the cancelled request ids; ``app["stats"]`` counts the
connections (:mod:`gateway.tts.providers.fakes`;
:func:`~gateway.tts.providers.fakes.close_all` disconnects them, as a server restart would).

Error injection: with ``fail_on="..."``, a request whose text contains it is answered, after
``first_audio_ms``, by ``{"type":"error","requestId",...,"code":"synthesis_failed"}``
instead of audio; the connection goes on. A runaway provider
(:data:`~gateway.tts.providers.fakes.RUNAWAY_PROFILE`): a request whose text contains
``flood_on`` gets audio without end at ``flood_factor`` (20) times real time, until cancelled; one
containing ``oversize_on`` a single ``audio`` message of ``oversize_bytes`` (8 MiB).
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
import warnings
import zlib
from collections import deque
from typing import Any

import numpy as np
import socketio
from aiohttp import web
from telcodecs import ulaw_encode, wav_bytes

from gateway.tts.providers.fakes import COMMON_PROFILE, RUNAWAY_PROFILE, add_stats, audio_pieces

NAMESPACE = "/text-to-speech/multi-stream"
PATH = NAMESPACE  # the endpoint path a client is given: the namespace
VOICES = frozenset({"v_meklc281", "v_8eelc901", "v_kwmp7zxt", "v_yypgzenx", "v_30s70t3a"})
FORMATS = ("PCM_22050_16", "WAV_22050_16", "WAV_22050_32", "MP3_22050_32", "MP3_22050_64",
           "MP3_22050_128", "OGG_22050_16", "ULAW_8000_8")

DEFAULT_PROFILE: dict[str, Any] = {
    **COMMON_PROFILE,  # handshake_ms: until the namespace connection is accepted;
    # first_audio_ms: per request (the docs say ~300 ms)
    "auth_error": "connect_error",  # or "message"
    "ready_ms": 5.0,  # connect -> ready
    "burst_factor": 8.0,
    "late_chunks": 2,
    "requests_per_minute": 60,
    "cancels_per_minute": 100,
    "max_text_chars": 10_000,
    "idle_timeout_s": None,
    "ping_interval": 25.0,
    "ping_timeout": 20.0,
    "fail_on": None,
    **RUNAWAY_PROFILE,  # flood_on, oversize_on (see the module doc)
}


def voice_pcm(text: str, seconds: float, rate: int) -> bytes:
    """Harmonics of a voice whose pitch (100-160 Hz) depends on ``text``, below 3.4 kHz,
    gated at a syllable rate of 4 Hz, about -18 dBFS."""
    f0 = 100 + zlib.crc32(text.encode()) % 61
    t = np.arange(int(seconds * rate)) / rate
    top = min(3400.0, rate / 2 - 200)
    voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, int(top // f0) + 1))
    gate = 0.5 - 0.5 * np.cos(2 * np.pi * 4 * t)
    return (voiced * gate * 3000).astype("<i2").tobytes()


def _encode(pcm8k: bytes, pcm: bytes, fmt: str, rate: int) -> tuple[bytes, int]:
    """(audio bytes, bytes per sample) in ``fmt``."""
    if fmt == "ULAW_8000_8":
        return ulaw_encode(pcm8k), 1
    if fmt.startswith(("MP3", "OGG")):
        return b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * (len(pcm) // 64), 2
    return pcm, 2


class _Handle:
    """What :func:`gateway.tts.providers.fakes.close_all` needs: ``closed`` and ``close``
    (the server drops the connection: an Engine.IO close, as a restart would)."""

    def __init__(self, sio: socketio.AsyncServer, sid: str):
        self.sio = sio
        self.sid = sid
        self.closed = False

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        if self.closed:
            return
        self.closed = True
        eio_sid = self.sio.manager.eio_sid_from_sid(self.sid, NAMESPACE)
        if eio_sid is not None:
            await self.sio.eio.disconnect(eio_sid)


class _Connection:
    def __init__(self, app: web.Application, sio: socketio.AsyncServer, sid: str, serial: int):
        self.app = app
        self.p = app["profile"]
        self.sio = sio
        self.sid = sid
        self.serial = serial
        self.handle = _Handle(sio, sid)
        self.session_id = "session_" + uuid.uuid4().hex[:12]
        self.seen: set[str] = set()
        self.running: dict[str, asyncio.Task] = {}
        self.cancelled: set[str] = set()
        self.requests: deque[float] = deque()
        self.cancels: deque[float] = deque()
        self.last = time.monotonic()
        self.tasks: set[asyncio.Task] = set()

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def send(self, body: dict) -> None:
        if not self.handle.closed:
            await self.sio.emit("message", body, to=self.sid, namespace=NAMESPACE)

    async def error(self, code: str, message: str, rid: Any = None) -> None:
        body: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if isinstance(rid, str):
            body["requestId"] = rid
        await self.send(body)

    async def ready(self) -> None:
        await asyncio.sleep(self.p["ready_ms"] / 1000)
        await self.send({"type": "ready", "sessionId": self.session_id})

    async def watch_idle(self) -> None:
        idle = self.p["idle_timeout_s"]
        while True:
            await asyncio.sleep(min(idle, 0.05))
            if self.running:
                self.last = time.monotonic()
            elif time.monotonic() - self.last >= idle:
                self.app["closed"].append((self.serial, "idle timeout"))
                await self.handle.close()
                return

    @staticmethod
    def _within(window: deque[float], limit: int) -> bool:
        now = time.monotonic()
        while window and now - window[0] >= 60.0:
            window.popleft()
        if len(window) >= limit:
            return False
        window.append(now)
        return True

    async def on_synthesize(self, data: Any) -> None:
        self.last = time.monotonic()
        p = self.p
        if type(data) is not dict:
            await self.error("synthesis_failed", "invalid request: expected an object")
            return
        rid = data.get("requestId")
        if type(rid) is not str or not rid:
            await self.error("synthesis_failed", "invalid request: requestId is required")
            return
        if rid in self.seen:
            await self.error("duplicate_request", f"Request ID already used: {rid}", rid)
            return
        self.seen.add(rid)
        if not self._within(self.requests, p["requests_per_minute"]):
            await self.error("rate_limit_exceeded", "Too many requests: "
                             f"{p['requests_per_minute']} synthesis requests per minute", rid)
            return
        text = data.get("text")
        if type(text) is not str or not text.strip():
            await self.error("synthesis_failed", "invalid request: text is required", rid)
            return
        if len(text) > p["max_text_chars"]:
            await self.error("text_too_long", f"Text > {p['max_text_chars']:,} chars", rid)
            return
        voice = data.get("voiceId")
        if voice not in VOICES:
            await self.error("synthesis_failed", f"Voice not found: {voice!r}", rid)
            return
        fmt = data.get("outputFormat", "PCM_22050_16")
        if fmt not in FORMATS:
            await self.error("synthesis_failed", f"Unsupported outputFormat {fmt!r}", rid)
            return
        speed = data.get("speed", 1.0)
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0.5 <= speed <= 2:
            await self.error("synthesis_failed", "speed must be between 0.5 and 2.0", rid)
            return
        self.running[rid] = self.spawn(self.generate(rid, text, voice, fmt, float(speed)))

    async def generate(self, rid: str, text: str, voice: str, fmt: str, speed: float) -> None:
        p = self.p
        try:
            await self.send({"type": "audio_start", "requestId": rid,
                             "timestamp": int(time.time() * 1000)})
            await asyncio.sleep(p["first_audio_ms"] / 1000)
            if p["fail_on"] and p["fail_on"] in text:
                await self.error("synthesis_failed", "synthesis failed", rid)
                return
            seconds = max(len(text) / p["chars_per_second"] / speed, 0.1)
            rate = 8000 if fmt == "ULAW_8000_8" else 22050
            pcm8k = voice_pcm(text, seconds, 8000) if rate == 8000 else b""
            pcm = voice_pcm(text, seconds, rate) if rate != 8000 else pcm8k
            audio, width = _encode(pcm8k, pcm, fmt, rate)
            entry = {"request_id": rid, "text": text, "voice": voice, "format": fmt,
                     "sample_rate": rate, "bytes": len(audio), "audio": audio,
                     "socket": self.serial}
            self.app["log"].append(entry)
            step = int(rate * p["chunk_ms"] / 1000) * width
            late = 0
            sent = 0
            for seq, (chunk, pause) in enumerate(audio_pieces(p, text, audio, step)):
                if rid in self.cancelled:
                    if late >= p["late_chunks"]:
                        break
                    late += 1
                if fmt.startswith("WAV") and seq == 0:
                    chunk = wav_bytes(chunk, rate)[:44] + chunk
                await self.send({"type": "audio", "requestId": rid, "sequence": seq,
                                 "audio": base64.b64encode(chunk).decode()})
                self.app["wire"].append((self.serial, rid))
                sent += len(chunk)
                await asyncio.sleep(pause)
            entry["sent"] = sent
            if rid not in self.cancelled:
                await self.send({"type": "audio_end", "requestId": rid,
                                 "timestamp": int(time.time() * 1000)})
        finally:
            self.running.pop(rid, None)

    async def on_cancel(self, data: Any) -> None:
        self.last = time.monotonic()
        rid = data.get("requestId") if type(data) is dict else None
        if not self._within(self.cancels, self.p["cancels_per_minute"]):
            await self.error("rate_limit_exceeded", "Too many cancel requests", rid)
            return
        if type(rid) is str and rid in self.running:
            self.cancelled.add(rid)
            self.app["cancels"].append(rid)

    def stop(self) -> None:
        self.handle.closed = True
        for task in list(self.tasks):
            task.cancel()


def make_app(**profile: Any) -> web.Application:
    unknown = set(profile) - set(DEFAULT_PROFILE)
    if unknown:
        raise TypeError(f"unknown fake uplift profile keys: {sorted(unknown)}")
    p = {**DEFAULT_PROFILE, **profile}
    app = web.Application()
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False,
                               ping_interval=p["ping_interval"], ping_timeout=p["ping_timeout"],
                               max_http_buffer_size=16 * 1024 * 1024)
    sio.attach(app, socketio_path="socket.io")
    # Plain string keys on purpose: tests read app["log"] etc. without importing keys.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app["profile"] = p
        app["sio"] = sio
        app["log"] = []
        app["wire"] = []
        app["received"] = []
        app["cancels"] = []
        app["closed"] = []
        app["connections"] = {}
    stats = add_stats(app)
    conns: dict[str, _Connection] = app["connections"]

    async def connect(sid, environ, auth):
        token = auth.get("token") if isinstance(auth, dict) else None
        if token != p["api_key"] and p["auth_error"] != "message":
            raise socketio.exceptions.ConnectionRefusedError("Invalid API key",
                                                             {"code": "auth_failed"})
        if p["handshake_ms"]:
            await asyncio.sleep(p["handshake_ms"] / 1000)
        stats.connections += 1
        conn = conns[sid] = _Connection(app, sio, sid, stats.connections)
        stats.sockets.add(conn.handle)
        if token != p["api_key"]:
            conn.spawn(_refuse(conn))
            return
        conn.spawn(conn.ready())
        if p["idle_timeout_s"]:
            conn.spawn(conn.watch_idle())

    async def _refuse(conn: _Connection) -> None:
        await asyncio.sleep(0)
        await conn.error("auth_failed", "Invalid API key")
        await conn.handle.close()

    async def disconnect(sid, reason=None):
        conn = conns.pop(sid, None)
        if conn is not None:
            stats.sockets.discard(conn.handle)
            conn.stop()

    async def synthesize(sid, data=None):
        app["received"].append(("synthesize", data))
        conn = conns.get(sid)
        if conn is not None:
            await conn.on_synthesize(data)

    async def cancel(sid, data=None):
        app["received"].append(("cancel", data))
        conn = conns.get(sid)
        if conn is not None:
            await conn.on_cancel(data)

    async def anything(event, sid, data=None):
        app["received"].append((event, data))

    sio.on("connect", connect, namespace=NAMESPACE)
    sio.on("disconnect", disconnect, namespace=NAMESPACE)
    sio.on("synthesize", synthesize, namespace=NAMESPACE)
    sio.on("cancel", cancel, namespace=NAMESPACE)
    sio.on("*", anything, namespace=NAMESPACE)
    return app
