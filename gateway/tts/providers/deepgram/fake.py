"""A faithful fake of Deepgram Aura's streaming TTS WebSocket (docs/protocols/tts-providers.md §8).

``make_app(**profile)`` returns an aiohttp app serving ``/v1/speak`` (:data:`PATH`).
Documented behaviour [C] (§8; Deepgram's "Flush", "Clear" and "Close" pages; the official
SDK's message types), third-party observations [T], and inferred defaults [I]:

* auth: ``Authorization: Token <key>`` (or ``Bearer``); otherwise HTTP 401 before the
  upgrade [I]. Query: ``model`` (default ``aura-asteria-en``), ``encoding`` (``linear16``
  default, ``mulaw``, ``alaw``; anything else 400, §8 [T]), ``sample_rate`` (8000, 16000,
  24000 default, 44100, 48000; G.711 at 8000 only [I]), ``speed``, ``mip_opt_out``.
* on connect: a ``Metadata`` message (request_id, model_name, model_version, model_uuid).
* ``Speak`` appends to the text buffer; **nothing is spoken until a Flush** ("Flush
  forces the generation of audio from Deepgram's internal text buffer" [C]; [I] that it
  never speaks on its own). ``Flush`` generates the buffer: **binary** frames of raw
  audio, ``chunk_ms`` each, ``burst_factor`` times faster than real time after
  ``first_audio_ms``, then ``{"type":"Flushed","sequence_id":n}`` (n counts flushes from
  0 [I]). At most ``flush_limit`` (20) Flush per ``flush_window_s`` (60 s); beyond, a
  ``Warning`` and the flush is not processed [C].
* ``Clear``: the text buffer and queued flushes are dropped (no ``Flushed`` for them
  [I]); the generation in flight still sends ``late_chunks`` frames ("as soon as
  possible" [C]); then ``{"type":"Cleared","sequence_id":n}``.
* ``Close``: the server closes the connection at once, 1000 (Close page [C]).
* fatal errors are a close frame with a code and a reason (§8 [C]): malformed or unknown
  messages close with 1008 "DATA-0000: ..." [I]; a binary frame with 1003 [I].
* idle: no client message for ``idle_timeout_s`` while nothing is generated: close 1011
  "NET-0001: ..." [I by analogy with Deepgram's STT socket; not documented for TTS].

Error injection: with ``fail_on="..."``, a flush whose text contains it closes the socket
with 1011 and the reason "synthesis failed" (a fatal error, §8 [C]).

Many calls at once (the benchmark, :mod:`gateway.bench.provider`): the
:data:`~gateway.tts.providers.fakes.BENCH_PROFILE` knobs pace each socket's audio to
``max_ahead_s`` ahead of real time and send precomputed audio without keeping a copy in
``app["log"]`` (its ``audio`` is None then; same frames on the wire).

``app["log"]``: what was synthesized, dicts ``{"text","bytes","encoding","sample_rate",
"audio","sequence_id"}`` (``audio``: the exact bytes sent); ``app["connects"]``: the query
of each accepted socket; ``app["received"]``: client messages (parsed); ``app["clears"]``,
``app["warnings"]``, ``app["closed"]``; sockets counted in ``app["stats"]``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web
from telcodecs import alaw_encode, ulaw_encode

from gateway.tts.providers.fakes import (BENCH_PROFILE, COMMON_PROFILE, IdleReceiver, Pacer,
                                         fake_app, looped_speech, serve_socket)
from gateway.tts.fake import speechlike_pcm

PATH = "/v1/speak"
ENCODINGS = {"linear16", "mulaw", "alaw"}
RATES = {8000, 16000, 24000, 44100, 48000}

DEFAULTS: dict[str, Any] = {
    **COMMON_PROFILE,
    "flush_limit": 20,  # [C] 20 Flush per 60 s
    "flush_window_s": 60.0,
    "late_chunks": 2,  # frames of the generation in flight still sent after a Clear
    "idle_timeout_s": 60.0,  # [I]
    "max_text_chars": 2000,  # [I]
    "fail_on": None,
    **BENCH_PROFILE,  # many calls at once: audio paced to max_ahead_s, precomputed
}


def make_app(**profile: Any) -> web.Application:
    return fake_app("deepgram", DEFAULTS, profile, PATH, _handle, log=[], connects=[],
                    received=[], clears=[], warnings=[], closed=[])


async def _handle(request: web.Request) -> web.StreamResponse:
    app = request.app
    p = app["profile"]
    auth = request.headers.get("Authorization", "")
    scheme, _, key = auth.partition(" ")
    if scheme not in ("Token", "Bearer") or key != p["api_key"]:
        return web.json_response({"err_code": "INVALID_AUTH",
                                  "err_msg": "Invalid credentials."}, status=401)
    q = request.query
    params: dict[str, Any] = {"model": q.get("model", "aura-asteria-en"),
                              "encoding": q.get("encoding", "linear16")}
    problem = None
    try:
        params["sample_rate"] = int(q.get("sample_rate", 8000 if params["encoding"] in
                                          ("mulaw", "alaw") else 24000))
    except ValueError:
        params["sample_rate"] = -1
    if params["encoding"] not in ENCODINGS:
        problem = f"encoding {params['encoding']!r} is not supported for streaming"
    elif params["sample_rate"] not in RATES:
        problem = f"sample_rate {q.get('sample_rate')!r} is not supported"
    elif params["encoding"] != "linear16" and params["sample_rate"] != 8000:
        problem = f"{params['encoding']} supports sample_rate 8000 only"
    elif not params["model"].startswith("aura"):
        problem = f"model {params['model']!r} is not a TTS model"
    if problem:
        return web.json_response({"err_code": "Bad Request", "err_msg": problem}, status=400)
    for key in ("speed", "mip_opt_out"):
        if key in q:
            params[key] = q[key]

    def session(ws: web.WebSocketResponse) -> _Session:
        app["connects"].append(params)
        return _Session(app, ws, params)

    return await serve_socket(request, session)


class _Session:
    def __init__(self, app: web.Application, ws: web.WebSocketResponse, params: dict):
        self.app = app
        self.p = app["profile"]
        self.ws = ws
        self.params = params
        self.loop = asyncio.get_running_loop()
        self.buffer = ""
        self.jobs: asyncio.Queue = asyncio.Queue()
        self.pending = 0  # jobs queued or running
        self.epoch = 0  # bumped by every Clear: older generations stop
        self.flushes = 0
        self.clears = 0
        self.flush_times: deque[float] = deque()
        self.lock = asyncio.Lock()
        self.worker: asyncio.Task | None = None
        self.pacer = Pacer(self.p["burst_factor"], self.p["max_ahead_s"])  # one stream a socket

    async def send(self, data: str | bytes) -> None:
        async with self.lock:
            if self.ws.closed:
                return
            try:
                if isinstance(data, bytes):
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_str(data)
            except ConnectionError:
                pass

    async def close(self, code: int, reason: str) -> None:
        self.app["closed"].append(reason)
        await self.ws.close(code=code, message=reason.encode()[:120])

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()

    async def run(self) -> None:
        self.worker = asyncio.ensure_future(self._work())
        await self.send(json.dumps({
            "type": "Metadata", "request_id": str(uuid.uuid4()),
            "model_name": self.params["model"], "model_version": "2025-01-01.0",
            "model_uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, self.params["model"]))}))
        frames = IdleReceiver(self.ws, self.p["idle_timeout_s"], lambda: self.pending)
        while True:
            msg = await frames.receive()
            if msg is None:
                await self.close(1011, "NET-0001: Deepgram did not receive a text message "
                                       "within the timeout window")
                return
            if msg.type == WSMsgType.TEXT:
                if await self.on_text(msg.data):
                    return
            elif msg.type == WSMsgType.BINARY:
                await self.close(1003, "DATA-0000: binary messages are not accepted")
                return
            else:
                return

    async def warn(self, code: str, description: str) -> None:
        self.app["warnings"].append(code)
        await self.send(json.dumps({"type": "Warning", "description": description,
                                    "code": code}))

    async def on_text(self, data: str) -> bool:
        """Handle one client message; True when the socket is closed."""
        try:
            message = json.loads(data)
        except ValueError:
            await self.close(1008, "DATA-0000: the message is not valid JSON")
            return True
        self.app["received"].append(message)
        kind = message.get("type") if type(message) is dict else None
        if kind == "Speak":
            text = message.get("text")
            if type(text) is not str:
                await self.close(1008, "DATA-0000: Speak needs a text string")
                return True
            if len(text) > self.p["max_text_chars"]:
                await self.warn("TEXT_TOO_LONG", f"Speak text of {len(text)} characters "
                                f"exceeds {self.p['max_text_chars']}; it was ignored")
                return False
            self.buffer += text
        elif kind == "Flush":
            now = self.loop.time()
            while self.flush_times and now - self.flush_times[0] >= self.p["flush_window_s"]:
                self.flush_times.popleft()
            if len(self.flush_times) >= self.p["flush_limit"]:
                await self.warn("FLUSH_LIMIT", "Flush limit exceeded: cannot process any more "
                                "Flush messages until the 60-second window has passed")
                return False
            self.flush_times.append(now)
            text, self.buffer = self.buffer, ""
            self.pending += 1
            self.jobs.put_nowait(("flush", text.strip(), self.flushes, self.epoch))
            self.flushes += 1
        elif kind == "Clear":
            self.buffer = ""
            self.epoch += 1
            self.app["clears"].append(self.clears)
            self.pending += 1
            self.jobs.put_nowait(("clear", self.clears, self.epoch))
            self.clears += 1
        elif kind == "Close":
            await self.close(1000, "")
            return True
        else:
            await self.close(1008, f"DATA-0000: unknown message type {kind!r}")
            return True
        return False

    async def _work(self) -> None:
        while True:
            job = await self.jobs.get()
            try:
                if job[0] == "clear":
                    await self.send(json.dumps({"type": "Cleared", "sequence_id": job[1]}))
                    continue
                _, text, seq, epoch = job
                if epoch != self.epoch:
                    continue  # dropped by a Clear: no Flushed [I]
                if text and not await self._generate(text, seq, epoch):
                    continue
                if epoch == self.epoch:
                    await self.send(json.dumps({"type": "Flushed", "sequence_id": seq}))
            finally:
                self.pending -= 1

    async def _generate(self, text: str, seq: int, epoch: int) -> bool:
        p = self.p
        await asyncio.sleep(p["first_audio_ms"] / 1000)
        if epoch != self.epoch:
            return False
        if p["fail_on"] and p["fail_on"] in text:
            await self.close(1011, "synthesis failed")
            return False
        encoding, rate = self.params["encoding"], self.params["sample_rate"]
        seconds = max(0.2, len(text) / p["chars_per_second"])
        pcm = (looped_speech if p["precomputed_audio"] else speechlike_pcm)(seconds, rate)
        if encoding == "mulaw":
            audio, width = ulaw_encode(pcm), 1
        elif encoding == "alaw":
            audio, width = alaw_encode(pcm), 1
        else:
            audio, width = pcm, 2
        self.app["log"].append({"text": text, "bytes": len(audio), "encoding": encoding,
                                "sample_rate": rate, "sequence_id": seq,
                                # hundreds of calls at once: no copy of every byte
                                "audio": None if p["precomputed_audio"] else audio})
        step = max(1, int(rate * p["chunk_ms"] / 1000)) * width
        late = 0
        for start in range(0, len(audio), step):
            if epoch != self.epoch:
                if late >= p["late_chunks"]:
                    return False
                late += 1
            piece = audio[start:start + step]
            await self.send(piece)
            await asyncio.sleep(self.pacer.pause(len(piece) / width / rate))
        return epoch == self.epoch
