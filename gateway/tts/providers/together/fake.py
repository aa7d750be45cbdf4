"""A faithful fake of Together AI's TTS WebSocket (docs/protocols/tts-providers.md §3, fake: §3.6).

``make_app(**profile)`` returns an aiohttp app serving ``/v1/audio/speech/websocket``.
Documented behaviour [C] plus quirks, and inferred defaults marked [I]:

* auth: ``Authorization: Bearer <key>`` or ``?api_key=``; a bad or missing key is a 401
  before the upgrade [I: the openapi lists 401 invalid/missing_api_key].
* a voice that does not belong to the model, or an unknown model: ``tts.failed`` is the
  **first** message instead of ``session.created`` [C PR #252], then the socket closes [I].
* ``session.created`` after ``handshake_ms``; ``input_text.received`` per append.
* text buffered per context and cut per ``segment`` (sentence/immediate/never) and
  ``max_partial_length``; ``commit`` flushes the rest; each segment is an item ``tts_N``:
  deltas of 24 kHz s16le (or ``sample_rate``) in bursts faster than real time after
  ``first_audio_ms``, then ``audio_output.done`` after ``done_delay_ms`` (late completion).
* ``alignment=word`` (query): after each delta, ``conversation.item.word_timestamps
  {item_id, words, start_seconds, end_seconds}`` for the words whose audio is out, in
  seconds from the start of the item's audio [C event, I what the times count from].
  ``tag_words=True`` voices each word as a tone that names it
  (:mod:`gateway.tts.providers.fake_voice`).
* ``context.cancel`` replies ``context.cancelled`` and still sends ``late_chunks`` deltas
  of the cancelled item afterwards (§3.5 [T/O]: audio after cancel).
* limits [I]: ``max_contexts`` distinct context ids per connection (lifetime),
  ``max_text_chars`` per append; malformed messages are answered with ``tts.failed``
  (``invalid_request_error``) and otherwise ignored; unknown context on clear/commit/cancel
  is an error.
* idle timeout: after ``idle_timeout_s`` without a client message and with nothing being
  synthesized, the server closes the socket (code 1000, "idle timeout") [I].

``app["log"]`` records what was synthesized: dicts with context_id, item_id, text, bytes,
and ``app["events"]`` the client messages received (parsed), for assertions; sockets are
counted in ``app["stats"]`` (:mod:`gateway.tts.providers.fakes`).

Error injection: with ``fail_on="..."``, an append that makes a context's buffered text
contain that string is answered (after its ``input_text.received``) by
``conversation.item.tts.failed`` with ``type: server_error, code: synthesis_failed`` for
that context, and the context's pending work (buffer, queued and in-flight items) is
dropped; the socket and the context id stay usable. A runaway provider
(:data:`~gateway.tts.providers.fakes.RUNAWAY_PROFILE`): an item whose text contains
``flood_on`` gets deltas without end at ``flood_factor`` (20) times real time, until cancelled; one
containing ``oversize_on`` a single delta of ``oversize_bytes`` (8 MiB) of audio.

The other reading of a commit: with ``item_per_sentence=True`` a commit's text is cut
into sentences (and at ``max_partial_length``) as with ``segment=sentence``, each its own
item with its own ``audio_output.done``, whatever ``segment`` says.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
from typing import Any

from aiohttp import WSMsgType, web
from telcodecs import wav_bytes

from gateway.tts.providers.fakes import (COMMON_PROFILE, RUNAWAY_PROFILE, IdleReceiver,
                                         audio_pieces, fake_app, track_socket)
from gateway.tts.providers.fake_voice import voice_pcm, word_spans, words_out

PATH = "/v1/audio/speech/websocket"

VOICES = {
    "hexgrad/Kokoro-82M": {"af_alloy", "af_heart", "am_adam"},
    "canopylabs/orpheus-3b-0.1-ft": {"tara", "leo"},
}

DEFAULT_PROFILE: dict[str, Any] = {
    **COMMON_PROFILE,
    "handshake_ms": 20.0,
    "burst_factor": 8.0,  # audio sent 8x faster than real time
    "done_delay_ms": 0.0,
    "late_chunks": 2,  # deltas still sent for a cancelled item after context.cancelled
    "idle_timeout_s": 60.0,
    "max_contexts": 100,
    "max_text_chars": 1000,
    "echo_context_id": True,  # [I] whether server events carry context_id
    "fail_on": None,  # text containing this fails its context (see the module doc)
    # [I] §3.5 leaves open how many items a commit makes: one (False), or one per sentence
    # whatever ``segment`` says (True; also cut at max_partial_length)
    "item_per_sentence": False,
    "tag_words": False,  # voice each word as a tone that names it (fake_voice)
    **RUNAWAY_PROFILE,  # flood_on, oversize_on (see the module doc)
}

_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+|\n+")


def _failed(message: str, code: str, *, context_id: str | None = None,
            param: str | None = None, echo: bool = True,
            error_type: str = "invalid_request_error") -> str:
    body: dict[str, Any] = {
        "type": "conversation.item.tts.failed",
        "error": {"message": message, "type": error_type, "param": param, "code": code},
    }
    if context_id is not None and echo:
        body["context_id"] = context_id
    return json.dumps(body)


class _Ctx:
    def __init__(self, cid: str) -> None:
        self.id = cid
        self.buffer = ""
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.cancelled = False
        self.task: asyncio.Task | None = None


class _Connection:
    def __init__(self, app: web.Application, ws: web.WebSocketResponse, params: dict[str, Any]):
        self.app = app
        self.p = app["profile"]
        self.ws = ws
        self.params = params
        self.contexts: dict[str, _Ctx] = {}
        self.seen: set[str] = set()
        self.active = 0  # segments being synthesized
        self.item_serial = 0
        self.send_lock = asyncio.Lock()

    async def send(self, text: str) -> None:
        if self.ws.closed:
            return
        async with self.send_lock:
            try:
                await self.ws.send_str(text)
            except ConnectionError:
                pass

    def _event(self, body: dict[str, Any], cid: str) -> str:
        if self.p["echo_context_id"]:
            body["context_id"] = cid
        return json.dumps(body)

    # ---- synthesis ----------------------------------------------------------------

    def _segments(self, ctx: _Ctx, *, commit: bool) -> list[str]:
        segment = self.params["segment"]
        if commit and self.p["item_per_sentence"]:
            segment = "sentence"
        out: list[str] = []
        if segment == "immediate":
            out, ctx.buffer = ([ctx.buffer] if ctx.buffer.strip() else []), ""
        elif segment == "sentence":
            while True:
                m = _SENTENCE_END.search(ctx.buffer)
                if not m:
                    break
                out.append(ctx.buffer[:m.end()])
                ctx.buffer = ctx.buffer[m.end():]
            limit = self.params["max_partial_length"]
            while len(ctx.buffer) > limit:
                out.append(ctx.buffer[:limit])
                ctx.buffer = ctx.buffer[limit:]
        if commit and ctx.buffer.strip():
            out.append(ctx.buffer)
            ctx.buffer = ""
        elif commit:
            ctx.buffer = ""
        return [s.strip() for s in out if s.strip()]

    def _enqueue(self, ctx: _Ctx, segments: list[str]) -> None:
        for text in segments:
            self.active += 1
            ctx.queue.put_nowait(text)
        if segments and ctx.task is None:
            ctx.task = asyncio.create_task(self._worker(ctx))

    def _drop(self, ctx: _Ctx) -> None:
        """Forget the context's pending work: buffer, queued segments, the item in flight."""
        ctx.buffer = ""
        while not ctx.queue.empty():
            ctx.queue.get_nowait()
            self.active -= 1
        if ctx.task is not None:
            ctx.task.cancel()  # its ``finally`` accounts for the item in flight
            ctx.task = None

    async def _worker(self, ctx: _Ctx) -> None:
        p, rate = self.p, self.params["sample_rate"]
        while True:
            text = await ctx.queue.get()
            try:
                if ctx.cancelled:
                    continue
                self.item_serial += 1
                item = f"tts_{self.item_serial}"
                await asyncio.sleep(p["first_audio_ms"] / 1000)
                seconds = max(len(text) / p["chars_per_second"], 0.1)
                pcm = voice_pcm(text, seconds, rate, tagged=p["tag_words"])
                # alignment=word: the words whose audio is out, after each delta, in
                # seconds from the start of the item's audio [I: the docs do not say]
                spans = word_spans(text, seconds) if self.params["alignment"] == "word" else []
                sent = 0
                self.app["log"].append({"context_id": ctx.id, "item_id": item, "text": text,
                                        "bytes": len(pcm), "sample_rate": rate})
                step = int(rate * p["chunk_ms"] / 1000) * 2
                wav = self.params["response_format"] == "wav"
                late = 0
                for i, (chunk, pause) in enumerate(audio_pieces(p, text, pcm, step)):
                    if ctx.cancelled:
                        if late >= p["late_chunks"]:
                            break
                        late += 1
                    if wav and i == 0:
                        chunk = wav_bytes(chunk, rate)  # header on the first chunk
                    await self.send(self._event({
                        "type": "conversation.item.audio_output.delta", "item_id": item,
                        "delta": base64.b64encode(chunk).decode()}, ctx.id))
                    sent += len(chunk) - (44 if wav and i == 0 else 0)
                    timed, spans = words_out(spans, sent / 2 / rate)
                    if timed:
                        await self.send(self._event({
                            "type": "conversation.item.word_timestamps", "item_id": item,
                            "words": [w for w, _, _ in timed],
                            "start_seconds": [round(a, 3) for _, a, _ in timed],
                            "end_seconds": [round(b, 3) for _, _, b in timed]}, ctx.id))
                    await asyncio.sleep(pause)
                if ctx.cancelled:
                    continue  # [I] no done for a cancelled item
                await asyncio.sleep(p["done_delay_ms"] / 1000)
                await self.send(self._event(
                    {"type": "conversation.item.audio_output.done", "item_id": item}, ctx.id))
            finally:
                self.active -= 1

    # ---- client messages -------------------------------------------------------------

    async def handle(self, raw: str) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            await self.send(_failed("Invalid JSON message", "invalid_json"))
            return
        if type(msg) is not dict or type(msg.get("type")) is not str:
            await self.send(_failed("Message must be an object with a string 'type'",
                                    "invalid_request"))
            return
        self.app["events"].append(msg)
        kind = msg["type"]
        cid = msg.get("context_id", "default")
        if type(cid) is not str or not cid:
            await self.send(_failed("context_id must be a non-empty string", "invalid_request",
                                    param="context_id"))
            return
        if kind == "input_text_buffer.append":
            text = msg.get("text")
            if type(text) is not str:
                await self.send(_failed("'text' must be a string", "invalid_request",
                                        context_id=cid, param="text"))
                return
            if len(text) > self.p["max_text_chars"]:
                await self.send(_failed(
                    f"Text too long: {len(text)} characters, maximum {self.p['max_text_chars']}",
                    "invalid_text", context_id=cid, param="text"))
                return
            ctx = self.contexts.get(cid)
            if ctx is None or ctx.cancelled:
                if cid not in self.seen and len(self.seen) >= self.p["max_contexts"]:
                    await self.send(_failed(
                        f"Maximum {self.p['max_contexts']} contexts per connection",
                        "too_many_contexts", context_id=cid))
                    return
                if ctx is not None and ctx.cancelled:
                    await self.send(_failed(f"Context '{cid}' was cancelled", "unknown_context",
                                            context_id=cid))
                    return
                self.seen.add(cid)
                ctx = self.contexts[cid] = _Ctx(cid)
            await self.send(self._event(
                {"type": "conversation.item.input_text.received", "text": text}, cid))
            ctx.buffer += text
            fail_on = self.p["fail_on"]
            if fail_on and fail_on in ctx.buffer:
                self._drop(ctx)
                await self.send(_failed("synthesis failed", "synthesis_failed", context_id=cid,
                                        error_type="server_error"))
                return
            self._enqueue(ctx, self._segments(ctx, commit=False))
        elif kind in ("input_text_buffer.commit", "input_text_buffer.clear", "context.cancel"):
            ctx = self.contexts.get(cid)
            if ctx is None or ctx.cancelled:
                await self.send(_failed(f"Unknown context '{cid}'", "unknown_context",
                                        context_id=cid, param="context_id"))
                return
            if kind == "input_text_buffer.commit":
                self._enqueue(ctx, self._segments(ctx, commit=True))
            elif kind == "input_text_buffer.clear":
                ctx.buffer = ""
            else:
                ctx.cancelled = True
                ctx.buffer = ""
                self.app["cancels"].append(cid)
                await self.send(json.dumps({"type": "context.cancelled", "context_id": cid}))
        elif kind == "tts_session.updated":
            session = msg.get("session")
            if type(session) is not dict:
                await self.send(_failed("'session' must be an object", "invalid_request",
                                        param="session"))
                return
            voice = session.get("voice")
            if voice is not None and voice not in VOICES[self.params["model"]]:
                await self.send(_failed(
                    f"Voice '{voice}' is not available for model '{self.params['model']}'",
                    "invalid_voice", param="voice"))
                return
            self.params.update({k: v for k, v in session.items()
                                if k in ("voice", "speed", "segment", "max_partial_length")})
            await self.send(json.dumps({"type": "session.updated", "session": self._session()}))
        else:
            await self.send(_failed(f"Unknown message type '{kind}'", "invalid_request",
                                    param="type"))

    def _session(self) -> dict[str, Any]:
        return {"id": "session-fake", "object": "realtime.tts.session",
                "modalities": ["text", "audio"], "model": self.params["model"],
                "voice": self.params["voice"]}

    async def run(self) -> None:
        await asyncio.sleep(self.p["handshake_ms"] / 1000)
        await self.send(json.dumps({"event_id": "evt-0", "type": "session.created",
                                    "session": self._session()}))
        # synthesizing is not idle; no idle_timeout_s: never idle
        frames = IdleReceiver(self.ws, self.p["idle_timeout_s"] or math.inf,
                              lambda: self.active)
        while True:
            msg = await frames.receive()
            if msg is None:
                self.app["closed"].append("idle timeout")
                await self.ws.close(code=1000, message=b"idle timeout")
                return
            if msg.type == WSMsgType.TEXT:
                await self.handle(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await self.send(_failed("Binary frames are not supported; send JSON text",
                                        "invalid_request"))
            else:
                return


async def _handler(request: web.Request) -> web.StreamResponse:
    app = request.app
    profile = app["profile"]
    q = request.query
    auth = request.headers.get("Authorization", "")
    key = auth[7:] if auth.startswith("Bearer ") else q.get("api_key")
    if not key:
        return web.json_response({"error": {"message": "Missing API key", "code":
                                            "missing_api_key"}}, status=401)
    if key != profile["api_key"]:
        return web.json_response({"error": {"message": "Invalid API key", "code":
                                            "invalid_api_key"}}, status=401)
    try:
        params = {
            "model": q.get("model", "hexgrad/Kokoro-82M"),
            "voice": q.get("voice", "af_alloy"),
            "response_format": q.get("response_format", "pcm"),
            "sample_rate": int(q.get("sample_rate", 24000)),
            "segment": q.get("segment", "sentence"),
            "max_partial_length": int(q.get("max_partial_length", 250)),
            "alignment": q.get("alignment", "none"),  # word | none (default) [C §3.1]
        }
        if params["alignment"] not in ("word", "none"):
            raise ValueError(params["alignment"])
    except ValueError:
        return web.json_response({"error": {"message": "Invalid query parameter",
                                            "code": "invalid_request"}}, status=400)
    ws = web.WebSocketResponse(autoping=True)
    await ws.prepare(request)
    with track_socket(app, ws):
        return await _session(app, ws, params)


async def _session(app: web.Application, ws: web.WebSocketResponse,
                   params: dict[str, Any]) -> web.WebSocketResponse:
    problem = None
    if params["model"] not in VOICES:
        problem = (f"Model '{params['model']}' is not available", "model_not_available")
    elif params["voice"] not in VOICES[params["model"]]:
        problem = (f"Voice '{params['voice']}' is not available for model "
                   f"'{params['model']}'", "invalid_voice")
    elif params["response_format"] not in ("pcm", "wav"):
        problem = (f"response_format '{params['response_format']}' is not supported by the "
                   "fake (pcm, wav)", "invalid_request")
    elif params["segment"] not in ("sentence", "immediate", "never"):
        problem = (f"segment '{params['segment']}' is invalid", "invalid_request")
    if problem:
        await ws.send_str(_failed(*problem))  # §3.3: tts.failed first, no session.created
        await ws.close()
        return ws
    conn = _Connection(app, ws, params)
    try:
        await conn.run()
    finally:
        for ctx in conn.contexts.values():
            if ctx.task is not None:
                ctx.task.cancel()
        if not ws.closed:
            await ws.close()
    return ws


def make_app(**profile: Any) -> web.Application:
    # log: what was synthesized; events: well-formed client messages received; cancels:
    # context ids cancelled; closed: server-initiated closes ("idle timeout"); plus stats.
    return fake_app("together", DEFAULT_PROFILE, profile, PATH, _handler, log=[], events=[],
                    cancels=[], closed=[])
