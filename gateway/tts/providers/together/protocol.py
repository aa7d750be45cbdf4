"""Together AI realtime TTS WebSocket, client side, as a sans-I/O protocol.

Spec: docs/protocols/tts-providers.md §3 (tags [C] confirmed, [T] third-party,
[O] observed, [I] inferred) and the Together docs copy (seed 002)::

    gateway -> Together   input_text_buffer.append {text, context_id}
                          input_text_buffer.commit / .clear {context_id}
                          context.cancel {context_id}, tts_session.updated {session}
    Together -> gateway   session.created (or tts.failed first), input_text.received,
                          conversation.item.audio_output.delta {item_id, delta(b64)},
                          conversation.item.audio_output.done {item_id},
                          conversation.item.word_timestamps {item_id, words,
                              start_seconds, end_seconds}  (with ``alignment=word``),
                          conversation.item.tts.failed {error}, context.cancelled

:class:`TogetherProtocol` builds the JSON text frames to send and turns received text
frames into :mod:`gateway.tts.providers.events`. It does no I/O.

Choices made where the docs are silent (all [I]):

* How many items (``audio_output.done`` events) a commit makes is not documented: one,
  or one per sentence (§3.5: with ``segment=sentence`` a turn "probably" makes several;
  nothing says ``segment=never`` makes one). So a segment goes out one sentence per
  commit (:meth:`TogetherProtocol.send`; a sentence longer than
  ``max_partial_length``, which is asked for as :data:`MAX_TEXT_CHARS`, is cut at a
  space within it), and either reading answers each commit with exactly one item. Done
  tracking counts commits against ``done`` events per context. Should the server still
  cut a commit into more items than that, audio of a new item for a context whose items
  were all done is refused as a protocol error (``audio_after_done``: logged, counted),
  never dropped in silence. ``segment=never`` is still asked for, so that nothing is
  synthesized before its commit.
* Server events may or may not echo ``context_id`` (§3.3, open question §10). When one
  is missing, the event is attributed to the item's known context, else to the oldest
  context still expecting audio (the server is assumed to process in order).
* The 100-contexts limit (§3.5) is treated as a per-connection *lifetime* limit (the
  docs do not say whether finished contexts are freed): :attr:`contexts_left` reaches 0
  and the pool must replace the socket.
* No per-message text limit is documented; :data:`MAX_TEXT_CHARS` is a conservative cap
  and :func:`split_text` cuts long text at sentence boundaries within it.
* Word timings: ``alignment=word`` in the URL makes the server send
  ``conversation.item.word_timestamps`` (§3.1, §3.3 [C docs.together.ai "WebSocket API"]).
  The docs do not say what the times count from; each item is one synthesis of its own,
  so they are read as seconds from the start of that item's audio, and moved by the
  audio the context had when the item's first delta came (or, before any, has now).
* No keepalive message is documented (§3.5 "Timeouts and keepalive: undocumented"), so
  none is offered: on an idle close, reconnect.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Literal

from telcodecs import strip_wav_header, whole_samples

from gateway.tts.providers.common import (decode_base64, parallel_word_timings, parse_typed_frame,
                                          remember, with_query)
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
from gateway.tts.text import pack_sentences, split_sentences

__all__ = [
    "DEFAULT_ENDPOINT",
    "ERROR_KINDS",
    "MAX_CONTEXTS",
    "MAX_TEXT_CHARS",
    "TogetherProtocol",
    "connect_params",
    "split_text",
]

#: §3.1 [C]
DEFAULT_ENDPOINT = "wss://api.together.ai/v1/audio/speech/websocket"
DEFAULT_MODEL = "hexgrad/Kokoro-82M"
DEFAULT_VOICE = "af_alloy"
#: §3.4 [C]: WS audio is raw PCM s16le mono at 24 kHz. Together offers no μ-law (§0, §9).
DEFAULT_SAMPLE_RATE = 24000
#: §3.5 [C] "Maximum 100 contexts per connection."
MAX_CONTEXTS = 100
#: [I] not documented; a conservative cap per append message.
MAX_TEXT_CHARS = 1000

#: Bounded ``ProviderError.kind`` labels.
ERROR_KINDS = frozenset({
    "auth", "model", "voice", "bad_request", "text_too_long", "too_many_contexts",
    "unknown_context", "rate_limit", "server", "provider",
})

_LIVE_FORMATS = ("pcm",)  # §9: never MP3/WAV/opus on the live path
ContextState = Literal["open", "closing", "cancelling", "done", "cancelled"]
_REMEMBER_CANCELLED = 256


def connect_params(
    api_key: str,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    model: str = DEFAULT_MODEL,
    voice: str = DEFAULT_VOICE,
    response_format: str = "pcm",
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    speed: float | None = None,
    language: str | None = None,
    segment: str = "never",
    max_partial_length: int | None = MAX_TEXT_CHARS,
    alignment: str | None = None,
) -> tuple[str, dict[str, str]]:
    """The URL and headers to open the socket with (§3.1 [C]).

    The key goes in the ``Authorization`` header, never in the URL (URLs end up in logs).
    ``response_format`` must be ``pcm``: compressed or WAV formats do not belong on a live
    path (§9). ``sample_rate`` other than 24000 may be ignored by the server (§3.4 [T]):
    verify the rate of what arrives before trusting it.
    """
    if not api_key:
        raise ValueError("Together api_key is empty: set the provider's key (Bearer auth)")
    if response_format not in _LIVE_FORMATS:
        raise ValueError(
            f"response_format {response_format!r}: the live path takes raw 'pcm' only "
            "(mp3/opus/aac/flac/wav need decoding and add latency)"
        )
    if segment not in ("never", "sentence", "immediate"):
        raise ValueError(f"segment {segment!r}: expected never, sentence or immediate")
    if alignment not in (None, "word", "none"):
        raise ValueError(f"alignment {alignment!r}: expected word or none")
    url = with_query(endpoint, model=model, voice=voice, response_format=response_format,
                     sample_rate=int(sample_rate), segment=segment,
                     speed=None if speed is None else float(speed),
                     # §3.1 [C]: locales must be lowercase
                     language=None if language is None else language.lower(),
                     max_partial_length=(None if max_partial_length is None
                                         else int(max_partial_length)),
                     alignment=alignment)  # word: conversation.item.word_timestamps [C]
    return url, {"Authorization": f"Bearer {api_key}"}


def split_text(text: str, limit: int = MAX_TEXT_CHARS) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` characters, at sentence boundaries
    where possible, else at the last space, else hard. Pieces after the first start with
    a space so that the server's buffer, which concatenates appends, keeps words apart."""
    if limit < 2:
        raise ValueError("limit must be at least 2")
    if len(text) <= limit:
        return [text] if text else []
    pieces = pack_sentences(text, limit - 1)
    return [p if i == 0 else " " + p for i, p in enumerate(pieces)]


def commit_units(text: str, limit: int = MAX_TEXT_CHARS) -> list[str]:
    """The pieces of ``text`` committed one by one: its sentences, a sentence longer than
    ``limit`` cut at its last space within it (:func:`pack_sentences` on one sentence)."""
    return [piece for sentence in split_sentences(text)
            for piece in pack_sentences(sentence, limit)]


class _Context:
    __slots__ = (
        "audio_s",
        "id",
        "items_done",
        "odd",
        "pending_items",
        "segment_ends",
        "sent",
        "state",
        "uncommitted",
    )

    def __init__(self, context_id: str) -> None:
        self.id = context_id
        self.state: ContextState = "open"
        self.uncommitted = False  # text appended since the last commit
        self.pending_items = 0  # commits whose audio_output.done has not come yet
        self.items_done = 0  # commits whose audio_output.done came
        self.odd = b""  # odd trailing byte of s16le carried to the next delta
        self.sent = False  # the server has heard of this context
        self.segment_ends: list[int] = []  # per segment sent: commits up to its last
        self.audio_s = 0.0  # seconds of audio received for the context


class TogetherProtocol(ProtocolDefaults):
    """One Together TTS socket, seen from the gateway (the WebSocket client).

    Context lifecycle (per ``context_id``)::

        begin -> send* -> finish  -> (done events) -> done
                       \\-> cancel -> context.cancelled -> cancelled

    * :meth:`receive` parses one text frame into a list of events. Audio for a cancelled
      context still arrives (§3.5 [T/O]); it is reported as :class:`ProviderAudio` with
      that context id, and :meth:`is_cancelled` says to drop it (barge-in).
    * :class:`ProviderDone` is emitted once per context, when it was finished and every
      commit's item is done. :meth:`finish` on a context with nothing outstanding ends it
      at once: check :meth:`state` instead of waiting.
    * A non-fatal :class:`ProviderError` with a ``context_id`` ends that context (no
      :class:`ProviderDone` follows) [I: a failed request yields no audio].
    * :meth:`is_clean`: no live context and no pending audio; the socket may return to the
      pool. Late audio of a context cancelled earlier may still arrive after that, so keep
      this protocol object with its socket: :meth:`is_cancelled` still recognises the id
      (the last 256 are remembered). :attr:`failed` is set after a fatal error: replace
      the socket.
    """

    provider = "together"

    def __init__(self, *, voice: str | None = None, sample_rate: int = DEFAULT_SAMPLE_RATE,
                 max_contexts: int = MAX_CONTEXTS, max_text_chars: int = MAX_TEXT_CHARS,
                 word_timestamps: bool = False) -> None:
        self.voice = voice  # the session's (in the socket URL); None: unknown
        self.sample_rate = sample_rate
        self.encoding = "pcm_s16le"
        self.max_contexts = max_contexts
        self.max_text_chars = max_text_chars
        self.session: dict[str, Any] | None = None
        self.ready = False
        self.failed = False
        self._contexts: OrderedDict[str, _Context] = OrderedDict()  # live ones, oldest first
        self._used = 0
        self._cancelled: dict[str, None] = {}  # recent ids, bounded, oldest first
        self._finished: dict[str, None] = {}
        self._item_context: dict[str, str] = {}
        self.word_timestamps = word_timestamps  # read conversation.item.word_timestamps
        # item id -> where its audio starts in its context's audio (bounded, recent items)
        self._item_start: OrderedDict[str, float] = OrderedDict()

    # ---- state -------------------------------------------------------------------

    @property
    def contexts_left(self) -> int:
        """Contexts this socket may still open ([I] lifetime limit, see module doc)."""
        return self.max_contexts - self._used

    def state(self, context_id: str) -> ContextState | None:
        """open, closing, cancelling, done, cancelled, or None if unknown/forgotten."""
        ctx = self._contexts.get(context_id)
        if ctx is not None:
            return ctx.state
        if context_id in self._cancelled:
            return "cancelled"
        return "done" if context_id in self._finished else None

    def is_cancelled(self, context_id: str) -> bool:
        """The caller cancelled this context: drop any audio that still comes for it."""
        ctx = self._contexts.get(context_id)
        if ctx is not None:
            return ctx.state == "cancelling"
        return context_id in self._cancelled

    def _items_completed(self, context_id: str) -> int | None:
        """Commits of the context whose item is done (one per sentence the gateway
        commits: the audio of that many is out); None when the context is not live."""
        ctx = self._contexts.get(context_id)
        return ctx.items_done if ctx is not None else None

    def segments_done(self, context_id: str) -> int | None:
        """Segments (:meth:`send` calls) of the context whose every commit's item
        is done; None when the context is not live."""
        ctx = self._contexts.get(context_id)
        if ctx is None:
            return None
        return sum(1 for end in ctx.segment_ends if end <= ctx.items_done)

    def is_flushed(self, context_id: str) -> bool:
        """Everything appended to the context has been committed."""
        ctx = self._contexts.get(context_id)
        return ctx is None or not ctx.uncommitted

    def is_clean(self) -> bool:
        """No live context, nothing in flight: fit to go back to the pool."""
        return not self._contexts and not self.failed

    @property
    def live_contexts(self) -> list[str]:
        return list(self._contexts)

    # ---- client messages -----------------------------------------------------------

    def begin(self, turn_id: str, voice: str | None = None, *, encoding: str | None = None,
              sample_rate: int | None = None) -> list[str]:
        """Register a new context (no message is needed: contexts are created by their
        first append, §3.5 [C]); a ``tts_session.updated`` for the context if ``voice``
        differs from the session's. The audio format is the socket's."""
        self.fixed_per_socket(None, encoding, sample_rate)
        if self.failed:
            raise RuntimeError("the Together socket had a fatal error: replace it")
        if self._used >= self.max_contexts:
            raise RuntimeError(
                f"this Together socket has used its {self.max_contexts} contexts "
                "(§3.5 limit per connection): open a new socket"
            )
        if turn_id in self._contexts or turn_id in self._cancelled \
                or turn_id in self._finished:
            raise ValueError(f"context {turn_id!r} was already used on this socket: "
                             "start each turn on a fresh id (§9)")
        self._contexts[turn_id] = _Context(turn_id)
        self._used += 1
        if voice and voice != self.voice:
            return [self.update_session(turn_id, voice=voice)]
        return []

    def _live(self, context_id: str, verb: str) -> _Context:
        ctx = self._contexts.get(context_id)
        if ctx is None or ctx.state != "open":
            state = ctx.state if ctx else self.state(context_id) or "unknown"
            raise RuntimeError(f"{verb} on context {context_id!r} which is {state}: "
                               "begin it first, and do not reuse a finished one")
        return ctx

    def append(self, context_id: str, text: str) -> list[str]:
        """``input_text_buffer.append`` messages for ``text`` (split within the limit)."""
        ctx = self._live(context_id, "append")
        if not text:
            return []
        cid = json.dumps(context_id)
        out = [
            '{"type":"input_text_buffer.append","text":' + json.dumps(piece)
            + ',"context_id":' + cid + "}"
            for piece in split_text(text, self.max_text_chars)
        ]
        ctx.uncommitted = True
        ctx.sent = True
        return out

    def commit(self, context_id: str) -> list[str]:
        """``input_text_buffer.commit``: synthesize what was appended. Nothing to send
        (empty list) when nothing was appended since the last commit [I: an empty commit
        produces no item, so it would never be matched by a done]."""
        ctx = self._live(context_id, "commit")
        if not ctx.uncommitted:
            return []
        ctx.uncommitted = False
        ctx.pending_items += 1
        return ['{"type":"input_text_buffer.commit","context_id":' + json.dumps(context_id) + "}"]

    def send(self, turn_id: str, text: str) -> list[str]:
        """Append and commit one text segment, one sentence per commit (see the module
        doc: each commit then makes one item whether the server makes an item per commit
        or per sentence)."""
        ctx = self._live(turn_id, "send")
        out: list[str] = []
        for unit in commit_units(text, self.max_text_chars):
            out += self.append(turn_id, unit) + self.commit(turn_id)
        ctx.segment_ends.append(ctx.items_done + ctx.pending_items)
        return out

    def finish(self, context_id: str) -> list[str]:
        """End of the turn: commit the rest; the context is done when its items are."""
        out = self.commit(context_id)
        ctx = self._contexts[context_id]
        ctx.state = "closing"
        if ctx.pending_items == 0:
            self._retire(ctx, "done")
        return out

    def clear(self, context_id: str) -> str:
        """``input_text_buffer.clear``: drop buffered text, but not text already being
        synthesized (§3.2 [C]). Prefer :meth:`cancel` for barge-in."""
        ctx = self._live(context_id, "clear")
        ctx.uncommitted = False
        return '{"type":"input_text_buffer.clear","context_id":' + json.dumps(context_id) + "}"

    def cancel(self, context_id: str) -> list[str]:
        """Barge-in: ``context.cancel`` (§3.5 [C]). Late audio may still come; it is
        marked cancelled. Empty list if the context is already over."""
        ctx = self._contexts.get(context_id)
        if ctx is None or ctx.state == "cancelling":
            if ctx is None and self.state(context_id) is None:
                raise RuntimeError(f"cancel of unknown context {context_id!r}")
            return []
        ctx.uncommitted = False
        if not ctx.sent:  # the server never saw it: nothing to cancel upstream
            self._retire(ctx, "cancelled")
            return []
        ctx.state = "cancelling"
        remember(self._cancelled, context_id, limit=_REMEMBER_CANCELLED)
        return ['{"type":"context.cancel","context_id":' + json.dumps(context_id) + "}"]

    def update_session(self, context_id: str | None = None, **session: Any) -> str:
        """``tts_session.updated`` (§3.2 [C]); without ``context_id`` all contexts change.
        Changing ``response_format``/``sample_rate`` here is refused: the audio format is
        fixed for the socket's life in this adapter."""
        for key in ("response_format", "sample_rate"):
            if key in session:
                raise ValueError(f"{key} is fixed at connect time; open a new socket")
        message: dict[str, Any] = {"type": "tts_session.updated", "session": session}
        if context_id is not None:
            message["context_id"] = context_id
        return json.dumps(message, separators=(",", ":"))

    # ---- server messages -----------------------------------------------------------

    def receive(self, text: str) -> list[ProviderEvent]:
        """Parse one server text frame. Raises ProviderProtocolError on garbage."""
        message = parse_typed_frame(text, "Together", kind="unknown_event")
        handler = self._HANDLERS.get(message["type"])
        if handler is None:
            # [I] forward compatibility: new event types are ignored, not fatal.
            return []
        return handler(self, message)

    def _context_for(self, message: dict[str, Any], item_id: str | None) -> str:
        cid = message.get("context_id")
        if cid is not None:
            if type(cid) is not str:
                raise ProviderProtocolError("missing_field", f"context_id is not a string: {cid!r}")
            return cid
        if item_id is not None and item_id in self._item_context:
            return self._item_context[item_id]
        # [I] no context_id echoed: the oldest context still expecting audio.
        for ctx in self._contexts.values():
            if ctx.pending_items or ctx.state == "cancelling":
                return ctx.id
        for ctx in self._contexts.values():
            return ctx.id
        return "default"

    @staticmethod
    def _item_id(message: dict[str, Any], kind: str) -> str:
        item_id = message.get("item_id")
        if type(item_id) is not str:
            raise ProviderProtocolError("missing_field", f"{kind} has no item_id string")
        return item_id

    def _on_session(self, message: dict[str, Any]) -> list[ProviderEvent]:
        session = message.get("session")
        if type(session) is dict:
            self.session = session
        if self.ready:
            return []
        self.ready = True
        return [ProviderReady()]

    def _on_delta(self, message: dict[str, Any]) -> list[ProviderEvent]:
        item_id = self._item_id(message, "audio_output.delta")
        delta = message.get("delta")
        if type(delta) is not str:
            raise ProviderProtocolError("missing_field", "audio_output.delta has no delta string")
        data = decode_base64(delta, "audio_output.delta", "bad_payload")
        context_id = self._context_for(message, item_id)
        if item_id not in self._item_context:
            if len(self._item_context) >= _REMEMBER_CANCELLED:  # items never done
                del self._item_context[next(iter(self._item_context))]
            self._item_context[item_id] = context_id
            if context_id not in self._contexts and context_id in self._finished:
                # its later deltas are dropped as late audio (the item is known now)
                raise ProviderProtocolError(
                    "audio_after_done",
                    f"Together sent a new audio item {_preview(item_id)} for context "
                    f"{_preview(context_id)} after the items of all its commits were done: "
                    "the server made more items than commits; that audio is lost")
        if data[:4] == b"RIFF":  # §3.4: older docs said WAV; strip defensively [I]
            data = strip_wav_header(data)
        ctx = self._contexts.get(context_id)
        if ctx is not None:
            if item_id not in self._item_start:
                remember(self._item_start, item_id, ctx.audio_s, limit=64)
            data, ctx.odd = whole_samples(ctx.odd, data)
            ctx.audio_s += len(data) / (2 * self.sample_rate)
        if not data:
            return []
        return [ProviderAudio(context_id, data, self.encoding, self.sample_rate)]

    def _on_words(self, message: dict[str, Any]) -> list[ProviderEvent]:
        """``{"item_id","words","start_seconds","end_seconds"}``: bounded, malformed
        entries skipped; nothing for a cut or finished context (its audio is gone)."""
        item_id = message.get("item_id")
        if not self.word_timestamps or type(item_id) is not str:
            return []
        cid = message.get("context_id")
        context_id = cid if type(cid) is str else self._context_for({}, item_id)
        ctx = self._contexts.get(context_id)
        if ctx is None or ctx.state == "cancelling":
            return []
        base_s = self._item_start.get(item_id, ctx.audio_s)
        words = parallel_word_timings(message.get("words"), message.get("start_seconds"),
                                      message.get("end_seconds"), base_s)
        return [ProviderWords(context_id, words)] if words else []

    def _on_done(self, message: dict[str, Any]) -> list[ProviderEvent]:
        item_id = self._item_id(message, "audio_output.done")
        context_id = self._context_for(message, item_id)
        self._item_context.pop(item_id, None)
        ctx = self._contexts.get(context_id)
        if ctx is None:
            return []  # late done for a cancelled/finished context
        ctx.odd = b""
        if ctx.pending_items:
            ctx.pending_items -= 1
            ctx.items_done += 1
        if ctx.state == "closing" and ctx.pending_items == 0:
            self._retire(ctx, "done")
            return [ProviderDone(context_id)]
        return []

    def _on_cancelled(self, message: dict[str, Any]) -> list[ProviderEvent]:
        cid = message.get("context_id", "default")
        if type(cid) is not str:
            raise ProviderProtocolError("missing_field",
                                        "context.cancelled has no context_id string")
        ctx = self._contexts.get(cid)
        if ctx is not None:
            self._retire(ctx, "cancelled")
        return []

    def _on_failed(self, message: dict[str, Any]) -> list[ProviderEvent]:
        error = message.get("error")
        if type(error) is not dict:
            error = {"message": str(error) if error is not None else ""}
        code = str(error.get("code") or "")
        text = str(error.get("message") or code or "tts.failed without a message")
        kind = _classify(code, text)
        cid = message.get("context_id")
        cid = cid if type(cid) is str else None
        # Fatal: auth and model are per-socket settings, and tts.failed before
        # session.created means the session never came up (§3.3 [C PR #252]; a voice
        # that does not fit the model fails this way). A rejected voice in a later
        # tts_session.updated leaves the session as it was [I]: not fatal.
        fatal = kind in ("auth", "model") or not self.ready
        if message.get("type") == "error":
            fatal = True  # §3.3 [T] pipecat treats a bare "error" as fatal
        if fatal:
            self.failed = True
        elif cid is not None and cid in self._contexts:
            # [I] a failed request produces no audio: the context is over.
            ctx = self._contexts[cid]
            self._retire(ctx, "cancelled" if ctx.state == "cancelling" else "done")
        detail = f"Together: {text}" + (f" ({code})" if code else "")
        return [ProviderError(cid, kind, detail, fatal)]

    def _retire(self, ctx: _Context, final: ContextState) -> None:
        ctx.state = final
        del self._contexts[ctx.id]
        if final == "cancelled":
            remember(self._cancelled, ctx.id, limit=_REMEMBER_CANCELLED)
        else:
            remember(self._finished, ctx.id, limit=_REMEMBER_CANCELLED)
        if final == "done":
            for item in [i for i, c in self._item_context.items() if c == ctx.id]:
                del self._item_context[item]

    def _ignore(self, message: dict[str, Any]) -> list[ProviderEvent]:
        return []

    _HANDLERS = {
        "session.created": _on_session,
        "session.updated": _on_session,
        "conversation.item.audio_output.delta": _on_delta,
        "conversation.item.audio_output.done": _on_done,
        "conversation.item.tts.failed": _on_failed,
        "error": _on_failed,
        "context.cancelled": _on_cancelled,
        "conversation.item.input_text.received": _ignore,
        "conversation.item.word_timestamps": _on_words,
    }


def _classify(code: str, message: str) -> str:
    """Map an error code/message to a bounded kind label."""
    c = code.lower()
    m = message.lower()
    if c in ("invalid_api_key", "missing_api_key") or "api key" in m or "unauthor" in m:
        return "auth"
    if c == "model_not_available" or ("model" in m and "not available" in m and "voice" not in m):
        return "model"
    if "voice" in c or ("voice" in m and "not available" in m):
        return "voice"
    if c in ERROR_KINDS:
        return c
    if "rate" in c or "too many requests" in m or "429" in c:
        return "rate_limit"
    if "too long" in m:
        return "text_too_long"
    if c.startswith("invalid") or "invalid" in m:
        return "bad_request"
    if c in ("server_error", "internal_error") or "internal" in m:
        return "server"
    return "provider"
