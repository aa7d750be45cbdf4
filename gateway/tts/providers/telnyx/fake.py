"""A faithful fake of Telnyx's TTS streaming WebSocket (docs/protocols/tts-providers.md §5, fake:
§5.5).

``make_app(**profile)`` returns an aiohttp app serving :data:`PATH`. Behaviour, with the
spec's tags:

* the upgrade: ``Authorization: Bearer <key>`` else HTTP 401; ``voice`` required
  (``Provider.Model.VoiceId``) else 400; ``Telnyx.Ultra.*`` is REST only: 403 [C]; an
  ``audio_format`` or ``sample_rate`` the engine does not know is a 400 [I]; the upgrade
  takes ``handshake_ms`` (the server's set-up before the 101);
* ``audio_format`` is honoured only where the engine offers it; otherwise, and always for
  ``Telnyx.KokoroTTS.*``, the audio is MP3 (each piece a whole file with an ID3 tag)
  [O vision-agents docs, GetStream PR #621]. MP3 is also the default [C];
* the handshake ``{"text": " "}`` (with optional ``voice_settings``) must be the first frame,
  else ``{"error": "Invalid message"}`` and the socket closes [O GetStream PR #621];
* text frames are buffered; ``flush: true`` synthesizes the buffer at once [C]. Plain text
  is held until a flush or the end, as integrators observed (no audio for 12 s) [O]; with
  ``sentence_flush=True`` a sentence end triggers synthesis, as the docs say [C];
* markdown in the text is stripped before synthesis [C seed 004];
* audio in the streamed providers' shape (Telnyx, ElevenLabs, Inworld, Rime...): chunks of
  ``chunk_ms`` with ``text: null`` (the first with ``timeToFirstAudioFrameMs``), then
  ``{"audio": null, "text": <sentence>}``; concatenated providers (aws, azure): one chunk
  with all the audio and the text [C]. ``first_audio_ms`` before the first chunk, then
  ``burst_factor`` times faster than real time ([O] about 2.4x);
* identical text, voice and settings are served from a cache: ``cached: true``, sooner [C];
  ``disable_cache=true`` turns it off;
* ``{"text": ""}``: the rest is synthesized, then ``{"audio": null, "text": "",
  "isFinal": true}``, then the server closes (1000) [O: one utterance per socket];
* ``{"force": true}`` drops the buffer and what is queued; ``late_chunks`` chunks already
  under way still come [I]; the socket then takes new text (the handshake is "replayed") [C];
* idle: no client frame and nothing synthesizing for ``inactivity_timeout_s`` (or the
  ``inactivity_timeout`` query parameter) closes the socket (1000) [C older docs];
* a bad frame (not JSON, not an object) is ``{"error": "Invalid message"}`` + close [I].

``app["sockets"]`` keeps, per accepted socket in order: ``n`` (its serial), ``accepted_at``,
``handshake_at``, ``first_text_at`` (``time.monotonic()``), the query, ``voice_settings``,
every text frame as received (``texts``) and how it ended; ``app["log"]`` each synthesis
(``socket``, ``text`` as synthesized, ``format``, ``sample_rate``, ``bytes``, ``cached``,
``at``), ``app["forces"]`` the sockets forced; ``app["stats"]`` counts sockets
(:mod:`gateway.tts.providers.fakes`).

Error injection: with ``fail_on="..."``, a segment containing it is answered by
``{"error": fail_message}`` instead of audio, and the socket closes ``error_close_ms`` later
(the docs: "the connection closes shortly").
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
import time
from typing import Any

from aiohttp import WSMsgType, web
from telcodecs import alaw_encode, ulaw_encode

from gateway.tts.providers.fakes import COMMON_PROFILE, IdleReceiver, fake_app, track_socket
from gateway.tts.fake import speechlike_pcm

PATH = "/v2/text-to-speech/speech"

#: engine -> (formats, rates, default rate, streamed)  [C provider pages]
ENGINES: dict[str, tuple[frozenset[str], tuple[int, ...], int, bool]] = {
    "telnyx": (frozenset({"mp3", "linear16"}), (8000, 16000, 22050, 24000, 44100, 48000, 96000),
               24000, True),
    "azure": (frozenset({"mp3", "wav", "linear16", "mulaw", "alaw"}), (8000, 16000, 24000, 48000),
              24000, False),
    "aws": (frozenset({"mp3", "linear16"}), (8000, 16000, 22050, 24000), 16000, False),
    "elevenlabs": (frozenset({"mp3", "linear16", "mulaw"}), (8000, 16000, 22050, 24000, 44100),
                   24000, True),
    "inworld": (frozenset({"mp3", "linear16"}), (8000, 16000, 22050, 24000, 32000, 44100, 48000),
                24000, True),
    "rime": (frozenset({"mp3", "linear16"}), (8000, 16000, 22050, 24000), 24000, True),
    "minimax": (frozenset({"mp3", "linear16"}), (8000, 16000, 24000, 32000), 24000, True),
    "resemble": (frozenset({"mp3", "wav"}), (22050, 44100), 22050, True),
}
FORMATS = ("mp3", "linear16", "wav", "mulaw", "alaw", "ogg_vorbis")

DEFAULT_PROFILE: dict[str, Any] = {
    **COMMON_PROFILE,  # handshake_ms: auth, voice lookup, a synthesis worker
    "burst_factor": 2.4,
    "inactivity_timeout_s": 20.0,
    "late_chunks": 1,
    "sentence_flush": False,
    "error_close_ms": 50.0,
    "fail_on": None,
    "fail_message": "Error in audio response",
}

_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+")
_MARKDOWN = re.compile(r"(\*\*|__|~~|`+|^#{1,6}\s+|^\s*[-*+]\s+|^>\s?)", re.M)
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def _strip_markdown(text: str) -> str:
    """The server's own stripping [C]: simpler than the client's, for the log."""
    text = _LINK.sub(r"\1", text)
    text = _MARKDOWN.sub("", text)
    text = re.sub(r"(?<!\w)[*_](?=\w)|(?<=\w)[*_](?!\w)", "", text)
    return " ".join(text.split())


def _mp3_file(seconds: float) -> bytes:
    """A stand-in for a whole MP3 file: an ID3v2 tag and frame-sync-looking bytes."""
    return b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" * int(seconds * 1000)


def _wav_header(rate: int, size: int) -> bytes:
    return (b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", size))


class _Closed(Exception):
    pass


class _Socket:
    def __init__(self, app: web.Application, ws: web.WebSocketResponse, record: dict,
                 engine: str, fmt: str, rate: int, idle_s: float, use_cache: bool):
        self.app = app
        self.p = app["profile"]
        self.ws = ws
        self.record = record
        self.engine = engine
        self.streamed = ENGINES[engine][3]
        self.fmt = fmt
        self.rate = rate
        self.idle_s = idle_s
        self.use_cache = use_cache
        self.handshaken = False
        self.buffer: list[str] = []
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.generation = 0  # bumped by force: work of an older generation stops
        self.busy = False
        self.lock = asyncio.Lock()
        self.worker: asyncio.Task | None = None

    async def send(self, body: dict) -> None:
        async with self.lock:
            if self.ws.closed:
                raise _Closed
            try:
                await self.ws.send_str(json.dumps(body))
            except ConnectionError:
                raise _Closed from None

    async def fail(self, message: str, *, delay_s: float = 0.0, how: str = "error") -> None:
        try:
            await self.send({"error": message})
        except _Closed:
            return
        await asyncio.sleep(delay_s)
        self.record["ended"] = how
        await self.ws.close(code=1000)

    # ---- synthesis --------------------------------------------------------------------

    def _audio(self, text: str) -> bytes:
        seconds = max(len(text) / self.p["chars_per_second"], 0.1)
        if self.fmt == "mp3":
            return _mp3_file(seconds)
        rate = 8000 if self.fmt in ("mulaw", "alaw") else self.rate
        pcm = speechlike_pcm(seconds, rate)
        if self.fmt == "mulaw":
            return ulaw_encode(pcm)
        if self.fmt == "alaw":
            return alaw_encode(pcm)
        if self.fmt == "wav":
            return _wav_header(rate, len(pcm)) + pcm
        return pcm

    async def work(self) -> None:
        """Synthesize queued segments in order; ``None`` is the end of the stream."""
        p = self.p
        while True:
            text = await self.queue.get()
            if text is None:
                await self.send({"audio": None, "text": "", "isFinal": True})
                self.record["ended"] = "final"
                await self.ws.close(code=1000)
                return
            generation = self.generation
            self.busy = True
            try:
                if p["fail_on"] and p["fail_on"] in text:
                    await self.fail(p["fail_message"], delay_s=p["error_close_ms"] / 1000)
                    return
                key = (self.record["query"].get("voice"), self.fmt, self.rate,
                       json.dumps(self.record["voice_settings"], sort_keys=True), text)
                cached = self.use_cache and key in self.app["cache"]
                self.app["cache"].add(key)
                wait = p["first_audio_ms"] / 1000 / (4 if cached else 1)
                started = time.monotonic()
                await asyncio.sleep(wait)
                audio = self._audio(text)
                entry = {"socket": self.record["n"], "text": text, "format": self.fmt,
                         "sample_rate": 8000 if self.fmt in ("mulaw", "alaw") else self.rate,
                         "bytes": len(audio), "cached": cached, "at": time.monotonic(),
                         "sent": 0}
                self.app["log"].append(entry)
                ttfa = round((time.monotonic() - started) * 1000)
                if not self.streamed:
                    await self.send({"audio": base64.b64encode(audio).decode(), "text": text,
                                     "isFinal": False, "cached": cached,
                                     "timeToFirstAudioFrameMs": ttfa})
                    entry["sent"] = len(audio)
                    continue
                width = 2 if self.fmt in ("linear16", "wav") else 1
                step = int(entry["sample_rate"] * p["chunk_ms"] / 1000) * width
                if self.fmt == "mp3":
                    step = 4 * int(p["chunk_ms"])
                late = 0
                for i, off in enumerate(range(0, len(audio), step)):
                    if generation != self.generation:
                        if late >= p["late_chunks"]:
                            break
                        late += 1
                    chunk = audio[off:off + step]
                    body: dict[str, Any] = {"audio": base64.b64encode(chunk).decode(),
                                            "text": None, "isFinal": False, "cached": cached}
                    if i == 0:
                        body["timeToFirstAudioFrameMs"] = ttfa
                    await self.send(body)
                    entry["sent"] += len(chunk)
                    await asyncio.sleep(p["chunk_ms"] / 1000 / p["burst_factor"])
                if generation == self.generation:
                    await self.send({"audio": None, "text": text, "isFinal": False})
            finally:
                self.busy = False

    # ---- client frames ------------------------------------------------------------------

    async def on_text(self, data: str) -> bool:
        """Handle one frame; False when the socket is done."""
        try:
            msg = json.loads(data)
        except ValueError:
            msg = None
        if type(msg) is not dict:
            await self.fail("Invalid message", how="invalid message")
            return False
        if not self.handshaken:
            if msg.get("text") != " ":
                await self.fail("Invalid message", how="no handshake")
                return False
            self.handshaken = True
            self.record["handshake_at"] = time.monotonic()
            settings = msg.get("voice_settings")
            self.record["voice_settings"] = settings if type(settings) is dict else None
            self.worker = asyncio.create_task(self.work())
            return True
        if msg.get("force") is True:
            self.app["forces"].append(self.record["n"])
            self.buffer.clear()
            while not self.queue.empty():
                self.queue.get_nowait()
            self.generation += 1
            return True
        text = msg.get("text")
        if type(text) is not str:
            await self.fail("Invalid message", how="invalid message")
            return False
        self.record["texts"].append(text)
        if self.record["first_text_at"] is None and text.strip():
            self.record["first_text_at"] = time.monotonic()
        if text == "":  # end of sequence: flush what remains, then the final frame
            self._flush()
            self.queue.put_nowait(None)
            return True
        self.buffer.append(text)
        if msg.get("flush") is True:
            self._flush()
        elif self.p["sentence_flush"]:
            joined = "".join(self.buffer)
            cut = None
            for m in _SENTENCE_END.finditer(joined):
                cut = m.end()
            if cut:
                self.buffer = [joined[cut:]] if joined[cut:] else []
                self._segment(joined[:cut])
        return True

    def _segment(self, text: str) -> None:
        clean = _strip_markdown(text)
        if clean:
            self.queue.put_nowait(clean)

    def _flush(self) -> None:
        joined, self.buffer = "".join(self.buffer), []
        self._segment(joined)

    async def run(self) -> None:
        frames = IdleReceiver(self.ws, self.idle_s,
                              lambda: self.busy or not self.queue.empty())
        try:
            while True:
                msg = await frames.receive()
                if msg is None:
                    self.record["ended"] = "inactivity"
                    await self.ws.close(code=1000, message=b"inactivity timeout")
                    return
                if msg.type == WSMsgType.TEXT:
                    if not await self.on_text(msg.data):
                        return
                elif msg.type == WSMsgType.BINARY:
                    await self.fail("Invalid message", how="binary frame")
                    return
                else:
                    self.record.setdefault("ended", "client closed")
                    return
        finally:
            if self.worker is not None:
                if not self.worker.done():
                    self.worker.cancel()
                elif not self.worker.cancelled():
                    self.worker.exception()  # retrieved: a _Closed is expected
            self.record["closed_at"] = time.monotonic()


async def _handler(request: web.Request) -> web.StreamResponse:
    app = request.app
    p = app["profile"]
    if request.headers.get("Authorization") != f"Bearer {p['api_key']}":
        return web.json_response({"errors": [{"code": "10009", "title": "Authentication failed"}]},
                                 status=401)
    q = dict(request.query)
    voice = q.get("voice")
    if not voice:
        return web.json_response({"errors": [{"title": "voice is required"}]}, status=400)
    parts = voice.split(".")
    engine = parts[0].lower()
    model = parts[1].lower() if len(parts) > 2 else ""
    if len(parts) < 2 or engine not in ENGINES:
        return web.json_response({"errors": [{"title": f"Invalid voice {voice!r}"}]}, status=400)
    if engine == "telnyx" and model == "ultra":
        return web.json_response({"errors": [{"title": "Ultra is available over REST only"}]},
                                 status=403)
    formats, rates, default_rate, _ = ENGINES[engine]
    fmt = q.get("audio_format", "mp3")
    if fmt not in FORMATS:
        return web.json_response({"errors": [{"title": f"Invalid audio_format {fmt!r}"}]},
                                 status=400)
    try:
        rate = int(q.get("sample_rate", default_rate))
        idle_s = float(q.get("inactivity_timeout", p["inactivity_timeout_s"]))
    except ValueError:
        return web.json_response({"errors": [{"title": "Invalid parameter"}]}, status=400)
    if rate not in rates:
        return web.json_response({"errors": [{"title": f"Invalid sample_rate {rate}"}]},
                                 status=400)
    if fmt not in formats or (engine == "telnyx" and model == "kokorotts"):
        fmt = "mp3"  # the engine ignores audio_format [O]
    if p["handshake_ms"]:
        await asyncio.sleep(p["handshake_ms"] / 1000)
    ws = web.WebSocketResponse(autoping=True)
    await ws.prepare(request)
    record = {"n": len(app["sockets"]) + 1, "accepted_at": time.monotonic(), "query": q,
              "handshake_at": None, "first_text_at": None, "voice_settings": None,
              "texts": [], "closed_at": None, "format": fmt, "sample_rate": rate}
    app["sockets"].append(record)
    sock = _Socket(app, ws, record, engine, fmt, rate, idle_s,
                   use_cache=q.get("disable_cache", "false") != "true")
    with track_socket(app, ws):
        await sock.run()
    if not ws.closed:
        await ws.close()
    return ws


def make_app(**profile: Any) -> web.Application:
    return fake_app("telnyx", DEFAULT_PROFILE, profile, PATH, _handler, log=[], sockets=[],
                    forces=[], cache=set())
