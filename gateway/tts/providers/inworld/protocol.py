"""Inworld TTS, "Synthesize speech (WebSocket)", client side, as a sans-I/O protocol.

Spec: docs/protocols/tts-providers.md §1 (cited below as "§1.x") and §9.
One WebSocket carries up to 5 *contexts*; each context has its own voice, model and
audio format. Every client frame is one JSON object with exactly one operation key
(``create``, ``send_text``, ``flush_context``, ``update_config``, ``close_context``)
plus ``contextId``; every server frame is ``{"result": {"contextId", "status", <payload>}}``
or a top-level ``{"error": {...}}`` (§1.2)::

    gateway -> Inworld   create, send_text* (+flush_context), close_context
    Inworld -> gateway   contextCreated, audioChunk*, flushCompleted, contextClosed

:class:`InworldProtocol` builds the client frames and turns server frames into the events
of :mod:`gateway.tts.providers.events`. It does no I/O. One turn is one context (§1.4):
:meth:`begin` (``create``), :meth:`send` (``send_text``, split by :func:`split_text`),
:meth:`close_message`; the turn is over at :class:`ProviderDone` for that context.
Barge-in is :meth:`cancel_message`: Inworld has no cancel verb, ``close_context`` still
synthesizes what was buffered (§1.4), so audio keeps arriving for a cancelled context;
:meth:`is_cancelled` tells the caller to drop it.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from telcodecs import strip_wav_header, whole_samples

from gateway.tts.providers.common import (choose_g711_or_pcm, decode_base64,
                                          parallel_word_timings, parse_object, remember)
from gateway.tts.providers.common import preview as _preview
from gateway.tts.providers.base import ProtocolDefaults
from gateway.tts.providers.events import (
    ProviderAudio,
    ProviderDone,
    ProviderError,
    ProviderEvent,
    ProviderProtocolError,
    ProviderWords,
)
from gateway.tts.text import pack_sentences

__all__ = [
    "DEFAULT_ENDPOINT",
    "MAX_CONTEXTS",
    "MAX_TEXT_CHARS",
    "InworldProtocol",
    "choose_audio_format",
    "connect_params",
    "split_text",
]

#: §1.1 [C]. No documented query parameters: all configuration travels in ``create``.
DEFAULT_ENDPOINT = "wss://api.inworld.ai/tts/v1/voice:streamBidirectional"
DEFAULT_MODEL = "inworld-tts-1.5-max"
#: §1.1 [C]: at most 5 contexts per connection.
MAX_CONTEXTS = 5
#: §1.2 send_text [C]: at most 1000 characters per message.
MAX_TEXT_CHARS = 1000

# Inworld audioEncoding -> (event encoding, fixed rate or None). §1.3. Only formats that
# can go to a phone call without a decoder; MP3/OGG_OPUS/FLAC are refused (§9.1).
_ENCODINGS: dict[str, tuple[str, int | None]] = {
    "MULAW": ("mulaw", 8000),
    "ALAW": ("alaw", 8000),
    "PCM": ("pcm_s16le", None),
    "LINEAR16": ("pcm_s16le", None),  # a 44-byte WAV header in every chunk (§1.3)
    "WAV": ("pcm_s16le", None),  # a WAV header on the first chunk of each flush (§1.3)
}
_MIN_RATE, _MAX_RATE = 8000, 48000

# gRPC status codes (§1.2 "status ... in gRPC style") -> (kind, fatal).
_GRPC_KINDS: dict[int, tuple[str, bool]] = {
    3: ("invalid_argument", False),
    4: ("timeout", False),
    5: ("context_not_found", False),
    6: ("already_exists", False),
    7: ("permission_denied", True),
    8: ("rate_limited", False),
    9: ("failed_precondition", False),
    10: ("session_paused", True),  # "Paused due to inactivity" (§1.2, [O] pipecat #3269)
    13: ("server_error", False),
    14: ("unavailable", True),
    16: ("auth", True),
}
_ACTIVE = ("open", "flushed", "closing")


def choose_audio_format(carrier_encoding: str, carrier_rate: int) -> tuple[str, int]:
    """The Inworld ``(audioEncoding, sampleRateHertz)`` to ask for, given what the carrier
    plays: G.711 at 8 kHz natively when the carrier wants it (§1.3, §9.1), otherwise raw
    PCM (no header, "recommended for WS") at the carrier's rate clamped to 8–48 kHz."""
    return choose_g711_or_pcm(carrier_encoding, int(carrier_rate), range(_MIN_RATE, _MAX_RATE + 1),
                              pcm="PCM", mulaw="MULAW", alaw="ALAW")


def _check_format(encoding: str, sample_rate: int) -> None:
    spec = _ENCODINGS.get(encoding)
    if spec is None:
        raise ValueError(
            f"Inworld audioEncoding {encoding!r} cannot be played into a call without a "
            f"decoder; use one of {', '.join(_ENCODINGS)} (PCM or MULAW recommended)"
        )
    fixed = spec[1]
    if fixed is not None and sample_rate != fixed:
        raise ValueError(f"Inworld {encoding} is {fixed} Hz only, got "
                         f"sampleRateHertz={sample_rate}")
    if not _MIN_RATE <= sample_rate <= _MAX_RATE:
        raise ValueError(f"Inworld sampleRateHertz must be 8000–48000, got {sample_rate}")


def connect_params(
    api_key: str,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    model: str = DEFAULT_MODEL,
    voice: str | None = None,
    encoding: str = "MULAW",
    sample_rate: int = 8000,
    request_id: str | None = None,
) -> tuple[str, dict[str, str]]:
    """URL and headers for the WebSocket handshake (§1.1).

    The key is sent as given: the portal key is already the Base64 Basic credential [C].
    ``model``/``voice``/``encoding``/``sample_rate`` do not go on the URL (Inworld takes
    them in ``create``); they are validated here so a bad configuration fails before a
    socket is opened. The headers contain the secret: never log them.
    """
    if not api_key:
        raise ValueError("Inworld API key is empty: set the provider's api key (the Base64 "
                         "credential from the Inworld portal)")
    if not model:
        raise ValueError("Inworld modelId is required (e.g. inworld-tts-1.5-max)")
    if voice is not None and not voice:
        raise ValueError("Inworld voiceId must not be empty")
    _check_format(encoding, sample_rate)
    headers = {"Authorization": f"Basic {api_key}"}
    if request_id:
        headers["X-Request-Id"] = request_id  # optional, sent by SDKs (§1.1 [T])
    return endpoint, headers


def split_text(text: str, limit: int = MAX_TEXT_CHARS) -> list[str]:
    """Split ``text`` into ``send_text`` pieces of at most ``limit`` characters, at
    sentence boundaries where possible (then at spaces, then anywhere).

    Each piece ends with one space: the server concatenates a context's text (§1.2, the
    doc example sends ``"Hello there. "``), so pieces must carry their own separator.
    """
    if limit < 2:
        raise ValueError("limit must be at least 2")
    return [piece + " " for piece in pack_sentences(text, limit - 1)]


@dataclass(slots=True)
class _Context:
    encoding: str  # Inworld audioEncoding
    event_encoding: str
    sample_rate: int
    state: str = "open"  # open -> flushed -> closing -> (closed_early) -> done
    cancelled: bool = False
    unflushed_chars: int = 0  # text sent since the last flush request
    flushes_pending: int = 0  # flush requests not yet answered by flushCompleted
    flushes_done: int = 0  # flush requests answered (the audio before each one is out)
    chunks_since_flush: int = 0  # audio chunks since the last flushCompleted
    carry: bytes = b""  # odd trailing byte of 16-bit PCM (§9.1)
    created: bool = False  # contextCreated seen
    audio_s: float = 0.0  # seconds of audio received for the context
    generation_s: float = 0.0  # ... when its current generation (flush) began: timestamps


class InworldProtocol(ProtocolDefaults):
    """One Inworld TTS WebSocket, seen from the gateway (the client).

    Outbound builders return the JSON text to send and update the local context state;
    they raise :class:`ValueError` for bad input (text too long) and :class:`RuntimeError`
    for a message the state does not allow (6th context, unknown or closed context), so a
    bug is caught here instead of as a server error frame.

    Inbound: :meth:`receive` turns one text frame into a list of events (often empty).
    A frame that cannot be understood raises :class:`ProviderProtocolError`; the state is
    unchanged by a rejected frame.

    Per-context state: ``open`` (created), ``flushed`` (flush sent, audio pending),
    ``closing`` (``close_context`` sent), ``closed_early`` (``contextClosed`` came before
    the audio, see §1.4 race) and finally done (forgotten; :meth:`state` returns
    ``None``). :meth:`is_clean` is true when no context is tracked: the socket may go back
    to the pool. :meth:`is_cancelled` stays answerable for recently finished contexts, so
    late audio of a barged-in turn can always be recognised.
    """

    provider = "inworld"

    def __init__(
        self,
        *,
        voice: str,
        model: str = DEFAULT_MODEL,
        encoding: str = "MULAW",
        sample_rate: int = 8000,
        create_options: dict[str, Any] | None = None,
        word_timestamps: bool = False,
    ) -> None:
        if not voice:
            raise ValueError("Inworld voiceId is required (e.g. 'Ashley')")
        if not model:
            raise ValueError("Inworld modelId is required (e.g. inworld-tts-1.5-max)")
        _check_format(encoding, sample_rate)
        self.voice = voice
        self.model = model
        self.encoding = encoding
        self.sample_rate = sample_rate
        # Extra create fields (camelCase, §1.2), e.g. {"autoMode": True, "temperature": 1.0}.
        self.create_options = dict(create_options or {})
        # ``timestampType: WORD``: word timings ride with each audio chunk (SYNC transport,
        # the default) or follow it (ASYNC) [C docs.inworld.ai/tts/capabilities/timestamps];
        # they cost about 100 ms of first-audio latency [C]. An explicit timestampType in
        # create_options wins.
        self.word_timestamps = word_timestamps
        if word_timestamps:
            self.create_options.setdefault("timestampType", "WORD")
        self._contexts: dict[str, _Context] = {}
        # id -> (cancelled, event encoding, rate), for late audio after a context is done
        self._finished: OrderedDict[str, tuple[bool, str, int]] = OrderedDict()

    # ---- state -----------------------------------------------------------------

    def is_clean(self) -> bool:
        """No context open or draining, so no audio can still arrive (except late audio
        for cancelled contexts, which :meth:`is_cancelled` flags): safe to pool."""
        return not self._contexts

    def is_cancelled(self, context_id: str) -> bool:
        """``context_id`` was cancelled (barge-in): drop any audio for it."""
        ctx = self._contexts.get(context_id)
        if ctx is not None:
            return ctx.cancelled
        done = self._finished.get(context_id)
        return done is not None and done[0]

    def state(self, context_id: str) -> str | None:
        """``open``/``flushed``/``closing``/``closed_early``, or None when unknown or done."""
        ctx = self._contexts.get(context_id)
        return ctx.state if ctx is not None else None

    def segments_done(self, context_id: str) -> int | None:
        """Flushes of the context answered by ``flushCompleted`` so far (the audio of the
        text before each one is out); None when the context is unknown or done."""
        ctx = self._contexts.get(context_id)
        return ctx.flushes_done if ctx is not None else None

    @property
    def open_contexts(self) -> int:
        """Contexts the server still holds (not yet ``contextClosed``): at most 5 (§1.1)."""
        return sum(1 for c in self._contexts.values() if c.state != "closed_early")

    def can_create(self) -> bool:
        return self.open_contexts < MAX_CONTEXTS

    def _get(self, context_id: str, action: str) -> _Context:
        ctx = self._contexts.get(context_id)
        if ctx is None or ctx.state not in _ACTIVE:
            raise RuntimeError(
                f"{action} for context {context_id!r}, which is not open on this socket "
                f"(open: {', '.join(self._contexts) or 'none'}); create it first"
            )
        return ctx

    def _finish(self, context_id: str) -> None:
        ctx = self._contexts.pop(context_id, None)
        if ctx is None:
            return
        remember(self._finished, context_id,
                 (ctx.cancelled, ctx.event_encoding, ctx.sample_rate), limit=64)

    # ---- outbound --------------------------------------------------------------

    def begin(self, turn_id: str, voice: str | None = None, *, encoding: str | None = None,
              sample_rate: int | None = None) -> list[str]:
        """``create`` a context (§1.2). ``send_text`` may follow at once, without waiting
        for ``contextCreated`` (in-order handling, §1.2)."""
        if not self.can_create():
            raise RuntimeError(
                f"Inworld allows {MAX_CONTEXTS} contexts per connection and "
                f"{self.open_contexts} are open: close finished turns (close_context) or "
                "use another socket"
            )
        if turn_id in self._contexts:
            raise RuntimeError(f"context {turn_id!r} already exists on this socket")
        encoding = encoding or self.encoding
        sample_rate = sample_rate or self.sample_rate
        _check_format(encoding, sample_rate)
        body = dict(self.create_options)
        body.update(
            voiceId=voice or self.voice,
            modelId=self.model,
            audioConfig={"audioEncoding": encoding, "sampleRateHertz": sample_rate},
        )
        self._finished.pop(turn_id, None)
        self._contexts[turn_id] = _Context(encoding, _ENCODINGS[encoding][0], sample_rate)
        return [json.dumps({"create": body, "contextId": turn_id})]

    def send(self, turn_id: str, text: str, *, flush: bool = True) -> list[str]:
        """``send_text`` per piece of :func:`split_text` (≤1000 chars, §1.2), the last one
        with the nested ``flush_context`` if ``flush`` (``flushCompleted`` then tells that
        the segment's audio is out)."""
        pieces = split_text(text)
        return [self._send_text(turn_id, piece, flush=flush and i == len(pieces) - 1)
                for i, piece in enumerate(pieces)]

    def _send_text(self, context_id: str, text: str, *, flush: bool) -> str:
        if len(text) > MAX_TEXT_CHARS:  # split_text keeps within; a guard against a bug
            raise ValueError(f"Inworld accepts at most {MAX_TEXT_CHARS} characters per "
                             f"send_text, got {len(text)}")
        ctx = self._get(context_id, "send_text")
        if ctx.state == "closing":
            raise RuntimeError(f"send_text for context {context_id!r} after close_context")
        body: dict[str, Any] = {"text": text}
        ctx.unflushed_chars += len(text)
        if flush:
            body["flush_context"] = {}
            self._note_flush(ctx)
        return json.dumps({"send_text": body, "contextId": context_id})

    @staticmethod
    def _note_flush(ctx: _Context) -> None:
        if ctx.unflushed_chars:
            ctx.flushes_pending += 1
            ctx.unflushed_chars = 0
            if ctx.state == "open":
                ctx.state = "flushed"

    def flush_message(self, context_id: str) -> str:
        """``flush_context``: synthesize what the context has buffered (§1.2)."""
        ctx = self._get(context_id, "flush_context")
        if ctx.state == "closing":
            raise RuntimeError(f"flush_context for context {context_id!r} after close_context")
        self._note_flush(ctx)
        return json.dumps({"flush_context": {}, "contextId": context_id})

    def close_message(self, context_id: str) -> str:
        """``close_context`` at the end of a turn: flush + close (§1.2, §1.4). The turn is
        over at the :class:`ProviderDone` for this context."""
        ctx = self._get(context_id, "close_context")
        if ctx.state == "closing":
            raise RuntimeError(f"close_context for context {context_id!r} sent twice")
        # [I] the implicit flush is answered by flushCompleted like an explicit one.
        self._note_flush(ctx)
        ctx.state = "closing"
        return json.dumps({"close_context": {}, "contextId": context_id})

    def cancel_message(self, context_id: str) -> str | None:
        """Barge-in (§1.4): there is no cancel verb, so ``close_context`` and mark the
        context cancelled; its remaining audio still arrives and must be dropped
        (:meth:`is_cancelled`). Returns None if the close was already sent (the context
        is only marked). A hard stop is closing the socket."""
        ctx = self._contexts.get(context_id)
        if ctx is None:
            done = self._finished.get(context_id)
            if done is not None:
                self._finished[context_id] = (True, done[1], done[2])
                return None
            raise RuntimeError(f"cancel for unknown context {context_id!r}")
        ctx.cancelled = True
        if ctx.state == "closing" or ctx.state == "closed_early":
            return None
        return self.close_message(context_id)

    def finish(self, context_id: str) -> list[str]:
        return [self.close_message(context_id)]

    def cancel(self, context_id: str) -> list[str]:
        message = self.cancel_message(context_id)
        return [message] if message else []

    def keepalive(self, context_id: str) -> list[str]:
        """An empty ``send_text`` to the context while it is open (pipecat does this every
        60 s); nothing otherwise: a keepalive to no open context is an error (§1.4 [O])."""
        if self.state(context_id) in ("open", "flushed"):
            return [json.dumps({"send_text": {"text": ""}, "contextId": context_id})]
        return []

    # ---- inbound ---------------------------------------------------------------

    def receive(self, text: str) -> list[ProviderEvent]:
        """Parse one server text frame into events (§1.2 "Server → client")."""
        message = parse_object(text, "Inworld frame",
                               expected="an object with \"result\" or \"error\"")
        result = message.get("result")
        if type(result) is dict:
            return self._result(result, text)
        error = message.get("error")
        if type(error) is dict:
            return [self._top_level_error(error)]
        if message.get("done") is True:  # informational, tolerated by the examples (§1.2 [C])
            return []
        raise ProviderProtocolError(
            "bad_frame", f"Inworld frame has neither \"result\" nor \"error\": {_preview(text)}"
        )

    def _top_level_error(self, error: dict) -> ProviderError:
        code = error.get("code")
        msg = error.get("message")
        if type(msg) is dict:  # the examples also see a nested message (§1.2 [C])
            msg = msg.get("message", json.dumps(msg))
        msg = str(msg or "")
        kind, _ = _GRPC_KINDS.get(code, ("server_error", True)) if type(code) is int else (
            "server_error", True)
        if "inactivity" in msg.lower():
            kind = "session_paused"
        # A connection-level error: the socket closes after it (§1.2 [O]); replace it.
        return ProviderError(None, kind, f"Inworld error {code}: {msg}", fatal=True)

    def _result(self, result: dict, text: str) -> list[ProviderEvent]:
        context_id = result.get("contextId")
        if context_id is not None and type(context_id) is not str:
            raise ProviderProtocolError("bad_frame", f"contextId is not a string: {_preview(text)}")
        status = result.get("status")
        if type(status) is dict and status.get("code", 0) not in (0, None):
            return [self._status_error(context_id, status)]

        chunk = result.get("audioChunk")
        if chunk is not None:
            return self._audio(context_id, chunk, text)
        if "flushCompleted" in result:
            if not context_id or (ctx := self._contexts.get(context_id)) is None:
                return []
            ctx.chunks_since_flush = 0
            ctx.generation_s = ctx.audio_s  # the next generation's timestamps start at 0
            if ctx.flushes_pending:
                ctx.flushes_pending -= 1
                ctx.flushes_done += 1
            if ctx.flushes_pending == 0 and ctx.state == "flushed":
                ctx.state = "open"
            if ctx.state == "closed_early" and ctx.flushes_pending == 0:
                self._finish(context_id)
                return [ProviderDone(context_id)]
            return []
        if "contextClosed" in result:
            if not context_id or (ctx := self._contexts.get(context_id)) is None:
                return []
            if ctx.flushes_pending and ctx.chunks_since_flush == 0:
                # §1.4 race [O pipecat #5110]: the ack beat the audio. Keep the context
                # until its flushCompleted (or the caller's grace timer: drain()).
                ctx.state = "closed_early"
                return []
            self._finish(context_id)
            return [ProviderDone(context_id)]
        if "contextCreated" in result:
            ctx = self._contexts.get(context_id) if context_id else None
            echoed = result["contextCreated"]
            if ctx is not None:
                ctx.created = True
            if ctx is not None and type(echoed) is dict:
                audio = echoed.get("audioConfig")
                if not isinstance(audio, dict):
                    return []
                encoding = audio.get("audioEncoding")
                if type(encoding) is str and encoding in _ENCODINGS:  # a dict is unhashable
                    ctx.encoding = encoding
                    ctx.event_encoding = _ENCODINGS[ctx.encoding][0]
                    rate = audio.get("sampleRateHertz")
                    if type(rate) is int:
                        ctx.sample_rate = rate
            return []
        if "contextUpdated" in result:
            return []
        raise ProviderProtocolError(
            "bad_frame",
            "Inworld result has none of audioChunk, flushCompleted, contextCreated, "
            f"contextUpdated, contextClosed: {_preview(text)}",
        )

    def _status_error(self, context_id: str | None, status: dict) -> ProviderError:
        code = status.get("code")
        msg = str(status.get("message") or "")
        low = msg.lower()
        kind, fatal = _GRPC_KINDS.get(code, ("provider_error", False)) if type(code) is int \
            else ("provider_error", False)
        gone = False
        if "max contexts" in low:
            kind, gone = "too_many_contexts", True  # the create failed (§1.2 [O])
        elif "context not found" in low:
            kind, gone = "context_not_found", True  # expired after ~60 s idle (§1.4 [O])
        elif "no open context" in low or "context_id is required" in low:
            kind = "no_context"
        elif code == 5:
            gone = True
        ctx = self._contexts.get(context_id) if context_id is not None else None
        if ctx is not None and not ctx.created:
            # [I] messages are handled in order (§1.2), so an error before contextCreated
            # answers the create itself: the context was never made.
            gone = True
        if gone and context_id is not None:
            # The server does not hold this context: no more audio will come for it.
            self._finish(context_id)
        return ProviderError(context_id, kind, f"Inworld status {code}: {msg}", fatal=fatal)

    def _audio(self, context_id: str | None, chunk: Any, text: str) -> list[ProviderEvent]:
        if type(chunk) is not dict:
            raise ProviderProtocolError("bad_frame",
                                        f"audioChunk is not an object: {_preview(text)}")
        words = self._words(context_id, chunk.get("timestampInfo"))
        content = chunk.get("audioContent")
        if not content:
            return words  # ASYNC timestamps-only chunk (§1.2 [T])
        if context_id is None:
            raise ProviderProtocolError(
                "missing_field", f"audioChunk without contextId: {_preview(text)}; this client "
                "always names its contexts")
        data = decode_base64(content, f"audioContent for context {context_id!r}")
        ctx = self._contexts.get(context_id)
        if ctx is None:
            done = self._finished.get(context_id)
            if done is not None:
                # Late audio for a context already done (e.g. after an early close ack
                # drained by the caller); pass it on, is_cancelled() tells if it is dead.
                data = _strip(data)
                return [ProviderAudio(context_id, data, done[1], done[2])] if data else []
            raise ProviderProtocolError(
                "unknown_context", f"audio for context {context_id!r}, never created on this "
                f"socket (open: {', '.join(self._contexts) or 'none'})")
        ctx.chunks_since_flush += 1
        if data[:4] == b"RIFF":  # LINEAR16 every chunk, WAV per flush, MULAW maybe (§1.3)
            data = strip_wav_header(data)
        width = 1
        if ctx.event_encoding == "pcm_s16le":
            data, ctx.carry = whole_samples(ctx.carry, data)
            width = 2
        if not data:
            return words
        ctx.audio_s += len(data) / (width * ctx.sample_rate)
        return [ProviderAudio(context_id, data, ctx.event_encoding, ctx.sample_rate), *words]

    def _words(self, context_id: str | None, info: Any) -> list[ProviderEvent]:
        """``timestampInfo.wordAlignment {words, wordStartTimeSeconds, wordEndTimeSeconds}``
        [C docs.inworld.ai/tts/capabilities/timestamps], in seconds from the start of the
        context's current generation: "timestamps restart from 0" after each
        ``flushCompleted`` (§1.2 [T pipecat, livekit]), so the audio the context had when
        that generation began is added. TTS 1.5/2 list every token, whitespace too [C]:
        blank ones are skipped. ``characterAlignment`` is not asked for and ignored."""
        if not self.word_timestamps or type(info) is not dict or context_id is None:
            return []
        ctx = self._contexts.get(context_id)
        alignment = info.get("wordAlignment")
        if ctx is None or ctx.cancelled or type(alignment) is not dict:
            return []  # a cut or finished context: its audio is dropped too
        words = parallel_word_timings(alignment.get("words"),
                                      alignment.get("wordStartTimeSeconds"),
                                      alignment.get("wordEndTimeSeconds"), ctx.generation_s)
        return [ProviderWords(context_id, words)] if words else []

    def drain(self, context_id: str) -> list[ProviderEvent]:
        """Give up waiting on a context (the caller's grace timer after an early
        ``contextClosed``, §1.4): forget it and report it done."""
        if context_id not in self._contexts:
            return []
        self._finish(context_id)
        return [ProviderDone(context_id)]

    def reset(self) -> None:
        """The socket was replaced: contexts do not survive (§1.4 [O])."""
        for context_id in list(self._contexts):
            self._finish(context_id)


def _strip(data: bytes) -> bytes:
    return strip_wav_header(data) if data[:4] == b"RIFF" else data
