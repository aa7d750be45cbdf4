"""A faithful fake of Cartesia's TTS WebSocket (docs/protocols/tts-providers.md §7).

``make_app(**profile)`` returns an aiohttp app serving ``/tts/websocket`` (:data:`PATH`).
Documented behaviour [C] (§7, the Cartesia docs pages "Contexts", "Context flushing and
flush IDs", "Output format", the WebSocket reference and the official SDK's message
types), quirks [O], and inferred defaults [I]:

* auth: ``X-API-Key`` header or ``?api_key=``, and ``Cartesia-Version`` header or
  ``?cartesia_version=`` (both required); a bad key is HTTP 401, a missing version 400,
  before the upgrade [I].
* a generation request needs ``model_id``, ``transcript``, ``voice`` ``{"mode":"id","id"}``
  and ``output_format`` (``container`` ``raw`` only on the WebSocket; ``encoding``
  ``pcm_s16le|pcm_f32le|pcm_mulaw|pcm_alaw``; ``sample_rate`` 8000-48000, G.711 at 8000
  only [C/I]). Unknown fields, a bad value, or a field that changes within a context
  (anything but ``transcript``/``continue``/``duration``/``flush``, [C]) get an ``error``
  frame ``{"type":"error","done":true,"error","status_code":400,"context_id"}``, which
  ends that context (``done: true``) [C/I].
* inputs of a context are concatenated; with ``max_buffer_delay_ms`` 0 each input is
  generated at once, else after that delay or at a flush / ``continue:false`` [C SDK];
  audio: ``{"type":"chunk","data","done":false,"status_code":206,"step_time",
  "context_id","flush_id"}`` after ``first_audio_ms``, ``burst_factor`` times faster than
  real time. A manual flush (``continue:true,flush:true``, empty transcript) is answered by
  ``flush_done`` with the flush id once the audio before it is out; ``continue:false``
  ends the context with ``{"type":"done","done":true,...}`` [C].
* **context expiry**: a context whose audio is out and that waits for more input expires
  ``context_expiry_s`` (1 s) after its last audio [C]; a later input on it gets an error
  "context has expired" [I: "not supported"].
* ``{"context_id","cancel":true}``: queued inputs are dropped, the generation in flight
  still sends ``late_chunks`` chunks [§9.3 O/I], no ``done`` [I].
* more than ``max_contexts`` live contexts: error with status 429 [§7 C: over the
  concurrency limit].
* idle: no client message for ``idle_timeout_s`` (5 min) while nothing is generated:
  close 1000 "connection idle timeout" [O pipecat #1818].

Error injection: with ``fail_on="..."``, generating text that contains it sends an
``error`` frame (status 500, "synthesis failed") for that context, which is then over
(``done: true``); the socket stays open. With ``cut_after_bytes=N`` the server closes a
socket (1011) once it has sent N bytes of audio on it, in the middle of whatever it was
saying; with ``never_answer=True`` it takes text and never sends audio (nor ``done``).
A runaway provider (:data:`~gateway.tts.providers.fakes.RUNAWAY_PROFILE`): text containing
``flood_on`` gets audio without end at ``flood_factor`` (20) times real time, until cancelled; text
containing ``oversize_on`` one chunk of ``oversize_bytes`` (8 MiB) of audio.
``tag_words=True`` voices each word as a tone that names it
(:mod:`gateway.tts.providers.fake_voice`).

``app["log"]``: what was synthesized, dicts ``{"context_id","text","bytes","encoding",
"sample_rate","audio"}`` (``audio``: the exact bytes sent); ``app["received"]``: client
messages (parsed); ``app["cancels"]``, ``app["expired"]``, ``app["closed"]``; sockets are
counted in ``app["stats"]``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from aiohttp import WSMsgType, web
from telcodecs import alaw_encode, ulaw_encode

from gateway.tts.providers.fakes import (COMMON_PROFILE, RUNAWAY_PROFILE, IdleReceiver,
                                         audio_pieces, fake_app, send_json, serve_socket)
from gateway.tts.providers.fake_voice import voice_pcm, word_spans

PATH = "/tts/websocket"
MODELS = {"sonic-3.5", "sonic-3", "sonic-2", "sonic-turbo", "sonic"}
ENCODINGS = {"pcm_s16le", "pcm_f32le", "pcm_mulaw", "pcm_alaw"}
RATES = {8000, 16000, 22050, 24000, 44100, 48000}
_FIELDS = {"model_id", "transcript", "voice", "output_format", "language", "context_id",
           "continue", "flush", "duration", "add_timestamps", "add_phoneme_timestamps",
           "use_normalized_timestamps", "max_buffer_delay_ms", "speed", "generation_config",
           "pronunciation_dict_id", "pronunciation_dict_ids", "cancel"}
_PER_INPUT = {"transcript", "continue", "duration", "flush"}

DEFAULTS: dict[str, Any] = {
    **COMMON_PROFILE,
    "context_expiry_s": 1.0,  # [C] contexts expire 1 s after their last audio
    "late_chunks": 2,  # chunks of the generation in flight still sent after a cancel
    "idle_timeout_s": 300.0,  # [O] 5 min
    "max_contexts": 50,
    "done_delay_ms": 0.0,  # late completion
    "fail_on": None,
    "cut_after_bytes": None,
    "never_answer": False,
    "tag_words": False,
    **RUNAWAY_PROFILE,
}


def _error(message: str, *, context_id: str | None, status: int = 400) -> dict:
    body: dict[str, Any] = {"type": "error", "done": True, "error": message,
                            "status_code": status}
    if context_id is not None:
        body["context_id"] = context_id
    return body


class _Bad(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


class _Ctx:
    def __init__(self, cid: str, fields: dict):
        self.id = cid
        self.fields = fields  # the fields that must not change within the context
        self.buffer = ""
        self.flush_id = 1
        # ("gen", text, flush_id) | ("flush_done", flush_id) | ("done",) | ("stop",)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.worker: asyncio.Task | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.cancelled = False
        self.ended = False  # continue:false received
        self.pending = 0  # queue items not yet processed
        self.last_audio_at: float | None = None
        self.audio_s = 0.0  # seconds of audio sent: where the next text's timestamps start


def make_app(**profile: Any) -> web.Application:
    return fake_app("cartesia", DEFAULTS, profile, PATH, _handle, log=[], received=[],
                    cancels=[], expired=[], closed=[])


async def _handle(request: web.Request) -> web.StreamResponse:
    app = request.app
    p = app["profile"]
    key = request.headers.get("X-API-Key") or request.query.get("api_key")
    version = request.headers.get("Cartesia-Version") or request.query.get("cartesia_version")
    if key != p["api_key"]:
        return web.json_response({"error": "Invalid API key", "status_code": 401}, status=401)
    if not version:
        return web.json_response({"error": "Cartesia-Version header is required",
                                  "status_code": 400}, status=400)
    return await serve_socket(request, lambda ws: _Session(app, ws))


class _Session:
    def __init__(self, app: web.Application, ws: web.WebSocketResponse):
        self.app = app
        self.p = app["profile"]
        self.ws = ws
        self.contexts: dict[str, _Ctx] = {}
        self.expired: set[str] = set()
        self.workers: set[asyncio.Task] = set()
        self.lock = asyncio.Lock()
        self.loop = asyncio.get_running_loop()
        self.audio_sent = 0  # bytes of audio sent on this socket (cut_after_bytes)

    async def send(self, obj: dict) -> None:
        await send_json(self.ws, self.lock, obj)

    def stop(self) -> None:
        for ctx in self.contexts.values():
            self._drop(ctx)
        for task in list(self.workers):
            task.cancel()

    @property
    def busy(self) -> bool:
        return any(c.pending or c.timer for c in self.contexts.values())

    async def run(self) -> None:
        frames = IdleReceiver(self.ws, self.p["idle_timeout_s"], lambda: self.busy,
                              tick=self._expire)
        while True:
            msg = await frames.receive()
            if msg is None:
                self.app["closed"].append("connection idle timeout")
                await self.ws.close(code=1000, message=b"connection idle timeout")
                return
            if msg.type == WSMsgType.TEXT:
                await self.on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await self.send(_error("binary frames are not supported", context_id=None))
            else:
                return

    def _expire(self) -> None:
        now = self.loop.time()
        for cid, ctx in list(self.contexts.items()):
            if (not ctx.ended and not ctx.pending and ctx.timer is None and not ctx.buffer
                    and ctx.last_audio_at is not None
                    and now - ctx.last_audio_at >= self.p["context_expiry_s"]):
                del self.contexts[cid]
                self.expired.add(cid)
                self.app["expired"].append(cid)
                self._drop(ctx)

    async def on_text(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            await self.send(_error("Invalid JSON", context_id=None))
            return
        self.app["received"].append(message)
        cid = message.get("context_id") if type(message) is dict else None
        try:
            await self.handle(message)
        except _Bad as exc:
            cid = cid if type(cid) is str else None
            ctx = self.contexts.pop(cid, None) if cid is not None else None
            if ctx is not None:  # ``done: true``: an error ends its context [C/I]
                ctx.cancelled = True
                self._drop(ctx)
            await self.send(_error(exc.message, context_id=cid, status=exc.status))

    async def handle(self, message: Any) -> None:
        if type(message) is not dict:
            raise _Bad("message must be a JSON object")
        unknown = set(message) - _FIELDS
        if unknown:
            raise _Bad(f"unknown fields: {sorted(unknown)}")
        self._expire()
        cid = message.get("context_id")
        if message.get("cancel") is True:
            if type(cid) is not str:
                raise _Bad("cancel needs a context_id")
            ctx = self.contexts.pop(cid, None)
            self.app["cancels"].append(cid)
            if ctx is not None:
                ctx.cancelled = True
                self._drop(ctx, keep_worker=True)  # the generation in flight goes on briefly
                self._put(ctx, ("stop",))  # wakes an idle worker, which then ends
            return
        self._validate(message)
        if cid is None:
            cid = f"auto-{len(self.app['received'])}"
        if type(cid) is not str or not cid:
            raise _Bad("context_id must be a non-empty string")
        if cid in self.expired:
            raise _Bad(f"Context {cid} has expired: inputs on a context after its expiry "
                       "are not supported")
        fields = {k: v for k, v in message.items() if k not in _PER_INPUT and k != "context_id"}
        ctx = self.contexts.get(cid)
        if ctx is None:
            if len(self.contexts) >= self.p["max_contexts"]:
                raise _Bad("Too many concurrent contexts: over the concurrency limit", 429)
            ctx = self.contexts[cid] = _Ctx(cid, fields)
            ctx.worker = asyncio.ensure_future(self._work(ctx))
            self.workers.add(ctx.worker)
            ctx.worker.add_done_callback(self.workers.discard)
        elif ctx.ended:
            raise _Bad(f"Context {cid} has closed: no more inputs after continue=false")
        elif fields != ctx.fields:
            changed = sorted(k for k in set(fields) | set(ctx.fields)
                             if fields.get(k) != ctx.fields.get(k))
            raise _Bad(f"inputs on the same context must keep all fields except transcript, "
                       f"continue and duration the same (changed: {changed})")
        ctx.buffer += message["transcript"]
        cont = message.get("continue", False)
        flush = message.get("flush", False)
        delay = message.get("max_buffer_delay_ms", 0) or 0
        if flush or not cont or delay == 0:
            self._generate_buffer(ctx)
        elif ctx.timer is None:
            ctx.timer = self.loop.call_later(delay / 1000, self._generate_buffer, ctx)
        if flush:
            self._put(ctx, ("flush_done", ctx.flush_id))
            ctx.flush_id += 1
        if not cont:
            ctx.ended = True
            self._put(ctx, ("done",))

    def _validate(self, m: dict) -> None:
        if type(m.get("transcript")) is not str:
            raise _Bad("transcript is required and must be a string")
        if m.get("model_id") not in MODELS:
            raise _Bad(f"Invalid model: {m.get('model_id')!r} is not a valid model ID")
        voice = m.get("voice")
        if type(voice) is not dict or voice.get("mode") != "id" or not voice.get("id"):
            raise _Bad("voice must be {\"mode\": \"id\", \"id\": <voice id>}")
        fmt = m.get("output_format")
        if type(fmt) is not dict:
            raise _Bad("output_format is required")
        if fmt.get("container") != "raw":
            raise _Bad("the WebSocket supports container 'raw' only")
        if fmt.get("encoding") not in ENCODINGS:
            raise _Bad(f"invalid encoding {fmt.get('encoding')!r}")
        if fmt.get("sample_rate") not in RATES:
            raise _Bad(f"invalid sample_rate {fmt.get('sample_rate')!r}")
        if fmt["encoding"] in ("pcm_mulaw", "pcm_alaw") and fmt["sample_rate"] != 8000:
            raise _Bad(f"{fmt['encoding']} requires sample_rate 8000")
        for key in ("continue", "flush"):
            if key in m and type(m[key]) is not bool:
                raise _Bad(f"{key} must be a boolean")
        delay = m.get("max_buffer_delay_ms", 0)
        if type(delay) is not int or not 0 <= delay <= 5000:
            raise _Bad("max_buffer_delay_ms must be 0-5000")

    def _put(self, ctx: _Ctx, item: tuple) -> None:
        ctx.pending += 1
        ctx.queue.put_nowait(item)

    def _generate_buffer(self, ctx: _Ctx) -> None:
        if ctx.timer is not None:
            ctx.timer.cancel()
            ctx.timer = None
        text, ctx.buffer = ctx.buffer, ""
        if text.strip() and not ctx.cancelled:
            self._put(ctx, ("gen", text.strip(), ctx.flush_id))

    def _drop(self, ctx: _Ctx, keep_worker: bool = False) -> None:
        if ctx.timer is not None:
            ctx.timer.cancel()
            ctx.timer = None
        ctx.buffer = ""
        while not ctx.queue.empty():
            ctx.queue.get_nowait()
            ctx.pending -= 1
        if ctx.worker is not None and not keep_worker:
            ctx.worker.cancel()

    async def _work(self, ctx: _Ctx) -> None:
        p = self.p
        while True:
            item = await ctx.queue.get()
            try:
                if ctx.cancelled:
                    return
                if item[0] == "gen":
                    if not await self._generate(ctx, item[1], item[2]):
                        return
                elif item[0] == "flush_done":
                    await self.send({"type": "flush_done", "done": False, "flush_done": True,
                                     "flush_id": item[1], "status_code": 206,
                                     "context_id": ctx.id})
                else:  # done
                    if p["done_delay_ms"]:
                        await asyncio.sleep(p["done_delay_ms"] / 1000)
                    await self.send({"type": "done", "done": True, "status_code": 206,
                                     "context_id": ctx.id})
                    if self.contexts.get(ctx.id) is ctx:
                        del self.contexts[ctx.id]
                    return
            finally:
                ctx.pending -= 1

    async def _generate(self, ctx: _Ctx, text: str, flush_id: int) -> bool:
        """Send the audio of ``text``; False when the context is over (failed, cancelled)."""
        p = self.p
        fmt = ctx.fields["output_format"]
        encoding, rate = fmt["encoding"], fmt["sample_rate"]
        await asyncio.sleep(p["first_audio_ms"] / 1000)
        if p["fail_on"] and p["fail_on"] in text:
            self.contexts.pop(ctx.id, None)
            self._drop(ctx, keep_worker=True)
            ctx.cancelled = True
            await self.send(_error("synthesis failed", context_id=ctx.id, status=500))
            return False
        if p["never_answer"]:
            await asyncio.Future()  # until the socket goes
        seconds = max(0.2, len(text) / p["chars_per_second"])
        pcm = voice_pcm(text, seconds, rate, tagged=p["tag_words"])
        # add_timestamps: each word once its audio is out, seconds from the context's start
        spans = (word_spans(text, seconds) if ctx.fields.get("add_timestamps") is True
                 else [])
        base_s, ctx.audio_s = ctx.audio_s, ctx.audio_s + seconds
        sent_bytes = 0
        if encoding == "pcm_mulaw":
            audio, width = ulaw_encode(pcm), 1
        elif encoding == "pcm_alaw":
            audio, width = alaw_encode(pcm), 1
        elif encoding == "pcm_f32le":
            import numpy as np

            audio = (np.frombuffer(pcm, "<i2").astype("<f4") / 32768).tobytes()
            width = 4
        else:
            audio, width = pcm, 2
        self.app["log"].append({"context_id": ctx.id, "text": text, "bytes": len(audio),
                                "encoding": encoding, "sample_rate": rate, "audio": audio})
        step = max(1, int(rate * p["chunk_ms"] / 1000)) * width
        late = 0
        for piece, pause in audio_pieces(p, text, audio, step):
            if ctx.cancelled:
                if late >= p["late_chunks"]:
                    return False
                late += 1
            if p["cut_after_bytes"] is not None and self.audio_sent >= p["cut_after_bytes"]:
                self.app["closed"].append("cut")
                await self.ws.close(code=1011, message=b"internal error")
                return False
            self.audio_sent += len(piece)
            await self.send({"type": "chunk", "data": base64.b64encode(piece).decode(),
                             "done": False, "status_code": 206, "step_time": 12.5,
                             "context_id": ctx.id, "flush_id": flush_id})
            sent_bytes += len(piece)
            out_s = sent_bytes / width / rate
            timed = [s for s in spans if s[2] <= out_s + 1e-9]
            if timed:
                spans = spans[len(timed):]
                await self.send({"type": "timestamps", "context_id": ctx.id,
                                 "status_code": 206, "done": False, "word_timestamps": {
                                     "words": [w for w, _, _ in timed],
                                     "start": [round(base_s + a, 3) for _, a, _ in timed],
                                     "end": [round(base_s + b, 3) for _, _, b in timed]}})
            ctx.last_audio_at = self.loop.time()
            await asyncio.sleep(pause)
        return not ctx.cancelled
