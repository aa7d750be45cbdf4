"""A faithful fake of ElevenLabs' multi-context stream-input WebSocket
(docs/protocols/tts-providers.md §6).

``make_app(**profile)`` returns an aiohttp app serving
``/v1/text-to-speech/{voice_id}/multi-stream-input`` (:data:`PATH`). Documented behaviour
[C] (§6 and the multi-context AsyncAPI), quirks [O]/[T], and inferred defaults [I]:

* auth: ``xi-api-key`` header (or ``?authorization=Bearer <key>``); a wrong or missing key
  is an HTTP 401 before the upgrade [I]. Query: ``model_id`` (``eleven_v3`` refused: no
  multi-context, §6 [C]), ``output_format`` (default ``mp3_44100_128`` [C]; raw formats
  ``pcm_*``/``ulaw_8000``/``alaw_8000`` are real audio, compressed ones filler bytes),
  ``inactivity_timeout`` (default 20, max 180 [C]), ``auto_mode``.
* contexts: created by their first message (``{"text":" ","context_id",voice_settings?}``
  [C]); ``voice_settings`` on a later message of a context closes the socket with 1008
  [T pipecat: "ElevenLabs would reject the later context-init with a 1008 policy
  violation"]; a 6th context gets ``max_active_conversations`` and 1008 (§6 [O]).
* text is buffered per context and generated on ``flush`` (on the text message or alone),
  and with ``auto_mode`` when the buffer ends a sentence [I]; audio comes as
  ``{"audio","isFinal":false,"normalizedAlignment","alignment","contextId"}`` after
  ``first_audio_ms``, in ``chunk_ms`` pieces ``burst_factor`` times faster than real
  time. ``contextId`` is camelCase in responses (§6 [C]). Each chunk's alignment lists
  the characters whose audio starts in it (``chars``, ``charStartTimesMs``,
  ``charDurationsMs``, ms from the start of that chunk [C WebSocket reference]); the fake
  normalizes nothing, so both alignments are the same.
* ``close_context``: what was flushed is still generated ("it will continue flushing" [C]),
  unflushed text is dropped [I]; then ``{"isFinal":true,"contextId"}`` after
  ``close_delay_ms``. So audio keeps arriving after a barge-in's ``close_context``.
* ``{"text":"","context_id"}`` keeps a context alive [C]; ``close_socket`` ends every
  context (flushed ones finish) and closes with 1000 [C].
* idle: no client message for ``inactivity_timeout`` s while nothing is being generated:
  ``{"message":"Have not received a new text input within the timeout of N seconds...",
  "error":"input_timeout_exceeded","code":1008}`` then close 1008 (§6 [O]).
* malformed messages: an error frame and close 1008 [I, like every known error].

Error injection: with ``fail_on="..."``, generating text that contains it sends
``{"message":"synthesis failed","error":"synthesis_failed","code":1011}`` and closes the
socket with 1011 "synthesis failed" (ElevenLabs error frames precede a close, §6 [O]).
With ``cut_after_bytes=N`` the server closes a socket (1011, no error frame) once it has
sent N bytes of audio on it, in the middle of whatever it was saying; with
``never_answer=True`` it takes text and never sends audio. ``tag_words=True`` voices each
word as a tone that names it (:mod:`gateway.tts.providers.fake_voice`).

``app["log"]``: what was synthesized, dicts ``{"context_id","text","bytes","output_format",
"audio"}`` (``audio``: the exact bytes sent); ``app["connects"]``: the query of every
accepted socket plus ``voice_id``; ``app["received"]``: client messages (parsed);
``app["closed"]``: server-initiated closes; sockets counted in ``app["stats"]``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from telcodecs import alaw_encode, ulaw_encode

from gateway.tts.providers.fakes import (COMMON_PROFILE, IdleReceiver, fake_app, run_after,
                                         send_json, serve_socket)
from gateway.tts.providers.fake_voice import char_spans, voice_pcm

PATH = "/v1/text-to-speech/{voice_id}/multi-stream-input"
MODELS = {"eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_multilingual_v2", "eleven_v3"}
RAW_FORMATS = {"pcm_8000": 8000, "pcm_16000": 16000, "pcm_22050": 22050, "pcm_24000": 24000,
               "pcm_44100": 44100, "ulaw_8000": 8000, "alaw_8000": 8000}
COMPRESSED = {"mp3_22050_32", "mp3_44100_32", "mp3_44100_64", "mp3_44100_96", "mp3_44100_128",
              "mp3_44100_192", "opus_48000_32", "opus_48000_64", "opus_48000_96",
              "opus_48000_128", "opus_48000_192"}
_FIELDS = {"text", "context_id", "voice_settings", "generation_config", "flush", "close_context",
           "close_socket", "xi_api_key", "authorization", "pronunciation_dictionary_locators",
           "try_trigger_generation"}
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+$")

DEFAULTS: dict[str, Any] = {
    **COMMON_PROFILE,
    "max_contexts": 5,  # §6 [C]
    "close_delay_ms": 0.0,  # late isFinal
    "fail_on": None,
    "cut_after_bytes": None,
    "never_answer": False,
    "tag_words": False,
}


class _Close(Exception):
    """Send an error frame, then close the socket with ``code``."""

    def __init__(self, code: int, error: str, message: str):
        super().__init__(message)
        self.code = code
        self.error = error
        self.message = message


class _Ctx:
    def __init__(self, cid: str, with_settings: bool):
        self.id = cid
        self.buffer = ""
        self.with_settings = with_settings
        self.tail: asyncio.Task | None = None  # last scheduled generation
        self.closing = False


def make_app(**profile: Any) -> web.Application:
    return fake_app("elevenlabs", DEFAULTS, profile, PATH, _handle, log=[], connects=[],
                    received=[], closed=[])


async def _handle(request: web.Request) -> web.StreamResponse:
    app = request.app
    p = app["profile"]
    q = request.query
    key = request.headers.get("xi-api-key")
    if key is None and q.get("authorization", "").startswith("Bearer "):
        key = q["authorization"][7:]
    if key != p["api_key"]:
        return web.json_response({"detail": {"status": "invalid_api_key",
                                             "message": "Invalid API key"}}, status=401)
    params = {"voice_id": request.match_info["voice_id"], **q}
    params.setdefault("model_id", "eleven_multilingual_v2")
    params.setdefault("output_format", "mp3_44100_128")
    problem = None
    try:
        timeout = int(q.get("inactivity_timeout", 20))
    except ValueError:
        timeout = -1
    if not 1 <= timeout <= 180:
        problem = "inactivity_timeout must be an integer between 1 and 180"
    elif params["model_id"] not in MODELS:
        problem = f"model {params['model_id']!r} does not exist"
    elif params["output_format"] not in RAW_FORMATS and params["output_format"] not in COMPRESSED:
        problem = f"invalid output_format {params['output_format']!r}"
    if problem:
        return web.json_response({"detail": {"status": "invalid_request", "message": problem}},
                                 status=400)

    def session(ws: web.WebSocketResponse) -> _Session:
        app["connects"].append(params)
        return _Session(app, ws, params, timeout)

    return await serve_socket(request, session)


class _Session:
    def __init__(self, app: web.Application, ws: web.WebSocketResponse, params: dict,
                 timeout: int):
        self.app = app
        self.p = app["profile"]
        self.ws = ws
        self.params = params
        self.timeout = timeout
        self.auto_mode = params.get("auto_mode", "false") == "true"
        self.contexts: dict[str, _Ctx] = {}
        self.tasks: set[asyncio.Task] = set()
        self.generating = 0
        self.lock = asyncio.Lock()
        self.audio_sent = 0  # bytes of audio sent on this socket (cut_after_bytes)

    async def send(self, obj: dict) -> None:
        await send_json(self.ws, self.lock, obj)

    async def close(self, code: int, error: str, message: str) -> None:
        await self.send({"message": message, "error": error, "code": code})
        self.app["closed"].append(error)
        await self.ws.close(code=code, message=message[:120].encode())

    def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()

    async def run(self) -> None:
        frames = IdleReceiver(self.ws, self.timeout, lambda: self.generating)
        while True:
            msg = await frames.receive()
            if msg is None:
                await self.close(
                    1008, "input_timeout_exceeded",
                    f"Have not received a new text input within the timeout of "
                    f"{self.timeout} seconds. Streaming input terminated. Please make sure "
                    "to send text within the timeout window.")
                return
            if msg.type == WSMsgType.TEXT:
                try:
                    done = await self.on_text(msg.data)
                except _Close as exc:
                    await self.close(exc.code, exc.error, exc.message)
                    return
                if done:
                    return
            elif msg.type == WSMsgType.BINARY:
                await self.close(1008, "invalid_message", "binary frames are not supported")
                return
            else:
                return

    async def on_text(self, data: str) -> bool:
        try:
            message = json.loads(data)
        except ValueError:
            raise _Close(1008, "invalid_message", "Invalid JSON message") from None
        self.app["received"].append(message)
        if type(message) is not dict:
            raise _Close(1008, "invalid_message", "message must be a JSON object")
        unknown = set(message) - _FIELDS
        if unknown:
            raise _Close(1008, "invalid_message", f"unknown fields {sorted(unknown)}")
        if message.get("close_socket") is True:
            for open_ctx in list(self.contexts.values()):
                open_ctx.buffer = ""
                self._close_context(open_ctx)
            await asyncio.gather(*[c.tail for c in self.contexts.values() if c.tail],
                                 return_exceptions=True)
            await self.ws.close(code=WSCloseCode.OK)
            return True
        cid = message.get("context_id", "default")
        if type(cid) is not str or not cid:
            raise _Close(1008, "invalid_message", "context_id must be a non-empty string")
        ctx = self.contexts.get(cid)
        if message.get("close_context") is True:
            if ctx is not None and not ctx.closing:
                ctx.buffer = ""  # [I] unflushed text is dropped; flushed text goes on
                self._close_context(ctx)
            return False
        text = message.get("text")
        if text is not None and type(text) is not str:
            raise _Close(1008, "invalid_message", "text must be a string")
        if ctx is None:
            if text is None and not message.get("flush"):
                raise _Close(1008, "invalid_message", f"context {cid!r} does not exist")
            if len(self.contexts) >= self.p["max_contexts"]:
                raise _Close(1008, "max_active_conversations", (
                    f"Maximum simultaneous contexts per WebSocket connection exceeded "
                    f"({self.p['max_contexts']}). Please close an existing context before "
                    "opening a new one."))
            ctx = self.contexts[cid] = _Ctx(cid, "voice_settings" in message)
        elif "voice_settings" in message:
            raise _Close(1008, "policy_violation",
                         "voice_settings can only be set in the first message of a context")
        if ctx.closing:
            return False  # [I] input for a closing context is ignored
        if text:
            ctx.buffer += text
        if message.get("flush") is True or (
                self.auto_mode and _SENTENCE_END.search(ctx.buffer)):
            self._flush(ctx)
        return False

    def _schedule(self, ctx: _Ctx, coro) -> None:
        ctx.tail = run_after(self.tasks, ctx.tail, coro)

    def _flush(self, ctx: _Ctx) -> None:
        text, ctx.buffer = ctx.buffer.strip(), ""
        if text:
            self.generating += 1
            self._schedule(ctx, self._generate(ctx, text))

    def _close_context(self, ctx: _Ctx) -> None:
        ctx.closing = True
        self._schedule(ctx, self._final(ctx))

    async def _final(self, ctx: _Ctx) -> None:
        if self.p["close_delay_ms"]:
            await asyncio.sleep(self.p["close_delay_ms"] / 1000)
        await self.send({"isFinal": True, "contextId": ctx.id})
        if self.contexts.get(ctx.id) is ctx:
            del self.contexts[ctx.id]

    async def _generate(self, ctx: _Ctx, text: str) -> None:
        p = self.p
        try:
            await asyncio.sleep(p["first_audio_ms"] / 1000)
            if p["fail_on"] and p["fail_on"] in text:
                await self.close(1011, "synthesis_failed", "synthesis failed")
                return
            if p["never_answer"]:
                await asyncio.Future()  # until the socket goes
            fmt = self.params["output_format"]
            rate = RAW_FORMATS.get(fmt, 44100)
            pcm = voice_pcm(text, max(0.2, len(text) / p["chars_per_second"]), rate,
                            tagged=p["tag_words"])
            if fmt == "ulaw_8000":
                audio, width = ulaw_encode(pcm), 1
            elif fmt == "alaw_8000":
                audio, width = alaw_encode(pcm), 1
            elif fmt in RAW_FORMATS:
                audio, width = pcm, 2
            else:  # compressed: not real, but not PCM either
                audio, width = b"\xff\xfb\x90\x00" * (len(pcm) // 64), 1
            self.app["log"].append({"context_id": ctx.id, "text": text, "bytes": len(audio),
                                    "output_format": fmt, "audio": audio})
            step = max(1, int(rate * p["chunk_ms"] / 1000)) * width
            chars = char_spans(text, len(audio) / width / rate)
            for start in range(0, len(audio), step):
                if p["cut_after_bytes"] is not None and self.audio_sent >= p["cut_after_bytes"]:
                    self.app["closed"].append("cut")
                    await self.ws.close(code=1011, message=b"internal error")
                    return
                piece = audio[start:start + step]
                self.audio_sent += len(piece)
                t0, t1 = start / width / rate, (start + len(piece)) / width / rate
                last = start + len(piece) >= len(audio)
                n = len(chars) if last else sum(1 for c in chars if c[1] < t1 - 1e-9)
                mine, chars = chars[:n], chars[n:]
                alignment = {"chars": [c for c, _, _ in mine],
                             "charStartTimesMs": [round((a - t0) * 1000) for _, a, _ in mine],
                             "charDurationsMs": [round((b - a) * 1000) for _, a, b in mine]}
                await self.send({"audio": base64.b64encode(piece).decode(),
                                 "isFinal": False, "normalizedAlignment": alignment,
                                 "alignment": alignment, "contextId": ctx.id})
                await asyncio.sleep(p["chunk_ms"] / 1000 / p["burst_factor"])
        finally:
            self.generating -= 1
