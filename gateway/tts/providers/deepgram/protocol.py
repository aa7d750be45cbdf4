"""Deepgram Aura streaming TTS (``/v1/speak`` WebSocket), client side, as a sans-I/O protocol.

Spec: docs/protocols/tts-providers.md §8 and §9 (tags: [C] the provider's docs or
official SDK, [T] third-party code, [O] observed in issues, [I] inferred here). Also used:
Deepgram's docs pages "Flush" (``/docs/tts-ws-flush``), "Clear" (``/docs/tts-ws-clear``),
"Close" (``/reference/tts-ws-close``); the official ``deepgram-python-sdk``
``clients/speak/v1/websocket`` ("SDK"); pipecat ``services/deepgram/tts.py`` and livekit
``livekit-plugins-deepgram/.../tts.py``.

The audio format, voice and model are fixed for the socket by its URL
(``/v1/speak?model=aura-2-thalia-en&encoding=mulaw&sample_rate=8000``). Control messages
are JSON text frames; **audio comes as binary frames** of raw samples with no id at all::

    gateway -> Deepgram  {"type":"Speak","text":"..."}  {"type":"Flush"}
                         {"type":"Clear"}               {"type":"Close"}
    Deepgram -> gateway  <binary audio>  {"type":"Metadata",..}
                         {"type":"Flushed","sequence_id":0}  {"type":"Cleared","sequence_id":0}
                         {"type":"Warning","description"|"warn_msg",..}  {"type":"Error",..}

The whole socket is one stream, so a turn is a stretch of it: :meth:`DeepgramProtocol.speak`
per sentence, :meth:`finish` at the end (a final ``Flush``); the turn is over when every
``Flush`` it sent is answered by ``Flushed``. Audio belongs to the oldest turn that still
waits for a ``Flushed`` or ``Cleared`` (the server answers in order [I]). Barge-in is
``Clear`` (the server drops its text and audio buffers and "will stop sending new audio
chunks as soon as possible", Clear page [C]): audio until ``Cleared`` still belongs to the
cut turn and is flagged by :meth:`is_cancelled`; audio after it is the next turn's.

Decisions where the sources are silent:

* **Flush per sentence, within the budget.** "Flush forces the generation of audio from
  Deepgram's internal text buffer" and is needed "whenever the LLM finishes a response";
  at most 20 Flush per 60 s, then a Warning and no flush (Flush page [C]). livekit flushes
  after every segment [T]; pipecat only at the end of a response [T]. Here each sentence is
  flushed (lowest first-audio latency) while fewer than :data:`FLUSH_LIMIT` -
  :data:`FLUSH_RESERVE` flushes were sent in the last 60 s; the end of a turn is always
  flushed. A Warning about the flush limit fails the waiting turn and marks the socket for
  replacement (its text may stay buffered server side and leak into a later turn) [I].
* A ``Clear`` drops flushes not yet answered: no ``Flushed`` is expected for them [I].
* Fatal errors are a close frame with a code and a reason (§8 [C]); the SDK also parses an
  ``Error`` JSON message [C SDK]: it is treated as fatal for the socket.
* ``Close`` "will close the websocket connection immediately" (Close page [C]; §8 says it
  flushes first). Pooled sockets are closed with a WebSocket close frame instead.
* :data:`MAX_TEXT_CHARS` per Speak [I: 2000 is the REST limit; no WS limit is documented].
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from telcodecs import strip_wav_header, whole_samples

from gateway.tts.providers.common import choose_g711_or_pcm, parse_typed_frame, remember, with_query
from gateway.tts.providers.base import ProtocolDefaults
from gateway.tts.providers.events import (
    ProviderAudio,
    ProviderDone,
    ProviderError,
    ProviderEvent,
    ProviderProtocolError,
)
from gateway.tts.text import pack_sentences

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_MODEL",
    "ENCODINGS",
    "FLUSH_LIMIT",
    "FLUSH_RESERVE",
    "FLUSH_WINDOW_S",
    "MAX_TEXT_CHARS",
    "DeepgramProtocol",
    "choose_format",
    "connect_params",
    "split_text",
]

#: §8 [C]; an EU host ``api.eu.deepgram.com`` is listed by third parties [T].
DEFAULT_ENDPOINT = "wss://api.deepgram.com/v1/speak"
DEFAULT_MODEL = "aura-2-thalia-en"
#: Streaming supports only these (§8 [T pipecat validates exactly these]).
ENCODINGS = {"mulaw": "mulaw", "alaw": "alaw", "linear16": "pcm_s16le"}
SAMPLE_RATES = (8000, 16000, 24000, 44100, 48000)  # §8 [C]
#: Flush page [C]: "The maximum number of times you can send the Flush message is 20
#: times every 60 seconds."
FLUSH_LIMIT = 20
FLUSH_WINDOW_S = 60.0
#: Flushes kept for the ends of turns; sentence flushes stop earlier [I].
FLUSH_RESERVE = 5
#: [I] see the module doc.
MAX_TEXT_CHARS = 2000


def choose_format(carrier_encoding: str, carrier_rate: int) -> tuple[str, int]:
    """``(encoding, sample_rate)`` for the URL: ``mulaw``/``alaw`` at 8 kHz for G.711
    carriers, passed through untouched (§9.1), else ``linear16`` at the carrier's rate if
    offered, else the next higher offered rate."""
    return choose_g711_or_pcm(carrier_encoding, carrier_rate, SAMPLE_RATES, pcm="linear16",
                              mulaw="mulaw", alaw="alaw")


def _check_format(encoding: str, sample_rate: int) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"Deepgram streaming encoding {encoding!r}: use one of "
                         f"{', '.join(ENCODINGS)} (§8: mp3/opus are not streamed)")
    if sample_rate not in SAMPLE_RATES:
        raise ValueError(f"Deepgram sample_rate {sample_rate}: use one of {SAMPLE_RATES}")
    if encoding != "linear16" and sample_rate != 8000:
        raise ValueError(f"{encoding} is telephony audio: use sample_rate 8000")


def connect_params(api_key: str, *, endpoint: str = DEFAULT_ENDPOINT, model: str = DEFAULT_MODEL,
                   encoding: str = "mulaw", sample_rate: int = 8000, speed: float | None = None,
                   mip_opt_out: bool | None = None) -> tuple[str, dict[str, str]]:
    """URL and headers (§8 [C]): ``Authorization: Token <key>``; everything else in the
    query. The headers hold the secret: never log them."""
    if not api_key:
        raise ValueError("Deepgram API key is empty: set the provider's api key "
                         "(Authorization: Token)")
    if not model:
        raise ValueError("Deepgram model is required (the Aura voice, e.g. aura-2-thalia-en)")
    _check_format(encoding, sample_rate)
    if speed is not None and not 0.7 <= float(speed) <= 1.5:
        raise ValueError(f"Deepgram speed must be 0.7-1.5, got {speed}")  # §8 [C]
    url = with_query(endpoint, model=model, encoding=encoding, sample_rate=sample_rate,
                     speed=None if speed is None else float(speed), mip_opt_out=mip_opt_out)
    return url, {"Authorization": f"Token {api_key}"}


def split_text(text: str, limit: int = MAX_TEXT_CHARS) -> list[str]:
    """Speak pieces of at most ``limit`` characters at sentence boundaries, each ending in
    a space so that consecutive Speak texts stay apart in the server's buffer [I; livekit
    appends a space to every word it sends, T]."""
    if limit < 2:
        raise ValueError("limit must be at least 2")
    return [piece + " " for piece in pack_sentences(text, limit - 1)]


@dataclass(slots=True)
class _Turn:
    state: str = "open"  # open -> ending (final Flush sent) | cancelling (Clear sent)
    unflushed: bool = False  # Speak sent since the last Flush
    flushes: int = 0  # Flush sent, Flushed not yet seen
    speaks: int = 0  # sentences sent (speak calls)
    flush_marks: deque = field(default_factory=deque)  # sentences sent before each Flush
    segments_done: int = 0  # sentences whose Flush was answered: their audio is out


class DeepgramProtocol(ProtocolDefaults):
    """One Deepgram ``/v1/speak`` socket, seen from the gateway (the client).

    Outbound builders return JSON strings to send as text frames. Inbound: :meth:`receive`
    for text frames, :meth:`receive_binary` for audio frames; both return events and
    raise :class:`ProviderProtocolError` for what cannot be understood. ``clock`` (for the
    flush budget) is injectable for tests.
    """

    provider = "deepgram"

    def __init__(self, *, encoding: str = "mulaw", sample_rate: int = 8000,
                 max_text_chars: int = MAX_TEXT_CHARS, clock: Callable[[], float] = time.monotonic,
                 flush_limit: int = FLUSH_LIMIT, flush_reserve: int = FLUSH_RESERVE,
                 flush_window_s: float = FLUSH_WINDOW_S) -> None:
        _check_format(encoding, sample_rate)
        self.encoding = ENCODINGS[encoding]
        self.sample_rate = sample_rate
        self.max_text_chars = max_text_chars
        self.clock = clock
        self.flush_limit = flush_limit
        self.flush_reserve = flush_reserve
        self.flush_window_s = flush_window_s
        self.failed = False
        self.metadata: dict | None = None
        self.warnings: list[str] = []
        self._turns: OrderedDict[str, _Turn] = OrderedDict()  # in the order they began
        self._flush_owners: deque[str] = deque()  # turn of each unanswered Flush, in order
        self._clear_owners: deque[str] = deque()  # turn of each unanswered Clear, in order
        self._flush_times: deque[float] = deque()
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._carry = b""  # odd trailing byte of linear16 (§9.1)

    # ---- state -----------------------------------------------------------------

    def state(self, context_id: str) -> str | None:
        """``open``, ``ending`` or ``cancelling``; None when unknown or over."""
        turn = self._turns.get(context_id)
        return turn.state if turn is not None else None

    def segments_done(self, context_id: str) -> int | None:
        """Sentences (:meth:`send` calls) of the turn whose audio is out: those sent
        before the last ``Flush`` that was answered; None when the turn is over."""
        turn = self._turns.get(context_id)
        return turn.segments_done if turn is not None else None

    def is_cancelled(self, context_id: str) -> bool:
        turn = self._turns.get(context_id)
        if turn is not None:
            return turn.state == "cancelling"
        return context_id in self._cancelled

    def is_clean(self) -> bool:
        return not self._turns

    @property
    def live_turns(self) -> list[str]:
        return [cid for cid, t in self._turns.items() if t.state != "cancelling"]

    def flushes_in_window(self) -> int:
        now = self.clock()
        while self._flush_times and now - self._flush_times[0] >= self.flush_window_s:
            self._flush_times.popleft()
        return len(self._flush_times)

    # ---- outbound --------------------------------------------------------------

    def begin(self, turn_id: str, voice: str | None = None, *, encoding: str | None = None,
              sample_rate: int | None = None) -> list[str]:
        """Register a turn (no message). One live turn at a time: the socket is one stream
        (§0). Voice and audio format are the socket's (its URL)."""
        self.fixed_per_socket(voice, encoding, sample_rate)
        context_id = turn_id
        if self.failed:
            raise RuntimeError("the Deepgram socket must be replaced (fatal error or lost flush)")
        if (context_id in self._turns or context_id in self._finished
                or context_id in self._cancelled):
            raise RuntimeError(f"turn {context_id!r} was already used on this socket")
        if self.live_turns:
            raise RuntimeError(f"turn {self.live_turns[0]!r} is still live on this Deepgram "
                               "socket: the socket is one stream, one turn at a time")
        self._turns[context_id] = _Turn()
        return []

    def _live(self, context_id: str, action: str) -> _Turn:
        turn = self._turns.get(context_id)
        if turn is None or turn.state != "open":
            raise RuntimeError(f"{action} for turn {context_id!r}, which is "
                               f"{turn.state if turn else 'not live'} on this socket")
        return turn

    def _flush(self, context_id: str, turn: _Turn) -> str:
        turn.unflushed = False
        turn.flushes += 1
        turn.flush_marks.append(turn.speaks)
        self._flush_owners.append(context_id)
        self._flush_times.append(self.clock())
        return '{"type": "Flush"}'

    def send(self, turn_id: str, text: str) -> list[str]:
        """``Speak`` for one sentence (split at :data:`MAX_TEXT_CHARS`), then a ``Flush``
        while the flush budget allows (module doc)."""
        context_id = turn_id
        turn = self._live(context_id, "Speak")
        pieces = split_text(text, self.max_text_chars)
        if not pieces:
            return []
        out = ['{"type": "Speak", "text": ' + json.dumps(p) + "}" for p in pieces]
        turn.unflushed = True
        turn.speaks += 1
        if self.flushes_in_window() < self.flush_limit - self.flush_reserve:
            out.append(self._flush(context_id, turn))
        return out

    def finish(self, context_id: str) -> list[str]:
        """End of the turn: a final ``Flush`` if text is unflushed (always sent, whatever
        the budget). The turn is over when its flushes are answered, or at once if none is
        outstanding (:meth:`state` is then None)."""
        turn = self._live(context_id, "finish")
        out = [self._flush(context_id, turn)] if turn.unflushed else []
        turn.state = "ending"
        if turn.flushes == 0:
            self._retire(context_id, cancelled=False)
        return out

    def cancel(self, context_id: str) -> list[str]:
        """Barge-in: ``Clear`` when the server may still hold text or audio of the turn
        (Clear page [C]); the turn waits for ``Cleared``, its audio until then is flagged
        cancelled. Empty list when nothing is outstanding (the turn is simply forgotten)."""
        turn = self._turns.get(context_id)
        if turn is None:
            if context_id in self._finished or context_id in self._cancelled:
                remember(self._cancelled, context_id)
                return []
            raise RuntimeError(f"cancel of unknown turn {context_id!r}")
        if turn.state == "cancelling":
            return []
        if not turn.unflushed and turn.flushes == 0:
            self._retire(context_id, cancelled=True)
            return []
        turn.state = "cancelling"
        self._clear_owners.append(context_id)
        return ['{"type": "Clear"}']

    @staticmethod
    def close_message() -> str:
        """``Close``: the server closes the socket (Close page [C])."""
        return '{"type": "Close"}'

    def _retire(self, context_id: str, *, cancelled: bool) -> None:
        self._turns.pop(context_id, None)
        remember(self._cancelled if cancelled else self._finished, context_id)
        self._carry = b""

    # ---- inbound ---------------------------------------------------------------

    def _audio_owner(self) -> str | None:
        """The oldest turn whose audio may still come: cancelling, or waiting for a
        Flushed; else a live turn with unflushed text (the server may speak before a
        flush [I])."""
        for cid, turn in self._turns.items():
            if turn.state == "cancelling" or turn.flushes:
                return cid
        for cid, turn in self._turns.items():
            if turn.unflushed:
                return cid
        return None

    def receive_binary(self, data: bytes) -> list[ProviderEvent]:
        """One binary frame: raw audio in the socket's encoding (§8 [C])."""
        owner = self._audio_owner()
        if owner is None:
            raise ProviderProtocolError(
                "unknown_context", f"Deepgram sent {len(data)} bytes of audio while no turn "
                "waits for any (after its Flushed/Cleared)")
        if data[:4] == b"RIFF":  # defensive (§9.1 [I]): the stream has no container
            data = strip_wav_header(data)
        if self.encoding == "pcm_s16le":
            data, self._carry = whole_samples(self._carry, data)
        if not data:
            return []
        return [ProviderAudio(owner, data, self.encoding, self.sample_rate)]

    def receive(self, text: str) -> list[ProviderEvent]:
        """Parse one server text frame (Metadata, Flushed, Cleared, Warning, Error)."""
        message = parse_typed_frame(text, "Deepgram")
        kind = message["type"]
        if kind == "Metadata":
            self.metadata = message
            return []
        if kind == "Flushed":
            return self._flushed()
        if kind == "Cleared":
            return self._cleared()
        if kind == "Warning":
            return self._warning(message)
        if kind == "Error":
            return [self._fatal(message)]
        return []  # [I] new message types are ignored, not fatal

    def _flushed(self) -> list[ProviderEvent]:
        if not self._flush_owners:
            return []  # [I] a Flushed nobody waits for (e.g. for a flush a Clear dropped)
        cid = self._flush_owners.popleft()
        turn = self._turns.get(cid)
        if turn is None:
            return []
        turn.flushes -= 1
        if turn.flush_marks:
            turn.segments_done = turn.flush_marks.popleft()
        self._carry = b""
        if turn.state == "ending" and turn.flushes == 0:
            self._retire(cid, cancelled=False)
            return [ProviderDone(cid)]
        return []

    def _cleared(self) -> list[ProviderEvent]:
        if not self._clear_owners:
            return []
        cid = self._clear_owners.popleft()
        # [I] the Clear dropped the turn's unanswered flushes: forget them
        self._flush_owners = deque(o for o in self._flush_owners if o != cid)
        if cid in self._turns:
            self._retire(cid, cancelled=True)
        return []

    def _warning(self, message: dict) -> list[ProviderEvent]:
        # §8 [T pipecat] reads ``description``; the SDK has ``warn_code``/``warn_msg`` [C].
        text = str(message.get("description") or message.get("warn_msg") or "")
        code = str(message.get("code") or message.get("warn_code") or "")
        self.warnings = [*self.warnings, f"{code}: {text}"][-10:]
        if "flush" not in (text + " " + code).lower():
            return []  # informational
        # The flush was not processed: the turn waiting for it would never end, and its
        # text stays in the server's buffer (it would be spoken into a later turn) [I].
        self.failed = True
        owner = self._flush_owners[-1] if self._flush_owners else None
        return [ProviderError(owner, "flush_limit", f"Deepgram warning {code}: {text}",
                              fatal=True)]

    def _fatal(self, message: dict) -> ProviderError:
        self.failed = True
        text = str(message.get("description") or message.get("message")
                   or message.get("err_msg") or "error without a description")
        variant = str(message.get("variant") or message.get("err_code") or "")
        low = (text + " " + variant).lower()
        kind = ("auth" if "auth" in low or "credential" in low else
                "rate_limited" if "rate" in low or "too many" in low else
                "synthesis_failed" if "synthes" in low else "provider_error")
        return ProviderError(None, kind, f"Deepgram error {variant}: {text}".replace("  ", " "),
                             fatal=True)

    def connection_lost(self) -> list[ProviderEvent]:
        """The socket closed: nothing of it survives."""
        self.failed = True
        self._flush_owners.clear()
        self._clear_owners.clear()
        for cid in list(self._turns):
            self._retire(cid, cancelled=self._turns[cid].state == "cancelling")
        return []
