"""Cartesia TTS WebSocket (``/tts/websocket``), client side, as a sans-I/O protocol.

Spec: docs/protocols/tts-providers.md §7 and §9 (tags: [C] the provider's docs or
official SDK, [T] third-party code, [O] observed in issues, [I] inferred here). Also used:
the Cartesia docs pages "Contexts" (``/use-the-api/tts-websocket/contexts``), "Context
flushing and flush IDs", "Output format" and the WebSocket reference; the official Python
SDK ``cartesia-ai/cartesia-python`` ``types/websocket_response.py`` and
``types/websocket_client_event.py`` ("SDK"); pipecat ``services/cartesia/tts.py``.

The socket multiplexes *contexts*; every client message is one generation request (all
fields repeated, §7 [C]) or a cancel; every server message has a ``type``::

    gateway -> Cartesia  {"model_id","voice":{"mode":"id","id"},"output_format":{..},
                          "language","context_id","transcript":"Hello. ","continue":true,
                          "max_buffer_delay_ms":0}                           input
                         {.., "transcript":"","continue":true,"flush":true}  manual flush
                         {.., "transcript":"","continue":false}              end of input
                         {"context_id","cancel":true}                        cancel
    Cartesia -> gateway  {"type":"chunk","data":"<b64>","context_id","flush_id",..}
                         {"type":"flush_done","flush_id",..}  {"type":"timestamps",..}
                         {"type":"done","done":true,..}      context over
                         {"type":"error","done":true,"error":"..","status_code":400,..}

A turn is one context (Cartesia: "each turn in a conversation should correspond to a
context", WebSocket reference [C]). The output format travels in every request, so one
socket serves any format.

Quirks and decisions:

* **Contexts expire 1 s after their last audio** and "attempting to send another input on
  the same context ID after expiry is not supported" (Contexts page [C]). A streamed turn
  whose next sentence comes later than that (a slow LLM) would lose it. Each sentence is
  therefore followed by a manual flush (its ``flush_done`` marks the end of that audio
  [I]); when a turn's context has no flush outstanding and nothing arrived for it for
  :data:`EXPIRY_GUARD_S`, the next sentence goes to a fresh server context
  ``<turn>~<n>`` ("rollover"), whose audio is reported under the turn's id. Prosody
  carries over within a context only, which is what a pause costs anyway.
* **Cancel** "so that no more messages are generated for that context" (SDK [C]); audio
  already on its way still arrives (§9.3), so the turn is forgotten at once and its ids
  are remembered as cancelled: :meth:`is_cancelled` tells to drop late audio. No ``done``
  is expected after a cancel [I].
* An ``error`` frame has ``done: true`` (SDK, reference [C]): with a ``context_id`` it ends
  that turn only; 401/403, or an error naming no context, concern the socket.
* Audio is raw (the WebSocket supports ``container: raw`` only, Output format page [C]).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from telcodecs import strip_wav_header, whole_samples

from gateway.tts.base import MAX_WORD_CHARS, WordTiming

from gateway.tts.providers.common import (choose_g711_or_pcm, decode_base64, parse_typed_frame,
                                          remember)
from gateway.tts.providers.common import preview as _preview
from gateway.tts.providers.base import ProtocolDefaults
from gateway.tts.providers.events import (
    ProviderAudio,
    ProviderDone,
    ProviderError,
    ProviderWords,
    ProviderEvent,
    ProviderProtocolError,
)
from gateway.tts.text import pack_sentences

__all__ = [
    "API_VERSION",
    "DEFAULT_ENDPOINT",
    "DEFAULT_MODEL",
    "ENCODINGS",
    "EXPIRY_GUARD_S",
    "CartesiaProtocol",
    "choose_output_format",
    "connect_params",
    "split_text",
]

#: §7 [C]
DEFAULT_ENDPOINT = "wss://api.cartesia.ai/tts/websocket"
#: ``Cartesia-Version`` (§7 [C]; pipecat's default [T]).
API_VERSION = "2026-03-01"
DEFAULT_MODEL = "sonic-3.5"
#: Cartesia encoding -> ProviderAudio.encoding (Output format page [C]). ``pcm_f32le`` is
#: refused: a call would need a float decoder for nothing.
ENCODINGS = {"pcm_mulaw": "mulaw", "pcm_alaw": "alaw", "pcm_s16le": "pcm_s16le"}
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)  # [C]
#: Contexts expire 1 s after their last audio (Contexts page [C]); a turn whose context
#: was quiet this long moves to a fresh one before its next input (half of that, leaving
#: the other half for the way to the server) [I].
EXPIRY_GUARD_S = 0.5
#: [I] no per-input limit is documented; long text is cut at sentence boundaries.
MAX_TEXT_CHARS = 1000


def choose_output_format(carrier_encoding: str, carrier_rate: int) -> tuple[str, int]:
    """``(encoding, sample_rate)`` to ask for: ``pcm_mulaw``/``pcm_alaw`` at 8 kHz for
    G.711 carriers, passed through untouched (§9.1), else ``pcm_s16le`` at the carrier's
    rate if offered, else the next higher offered rate."""
    return choose_g711_or_pcm(carrier_encoding, carrier_rate, SAMPLE_RATES, pcm="pcm_s16le",
                              mulaw="pcm_mulaw", alaw="pcm_alaw")


def _check_format(encoding: str, sample_rate: int) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"Cartesia encoding {encoding!r}: use one of {', '.join(ENCODINGS)}")
    if sample_rate not in SAMPLE_RATES:
        raise ValueError(f"Cartesia sample_rate {sample_rate}: use one of {SAMPLE_RATES}")
    if encoding in ("pcm_mulaw", "pcm_alaw") and sample_rate != 8000:
        raise ValueError(f"{encoding} is telephony audio: use sample_rate 8000")


def connect_params(api_key: str, *, endpoint: str = DEFAULT_ENDPOINT,
                   version: str = API_VERSION) -> tuple[str, dict[str, str]]:
    """URL and headers (§7 [C]): ``X-API-Key`` and ``Cartesia-Version`` headers. The query
    form ``?api_key=`` exists too, but keys do not belong in URLs (they end up in logs)."""
    if not api_key:
        raise ValueError("Cartesia API key is empty: set the provider's api key (X-API-Key)")
    if not version:
        raise ValueError("Cartesia-Version is required (e.g. 2026-03-01)")
    return endpoint, {"X-API-Key": api_key, "Cartesia-Version": version}


def split_text(text: str, limit: int = MAX_TEXT_CHARS) -> list[str]:
    """Transcript pieces of at most ``limit`` characters, each ending with a space:
    "Transcripts are concatenated verbatim" (Contexts page [C])."""
    if limit < 2:
        raise ValueError("limit must be at least 2")
    return [piece + " " for piece in pack_sentences(text, limit - 1)]


@dataclass(slots=True)
class _Turn:
    base: dict[str, Any]  # the fields every input of the context repeats
    encoding: str  # ProviderAudio.encoding
    sample_rate: int
    id: str  # the turn's (the caller's) id
    server_id: str  # the current server context
    serial: int = 0  # rollovers so far
    state: str = "open"  # open -> ending (continue:false sent) -> forgotten at done
    sent: bool = False  # the current server context got an input
    flushes: int = 0  # manual flushes without flush_done on the current server context
    flushes_done: int = 0  # flush_done answers so far, over every server context of the turn
    quiet_since: float = 0.0  # last chunk/flush_done of the current server context
    server_ids: list[str] = field(default_factory=list)
    carry: bytes = b""
    audio_s: float = 0.0  # seconds of audio the turn received
    words_base_s: float = 0.0  # ... when its current server context began (timestamps)


class CartesiaProtocol(ProtocolDefaults):
    """One Cartesia TTS socket, seen from the gateway (the client).

    Turn life: :meth:`begin` (no message: a context is created by its first input), then
    :meth:`send` per sentence, then :meth:`finish`; the turn is over at its
    :class:`ProviderDone` (or at once, when :meth:`state` says ``None`` after
    :meth:`finish`). :meth:`cancel` for barge-in. ``clock`` is injectable for tests.
    """

    provider = "cartesia"

    def __init__(self, *, voice: str, model: str = DEFAULT_MODEL, language: str | None = "en",
                 max_buffer_delay_ms: int | None = 0, extra: dict[str, Any] | None = None,
                 max_text_chars: int = MAX_TEXT_CHARS, clock: Callable[[], float] = time.monotonic,
                 expiry_guard_s: float = EXPIRY_GUARD_S, word_timestamps: bool = False) -> None:
        if not voice:
            raise ValueError("Cartesia voice id is required")
        if not model:
            raise ValueError("Cartesia model_id is required (e.g. sonic-3.5)")
        if max_buffer_delay_ms is not None and not 0 <= max_buffer_delay_ms <= 5000:
            raise ValueError("max_buffer_delay_ms must be 0-5000")
        self.voice = voice
        self.model = model
        self.language = language
        # 0: generate each input at once; the gateway already sends whole sentences, and
        # Cartesia warns against client-side aggregation plus server buffering [T pipecat].
        self.max_buffer_delay_ms = max_buffer_delay_ms
        self.extra = dict(extra or {})  # e.g. generation_config, pronunciation_dict_id
        self.max_text_chars = max_text_chars
        self.clock = clock
        self.expiry_guard_s = expiry_guard_s
        # add_timestamps: word timestamps (``{"type": "timestamps"}``) for each context [C]
        self.word_timestamps = word_timestamps
        self.failed = False
        self._turns: dict[str, _Turn] = {}
        self._server: dict[str, str] = {}  # live server context id -> turn id
        self._cancelled: OrderedDict[str, None] = OrderedDict()  # server ids and turn ids
        # server id -> (turn id, encoding, rate) of contexts no longer live
        self._finished: OrderedDict[str, tuple[str, str, int]] = OrderedDict()

    # ---- state -----------------------------------------------------------------

    def state(self, context_id: str) -> str | None:
        """``open`` or ``ending``; None when unknown, done or cancelled."""
        turn = self._turns.get(context_id)
        return turn.state if turn is not None else None

    def segments_done(self, context_id: str) -> int | None:
        """Manual flushes of the turn answered by ``flush_done`` so far (one per
        :meth:`send`: the audio of that many sentences is out); None when the turn is
        unknown or over."""
        turn = self._turns.get(context_id)
        return turn.flushes_done if turn is not None else None

    def is_cancelled(self, context_id: str) -> bool:
        return context_id in self._cancelled

    def is_clean(self) -> bool:
        return not self._turns

    @property
    def live_turns(self) -> list[str]:
        return list(self._turns)

    def server_contexts(self, context_id: str) -> list[str]:
        """The server context ids a turn used (more than one after a rollover)."""
        turn = self._turns.get(context_id)
        return list(turn.server_ids) if turn is not None else []

    # ---- outbound --------------------------------------------------------------

    def begin(self, turn_id: str, voice: str | None = None, *, encoding: str | None = None,
              sample_rate: int | None = None) -> list[str]:
        """Register a turn (contexts need no open message, §7 [C]), in ``encoding`` and
        ``sample_rate`` (default ``pcm_mulaw`` 8 kHz): every input carries them."""
        context_id = turn_id
        encoding = encoding or "pcm_mulaw"
        sample_rate = sample_rate or 8000
        if self.failed:
            raise RuntimeError("the Cartesia socket had a fatal error: replace it")
        if context_id in self._turns or context_id in self._cancelled \
                or context_id in self._finished:
            raise RuntimeError(f"turn {context_id!r} was already used on this socket: start each "
                               "turn on a fresh id (§9)")
        _check_format(encoding, sample_rate)
        base: dict[str, Any] = {
            "model_id": self.model,
            "voice": {"mode": "id", "id": voice or self.voice},
            "output_format": {"container": "raw", "encoding": encoding, "sample_rate": sample_rate},
        }
        if self.language:
            base["language"] = self.language
        if self.max_buffer_delay_ms is not None:
            base["max_buffer_delay_ms"] = self.max_buffer_delay_ms
        if self.word_timestamps:
            base["add_timestamps"] = True
        base.update(self.extra)
        turn = _Turn(base, ENCODINGS[encoding], sample_rate, context_id, context_id)
        turn.server_ids.append(context_id)
        self._turns[context_id] = turn
        self._server[context_id] = context_id
        return []

    def _live(self, context_id: str, action: str) -> _Turn:
        turn = self._turns.get(context_id)
        if turn is None or turn.state != "open":
            raise RuntimeError(f"{action} for turn {context_id!r}, which is "
                               f"{turn.state if turn else 'not open'} on this socket")
        return turn

    def _input(self, turn: _Turn, transcript: str, *, cont: bool, flush: bool = False) -> str:
        body = dict(turn.base)
        body["context_id"] = turn.server_id
        body["transcript"] = transcript
        body["continue"] = cont
        if flush:
            body["flush"] = True
        return json.dumps(body)

    def _maybe_expired(self, turn: _Turn) -> bool:
        """The current server context may have expired: it got input, all of it was
        generated (no flush outstanding) and it has been quiet for the guard time."""
        return (turn.sent and turn.flushes == 0
                and self.clock() - turn.quiet_since >= self.expiry_guard_s)

    def _rollover(self, turn: _Turn, turn_id: str) -> None:
        old = turn.server_id
        self._server.pop(old, None)
        remember(self._finished, old, (turn_id, turn.encoding, turn.sample_rate))
        turn.serial += 1
        turn.server_id = f"{turn_id}~{turn.serial}"
        turn.server_ids.append(turn.server_id)
        turn.sent = False
        turn.flushes = 0
        turn.words_base_s = turn.audio_s  # the new context's timestamps start at 0 [I]
        self._server[turn.server_id] = turn_id

    def send(self, turn_id: str, text: str) -> list[str]:
        """Inputs for one sentence (``continue: true``) and a manual flush after it
        (``continue: true, flush: true``, empty transcript; flush IDs page [C]). Moves the
        turn to a fresh server context first when the current one may have expired."""
        turn = self._live(turn_id, "text")
        pieces = split_text(text, self.max_text_chars)
        if not pieces:
            return []
        if self._maybe_expired(turn):
            self._rollover(turn, turn_id)
        out = [self._input(turn, piece, cont=True) for piece in pieces]
        out.append(self._input(turn, "", cont=True, flush=True))
        turn.sent = True
        turn.flushes += 1
        turn.quiet_since = self.clock()
        return out

    def finish(self, context_id: str) -> list[str]:
        """End of input: ``transcript: "", continue: false`` (§7 [C]); the turn is over at
        ``done``. With nothing sent, or a context quiet long enough to have expired (all
        its audio came), the turn is over at once: nothing is sent."""
        turn = self._live(context_id, "finish")
        if not turn.sent or self._maybe_expired(turn):
            self._retire(context_id, cancelled=False)
            return []
        turn.state = "ending"
        return [self._input(turn, "", cont=False)]

    def cancel(self, context_id: str) -> list[str]:
        """Barge-in: ``{"context_id","cancel":true}`` for the live server context (§7 [C]).
        The turn is forgotten now; audio still on its way is flagged (:meth:`is_cancelled`).
        Empty list when there is nothing to stop upstream."""
        turn = self._turns.get(context_id)
        if turn is None:
            if context_id in self._cancelled or context_id in self._finished:
                remember(self._cancelled, context_id)
                return []
            raise RuntimeError(f"cancel of unknown turn {context_id!r}")
        out = []
        if turn.sent:
            out.append(json.dumps({"context_id": turn.server_id, "cancel": True}))
        self._retire(context_id, cancelled=True)
        return out

    def _retire(self, context_id: str, *, cancelled: bool) -> None:
        turn = self._turns.pop(context_id)
        for sid in turn.server_ids:
            self._server.pop(sid, None)
            remember(self._finished, sid, (context_id, turn.encoding, turn.sample_rate))
            if cancelled:
                remember(self._cancelled, sid)
        if cancelled:
            remember(self._cancelled, context_id)

    # ---- inbound ---------------------------------------------------------------

    def receive(self, text: str) -> list[ProviderEvent]:
        """Parse one server text frame (chunk, flush_done, done, timestamps, error)."""
        message = parse_typed_frame(text, "Cartesia")
        sid = message.get("context_id")
        if sid is not None and type(sid) is not str:
            raise ProviderProtocolError("bad_frame",
                                        f"context_id is not a string: {_preview(text)}")
        kind = message["type"]
        if kind == "chunk":
            return self._chunk(sid, message, text)
        if kind == "error":
            return [self._error(sid, message)]
        turn_id = self._server.get(sid) if sid is not None else None
        turn = self._turns.get(turn_id) if turn_id is not None else None
        if kind == "flush_done":
            if turn is not None and sid == turn.server_id and turn.flushes:
                turn.flushes -= 1
                turn.flushes_done += 1
                turn.quiet_since = self.clock()
            return []
        if kind == "done":
            if turn is not None and sid == turn.server_id and turn.state == "ending":
                self._retire(turn.id, cancelled=False)
                return [ProviderDone(turn.id)]
            return []  # an old (rolled over) or cancelled context: nothing to do
        if kind == "timestamps":
            if turn is None or sid != turn.server_id:
                return []  # of a cut or rolled-over context: its audio is gone too
            words = _word_timings(message.get("word_timestamps"), turn.words_base_s)
            return [ProviderWords(turn.id, words)] if words else []
        if kind == "phoneme_timestamps":
            return []
        return []  # [I] new event types are ignored, not fatal

    def _chunk(self, sid: str | None, message: dict, text: str) -> list[ProviderEvent]:
        data = message.get("data")
        if type(data) is not str:
            raise ProviderProtocolError("missing_field",
                                        f"Cartesia chunk without data: {_preview(text)}")
        if sid is None:
            if len(self._turns) != 1:
                raise ProviderProtocolError(
                    "missing_field", f"Cartesia chunk without context_id while {len(self._turns)} "
                    f"turns are live: {_preview(text)}")
            sid = next(iter(self._turns.values())).server_id
        audio = decode_base64(data, "Cartesia chunk data")
        if audio[:4] == b"RIFF":  # defensive (§9.1 [I]): the WebSocket sends raw only
            audio = strip_wav_header(audio)
        turn_id = self._server.get(sid)
        if turn_id is None:
            done = self._finished.get(sid)
            if done is None:
                raise ProviderProtocolError(
                    "unknown_context", f"Cartesia chunk for context {sid!r}, never used on this "
                    f"socket (live: {', '.join(self._turns) or 'none'})")
            turn_id = done[0]
            if turn_id not in self._turns:
                # Late audio of a turn that is over (cancelled: is_cancelled() says drop it).
                return [ProviderAudio(turn_id, audio, done[1], done[2])] if audio else []
        turn = self._turns[turn_id]  # live (also for its rolled-over contexts)
        turn.quiet_since = self.clock()
        if turn.encoding == "pcm_s16le":
            audio, turn.carry = whole_samples(turn.carry, audio)
        if not audio:
            return []
        turn.audio_s += len(audio) / (_WIDTH.get(turn.encoding, 1) * turn.sample_rate)
        return [ProviderAudio(turn_id, audio, turn.encoding, turn.sample_rate)]

    def _error(self, sid: str | None, message: dict) -> ProviderError:
        status = message.get("status_code")
        text = str(message.get("error") or message.get("message") or "error without a message")
        low = text.lower()
        if status in (401, 403) or "api key" in low or "unauthor" in low:
            kind = "auth"
        elif status == 429 or "concurrency" in low or "rate limit" in low:
            kind = "rate_limited"
        elif "expire" in low or "context has closed" in low or "context closed" in low:
            kind = "context_expired"
        elif type(status) is int and status >= 500:
            kind = "server_error"
        elif type(status) is int and status >= 400:
            kind = "bad_request"
        else:
            kind = "provider_error"
        message_text = f"Cartesia {status}: {text}"
        turn_id = self._server.get(sid) if sid is not None else None
        if turn_id is None and sid is not None and sid in self._finished:
            # about a context that is over (cancelled, rolled over, done): the turn, if it
            # still lives, failed on its old context [I]
            turn_id = self._finished[sid][0]
            if turn_id not in self._turns:
                return ProviderError(turn_id, kind, message_text)
        if kind == "auth":
            self.failed = True  # the key is refused: the socket is of no use
            return ProviderError(turn_id, kind, message_text, fatal=True)
        if turn_id is not None:
            # ``done: true`` on every error [C]: the context is over, no done follows.
            self._retire(turn_id, cancelled=False)
        # An error naming no context concerns the socket (the connection retires it).
        return ProviderError(turn_id, kind, message_text)


_WIDTH = {"pcm_s16le": 2}
#: Word timings read from one ``timestamps`` message at most (a longer list is cut).
MAX_WORDS_PER_MESSAGE = 1000


def _word_timings(value: Any, base_s: float) -> tuple[WordTiming, ...]:
    """``word_timestamps: {"words": [...], "start": [...], "end": [...]}`` (seconds from
    the start of the context's audio [C]) as timings from the start of the turn's audio;
    malformed entries are skipped, not fatal."""
    if type(value) is not dict:
        return ()
    words, starts, ends = value.get("words"), value.get("start"), value.get("end")
    if not (type(words) is list and type(starts) is list and type(ends) is list):
        return ()
    out = []
    for word, start, end in zip(words[:MAX_WORDS_PER_MESSAGE], starts, ends):
        if type(word) is str and _seconds(start) and _seconds(end):
            out.append(WordTiming(word[:MAX_WORD_CHARS], base_s + start, base_s + end))
    return tuple(out)


def _seconds(value: Any) -> bool:
    return type(value) in (int, float) and 0 <= value < 86400
