"""ElevenLabs multi-context stream-input WebSocket, client side, as a sans-I/O protocol.

Spec: docs/protocols/tts-providers.md §6 and §9 (tags: [C] the provider's docs or
official SDK, [T] third-party code, [O] observed in issues, [I] inferred here). The
multi-context AsyncAPI (``v1/text-to-speech/{voice_id}/multi-stream-input``, copy in the
ElevenLabs docs) is cited as "asyncapi"; pipecat ``services/elevenlabs/tts.py`` as "pipecat".

One socket carries up to 5 *contexts* (§6 [C]); the voice, model and audio format are
fixed for the socket by its URL (``/v1/text-to-speech/{voice_id}/multi-stream-input?
model_id=..&output_format=..``). Every message names its context::

    gateway -> ElevenLabs  {"text":" ","context_id":c,"voice_settings":{..}}   open (init)
                           {"text":"Hello there. ","context_id":c,"flush":true}  text
                           {"context_id":c,"flush":true}                          flush
                           {"context_id":c,"close_context":true}                  end/cancel
                           {"text":"","context_id":c}                             keepalive
                           {"close_socket":true}
    ElevenLabs -> gateway  {"audio":"<b64>","isFinal":false,"contextId":c,..}     camelCase!
                           {"isFinal":true,"contextId":c}                         context over
                           {"message":..,"error":"input_timeout_exceeded","code":1008}

One turn is one context: :meth:`~ElevenLabsProtocol.begin`, :meth:`~ElevenLabsProtocol.send`
per sentence (flushed, so generation starts at once), :meth:`close_message` at the end;
the turn is over at the :class:`ProviderDone` that ``isFinal`` gives. ``close_context``
keeps flushing what was already flushed ("If it has already been set to flush it will
continue flushing", asyncapi [C]), so after a barge-in (:meth:`cancel_message`) audio of
the cut turn keeps coming until ``isFinal``: :meth:`is_cancelled` tells to drop it.

Decisions where the sources are silent or disagree:

* Error frames carry no documented ``contextId``; the known ones are followed by a close
  with 1008 (§6 [O]), so every error frame is treated as fatal for the socket. A
  ``contextId`` in one, if present, is reported on the error [I].
* ``isFinal`` is expected once per closed context, also for a cancelled one (asyncapi:
  "the final message for the context" [C]); until it comes the socket is not clean and is
  not pooled for another call.
* Keepalives go only to a context whose init was sent: a keepalive as a context's first
  message makes the later init (with ``voice_settings``) fail with 1008 [T pipecat].
* At most :data:`MAX_TEXT_CHARS` per text message [I: no per-message limit is documented].
* Word timings (``word_timestamps``): every audio message carries ``alignment`` (the text
  as sent) and ``normalizedAlignment`` (as spoken): ``chars``, ``charStartTimesMs`` and
  ``charDurationsMs`` (``charsDurationsMs`` in older copies, both read) in milliseconds
  from the start of *that chunk's* audio (WebSocket reference "AudioOutput" [C]; pipecat
  adds its running audio clock to each chunk's times [T]). ``sync_alignment=true`` asks
  for the alignment in the same message as its audio [C]. Characters are joined into
  words at whitespace; a word split across two chunks is reported as its two parts (each
  found in the text in turn, so what was heard still ends where the audio did) [I].
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from telcodecs import strip_wav_header, whole_samples

from gateway.tts.base import MAX_WORD_CHARS, WordTiming
from gateway.tts.providers.common import (MAX_WORDS_PER_MESSAGE, choose_g711_or_pcm, decode_base64,
                                          is_seconds, parse_object, remember, with_query)
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
    "DEFAULT_MODEL",
    "MAX_CONTEXTS",
    "MAX_TEXT_CHARS",
    "OUTPUT_FORMATS",
    "ElevenLabsProtocol",
    "choose_output_format",
    "connect_params",
    "split_text",
]

#: §6 [C]; ``{voice_id}`` is filled in by :func:`connect_params`. Regional hosts
#: (``api.us.elevenlabs.io``, ``api.eu.residency.elevenlabs.io``) are listed in asyncapi.
DEFAULT_ENDPOINT = "wss://api.elevenlabs.io/v1/text-to-speech/{voice_id}/multi-stream-input"
#: Low-latency default [I]; multi-context is not available for ``eleven_v3`` (§6 [C]).
DEFAULT_MODEL = "eleven_flash_v2_5"
_NO_MULTI_CONTEXT = ("eleven_v3",)
#: §6 [C]: 5 contexts per connection.
MAX_CONTEXTS = 5
#: [I] not documented per message; a conservative cap, cut at sentence boundaries.
MAX_TEXT_CHARS = 1000
#: ``inactivity_timeout`` query parameter: default 20 s, max 180 (§6 [C], asyncapi); the
#: gateway asks for the maximum unless configured.
MAX_INACTIVITY_TIMEOUT = 180

#: ``output_format`` -> (ProviderAudio.encoding, rate). Only what a call can play without
#: a decoder (§9.1: never MP3/Opus on the live path); asyncapi lists these raw formats [C].
OUTPUT_FORMATS: dict[str, tuple[str, int]] = {
    "ulaw_8000": ("mulaw", 8000),
    "alaw_8000": ("alaw", 8000),
    "pcm_8000": ("pcm_s16le", 8000),
    "pcm_16000": ("pcm_s16le", 16000),
    "pcm_22050": ("pcm_s16le", 22050),
    "pcm_24000": ("pcm_s16le", 24000),
    "pcm_44100": ("pcm_s16le", 44100),
}
_PCM_RATES = (8000, 16000, 22050, 24000, 44100)
#: Characters of one alignment read at most (a longer list is cut) [I].
MAX_ALIGNMENT_CHARS = 20_000
_VOICE_SETTINGS = ("stability", "similarity_boost", "style", "use_speaker_boost", "speed")
_NORMALIZATION = ("auto", "on", "off")

#: error code (the ``error`` field) -> bounded kind label.
_ERROR_KINDS = {
    "input_timeout_exceeded": "idle_timeout",
    "max_active_conversations": "too_many_contexts",
    "invalid_api_key": "auth",
    "unauthorized": "auth",
    "quota_exceeded": "quota",
    "too_many_concurrent_requests": "rate_limited",
    "rate_limit_exceeded": "rate_limited",
    "policy_violation": "policy",
}


def choose_output_format(carrier_encoding: str, carrier_rate: int) -> str:
    """The ``output_format`` to ask for, given what the carrier plays (§9.1): μ-law (or
    A-law) 8 kHz passed through untouched for G.711 carriers, else raw PCM at the carrier's
    rate if offered, else the next higher offered rate (resampled locally)."""
    encoding, rate = choose_g711_or_pcm(carrier_encoding, carrier_rate, _PCM_RATES, pcm="pcm",
                                        mulaw="ulaw", alaw="alaw")
    return f"{encoding}_{rate}"


def _check_model(model: str) -> None:
    if not model:
        raise ValueError("ElevenLabs model_id is required (e.g. eleven_flash_v2_5)")
    if model in _NO_MULTI_CONTEXT:
        raise ValueError(f"ElevenLabs {model} does not support the multi-context WebSocket "
                         "(§6); use eleven_flash_v2_5, eleven_turbo_v2_5 or "
                         "eleven_multilingual_v2")


def connect_params(
    api_key: str,
    voice: str,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    model: str = DEFAULT_MODEL,
    output_format: str = "ulaw_8000",
    inactivity_timeout: int = MAX_INACTIVITY_TIMEOUT,
    auto_mode: bool | None = True,
    language_code: str | None = None,
    apply_text_normalization: str | None = None,
    enable_logging: bool | None = None,
    sync_alignment: bool | None = None,
) -> tuple[str, dict[str, str]]:
    """URL and headers for the WebSocket upgrade (§6 [C]).

    The voice goes in the path (``{voice_id}`` in ``endpoint``; an endpoint without it is
    used as given), everything else in the query. The key goes in the ``xi-api-key``
    header, never in the URL. ``inactivity_timeout`` defaults to the maximum, 180 s, so
    warm sockets live long in the pool (§9.5). ``auto_mode`` is on: the gateway sends whole
    sentences, which is what auto mode is for (§6 [C]; pipecat does the same for sentence
    aggregation [T]).
    """
    if not api_key:
        raise ValueError("ElevenLabs API key is empty: set the provider's api key (xi-api-key)")
    if not voice:
        raise ValueError("ElevenLabs voice id is required (it is part of the URL)")
    _check_model(model)
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(
            f"ElevenLabs output_format {output_format!r} cannot be played into a call without "
            f"a decoder; use one of {', '.join(OUTPUT_FORMATS)}")
    if type(inactivity_timeout) is not int or not 1 <= inactivity_timeout <= MAX_INACTIVITY_TIMEOUT:
        raise ValueError(f"ElevenLabs inactivity_timeout must be 1-{MAX_INACTIVITY_TIMEOUT} s, "
                         f"got {inactivity_timeout!r}")
    if apply_text_normalization is not None and apply_text_normalization not in _NORMALIZATION:
        raise ValueError(f"apply_text_normalization must be one of {_NORMALIZATION}")
    url = with_query(endpoint.replace("{voice_id}", quote(voice, safe="")),
                     model_id=model, output_format=output_format,
                     inactivity_timeout=inactivity_timeout, auto_mode=auto_mode,
                     language_code=language_code or None,
                     apply_text_normalization=apply_text_normalization or None,
                     enable_logging=enable_logging, sync_alignment=sync_alignment)
    return url, {"xi-api-key": api_key}


def split_text(text: str, limit: int = MAX_TEXT_CHARS) -> list[str]:
    """Text message pieces of at most ``limit`` characters, at sentence boundaries where
    possible, each ending with one space ("Should end with a single space", asyncapi [C]):
    the server concatenates a context's text."""
    if limit < 2:
        raise ValueError("limit must be at least 2")
    return [piece + " " for piece in pack_sentences(text, limit - 1)]


@dataclass(slots=True)
class _Context:
    state: str = "open"  # open -> closing (close_context sent) -> forgotten at isFinal
    cancelled: bool = False
    flushed: bool = False  # a flush was sent since the last text
    chunks: int = 0
    carry: bytes = b""  # odd trailing byte of 16-bit PCM (§9.1)
    audio_s: float = 0.0  # seconds of audio received for the context


class ElevenLabsProtocol(ProtocolDefaults):
    """One ElevenLabs multi-context socket, seen from the gateway (the client).

    Outbound builders return JSON strings and update the local context state; they raise
    :class:`RuntimeError` for a message the state does not allow (a 6th context, text after
    ``close_context``, an unknown context) and :class:`ValueError` for bad input.
    Inbound: :meth:`receive` turns one text frame into events; a frame that cannot be
    understood raises :class:`ProviderProtocolError` and changes nothing.
    """

    provider = "elevenlabs"

    def __init__(self, *, output_format: str = "ulaw_8000",
                 voice_settings: dict[str, Any] | None = None,
                 generation_config: dict[str, Any] | None = None,
                 max_contexts: int = MAX_CONTEXTS, max_text_chars: int = MAX_TEXT_CHARS,
                 word_timestamps: bool = False) -> None:
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"ElevenLabs output_format {output_format!r}: use one of "
                             f"{', '.join(OUTPUT_FORMATS)}")
        settings = dict(voice_settings or {})
        unknown = set(settings) - set(_VOICE_SETTINGS)
        if unknown:
            raise ValueError(f"unknown ElevenLabs voice_settings {sorted(unknown)} (known: "
                             f"{', '.join(_VOICE_SETTINGS)})")
        speed = settings.get("speed")
        if speed is not None and not 0.7 <= float(speed) <= 1.2:
            raise ValueError(f"ElevenLabs speed must be 0.7-1.2, got {speed}")  # asyncapi [C]
        for key in ("stability", "similarity_boost", "style"):
            value = settings.get(key)
            if value is not None and not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"ElevenLabs {key} must be 0-1, got {value}")
        schedule = (generation_config or {}).get("chunk_length_schedule")
        if schedule is not None and (type(schedule) is not list or not all(
                type(v) in (int, float) and 50 <= v <= 500 for v in schedule)):
            raise ValueError("chunk_length_schedule must be a list of numbers 50-500 (asyncapi)")
        self.output_format = output_format
        self.encoding, self.sample_rate = OUTPUT_FORMATS[output_format]
        self.voice_settings = settings
        self.generation_config = dict(generation_config or {})
        self.max_contexts = max_contexts
        self.max_text_chars = max_text_chars
        self.word_timestamps = word_timestamps  # read alignment into ProviderWords
        self.failed = False  # a fatal error frame: the server closes the socket (§6 [O])
        self._contexts: dict[str, _Context] = {}
        self._finished: OrderedDict[str, bool] = OrderedDict()  # id -> cancelled

    # ---- state -----------------------------------------------------------------

    def is_clean(self) -> bool:
        """No context open or draining: no audio can still come (late audio of cancelled
        contexts that already had their ``isFinal`` cannot come either)."""
        return not self._contexts

    def is_cancelled(self, context_id: str) -> bool:
        ctx = self._contexts.get(context_id)
        if ctx is not None:
            return ctx.cancelled
        return self._finished.get(context_id, False)

    def state(self, context_id: str) -> str | None:
        """``open`` or ``closing``; None when unknown or over."""
        ctx = self._contexts.get(context_id)
        return ctx.state if ctx is not None else None

    @property
    def open_contexts(self) -> int:
        """Contexts the server still holds (no ``isFinal`` yet): at most 5 (§6)."""
        return len(self._contexts)

    def can_open(self) -> bool:
        return self.open_contexts < self.max_contexts

    def _get(self, context_id: str, action: str) -> _Context:
        ctx = self._contexts.get(context_id)
        if ctx is None:
            raise RuntimeError(f"{action} for context {context_id!r}, which is not open on this "
                               f"socket (open: {', '.join(self._contexts) or 'none'})")
        return ctx

    def _finish(self, context_id: str) -> None:
        ctx = self._contexts.pop(context_id, None)
        if ctx is None:
            return
        remember(self._finished, context_id, ctx.cancelled, limit=64)

    # ---- outbound --------------------------------------------------------------

    def begin(self, turn_id: str, voice: str | None = None, *, encoding: str | None = None,
              sample_rate: int | None = None) -> list[str]:
        """Open a context: ``{"text":" ","context_id",voice_settings?,generation_config?}``
        (asyncapi InitialiseContext [C]); text may follow at once (messages are handled in
        order [I]). Voice and audio format are the socket's (its URL)."""
        self.fixed_per_socket(voice, encoding, sample_rate)
        if self.failed:
            raise RuntimeError("the ElevenLabs socket had a fatal error: replace it")
        if not self.can_open():
            raise RuntimeError(
                f"ElevenLabs allows {self.max_contexts} contexts per connection and "
                f"{self.open_contexts} are open: close finished turns (close_context) or use "
                "another socket (§6: max_active_conversations closes the socket with 1008)")
        if turn_id in self._contexts:
            raise RuntimeError(f"context {turn_id!r} is already open on this socket")
        body: dict[str, Any] = {"text": " ", "context_id": turn_id}
        if self.voice_settings:
            body["voice_settings"] = self.voice_settings
        if self.generation_config:
            body["generation_config"] = self.generation_config
        self._finished.pop(turn_id, None)
        self._contexts[turn_id] = _Context()
        return [json.dumps(body)]

    def send(self, turn_id: str, text: str, *, flush: bool = True) -> list[str]:
        """Text for the context, split by :func:`split_text`; the last piece carries
        ``flush: true`` when ``flush`` (SendTextMulti [C]) so generation starts now."""
        ctx = self._get(turn_id, "text")
        if ctx.state != "open":
            raise RuntimeError(f"text for context {turn_id!r} after close_context")
        pieces = split_text(text, self.max_text_chars)
        if not pieces:
            return []
        cid = json.dumps(turn_id)
        out = ['{"text": ' + json.dumps(p) + ', "context_id": ' + cid + "}" for p in pieces]
        if flush:
            out[-1] = out[-1][:-1] + ', "flush": true}'
        ctx.flushed = flush
        return out

    def flush_message(self, context_id: str) -> str:
        """``{"context_id","flush":true}`` (FlushContextClient [C])."""
        ctx = self._get(context_id, "flush")
        if ctx.state != "open":
            raise RuntimeError(f"flush for context {context_id!r} after close_context")
        ctx.flushed = True
        return json.dumps({"context_id": context_id, "flush": True})

    def close_message(self, context_id: str) -> str:
        """``close_context`` at the end of a turn. Flushed text is still generated, then
        ``isFinal`` ends the turn (asyncapi CloseContextClient [C]; pipecat closes every
        context on completion too, since leaked contexts hit the 5-context cap [T/O])."""
        ctx = self._get(context_id, "close_context")
        if ctx.state == "closing":
            raise RuntimeError(f"close_context for context {context_id!r} sent twice")
        ctx.state = "closing"
        return json.dumps({"context_id": context_id, "close_context": True})

    def cancel_message(self, context_id: str) -> str | None:
        """Barge-in: ``close_context`` and mark the context cancelled (§9.3). What was
        already flushed keeps coming and must be dropped (:meth:`is_cancelled`). None when
        the close was sent already or the context is over (it is only marked)."""
        ctx = self._contexts.get(context_id)
        if ctx is None:
            if context_id in self._finished:
                self._finished[context_id] = True
                return None
            raise RuntimeError(f"cancel for unknown context {context_id!r}")
        ctx.cancelled = True
        if ctx.state == "closing":
            return None
        return self.close_message(context_id)

    def finish(self, context_id: str) -> list[str]:
        return [self.close_message(context_id)]

    def cancel(self, context_id: str) -> list[str]:
        message = self.cancel_message(context_id)
        return [message] if message else []

    def keepalive(self, context_id: str) -> list[str]:
        message = self.keepalive_message(context_id)
        return [message] if message else []

    def keepalive_message(self, context_id: str) -> str | None:
        """``{"text":"","context_id"}`` resets the inactivity timeout (KeepContextAlive
        [C]); only for an open, initialised context (else None, [T pipecat])."""
        ctx = self._contexts.get(context_id)
        if ctx is None or ctx.state != "open":
            return None
        return json.dumps({"text": "", "context_id": context_id})

    @staticmethod
    def close_socket_message() -> str:
        """``close_socket``: close every context (flushed ones finish) and the socket [C]."""
        return json.dumps({"close_socket": True})

    # ---- inbound ---------------------------------------------------------------

    def receive(self, text: str) -> list[ProviderEvent]:
        """Parse one server text frame (AudioOutputMulti, FinalOutputMulti, error)."""
        message = parse_object(text, "ElevenLabs frame")
        context_id = message.get("contextId", message.get("context_id"))
        if context_id is not None and type(context_id) is not str:
            raise ProviderProtocolError("bad_frame", f"contextId is not a string: {_preview(text)}")
        if "error" in message or ("message" in message and "code" in message):
            return [self._error(message, context_id)]
        audio = message.get("audio")
        events: list[ProviderEvent] = []
        if audio:  # null/"" with alignment only, or on the final frame: nothing to play
            if type(audio) is not str:
                raise ProviderProtocolError("bad_frame", f"audio is not a string: {_preview(text)}")
            cid = self._context_of(context_id, text)
            ctx = self._contexts.get(cid)
            chunk_start_s = ctx.audio_s if ctx is not None else 0.0
            events += self._audio(cid, audio)
            if self.word_timestamps and ctx is not None and not ctx.cancelled:
                alignment = message.get("alignment") or message.get("normalizedAlignment")
                words = _words_of(alignment, chunk_start_s)
                if words:
                    events.append(ProviderWords(cid, words))
        if message.get("isFinal") is True:
            final = context_id if context_id is not None else self._only_context()
            if final is not None and final in self._contexts:
                self._finish(final)
                events.append(ProviderDone(final))
            return events
        if not audio and "isFinal" not in message and "alignment" not in message \
                and "normalizedAlignment" not in message:
            raise ProviderProtocolError(
                "bad_frame", "ElevenLabs frame has none of audio, isFinal, alignment, error: "
                f"{_preview(text)}")
        return events

    def _only_context(self) -> str | None:
        return next(iter(self._contexts)) if len(self._contexts) == 1 else None

    def _context_of(self, context_id: str | None, text: str) -> str:
        if context_id is not None:
            return context_id
        only = self._only_context()
        if only is None:
            raise ProviderProtocolError(
                "missing_field", f"ElevenLabs audio without contextId while "
                f"{len(self._contexts)} contexts are open: {_preview(text)}")
        return only

    def _audio(self, context_id: str, audio: str) -> list[ProviderEvent]:
        data = decode_base64(audio, f"ElevenLabs audio for context {context_id!r}")
        if data[:4] == b"RIFF":  # defensive (§9.1 [I]): raw formats carry no header
            data = strip_wav_header(data)
        ctx = self._contexts.get(context_id)
        if ctx is None:
            if context_id not in self._finished:
                raise ProviderProtocolError(
                    "unknown_context", f"ElevenLabs audio for context {context_id!r}, never "
                    f"opened on this socket (open: {', '.join(self._contexts) or 'none'})")
        else:
            ctx.chunks += 1
            if self.encoding == "pcm_s16le":
                data, ctx.carry = whole_samples(ctx.carry, data)
            ctx.audio_s += len(data) / (self.sample_rate * (2 if self.encoding == "pcm_s16le"
                                                             else 1))
        if not data:
            return []
        return [ProviderAudio(context_id, data, self.encoding, self.sample_rate)]

    def _error(self, message: dict, context_id: str | None) -> ProviderError:
        code = str(message.get("error") or "")
        text = str(message.get("message") or code or "error frame without a message")
        kind = _ERROR_KINDS.get(code)
        if kind is None:
            probe = (code + " " + text).lower()
            kind = ("idle_timeout" if "timeout" in probe else
                    "too_many_contexts" if "contexts" in probe else
                    "auth" if "api key" in probe or "auth" in probe else
                    "rate_limited" if "rate" in probe or "concurren" in probe else
                    "synthesis_failed" if "synthes" in probe else "provider_error")
        # Every known error frame is followed by a close with 1008 (§6 [O]): the socket
        # is done. A context id, if any, names the context the error concerns [I].
        self.failed = True
        if context_id is not None and context_id not in self._contexts:
            context_id = None
        close = message.get("code")
        return ProviderError(context_id, kind, f"ElevenLabs {code or 'error'}: {text}"
                             + (f" (close {close})" if type(close) is int else ""), fatal=True)

    def drain(self, context_id: str) -> list[ProviderEvent]:
        """Give up waiting for a context's ``isFinal``: forget it and report it done."""
        if context_id not in self._contexts:
            return []
        self._finish(context_id)
        return [ProviderDone(context_id)]

    def reset(self) -> None:
        """The socket was replaced: contexts do not survive it."""
        for context_id in list(self._contexts):
            self._finish(context_id)


def _words_of(alignment: Any, base_s: float) -> tuple[WordTiming, ...]:
    """Words from one chunk's character alignment (``chars``, ``charStartTimesMs``,
    ``charDurationsMs``: ms from the chunk's start), in seconds from the start of the
    context's audio (``base_s``: the audio before this chunk). Bounded: at most
    :data:`MAX_ALIGNMENT_CHARS` characters and :data:`MAX_WORDS_PER_MESSAGE` words, each
    cut to ``MAX_WORD_CHARS``; characters that do not make sense are skipped."""
    if type(alignment) is not dict:
        return ()
    chars, starts = alignment.get("chars"), alignment.get("charStartTimesMs")
    durations = alignment.get("charDurationsMs", alignment.get("charsDurationsMs"))
    if not (type(chars) is list and type(starts) is list and type(durations) is list):
        return ()
    words: list[WordTiming] = []
    letters: list[str] = []
    first = last = 0.0

    def end_word() -> None:
        if letters and len(words) < MAX_WORDS_PER_MESSAGE:
            text = "".join(letters)[:MAX_WORD_CHARS]
            words.append(WordTiming(text, base_s + first, base_s + last))
        letters.clear()

    for char, start_ms, duration_ms in zip(chars[:MAX_ALIGNMENT_CHARS], starts, durations):
        if type(char) is not str or not 0 < len(char) <= 4:
            continue
        if char.isspace():  # a word ends here, whatever its time says
            end_word()
            continue
        if not (is_seconds(start_ms) and is_seconds(duration_ms)):
            continue  # (ms under a day's worth of seconds: a generous bound still)
        if not letters:
            first = start_ms / 1000
        if len(letters) < MAX_WORD_CHARS:
            letters.append(char)
        last = max(first, (start_ms + duration_ms) / 1000)
    end_word()
    return tuple(words)
