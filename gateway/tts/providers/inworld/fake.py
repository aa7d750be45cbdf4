"""A faithful fake of Inworld's TTS WebSocket (spec: docs/protocols/tts-providers.md §1, esp. §1.6).

``make_app(**profile)`` returns an aiohttp app serving
``/tts/v1/voice:streamBidirectional``. It checks ``Authorization: Basic <api_key>`` (401
before the upgrade), answers in order, accepts camelCase and snake_case fields, rejects
unknown operations/fields, and reproduces the quirks: close_context = flush + close
(audio keeps coming after a "cancel"), the optional early ``contextClosed`` ack (#5110),
a 5-context limit, 1000-char text limit, keepalive-without-context error, context idle
expiry ("Context not found"), and a session idle timeout that sends code 10
"Paused due to inactivity" and drops the socket. What was synthesized is recorded in
``app["log"]`` as dicts ``{"contextId", "text", "bytes", "encoding"}``; sockets are counted
in ``app["stats"]`` (:mod:`gateway.tts.providers.fakes`).

Error injection: with ``fail_on="..."``, a context whose buffered text contains that string
gets a status error (code 13, gRPC INTERNAL) instead of audio and is dropped server side
(nothing synthesized, no ``contextClosed``; a later operation on it is "Context not found").
The socket stays open.

Many calls at once (the benchmark, :mod:`gateway.bench.provider`): the
:data:`~gateway.tts.providers.fakes.BENCH_PROFILE` knobs pace each context's audio to
``max_ahead_s`` ahead of real time and send precomputed audio (same frames on the wire).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

from aiohttp import WSMsgType, web
from telcodecs import alaw_encode, ulaw_encode, wav_bytes

from gateway.tts.providers.fake_voice import voice_pcm, word_spans, words_out
from gateway.tts.providers.fakes import (BENCH_PROFILE, COMMON_PROFILE, Pacer, fake_app,
                                         looped_speech, run_after, send_json, serve_socket)

PATH = "/tts/v1/voice:streamBidirectional"
OPS = ("create", "send_text", "flush_context", "update_config", "close_context")
_TIMESTAMP_TYPES = ("TIMESTAMP_TYPE_UNSPECIFIED", "WORD", "CHARACTER")  # §1.2 [C]
ENCODINGS = ("LINEAR16", "MP3", "OGG_OPUS", "ALAW", "MULAW", "FLAC", "PCM", "WAV")

DEFAULTS: dict[str, Any] = {
    **COMMON_PROFILE,
    "idle_timeout_s": 600.0,  # §1.4 [C] 10 min
    "context_idle_s": None,  # §1.4 [O] ~60 s; None: contexts never expire
    "close_delay_ms": 0.0,  # late completion: contextClosed this long after the audio
    "early_close_ack": False,  # §1.4 #5110: contextClosed before the buffered audio
    "max_contexts": 5,
    "max_text": 1000,
    "fail_on": None,  # text containing this fails its context with status 13 (see above)
    "tag_words": False,  # voice each word as a tone that names it (fake_voice)
    **BENCH_PROFILE,  # many calls at once: audio paced to max_ahead_s, precomputed
}

# camelCase <-> snake_case (proto3 JSON accepts both, §1.2).
_CREATE_FIELDS = {
    "voiceId", "modelId", "audioConfig", "temperature", "timestampType",
    "timestampTransportStrategy", "autoMode", "maxBufferDelayMs", "bufferCharThreshold",
    "applyTextNormalization", "language", "deliveryMode",
}
_AUDIO_FIELDS = {"audioEncoding", "sampleRateHertz", "bitRate", "speakingRate"}


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _normalize(obj: dict, allowed: set[str], where: str) -> dict:
    out = {}
    for key, value in obj.items():
        name = _camel(key)
        if name not in allowed:
            raise _Invalid(3, f'Invalid JSON payload received. Unknown name "{key}" at {where}')
        out[name] = value
    return out


class _Invalid(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class _Ctx:
    def __init__(self, config: dict, pacer: Pacer):
        self.config = config
        self.pacer = pacer  # the context's audio is one stream
        self.buffer = ""
        self.tail: asyncio.Task | None = None
        self.last_used = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None


def make_app(**profile: Any) -> web.Application:
    return fake_app("inworld", DEFAULTS, profile, PATH, _handle, log=[])


async def _handle(request: web.Request) -> web.StreamResponse:
    app = request.app
    if request.headers.get("Authorization") != f"Basic {app['profile']['api_key']}":
        return web.json_response(
            {"error": {"code": 16, "message": "Unauthenticated: invalid credentials"}}, status=401)
    return await serve_socket(request, lambda ws: _Session(app, ws, request))


class _Session:
    def __init__(self, app: web.Application, ws: web.WebSocketResponse, request: web.Request):
        self.app = app
        self.p = app["profile"]
        self.ws = ws
        self.request = request
        self.contexts: dict[str, _Ctx] = {}
        self.lock = asyncio.Lock()
        self.tasks: set[asyncio.Task] = set()
        self.auto_id = 0

    async def send(self, obj: dict) -> None:
        await send_json(self.ws, self.lock, obj)

    async def result(self, context_id: str | None, **payload: Any) -> None:
        body: dict[str, Any] = {"contextId": context_id} if context_id else {}
        body.update(payload)
        body["status"] = {"code": 0, "message": "", "details": []}
        await self.send({"result": body})

    async def status_error(self, context_id: str | None, code: int, message: str) -> None:
        body: dict[str, Any] = {"contextId": context_id} if context_id else {}
        body["status"] = {"code": code, "message": message, "details": []}
        await self.send({"result": body})

    async def run(self) -> None:
        while True:
            try:
                msg = await self.ws.receive(timeout=self.p["idle_timeout_s"])
            except TimeoutError:
                # §1.2 [O]: code 10, then the socket closes without a close frame.
                await self.send({"error": {"code": 10, "message": "Paused due to inactivity",
                                           "details": [{"reason": "SESSION_PAUSED"}]}})
                transport = self.request.transport
                if transport is not None:
                    transport.close()
                return
            if msg.type == WSMsgType.TEXT:
                await self.on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await self.send({"error": {"code": 3,
                                           "message": "binary frames are not supported"}})
            else:
                return

    def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for ctx in self.contexts.values():
            if ctx.timer:
                ctx.timer.cancel()

    async def on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            await self.send({"error": {"code": 3, "message": "Invalid JSON payload received."}})
            return
        if type(message) is not dict:
            await self.send({"error": {"code": 3,
                                       "message": "Invalid JSON payload: expected an object"}})
            return
        context_id = message.pop("contextId", None)
        if context_id is None:
            context_id = message.pop("context_id", None)
        ops = [k for k in message if k in OPS]
        try:
            extra = [k for k in message if k not in OPS]
            if extra:
                raise _Invalid(3, f'Invalid JSON payload received. Unknown name "{extra[0]}"')
            if len(ops) != 1:
                raise _Invalid(3, f"exactly one of {', '.join(OPS)} is required, got {len(ops)}")
            if context_id is not None and type(context_id) is not str:
                raise _Invalid(3, "contextId must be a string")
            op = ops[0]
            body = message[op]
            if type(body) is not dict:
                raise _Invalid(3, f"{op} must be an object")
            await getattr(self, "op_" + op)(context_id, body)
        except _Invalid as exc:
            await self.status_error(context_id, exc.code, exc.message)

    def _lookup(self, context_id: str | None, payload: str) -> tuple[str, _Ctx]:
        self._expire()
        if context_id is None:
            if len(self.contexts) == 1:
                context_id = next(iter(self.contexts))
            elif not self.contexts:
                raise _Invalid(9, f"context_id is required when 0 contexts are open "
                                  f"(payload={payload})")
            else:
                raise _Invalid(3, f"context_id is required when {len(self.contexts)} contexts "
                                  f"are open (payload={payload})")
        ctx = self.contexts.get(context_id)
        if ctx is None:
            raise _Invalid(5, "Context not found")
        ctx.last_used = time.monotonic()
        return context_id, ctx

    def _expire(self) -> None:
        limit = self.p["context_idle_s"]
        if limit is None:
            return
        now = time.monotonic()
        for cid in [c for c, x in self.contexts.items()
                    if now - x.last_used > limit and (x.tail is None or x.tail.done())]:
            del self.contexts[cid]

    # ---- operations ---------------------------------------------------------------

    async def op_create(self, context_id: str | None, body: dict) -> None:
        self._expire()
        config = _normalize(body, _CREATE_FIELDS, "create")
        audio = config.get("audioConfig", {})
        if type(audio) is not dict:
            raise _Invalid(3, "audioConfig must be an object")
        audio = _normalize(audio, _AUDIO_FIELDS, "create.audio_config")
        for field in ("voiceId", "modelId"):
            if not isinstance(config.get(field), str) or not config[field]:
                raise _Invalid(3, f"{field} is required")
        encoding = audio.setdefault("audioEncoding", "MP3")
        if encoding not in ENCODINGS:
            raise _Invalid(3, f"Invalid value at 'audio_config.audio_encoding': {encoding!r}")
        rate = audio.setdefault("sampleRateHertz", 8000 if encoding in ("MULAW", "ALAW") else 48000)
        if type(rate) is not int or not 8000 <= rate <= 48000:
            raise _Invalid(3, "sample_rate_hertz must be between 8000 and 48000")
        if encoding in ("MULAW", "ALAW") and rate != 8000:
            raise _Invalid(3, f"{encoding} supports only 8000 Hz")
        if config.get("timestampType", "WORD") not in _TIMESTAMP_TYPES:
            raise _Invalid(3, f"Invalid value at 'timestamp_type': {config['timestampType']!r}")
        if len(self.contexts) >= self.p["max_contexts"]:
            raise _Invalid(8, "Max contexts limit reached")
        if context_id is None:
            self.auto_id += 1
            context_id = f"server-ctx-{self.auto_id}"
        if context_id in self.contexts:
            raise _Invalid(6, f"Context {context_id} already exists")
        config["audioConfig"] = audio
        config.setdefault("maxBufferDelayMs", 3000)
        config.setdefault("timestampTransportStrategy", "SYNC")
        self.contexts[context_id] = _Ctx(config, Pacer(self.p["burst_factor"],
                                                       self.p["max_ahead_s"]))
        await self.result(context_id, contextCreated=config)

    async def op_send_text(self, context_id: str | None, body: dict) -> None:
        flush = None
        for key in ("flush_context", "flushContext"):
            if key in body:
                flush = body[key]
        extra = set(body) - {"text", "flush_context", "flushContext"}
        if extra:
            raise _Invalid(3, f'Invalid JSON payload received. Unknown name "{sorted(extra)[0]}" '
                              "at send_text")
        text = body.get("text", "")
        if type(text) is not str:
            raise _Invalid(3, "send_text.text must be a string")
        if len(text) > self.p["max_text"]:
            raise _Invalid(3, f"text exceeds {self.p['max_text']} characters")
        context_id, ctx = self._lookup(context_id, "SEND_TEXT")
        ctx.buffer += text
        fail_on = self.p["fail_on"]
        if fail_on and fail_on in ctx.buffer:
            await self._fail(context_id, ctx)
            return
        if flush is not None or len(ctx.buffer) > 1000:  # auto-flush > 1000 chars (§1.2)
            self._flush(context_id, ctx)
            return
        threshold = ctx.config.get("bufferCharThreshold")
        if type(threshold) is int and len(ctx.buffer) >= threshold:
            self._flush(context_id, ctx)
        elif ctx.buffer and ctx.timer is None:
            delay = ctx.config.get("maxBufferDelayMs", 3000) / 1000
            ctx.timer = asyncio.get_running_loop().call_later(
                delay, self._flush, context_id, ctx)

    async def op_flush_context(self, context_id: str | None, body: dict) -> None:
        if body:
            raise _Invalid(3, "flush_context takes no fields")
        context_id, ctx = self._lookup(context_id, "FLUSH_CONTEXT")
        self._flush(context_id, ctx)

    async def op_update_config(self, context_id: str | None, body: dict) -> None:
        config = _normalize(body, _CREATE_FIELDS, "update_config")
        context_id, ctx = self._lookup(context_id, "UPDATE_CONFIG")
        if "modelId" in config and config["modelId"] != ctx.config["modelId"]:
            raise _Invalid(3, "modelId cannot be changed")
        self._flush(context_id, ctx)  # buffered text uses the old config (§1.2)
        ctx.config = {**ctx.config, **config}
        self._schedule(ctx, self._ack(context_id, contextUpdated=ctx.config))

    async def op_close_context(self, context_id: str | None, body: dict) -> None:
        if body:
            raise _Invalid(3, "close_context takes no fields")
        context_id, ctx = self._lookup(context_id, "CLOSE_CONTEXT")
        del self.contexts[context_id]  # no more messages accepted for it
        if self.p["early_close_ack"] and ctx.buffer:
            await self.result(context_id, contextClosed={})
            self._flush(context_id, ctx)
            return
        self._flush(context_id, ctx)
        self._schedule(ctx, self._closed(context_id))

    async def _fail(self, context_id: str, ctx: _Ctx) -> None:
        """Injected synthesis failure: drop the context and its pending work, answer with a
        per-context INTERNAL status (the socket stays open)."""
        del self.contexts[context_id]
        if ctx.timer is not None:
            ctx.timer.cancel()
            ctx.timer = None
        ctx.buffer = ""
        if ctx.tail is not None:
            ctx.tail.cancel()  # cancels the chain: every earlier step awaits its predecessor
        await self.status_error(context_id, 13, "Internal error: synthesis failed")

    # ---- generation ------------------------------------------------------------------

    async def _ack(self, context_id: str, **payload: Any) -> None:
        await self.result(context_id, **payload)

    async def _closed(self, context_id: str) -> None:
        if self.p["close_delay_ms"]:
            await asyncio.sleep(self.p["close_delay_ms"] / 1000)
        await self.result(context_id, contextClosed={})

    def _schedule(self, ctx: _Ctx, coro) -> None:
        """Run ``coro`` after everything already scheduled for the context (in order)."""
        ctx.tail = run_after(self.tasks, ctx.tail, coro)

    def _flush(self, context_id: str, ctx: _Ctx) -> None:
        if ctx.timer is not None:
            ctx.timer.cancel()
            ctx.timer = None
        text, ctx.buffer = ctx.buffer, ""
        if not text:
            return
        self._schedule(ctx, self._generate(context_id, dict(ctx.config), text, ctx.pacer))

    async def _generate(self, context_id: str, config: dict, text: str, pacer: Pacer) -> None:
        p = self.p
        audio_cfg = config["audioConfig"]
        encoding, rate = audio_cfg["audioEncoding"], audio_cfg["sampleRateHertz"]
        seconds = max(0.2, len(text.strip()) / p["chars_per_second"])
        if p["precomputed_audio"]:
            pcm = looped_speech(seconds, rate)
        else:
            pcm = voice_pcm(text.strip(), seconds, rate, tagged=p["tag_words"])
        # timestampType WORD: each chunk carries the words whose audio it completes, in
        # seconds from the start of this generation (they restart at 0 after each flush,
        # §1.2 [T]); SYNC and ASYNC alike ride with the audio here [C: SYNC is the default]
        spans = word_spans(text.strip(), seconds) if config.get("timestampType") == "WORD" else []
        chunk_samples = max(1, int(rate * p["chunk_ms"] / 1000))
        self.app["log"].append({"contextId": context_id, "text": text, "encoding": encoding,
                                "bytes": (len(pcm) // 2 if encoding in ("MULAW", "ALAW")
                                          else len(pcm))})
        await asyncio.sleep(p["first_audio_ms"] / 1000)
        step = chunk_samples * 2
        for i, start in enumerate(range(0, len(pcm), step)):
            piece = pcm[start:start + step]
            if encoding == "MULAW":
                data = ulaw_encode(piece)
            elif encoding == "ALAW":
                data = alaw_encode(piece)
            elif encoding == "LINEAR16":
                data = wav_bytes(piece, rate)  # a 44-byte header on every chunk (§1.3)
            elif encoding == "WAV":
                data = wav_bytes(piece, rate) if i == 0 else piece  # header once per flush
            elif encoding == "PCM":
                data = piece
            else:  # compressed formats: not real, but not PCM either
                data = b"\xff\xfb\x90\x00" + piece[:64]
            chunk: dict[str, Any] = {
                "audioContent": base64.b64encode(data).decode("ascii"),
                "usage": {"processedCharactersCount": len(text), "modelId": config["modelId"]},
            }
            timed, spans = words_out(spans, (start + len(piece)) / 2 / rate)
            if timed:
                chunk["timestampInfo"] = {"wordAlignment": {
                    "words": [w for w, _, _ in timed],
                    "wordStartTimeSeconds": [round(a, 3) for _, a, _ in timed],
                    "wordEndTimeSeconds": [round(b, 3) for _, _, b in timed]}}
            await self.result(context_id, audioChunk=chunk)
            await asyncio.sleep(pacer.pause(len(piece) / 2 / rate))
        await self.result(context_id, flushCompleted={})
