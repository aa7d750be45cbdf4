"""A faithful fake of Smallest.ai's Waves TTS WebSocket (docs/protocols/tts-providers.md §2.7), for
tests.

``make_app(**profile)`` returns an aiohttp app serving ``/waves/v1/tts/live`` (and the
legacy ``/waves/v1/lightning-v2/get_speech/stream``). Behaviour, with the spec's tags:

* auth: ``Authorization: Bearer <api_key>``, else HTTP 401 before the upgrade [I];
* ``?timeout=N`` idle timer, reset by every client message [C changelog 2026-06-15];
  on expiry: ``{"status":"error","message":"Connection timed out after N seconds of
  inactivity"}`` then close [C];
* every message is a full TtsRequest; ``voice_id`` and ``text`` required [C]; bad JSON,
  unknown fields, out-of-range values, a bare ``{"flush":true}`` [T] are rejected with
  ``{"status":"error","error":{"message","code"}}`` [C schema];
* ``continue:true`` buffers text; ``flush:true`` or ``continue:false`` generates it [C];
* one active request at a time: a different ``request_id`` while one is processed is
  rejected (code ``concurrency_limit``) [C §2.5];
* audio: base64 raw PCM s16le (or ulaw/alaw at 8 kHz) in ``chunk`` frames, in bursts
  ``burst_factor`` times faster than real time, after ``first_audio_ms`` [C/I];
* ``complete`` ``complete_backoff_ms`` after the last chunk, debounced [I]; the socket is
  closed after it when ``close_after_complete`` [C docs vs T pipecat];
* no cancel: audio keeps coming whatever the client does [T].

``app["log"]`` records each synthesis: ``{"request_id", "text", "bytes"}``; ``app["received"]``
records every client message (parsed, or the raw text when it was not JSON); sockets are
counted in ``app["stats"]`` (:mod:`gateway.tts.providers.fakes`).

Error injection: with ``fail_on="..."``, a request whose text contains that string is
answered, when it is generated, by ``{"status":"error","request_id":<server id>,
"external_request_id":<request_id>,"error":{"message":"synthesis failed","code":
"synthesis_failed"}}`` instead of audio; the request is finished (no chunk, no
``complete``), the socket stays open and the next request is accepted. With
``cut_after_bytes=N`` the server closes a socket (1011) once it has sent N bytes of audio
on it, in the middle of whatever it was saying; with ``never_answer=True`` it takes
requests and never sends audio. ``tag_words=True`` voices each word as a tone that names
it (:mod:`gateway.tts.providers.fake_voice`). A request with ``word_timestamps: true`` gets a
``word_timestamp`` frame per word once its audio is out,
``{"status":"word_timestamp","data":{"id","word","start","end"}}``, seconds from the start
of that request's audio (§2.3 [C]).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
import uuid
from typing import Any

from aiohttp import WSMsgType, web
from telcodecs import alaw_encode, ulaw_encode

from gateway.tts.providers.fakes import COMMON_PROFILE, fake_app, send_json, serve_socket
from gateway.tts.providers.fake_voice import voice_pcm, word_spans, words_out

_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}\Z")
_FIELDS = {
    "voice_id", "text", "model", "language", "sample_rate", "speed", "output_format",
    "continue", "flush", "max_buffer_flush_ms", "complete_backoff_ms", "word_timestamps",
    "request_id", "session_id", "number_pronunciation_language", "math_notation",
    "pronunciation_dicts",
}
_MODELS = {"lightning_v3.1", "lightning_v3.1_pro"}
_RATES = {8000, 16000, 24000, 44100}
_FORMATS = {"pcm", "mp3", "wav", "ulaw", "alaw"}
PATH = "/waves/v1/tts/live"


DEFAULTS: dict[str, Any] = {
    **COMMON_PROFILE,
    "default_timeout_s": 60,
    "close_after_complete": False,
    "max_text_chars": 500,
    "echo_external_id": True,
    "fail_on": None,
    "cut_after_bytes": None,
    "never_answer": False,
    "tag_words": False,
}


def make_app(**profile: Any) -> web.Application:
    app = fake_app("smallest", DEFAULTS, profile, PATH, _handler, log=[], received=[])
    app.router.add_get("/waves/v1/lightning-v2/get_speech/stream", _handler)
    return app


class _BadRequest(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def _validate(msg: object, max_chars: int) -> dict:
    if type(msg) is not dict:
        raise _BadRequest("invalid_request", "request must be a JSON object")
    unknown = set(msg) - _FIELDS
    if unknown:
        raise _BadRequest("invalid_request", f"unsupported fields: {sorted(unknown)}")
    for key in ("voice_id", "text"):
        if type(msg.get(key)) is not str:
            raise _BadRequest("invalid_request", f"{key} is required")
    if len(msg["text"]) > max_chars:
        raise _BadRequest("text_too_long", f"text too long: {len(msg['text'])} > {max_chars}")
    if msg.get("model", "lightning_v3.1") not in _MODELS:
        raise _BadRequest("invalid_request", f"invalid model {msg.get('model')!r}")
    rate = msg.get("sample_rate", 44100)
    if rate not in _RATES:
        raise _BadRequest("invalid_request", f"invalid sample_rate {rate!r}")
    fmt = msg.get("output_format", "pcm")
    if fmt not in _FORMATS:
        raise _BadRequest("invalid_request", f"invalid output_format {fmt!r}")
    if fmt in ("ulaw", "alaw") and rate != 8000:
        raise _BadRequest("invalid_request", f"{fmt} requires sample_rate 8000")  # [I]
    if fmt == "mp3":
        raise _BadRequest("invalid_request", "mp3 is not supported by this fake")
    speed = msg.get("speed", 1.0)
    if type(speed) not in (int, float) or not 0.5 <= speed <= 2.0:
        raise _BadRequest("invalid_request", "invalid speed: 0.5-2.0")
    for key in ("continue", "flush", "word_timestamps"):
        if key in msg and type(msg[key]) is not bool:
            raise _BadRequest("invalid_request", f"invalid {key}: must be a boolean")
    for key, hi in (("complete_backoff_ms", 10000), ("max_buffer_flush_ms", 1000)):
        v = msg.get(key, 0)
        if type(v) is not int or not 0 <= v <= hi:
            raise _BadRequest("invalid_request", f"invalid {key}: 0-{hi}")
    for key in ("request_id", "session_id"):
        if key in msg and (type(msg[key]) is not str or not _ID_RE.match(msg[key])):
            raise _BadRequest("invalid_request", f"invalid {key}: [A-Za-z0-9_.-]{{1,128}}")
    return msg


async def _handler(request: web.Request) -> web.StreamResponse:
    p = request.app["profile"]
    if request.headers.get("Authorization") != f"Bearer {p['api_key']}":
        return web.json_response({"error": {"message": "Invalid API key", "code": "unauthorized"}},
                                 status=401)
    timeout_q = request.query.get("timeout")
    timeout_s = p["default_timeout_s"]
    if timeout_q is not None:
        try:
            timeout_s = int(timeout_q)
            if timeout_s < 1:
                raise ValueError
        except ValueError:
            return web.json_response({"error": {"message": "invalid timeout"}}, status=400)
        if "get_speech" in request.path and not 20 <= timeout_s <= 60:
            return web.json_response({"error": {"message": "timeout must be 20-60"}}, status=400)
    return await serve_socket(request, lambda ws: _Session(request.app, ws, timeout_s))


class _Session:
    def __init__(self, app: web.Application, ws: web.WebSocketResponse, timeout_s: float):
        self.app = app
        self.p = app["profile"]
        self.ws = ws
        self.timeout_s = timeout_s
        self.session_id = "ws_" + uuid.uuid4().hex[:12]
        self.lock = asyncio.Lock()
        self.buffers: dict[str, list[str]] = {}  # request_id -> buffered text
        self.active: str | None = None  # request id being processed (buffering/generating)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.complete_task: asyncio.Task | None = None
        self.last: tuple[str, str] | None = None  # (server id, external id) of the last chunk
        self.server_ids: dict[str, str] = {}
        self.audio_sent = 0  # bytes of audio sent on this socket (cut_after_bytes)
        self.words_sent = 0  # word_timestamp frames sent (their ``id``)

    async def send(self, obj: dict) -> None:
        await send_json(self.ws, self.lock, obj)

    async def error(self, code: str, message: str, external: str | None = None) -> None:
        frame: dict = {"session_id": self.session_id, "status": "error",
                       "error": {"message": message, "code": code}}
        if external is not None and self.p["echo_external_id"]:
            frame["external_request_id"] = external
        await self.send(frame)

    async def run(self) -> None:
        worker = asyncio.create_task(self.generate_loop())
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(self.ws.receive(), self.timeout_s)
                except TimeoutError:
                    await self.send({"status": "error", "message": (
                        f"Connection timed out after {self.timeout_s} seconds of inactivity")})
                    await self.ws.close()
                    return
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                                WSMsgType.ERROR):
                    return
                if msg.type != WSMsgType.TEXT:
                    await self.error("invalid_request", "binary frames are not supported")
                    continue
                await self.on_text(msg.data)
        finally:
            worker.cancel()

    def stop(self) -> None:
        if self.complete_task:
            self.complete_task.cancel()

    async def on_text(self, data: str) -> None:
        try:
            raw = json.loads(data)
        except ValueError:
            self.app["received"].append(data)
            await self.error("invalid_request", "invalid JSON")
            return
        self.app["received"].append(raw)
        try:
            msg = _validate(raw, self.p["max_text_chars"])
        except _BadRequest as exc:
            rid = raw.get("request_id") if type(raw) is dict else None
            await self.error(exc.code, str(exc), rid if type(rid) is str else None)
            return
        rid = msg.get("request_id") or "anon"
        if self.active is not None and self.active != rid:
            await self.error("concurrency_limit",
                             "Another request is already being processed; concurrent "
                             "requests are not allowed", rid)
            return
        cont = msg.get("continue", False)
        flush = msg.get("flush", False)
        if msg["text"] == "" and flush and not self.buffers.get(rid):
            await self.error("invalid_request", "nothing to flush: no buffered text", rid)  # [I]
            return
        self.active = rid
        if self.complete_task:  # complete is debounced across requests [I]
            self.complete_task.cancel()
            self.complete_task = None
        self.buffers.setdefault(rid, [])
        if msg["text"]:
            self.buffers[rid].append(msg["text"])
        if flush or not cont:
            text = " ".join(t.strip() for t in self.buffers.pop(rid) if t.strip())
            self.queue.put_nowait((rid, text, msg))

    async def generate_loop(self) -> None:
        p = self.p
        while True:
            rid, text, msg = await self.queue.get()
            server_id = self.server_ids.setdefault(rid, "task_" + uuid.uuid4().hex[:12])
            if p["fail_on"] and p["fail_on"] in text:
                await self.fail(rid, server_id)
                continue
            if p["never_answer"]:
                await asyncio.Future()  # until the socket goes
            rate = msg.get("sample_rate", 44100)
            fmt = msg.get("output_format", "pcm")
            seconds = max(len(text), 1) / p["chars_per_second"]
            pcm = voice_pcm(text, seconds, rate, tagged=p["tag_words"])
            spans = word_spans(text, seconds) if msg.get("word_timestamps") is True else []
            audio = (ulaw_encode(pcm) if fmt == "ulaw" else alaw_encode(pcm) if fmt == "alaw"
                     else pcm)
            self.app["log"].append({"request_id": rid, "text": text, "bytes": len(audio),
                                    "format": fmt, "sample_rate": rate})
            width = 1 if fmt in ("ulaw", "alaw") else 2
            step = int(rate * p["chunk_ms"] / 1000) * width
            await asyncio.sleep(p["first_audio_ms"] / 1000)
            for i in range(0, len(audio), step):
                if p["cut_after_bytes"] is not None and self.audio_sent >= p["cut_after_bytes"]:
                    await self.ws.close(code=1011, message=b"internal error")
                    return
                part = audio[i:i + step]
                self.audio_sent += len(part)
                if fmt == "wav" and i == 0:
                    part = _wav_header(rate, len(audio)) + part
                frame = {"session_id": self.session_id, "request_id": server_id,
                         "status": "chunk", "data": {"audio": base64.b64encode(part).decode()}}
                if p["echo_external_id"]:
                    frame["external_request_id"] = rid
                await self.send(frame)
                timed, spans = words_out(spans, (i + step) / width / rate)
                for word, start, end in timed:
                    frame = {"session_id": self.session_id, "request_id": server_id,
                             "status": "word_timestamp", "data": {
                                 "id": self.words_sent, "word": word,
                                 "start": round(start, 3), "end": round(end, 3)}}
                    if p["echo_external_id"]:
                        frame["external_request_id"] = rid
                    self.words_sent += 1
                    await self.send(frame)
                await asyncio.sleep(p["chunk_ms"] / 1000 / p["burst_factor"])
            if self.queue.empty():
                self.active = None if not self.buffers else self.active
                backoff = msg.get("complete_backoff_ms", 4000)
                self.complete_task = asyncio.create_task(self.complete_later(server_id, backoff))

    async def fail(self, rid: str, server_id: str) -> None:
        """Injected synthesis failure: an error frame instead of audio; the request is over
        (no chunk, no complete), so the next one is accepted."""
        frame: dict = {"session_id": self.session_id, "status": "error", "request_id": server_id,
                       "error": {"message": "synthesis failed", "code": "synthesis_failed"}}
        if self.p["echo_external_id"]:
            frame["external_request_id"] = rid
        await self.send(frame)
        self.server_ids.pop(rid, None)
        if self.queue.empty():
            self.active = None if not self.buffers else self.active

    async def complete_later(self, server_id: str, backoff_ms: int) -> None:
        await asyncio.sleep(backoff_ms / 1000)
        # Current terminator: no external id, no message/done [C §2.3].
        await self.send({"session_id": self.session_id, "request_id": server_id,
                         "status": "complete"})
        self.server_ids = {}
        if self.p["close_after_complete"]:
            await self.ws.close()


def _wav_header(rate: int, size: int) -> bytes:
    return (b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", size))
