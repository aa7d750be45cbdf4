"""Smallest.ai Waves (Lightning TTS) streaming WebSocket, client side, as a sans-I/O protocol.

Spec: docs/protocols/tts-providers.md §2 (seed 001) and §9. Tags in comments:
[C] confirmed by the provider's docs/SDK, [T] third-party code (pipecat), [I] inferred here.

The wire model (§2.2, §2.3)::

    gateway -> Smallest   one JSON "TtsRequest" per message; a synthesis is one request id:
                          {"voice_id","text","model",...,"continue":true}   text, more to come
                          {"voice_id","text":"","model",...,"flush":true}   end of the text
    Smallest -> gateway   {"status":"chunk","data":{"audio":"<b64>"}, ids...}
                          {"status":"word_timestamp","data":{"word","start","end"}, ids...}
                          {"status":"complete", ids...}   complete_backoff_ms after the last chunk
                          {"status":"error", "error":{"message","code"}} or {"message": ...}

Quirks the caller must know:

* There is **no cancel message** (§2.6 [T]). :meth:`SmallestProtocol.cancel` only marks the
  request cancelled; its audio keeps arriving and is still returned by :meth:`receive`, so
  check :meth:`SmallestProtocol.is_cancelled` and drop it. After a cancel the connection
  should be replaced (:attr:`SmallestProtocol.needs_replacement`), as pipecat does.
* **One active request per account** (§2.5 [C]): a second request while one is being
  processed is rejected, so this protocol allows one unfinished context per socket.
* ``complete`` is late: ``complete_backoff_ms`` (server default 4000) after the last chunk
  (§2.2 [C]); it marks generation end. We ask for a small backoff.
* Word timings (``word_timestamps: true`` in the request [C §2.2]): a ``word_timestamp``
  frame per word, the word verbatim, ``start``/``end`` in seconds from the start of *that
  request's* audio (§2.3 [C]; pipecat resets its clock per ``request_id`` [T]). A request
  is a turn here, so they are turn times as they come. English/Hindi base voices only
  [C]: others simply send none.
* The idle timer is the ``timeout`` query parameter (§2 [C]); it resets on every client
  message. There is no safe keepalive (pipecat's ``{"text":" "}`` request costs a request
  slot [T/I]), so pick ``timeout_s`` longer than the pool's idle time, or let the pool
  replace sockets that reach it.

The module does no I/O: the caller opens the socket with :func:`connect_params`, writes
the strings the builders return and feeds every text frame to :meth:`receive`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from telcodecs import strip_wav_header, whole_samples

from gateway.tts.base import MAX_WORD_CHARS, WordTiming
from gateway.tts.providers.common import decode_base64, is_seconds, parse_object, remember
from gateway.tts.providers.common import preview as _preview
from gateway.tts.providers.base import ProtocolDefaults
from gateway.tts.providers.events import (
    ProviderAudio,
    ProviderDone,
    ProviderError,
    ProviderEvent,
    ProviderProtocolError,
    ProviderReady,
    ProviderWords,
)
from gateway.tts.text import pack_sentences

__all__ = [
    "DEFAULT_ENDPOINT",
    "MAX_TEXT_CHARS",
    "SmallestProtocol",
    "choose_format",
    "connect_params",
    "split_text",
]

#: Current endpoint (2026-07+) [C §2.1]. Older per-model endpoints are "legacy" below.
DEFAULT_ENDPOINT = "wss://api.smallest.ai/waves/v1/tts/live"
MODELS = ("lightning_v3.1", "lightning_v3.1_pro")  # [C §2.2]
SAMPLE_RATES = (8000, 16000, 24000, 44100)  # [C §2.2]
#: Longest text we put in one message. No hard limit is documented; the legacy page says
#: the server splits text into chunks of about 240 characters in the background [C §2].
#: 500 keeps each message a few server chunks long [I].
MAX_TEXT_CHARS = 500
#: ``complete_backoff_ms`` we ask for: the default 4000 ms delays "done" by 4 s (§9.2).
DEFAULT_COMPLETE_BACKOFF_MS = 200
_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}\Z")  # request_id / session_id [C §2.2]
# output_format -> (ProviderAudio.encoding); ulaw/alaw on WS are [I] (§2.4, §10).
_ENCODINGS = {"pcm": "pcm_s16le", "ulaw": "mulaw", "alaw": "alaw"}
_LEGACY_TIMEOUT = (20, 60)  # legacy page: "Valid values range from 20 (default) to 60" [C]

# Bounded ProviderError.kind labels.
KINDS = ("idle_timeout", "auth", "concurrency", "text_too_long", "invalid_request",
         "rate_limited", "server_error", "connection_closed")


def connect_params(
    endpoint: str = DEFAULT_ENDPOINT,
    api_key: str = "",
    *,
    model: str | None = None,
    voice: str | None = None,
    encoding: str | None = None,
    sample_rate: int | None = None,
    timeout_s: int = 60,
) -> tuple[str, dict[str, str]]:
    """URL and headers for the WebSocket upgrade.

    Auth is ``Authorization: Bearer <key>`` [C §2.1]; never log the returned headers.
    ``model``, ``voice`` and the audio format travel in every request, not in the URL, so
    they are accepted here only for a uniform provider interface and ignored.
    ``timeout_s`` becomes ``?timeout=N``: any positive integer on the current endpoint
    (changelog 2026-06-15 [C]); 20–60 on the legacy ``.../get_speech/stream`` endpoints [C].
    """
    del model, voice, encoding, sample_rate
    if not api_key:
        raise ValueError("Smallest needs an API key (Authorization: Bearer <key>); got none")
    if type(timeout_s) is not int or timeout_s < 1:
        raise ValueError(f"timeout_s must be a positive integer of seconds, got {timeout_s!r}")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"Smallest endpoint must be ws:// or wss://, got {endpoint!r}")
    if "get_speech" in parts.path and not _LEGACY_TIMEOUT[0] <= timeout_s <= _LEGACY_TIMEOUT[1]:
        raise ValueError(
            f"timeout_s={timeout_s} on the legacy endpoint {parts.path!r}: it accepts 20-60 s; "
            f"use {DEFAULT_ENDPOINT} for longer idle times"
        )
    query = urlencode({"timeout": timeout_s})
    if parts.query:
        query = parts.query + "&" + query
    url = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
    return url, {"Authorization": f"Bearer {api_key}"}


def choose_format(carrier_encoding: str, carrier_rate: int, *,
                  g711_on_ws: bool = True) -> tuple[str, int]:
    """``(output_format, sample_rate)`` to ask for, given the carrier's format (§9.1).

    μ-law/A-law at 8 kHz when the carrier wants it: documented for REST/SSE, inferred for
    WS [I §2.4]; pass ``g711_on_ws=False`` to fall back to PCM at 8 kHz. Otherwise raw PCM
    at the carrier's rate when the provider offers it, else at 24 kHz (resample locally).
    Never MP3/WAV on the live path.
    """
    if carrier_rate == 8000 and g711_on_ws and carrier_encoding in ("mulaw", "alaw"):
        return ("ulaw" if carrier_encoding == "mulaw" else "alaw"), 8000
    if carrier_rate in SAMPLE_RATES:
        return "pcm", carrier_rate
    return "pcm", 24000


def split_text(text: str, limit: int = MAX_TEXT_CHARS) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` characters, at sentence boundaries
    where possible (then at spaces, then hard). Pieces keep their punctuation."""
    return pack_sentences(text, limit)


# Context states.
OPEN = "open"          # text sent with continue:true, not flushed yet
FLUSHED = "flushed"    # the last message of the request was sent; audio/complete pending
# A context whose ``complete`` (or error) arrived is forgotten: it is "done".


@dataclass(slots=True)
class _Context:
    state: str
    cancelled: bool = False
    odd: bytes = b""  # odd trailing byte of 16-bit PCM, carried to the next chunk


class SmallestProtocol(ProtocolDefaults):
    """One Smallest.ai WebSocket, seen from the gateway (the client).

    A *context* here is one synthesis request: every message for it carries
    ``request_id = context_id``, echoed back as ``external_request_id`` [C §2.2].

    Outbound: :meth:`begin` (no message: it notes the turn's voice), then :meth:`send`
    (the whole text, one request), or :meth:`send_text` then :meth:`flush` (streamed
    text); :meth:`close` is :meth:`flush` (there is no close message) and
    :meth:`cancel` sends nothing. Builders return JSON strings to write as text frames.

    Inbound: :meth:`receive` for each text frame returns a list of events. A frame that
    cannot be understood raises :class:`ProviderProtocolError`; state is unchanged.
    :meth:`connection_made` gives the :class:`ProviderReady` (Smallest has no handshake
    message); :meth:`connection_lost` reports contexts that will never finish.
    """

    provider = "smallest"

    def __init__(
        self,
        voice_id: str,
        *,
        model: str = "lightning_v3.1",
        language: str | None = "en",
        output_format: str = "ulaw",
        sample_rate: int = 8000,
        speed: float | None = None,
        complete_backoff_ms: int = DEFAULT_COMPLETE_BACKOFF_MS,
        max_buffer_flush_ms: int | None = None,
        session_id: str | None = None,
        max_text_chars: int = MAX_TEXT_CHARS,
        word_timestamps: bool = False,
    ) -> None:
        if not voice_id or type(voice_id) is not str:
            raise ValueError("voice_id is required (e.g. 'meher')")
        if model not in MODELS:
            raise ValueError(f"model {model!r}: Smallest WS models are {', '.join(MODELS)}")
        if output_format not in _ENCODINGS:
            raise ValueError(
                f"output_format {output_format!r}: use one of {', '.join(_ENCODINGS)} "
                "(never mp3/wav on the live path)"
            )
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate {sample_rate}: Smallest offers {SAMPLE_RATES}")
        if output_format != "pcm" and sample_rate != 8000:
            raise ValueError(f"{output_format} is telephony audio: use sample_rate 8000")
        if speed is not None and not 0.5 <= speed <= 2.0:
            raise ValueError(f"speed {speed}: Smallest accepts 0.5-2.0")
        if not 0 <= complete_backoff_ms <= 10000:
            raise ValueError("complete_backoff_ms must be 0-10000")
        if max_buffer_flush_ms is not None and not 0 <= max_buffer_flush_ms <= 1000:
            raise ValueError("max_buffer_flush_ms must be 0-1000")
        if session_id is not None and not _ID_RE.match(session_id):
            raise ValueError(f"session_id {session_id!r} must match [A-Za-z0-9_.-]{{1,128}}")
        self.encoding = _ENCODINGS[output_format]
        self.sample_rate = sample_rate
        self.max_text_chars = max_text_chars
        base: dict[str, Any] = {"voice_id": voice_id, "model": model}
        if language is not None:
            base["language"] = language
        base["sample_rate"] = sample_rate
        if speed is not None:
            base["speed"] = speed
        base["output_format"] = output_format
        base["complete_backoff_ms"] = complete_backoff_ms
        if max_buffer_flush_ms is not None:
            base["max_buffer_flush_ms"] = max_buffer_flush_ms
        if session_id is not None:
            base["session_id"] = session_id
        self.word_timestamps = word_timestamps  # ask for word_timestamp frames, read them
        if word_timestamps:
            base["word_timestamps"] = True
        # Every message repeats the full request (there is no session setup) [C §2.2]:
        # render the constant part once (per voice, for utterances in another voice).
        self.voice_id = voice_id
        self._base = base
        self._prefixes = {voice_id: json.dumps(base)[:-1] + ", "}
        self._contexts: dict[str, _Context] = {}
        self._server_ids: dict[str, str] = {}  # server request_id -> context id
        self._cancelled: dict[str, None] = {}  # recent cancelled ids, bounded, ordered
        self._turn_voice: tuple[str | None, str | None] = (None, None)  # begin's
        self.needs_replacement = False
        self.closed = False
        self.late_audio_bytes = 0

    # ---- state -----------------------------------------------------------------

    def is_clean(self) -> bool:
        """No unfinished context (open, flushed or cancelled-but-not-complete), socket open."""
        return not self._contexts and not self.closed

    def reusable(self) -> bool:
        """May go back to the pool: clean, and not marked for replacement (barge-in, fatal
        error)."""
        return self.is_clean() and not self.needs_replacement

    def is_cancelled(self, context_id: str) -> bool:
        """The context was cancelled: drop its audio (it keeps coming, §9.3)."""
        return context_id in self._cancelled

    def state(self, context_id: str) -> str:
        """``open``, ``flushed``, ``cancelled`` or ``done`` (finished or never seen)."""
        ctx = self._contexts.get(context_id)
        if ctx is None:
            return "done"
        return "cancelled" if ctx.cancelled else ctx.state

    # ---- outbound ----------------------------------------------------------------

    def _prefix(self, voice_id: str | None) -> str:
        voice_id = voice_id or self.voice_id
        prefix = self._prefixes.get(voice_id)
        if prefix is None:
            if len(self._prefixes) > 16:
                self._prefixes = {self.voice_id: self._prefixes[self.voice_id]}
            prefix = json.dumps({**self._base, "voice_id": voice_id})[:-1] + ", "
            self._prefixes[voice_id] = prefix
        return prefix

    def _message(self, context_id: str, text: str, cont: bool, flush: bool,
                 voice_id: str | None = None) -> str:
        return (self._prefix(voice_id) + '"text": ' + json.dumps(text) + ', "continue": '
                + ("true" if cont else "false") + ', "flush": ' + ("true" if flush else "false")
                + ', "request_id": ' + json.dumps(context_id) + "}")

    def _check_can_send(self, context_id: str) -> _Context | None:
        if self.closed:
            raise RuntimeError("the Smallest connection is closed: open a new one")
        if type(context_id) is not str or not _ID_RE.match(context_id):
            raise ValueError(
                f"context id {context_id!r} must match [A-Za-z0-9_.-]{{1,128}} "
                "(it is sent as request_id)"
            )
        ctx = self._contexts.get(context_id)
        if ctx is None:
            if context_id in self._cancelled:
                raise RuntimeError(f"context {context_id!r} was cancelled: use a fresh id")
            if self._contexts:
                other = next(iter(self._contexts))
                raise RuntimeError(
                    f"context {other!r} is still {self.state(other)} on this socket; Smallest "
                    "rejects a second request while one is processed (one active request per "
                    "account). Wait for its done, or replace the connection after a cancel"
                )
        elif ctx.cancelled:
            raise RuntimeError(f"context {context_id!r} was cancelled: use a fresh id")
        elif ctx.state != OPEN:
            raise RuntimeError(f"context {context_id!r} is already flushed: use a fresh id")
        return ctx

    def _check_text(self, text: str) -> None:
        if type(text) is not str:
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if len(text) > self.max_text_chars:
            raise ValueError(
                f"text of {len(text)} chars exceeds {self.max_text_chars} per message; "
                "split it with split_text() or use send()"
            )

    def send_text(self, context_id: str, text: str) -> str:
        """Text for a streamed request (``continue: true``); opens the context if new."""
        ctx = self._check_can_send(context_id)
        self._check_text(text)
        if not text.strip():
            raise ValueError("empty text: pipecat's ' ' keepalive costs a request [I]; "
                             "send real text, or flush()")
        if ctx is None:
            self._contexts[context_id] = _Context(OPEN)
        return self._message(context_id, text, True, False)

    def flush(self, context_id: str) -> str:
        """End the request: a full request with ``text: ""`` and ``flush: true``, as the
        official SDK does [C §2.2] (a bare ``{"flush": true}`` is unsupported [T])."""
        ctx = self._check_can_send(context_id)
        if ctx is None:
            raise RuntimeError(f"flush of context {context_id!r} that has no text: send_text first")
        ctx.state = FLUSHED
        return self._message(context_id, "", False, True)

    close = flush  # no close message: the flush is the last message of a request

    def begin(self, turn_id: str, voice: str | None = None, *, encoding: str | None = None,
              sample_rate: int | None = None) -> list[str]:
        """Note the turn's voice (None: the protocol's); nothing to send, every message
        repeats the whole request. The audio format is the socket's."""
        self.fixed_per_socket(None, encoding, sample_rate)
        self._turn_voice = (turn_id, voice)
        return []

    def send(self, turn_id: str, text: str) -> list[str]:
        """Messages for a whole text, the turn's one request: pieces of at most
        ``max_text_chars`` at sentence boundaries with ``continue: true``, the last one with
        ``flush: true``; in the voice :meth:`begin` noted."""
        context_id = turn_id
        begun, voice = self._turn_voice
        if begun != turn_id:
            voice = None
        ctx = self._check_can_send(context_id)
        if ctx is not None:
            raise RuntimeError(f"context {context_id!r} is already open: use send_text/flush")
        pieces = split_text(text, self.max_text_chars)
        if not pieces:
            raise ValueError("nothing to say: text is empty")
        messages = [self._message(context_id, p, True, False, voice) for p in pieces[:-1]]
        messages.append(self._message(context_id, pieces[-1], False, True, voice))
        self._contexts[context_id] = _Context(FLUSHED)
        return messages

    def finish(self, context_id: str) -> list[str]:
        """Nothing: :meth:`send` already flushed the request (a turn is one request)."""
        return []

    def cancel(self, context_id: str) -> list[str]:
        """Barge-in. Smallest has no cancel message [T §2.6]: nothing is sent, the audio
        that keeps coming is marked cancelled, and the connection should be replaced."""
        ctx = self._contexts.get(context_id)
        if ctx is not None:
            ctx.cancelled = True
            self.needs_replacement = True
        remember(self._cancelled, context_id, limit=64)
        return []

    def keepalive(self, context_id: str) -> list[str]:
        """No safe keepalive message exists (§2.6): use ``timeout_s`` in connect_params."""
        return []

    # ---- inbound -----------------------------------------------------------------

    def connection_made(self) -> list[ProviderEvent]:
        """The upgrade succeeded (a bad key gets HTTP 401 before it [I]): ready to send."""
        return [ProviderReady()]

    def connection_lost(self) -> list[ProviderEvent]:
        """The socket closed (the docs say it may close after ``complete`` [C §2.3]).
        Unfinished, uncancelled contexts get a fatal ``connection_closed`` error."""
        self.closed = True
        events: list[ProviderEvent] = [
            ProviderError(cid, "connection_closed",
                          "Smallest closed the socket before this request completed", True)
            for cid, ctx in self._contexts.items() if not ctx.cancelled
        ]
        self._contexts.clear()
        return events

    def receive(self, text: str) -> list[ProviderEvent]:
        """Parse one server text frame into events."""
        message = parse_object(text, "Smallest frame", kind="bad_message",
                               expected="an object with \"status\"")
        status = message.get("status")
        if status == "chunk":
            return self._on_chunk(message, text)
        if status == "complete":
            return self._on_complete(message)
        if status == "error":
            return self._on_error(message)
        if status == "word_timestamp":
            return self._on_word(message)
        raise ProviderProtocolError(
            "unknown_status",
            f"Smallest frame has status {status!r}; expected chunk, word_timestamp, complete "
            f"or error: {_preview(text)}",
        )

    def _context_of(self, message: dict[str, Any]) -> str | None:
        ext = message.get("external_request_id")
        server_id = message.get("request_id")
        if type(ext) is str:
            if type(server_id) is str and ext in self._contexts:
                self._server_id(server_id, ext)
            return ext
        if type(server_id) is str:
            cid = self._server_ids.get(server_id)
            if cid is not None:
                return cid
            # No echo of our id: with one request at a time it can only be that one [I].
            if len(self._contexts) == 1:
                cid = next(iter(self._contexts))
                self._server_id(server_id, cid)
                return cid
        elif len(self._contexts) == 1:
            return next(iter(self._contexts))
        return None

    def _server_id(self, server_id: str, cid: str) -> None:
        if server_id not in self._server_ids:  # bounded: old ids only matter for stale frames
            remember(self._server_ids, server_id, cid, limit=64)

    def _on_chunk(self, message: dict[str, Any], text: str) -> list[ProviderEvent]:
        data = message.get("data")
        audio = data.get("audio") if type(data) is dict else None
        if type(audio) is not str:
            raise ProviderProtocolError(
                "missing_field", f"Smallest chunk has no data.audio string: {_preview(text)}"
            )
        cid = self._context_of(message)
        if cid is None:
            raise ProviderProtocolError(
                "unknown_context",
                f"Smallest chunk for request {message.get('request_id')!r} that this socket "
                f"did not send (active: {list(self._contexts)}): {_preview(text)}",
            )
        pcm = decode_base64(audio, "Smallest data.audio")
        if pcm[:4] == b"RIFF":  # defensive (§9.1 [I]): never expected with pcm/ulaw
            pcm = strip_wav_header(pcm)
        ctx = self._contexts.get(cid)
        if ctx is None:
            if cid not in self._cancelled:
                raise ProviderProtocolError(
                    "unknown_context",
                    f"Smallest chunk for request {cid!r}, which is not active on this socket",
                )
        elif self.encoding == "pcm_s16le":
            pcm, ctx.odd = whole_samples(ctx.odd, pcm)
        if cid in self._cancelled:
            self.late_audio_bytes += len(pcm)
        if not pcm:
            return []
        return [ProviderAudio(cid, pcm, self.encoding, self.sample_rate)]

    def _on_word(self, message: dict[str, Any]) -> list[ProviderEvent]:
        """``{"status":"word_timestamp","data":{"id","word","start","end"}}``: one word,
        timed from the start of its request's audio (§2.3). Malformed ones, and words of
        a request that is cut or over, are skipped (not fatal)."""
        data = message.get("data")
        if not self.word_timestamps or type(data) is not dict:
            return []
        word, start, end = data.get("word"), data.get("start"), data.get("end")
        if type(word) is not str or not is_seconds(start) or not is_seconds(end) or end < start:
            return []
        word = word.strip()[:MAX_WORD_CHARS]
        cid = self._context_of(message)
        if not word or cid is None or (ctx := self._contexts.get(cid)) is None or ctx.cancelled:
            return []
        return [ProviderWords(cid, (WordTiming(word, float(start), float(end)),))]

    def _on_complete(self, message: dict[str, Any]) -> list[ProviderEvent]:
        cid = self._context_of(message)
        if cid is not None and cid in self._contexts:
            done = [cid]
        elif cid is not None:
            return []  # a stale complete for a request already finished
        else:
            # pipecat: one complete for the whole turn [T]; it names no request we know,
            # so it finishes every flushed request [I].
            done = [c for c, ctx in self._contexts.items() if ctx.state == FLUSHED]
        events: list[ProviderEvent] = []
        for c in done:
            del self._contexts[c]
            events.append(ProviderDone(c))
        return events

    def _on_error(self, message: dict[str, Any]) -> list[ProviderEvent]:
        err = message.get("error")
        code = ""
        if type(err) is dict:  # documented schema [C]
            text = str(err.get("message", ""))
            code = str(err.get("code", ""))
        elif type(err) is str:  # pipecat reads msg["error"] [T]
            text = err
        else:
            text = ""
        if not text:
            text = str(message.get("message", "")) or "error frame without a message"
        kind, fatal = _classify(code, text)
        cid = message.get("external_request_id")
        if type(cid) is not str or cid not in self._contexts:
            cid = None
        elif kind not in ("idle_timeout", "auth"):
            fatal = False  # it names one request: that request failed, not the socket [I]
        if fatal:
            self.needs_replacement = True
            if kind == "idle_timeout":
                self.closed = True  # the server closes right after this frame [C]
        elif cid is not None:
            # A rejected request produces no audio and no complete [I]: forget it.
            del self._contexts[cid]
        return [ProviderError(cid, kind, f"Smallest: {text}" + (f" (code {code})" if code else ""),
                              fatal)]


def _classify(code: str, text: str) -> tuple[str, bool]:
    """Map an error frame to a bounded ``kind`` and whether the socket must go [I: codes
    are not documented; we match words]."""
    probe = (code + " " + text).lower()
    if "inactivity" in probe or "timed out" in probe or "timeout" in probe:
        return "idle_timeout", True
    if "auth" in probe or "api key" in probe or "401" in probe or "forbidden" in probe:
        return "auth", True
    if "concurren" in probe or "being processed" in probe or "already" in probe:
        return "concurrency", False
    if "429" in probe or "rate limit" in probe or "rate_limit" in probe:
        return "rate_limited", False
    if "too long" in probe or "too_long" in probe or "length" in probe:
        return "text_too_long", False
    if ("invalid" in probe or "required" in probe or "missing" in probe
            or "validation" in probe or "unsupported" in probe):
        return "invalid_request", False
    return "server_error", True
