"""Uplift AI streaming TTS ("multi-stream"), client side, as a sans-I/O protocol.

Spec: docs/protocols/tts-providers.md §4 (seed 003) and §9, and Uplift's own page
(seed 003: "WebSocket TTS", error codes and rate limits). Tags in comments: [C] the
provider's docs, [T] third-party code (livekit-plugins-upliftai, which uses python-socketio;
pipecat-upliftai, written by UpliftAI, on the plain-WebSocket variant), [I] inferred here.

The wire model. Socket.IO v5 (Engine.IO v4) at ``wss://api.upliftai.org``, namespace
``/text-to-speech/multi-stream``, auth payload ``{"token": <key>}`` [C §4.1, T livekit]::

    gateway -> Uplift   event "synthesize"  {"type":"synthesize","requestId","text","voiceId",
                                             "outputFormat"[,"phraseReplacementConfigId","speed"]}
                        event "cancel"      {"type":"cancel","requestId"}          (event name [I])
    Uplift -> gateway   event "message"     {"type":"ready","sessionId"}
                                            {"type":"audio_start","requestId","timestamp"}
                                            {"type":"audio","requestId","audio":"<b64>","sequence"}
                                            {"type":"audio_end","requestId","timestamp"}
                                            {"type":"error","requestId"?,"code","message"}

Every builder returns JSON strings whose ``type`` names the Socket.IO event; the Socket.IO
socket (:class:`gateway.tts.remote.connection.SocketIOWebSocket`) emits each one as that
event. The same JSON as plain text frames is what the plain-WebSocket endpoint takes
(§4.1 b), so :meth:`UpliftProtocol.receive` accepts a ``message`` payload (a dict, as the
Socket.IO client decodes it) or a JSON text frame.

What the caller must know:

* A request is **one-shot**: whole text in, then ``audio_start``, ``audio``*, ``audio_end``
  [C]. A *turn* (an utterance) is one or more requests, one per text segment, sent as the
  segments come (pipelined, as livekit does [O PR #6576]); :meth:`UpliftProtocol.finish`
  ends the turn and :class:`ProviderDone` comes when all its requests ended.
* Requests on one connection **run concurrently and their chunks interleave** [T
  pipecat-upliftai]. Audio is demultiplexed by ``requestId`` and, within a turn, released
  strictly in submission order: a later request's audio waits here until the earlier ones
  ended. Chunks of different turns (calls sharing the socket) never mix.
* ``cancel`` stops a request; the server sends no ``audio_end`` for it [I §4.5] and may
  still send chunks already under way: they come back with the turn's id and
  :meth:`UpliftProtocol.is_cancelled` says to drop them.
* Limits [C seed 003]: 10,000 characters per request (longer text is split at sentence
  boundaries), 60 ``synthesize`` and 100 ``cancel`` per minute **per connection**. The
  protocol counts both over a sliding minute; when the synthesize budget is spent, further
  segments of a turn are held and merged into one request sent at :meth:`finish` (no text
  is lost), and :meth:`UpliftProtocol.budget_low` tells the pool to give the next turn a
  fresh connection (the limit is per connection) [I].
* Output: ``ULAW_8000_8`` (raw G.711 μ-law 8 kHz) is passed through to μ-law carriers,
  ``PCM_22050_16`` (raw s16le 22.05 kHz) otherwise [C formats table, §9.1]; never MP3
  (each MP3 request is a complete file, §4.4 [O]).

The module does no I/O.
"""

from __future__ import annotations

import bisect
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from telcodecs import strip_wav_header, whole_samples

from gateway.tts.providers.common import SocketIOParams, decode_base64, parse_object, remember
from gateway.tts.providers.common import preview as _preview
from gateway.tts.providers.base import ProtocolDefaults
from gateway.tts.providers.events import (
    ProviderAudio,
    ProviderDone,
    ProviderError,
    ProviderEvent,
    ProviderProtocolError,
    ProviderReady,
)
from gateway.tts.text import pack_sentences

__all__ = [
    "DEFAULT_ENDPOINT",
    "ERROR_KINDS",
    "MAX_TEXT_CHARS",
    "NAMESPACE",
    "UpliftProtocol",
    "choose_format",
    "connect_params",
    "split_text",
]

#: The documented Socket.IO endpoint; its path is the namespace [C §4.1, T livekit].
DEFAULT_ENDPOINT = "wss://api.upliftai.org/text-to-speech/multi-stream"
NAMESPACE = "/text-to-speech/multi-stream"
DEFAULT_VOICE = "v_meklc281"  # Urdu female, the default of the SDK and livekit [C/T]
#: Characters per ``synthesize`` [C seed 003 "max 10,000 characters"].
MAX_TEXT_CHARS = 10_000
#: Per connection, per minute [C seed 003 "Rate Limits"].
REQUESTS_PER_MINUTE = 60
CANCELS_PER_MINUTE = 100
#: A connection with fewer requests left than this in its minute is not given a new turn.
BUDGET_RESERVE = 10
WINDOW_S = 60.0
SPEED_RANGE = (0.5, 2.0)  # [T pipecat-upliftai MIN_SPEED/MAX_SPEED]

#: The raw output formats, the only ones allowed on the live path (the API also names WAV,
#: MP3 and OGG ones [C docs table; T livekit/pipecat]).
LIVE_FORMATS = {"ULAW_8000_8": ("mulaw", 8000), "PCM_22050_16": ("pcm_s16le", 22050)}

#: Bounded ``ProviderError.kind`` labels: the documented codes, plus the rest.
ERROR_KINDS = frozenset({"auth_failed", "synthesis_failed", "duplicate_request",
                         "rate_limit_exceeded", "text_too_long", "server_error",
                         "connection_closed"})
_REMEMBER = 256  # cancelled/finished ids kept to recognise late frames


def connect_params(api_key: str, endpoint: str = DEFAULT_ENDPOINT) -> SocketIOParams:
    """Socket.IO connection parameters from an endpoint URL written the way Uplift's docs
    write it, ``io('wss://api.upliftai.org/text-to-speech/multi-stream', {auth: {token}})``:
    the URL's path is the namespace (the Engine.IO path stays ``/socket.io/``) [C §4.1]."""
    if not api_key:
        raise ValueError("Uplift needs an API key (Socket.IO auth {\"token\": <key>}); got none")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.netloc:
        raise ValueError(f"Uplift endpoint must be a ws:// or wss:// URL, got {endpoint!r}")
    namespace = parts.path.rstrip("/") or NAMESPACE
    if "/socket.io" in namespace:
        raise ValueError(f"Uplift endpoint {endpoint!r}: give the namespace as the path "
                         f"(e.g. {DEFAULT_ENDPOINT}), not the Engine.IO path")
    url = urlunsplit((parts.scheme, parts.netloc, "", parts.query, ""))
    return SocketIOParams(url=url, namespace=namespace, auth={"token": api_key})


def choose_format(carrier_encoding: str, carrier_rate: int) -> str:
    """``ULAW_8000_8`` for a μ-law 8 kHz carrier (passed through untouched), else
    ``PCM_22050_16`` (the gateway resamples and encodes) [§9.1]. Uplift has no A-law."""
    if carrier_encoding == "mulaw" and carrier_rate == 8000:
        return "ULAW_8000_8"
    return "PCM_22050_16"


def split_text(text: str, limit: int = MAX_TEXT_CHARS) -> list[str]:
    """Pieces of at most ``limit`` characters, cut at sentence boundaries where possible
    (Urdu ends sentences with ``۔`` and ``؟`` too, which the splitter does not know: such
    text is cut at spaces instead, which only matters above 10,000 characters)."""
    return pack_sentences(text, limit)


class _Turn:
    __slots__ = (
        "buffered",
        "completed",
        "encoding",
        "ended",
        "failed",
        "finished",
        "id",
        "marks",
        "output_format",
        "pending",
        "requests",
        "sample_rate",
        "serial",
        "voice",
    )

    def __init__(self, turn_id: str, output_format: str, voice: str) -> None:
        self.id = turn_id
        self.output_format = output_format
        self.encoding, self.sample_rate = LIVE_FORMATS[output_format]
        self.voice = voice
        self.requests: deque[str] = deque()  # live requests, in submission order
        self.buffered: dict[str, list[bytes]] = {}  # audio of requests behind the head
        self.ended: set[str] = set()  # live requests whose audio_end came (not yet head)
        self.finished = False  # finish() was called: no more text
        self.failed = False  # one of its requests failed: the caller will cancel it
        self.pending: list[str] = []  # text held back while the rate budget is spent
        self.serial = 0
        # per text segment, how many requests of the turn carry it and those before it
        self.marks: list[int] = []
        self.completed = 0  # requests whose audio is all out (in submission order)


@dataclass(slots=True)
class _Request:
    turn: str
    odd: bytes = b""  # odd trailing byte of s16le, carried to the next chunk
    next_sequence: int = 0
    started: bool = False


class UpliftProtocol(ProtocolDefaults):
    """One Uplift multi-stream connection, seen from the gateway.

    Turn lifecycle::

        begin -> send* -> finish -> (every request's audio_end) -> ProviderDone
                                \\-> cancel (cancel per live request; late audio flagged)

    * :meth:`receive` turns one ``message`` payload into events; audio carries the turn id.
    * A non-fatal :class:`ProviderError` with a turn id fails that turn (the caller then
      cancels it); ``auth_failed`` (or an error naming no request we know) concerns the
      connection.
    * :meth:`is_clean`: no live turn; the socket may go back to the pool.
    """

    provider = "uplift"

    def __init__(self, voice_id: str = DEFAULT_VOICE, *, speed: float | None = None,
                 phrase_replacement_config_id: str | None = None,
                 requests_per_minute: int = REQUESTS_PER_MINUTE,
                 cancels_per_minute: int = CANCELS_PER_MINUTE,
                 max_text_chars: int = MAX_TEXT_CHARS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not voice_id or type(voice_id) is not str:
            raise ValueError("voice_id is required (e.g. 'v_meklc281')")
        if speed is not None and (isinstance(speed, bool) or not isinstance(speed, (int, float))
                                  or not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]):
            raise ValueError(f"speed {speed!r}: Uplift accepts {SPEED_RANGE[0]}-{SPEED_RANGE[1]}")
        if not 1 <= max_text_chars <= MAX_TEXT_CHARS:
            raise ValueError(f"max_text_chars must be 1-{MAX_TEXT_CHARS}")
        self.voice_id = voice_id
        self.speed = speed
        self.phrase_replacement_config_id = phrase_replacement_config_id
        self.requests_per_minute = requests_per_minute
        self.cancels_per_minute = cancels_per_minute
        self.max_text_chars = max_text_chars
        self._clock = clock
        self.ready = False
        self.session_id: str | None = None
        self.closed = False
        self.failed = False  # auth failure or the like: replace the connection
        self.throttled_until = 0.0  # the server said rate_limit_exceeded
        self._turns: dict[str, _Turn] = {}
        self._requests: dict[str, _Request] = {}
        self._sent: deque[float] = deque()  # synthesize times within the last minute
        self._cancels: deque[float] = deque()
        self._cancelled: dict[str, None] = {}  # turn and request ids, bounded, ordered
        self._finished: dict[str, None] = {}  # request ids that ended (stale frames)
        self.late_audio_bytes = 0
        self.sequence_gaps = 0
        self.merged_segments = 0  # segments held back by the rate budget and merged

    # ---- state -----------------------------------------------------------------------

    def is_clean(self) -> bool:
        return not self._turns and not self.closed and not self.failed

    def is_cancelled(self, turn_id: str) -> bool:
        return turn_id in self._cancelled

    def state(self, turn_id: str) -> str | None:
        """``open``, ``finishing`` (finish() called, audio pending), ``failed``,
        ``cancelled``, or None (ended or unknown)."""
        turn = self._turns.get(turn_id)
        if turn is not None:
            return "failed" if turn.failed else "finishing" if turn.finished else "open"
        return "cancelled" if turn_id in self._cancelled else None

    def segments_done(self, turn_id: str) -> int | None:
        """Text segments (:meth:`send` calls) of the turn whose requests all ended
        (their audio is out); None when the turn is not live."""
        turn = self._turns.get(turn_id)
        if turn is None:
            return None
        return bisect.bisect_right(turn.marks, turn.completed)

    @property
    def live_turns(self) -> list[str]:
        return list(self._turns)

    @property
    def live_requests(self) -> list[str]:
        return list(self._requests)

    def requests_left(self) -> int:
        """``synthesize`` messages this connection may still send in the current minute."""
        now = self._clock()
        while self._sent and now - self._sent[0] >= WINDOW_S:
            self._sent.popleft()
        if now < self.throttled_until:
            return 0
        return self.requests_per_minute - len(self._sent)

    def budget_low(self) -> bool:
        """Too few requests left this minute to start another turn here [I]."""
        return self.requests_left() < min(BUDGET_RESERVE, self.requests_per_minute)

    # ---- outbound ----------------------------------------------------------------------

    def begin(self, turn_id: str, voice: str | None = None, *, encoding: str | None = None,
              sample_rate: int | None = None) -> list[str]:
        """Register a turn (no message: each ``synthesize`` request carries the voice and
        the format). ``encoding`` is the ``outputFormat`` (default ``ULAW_8000_8``), whose
        name carries the rate: ``sample_rate``, if given, must agree."""
        output_format = encoding or "ULAW_8000_8"
        if self.closed or self.failed:
            raise RuntimeError("the Uplift connection is closed or failed: open a new one")
        if output_format not in LIVE_FORMATS:
            raise ValueError(f"outputFormat {output_format!r}: use ULAW_8000_8 or PCM_22050_16 "
                             "on the live path (MP3/OGG/WAV are whole files per request)")
        if sample_rate is not None and sample_rate != LIVE_FORMATS[output_format][1]:
            raise ValueError(f"outputFormat {output_format} is not {sample_rate} Hz")
        if turn_id in self._turns or turn_id in self._cancelled:
            raise ValueError(f"turn {turn_id!r} was already used on this connection")
        self._turns[turn_id] = _Turn(turn_id, output_format, voice or self.voice_id)
        return []

    def _live(self, turn_id: str, verb: str) -> _Turn:
        turn = self._turns.get(turn_id)
        if turn is None or turn.finished:
            raise RuntimeError(f"{verb} on turn {turn_id!r}, which is "
                               f"{self.state(turn_id) or 'not open'}")
        return turn

    def _request(self, turn: _Turn, text: str) -> str:
        turn.serial += 1
        rid = f"{turn.id}.{turn.serial}"
        message: dict[str, Any] = {"type": "synthesize", "requestId": rid, "text": text,
                                   "voiceId": turn.voice, "outputFormat": turn.output_format}
        if self.phrase_replacement_config_id:
            message["phraseReplacementConfigId"] = self.phrase_replacement_config_id
        if self.speed is not None:
            message["speed"] = self.speed
        turn.requests.append(rid)
        self._requests[rid] = _Request(turn.id)
        self._sent.append(self._clock())
        return json.dumps(message, ensure_ascii=False)

    def send(self, turn_id: str, text: str) -> list[str]:
        """``synthesize`` messages for one text segment of the turn: one request per piece
        of at most ``max_text_chars``. Nothing is sent while the rate budget is spent: the
        text waits and goes out with the next segment, or at :meth:`finish`."""
        turn = self._live(turn_id, "send")
        if type(text) is not str:
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if not text.strip():
            return []
        segments = 1
        if turn.pending or self.requests_left() < 1:
            turn.pending.append(text.strip())
            if self.requests_left() < 1:
                self.merged_segments += 1
                return []
            segments = len(turn.pending)
            text, turn.pending = " ".join(turn.pending), []
        out = []
        for piece in split_text(text, self.max_text_chars):
            out.append(self._request(turn, piece))
        turn.marks += [turn.serial] * segments
        return out

    def finish(self, turn_id: str) -> list[str]:
        """No more text for the turn. Held-back text is sent now, whatever the budget (the
        server may then answer ``rate_limit_exceeded`` for it). The turn ends when all its
        requests did: at once if it has none (check :meth:`state`)."""
        turn = self._live(turn_id, "finish")
        out: list[str] = []
        if turn.pending:
            segments = len(turn.pending)
            text, turn.pending = " ".join(turn.pending), []
            out = [self._request(turn, piece) for piece in split_text(text, self.max_text_chars)]
            turn.marks += [turn.serial] * segments
        turn.finished = True
        if not turn.requests:
            del self._turns[turn_id]
        return out

    def cancel(self, turn_id: str) -> list[str]:
        """Barge-in: ``cancel`` for each of the turn's requests still in flight; the turn is
        forgotten and any audio still coming for it is flagged cancelled."""
        turn = self._turns.pop(turn_id, None)
        remember(self._cancelled, turn_id, limit=_REMEMBER)
        if turn is None:
            return []
        out = []
        now = self._clock()
        while self._cancels and now - self._cancels[0] >= WINDOW_S:
            self._cancels.popleft()
        for rid in turn.requests:
            self._requests.pop(rid, None)
            remember(self._cancelled, rid, limit=_REMEMBER)
            if rid in turn.ended:
                continue  # its audio_end came already: nothing to stop
            if len(self._cancels) >= self.cancels_per_minute:
                continue  # over the cancel limit: its late audio is dropped all the same
            self._cancels.append(now)
            out.append(json.dumps({"type": "cancel", "requestId": rid}))
        return out

    # ---- inbound -----------------------------------------------------------------------

    def connection_made(self) -> list[ProviderEvent]:
        return []  # ready comes as a message [C]

    def connection_lost(self) -> list[ProviderEvent]:
        """The socket closed: every live turn fails (fatal), the state is dropped."""
        self.closed = True
        events: list[ProviderEvent] = [
            ProviderError(tid, "connection_closed",
                          "Uplift closed the connection before this utterance ended", True)
            for tid in self._turns]
        self._turns.clear()
        self._requests.clear()
        return events

    def receive(self, message: str | dict) -> list[ProviderEvent]:
        """One server message: the ``message`` event's payload (a dict, from Socket.IO), or
        a JSON text frame (plain WebSocket)."""
        message = parse_object(message, "Uplift message", kind="bad_message",
                               expected="an object with a \"type\"")
        kind = message.get("type")
        if kind == "audio":
            return self._on_audio(message)
        if kind == "audio_end":
            return self._on_end(message)
        if kind == "audio_start":
            return self._on_start(message)
        if kind == "error":
            return self._on_error(message)
        if kind == "ready":
            sid = message.get("sessionId")
            self.session_id = sid if type(sid) is str else None
            if self.ready:
                return []
            self.ready = True
            return [ProviderReady()]
        raise ProviderProtocolError(
            "unknown_type", f"Uplift message of type {kind!r}; expected ready, audio_start, "
            f"audio, audio_end or error: {_preview(message)}")

    def _request_of(self, message: dict, what: str) -> tuple[str, _Request | None]:
        rid = message.get("requestId")
        if type(rid) is not str or not rid:
            raise ProviderProtocolError(
                "missing_field", f"Uplift {what} without a requestId: {_preview(message)}")
        req = self._requests.get(rid)
        if req is None and rid not in self._cancelled and rid not in self._finished:
            raise ProviderProtocolError(
                "unknown_request", f"Uplift {what} for request {rid!r}, which this connection "
                f"did not send (live: {list(self._requests)[:5]})")
        return rid, req

    def _on_start(self, message: dict) -> list[ProviderEvent]:
        _, req = self._request_of(message, "audio_start")
        if req is not None:
            req.started = True
        return []

    def _on_audio(self, message: dict) -> list[ProviderEvent]:
        rid, req = self._request_of(message, "audio")
        audio = message.get("audio")
        if type(audio) is not str:
            raise ProviderProtocolError(
                "missing_field", f"Uplift audio for {rid!r} has no audio string")
        data = decode_base64(audio, "Uplift audio")
        if req is None:
            # a cancelled request's late chunk (or a stale one): flag it with its turn
            turn_id = rid.rsplit(".", 1)[0]
            self.late_audio_bytes += len(data)
            if not data or turn_id not in self._cancelled:
                return []
            return [ProviderAudio(turn_id, data, "mulaw", 8000)]
        seq = message.get("sequence")
        if type(seq) is int:
            if seq != req.next_sequence:
                self.sequence_gaps += 1  # [I] never seen; counted, the audio is kept
            req.next_sequence = seq + 1
        turn = self._turns[req.turn]
        if data[:4] == b"RIFF":  # defensive (§9.1): raw formats carry no header
            data = strip_wav_header(data)
        if turn.encoding == "pcm_s16le":
            data, req.odd = whole_samples(req.odd, data)
        if not data:
            return []
        if turn.requests[0] != rid:  # behind an earlier request of the turn: hold it
            turn.buffered.setdefault(rid, []).append(data)
            return []
        return [ProviderAudio(turn.id, data, turn.encoding, turn.sample_rate)]

    def _on_end(self, message: dict) -> list[ProviderEvent]:
        rid, req = self._request_of(message, "audio_end")
        if req is None:
            return []  # the end of a request cancelled meanwhile
        self._end_request(rid)
        turn = self._turns[req.turn]
        turn.ended.add(rid)
        return self._advance(turn)

    def _end_request(self, rid: str) -> None:
        self._requests.pop(rid, None)
        remember(self._finished, rid, limit=_REMEMBER)

    def _advance(self, turn: _Turn) -> list[ProviderEvent]:
        """Release audio held for requests that are now at the head of the turn."""
        events: list[ProviderEvent] = []
        while turn.requests and turn.requests[0] in turn.ended:
            head = turn.requests.popleft()
            turn.completed += 1
            turn.ended.discard(head)
            turn.buffered.pop(head, None)
            if turn.requests:
                for data in turn.buffered.pop(turn.requests[0], []):
                    events.append(ProviderAudio(turn.id, data, turn.encoding, turn.sample_rate))
        if turn.finished and not turn.requests:
            del self._turns[turn.id]
            if not turn.failed:  # a failed turn ended with its error
                events.append(ProviderDone(turn.id))
        return events

    def _on_error(self, message: dict) -> list[ProviderEvent]:
        code = message.get("code")
        code = code if type(code) is str and code else "unknown"
        text = message.get("message")
        text = text if type(text) is str and text else "error without a message"
        kind = code if code in ERROR_KINDS else "server_error"
        detail = f"Uplift: {text} (code {code})"
        raw_id = message.get("requestId")
        rid = raw_id if type(raw_id) is str else None
        req = self._requests.get(rid) if rid is not None else None
        if kind == "rate_limit_exceeded":
            self.throttled_until = self._clock() + WINDOW_S  # this connection is spent [I]
        if kind == "auth_failed":
            self.failed = True
            return [ProviderError(None, kind, detail, True)]
        if req is None or rid is None:
            if rid is not None and (rid in self._cancelled or rid in self._finished):
                return []  # about a request we gave up on already
            # naming no live request: it concerns the connection [I]
            return [ProviderError(None, kind, detail, False)]
        self._end_request(rid)
        turn = self._turns[req.turn]
        turn.failed = True
        turn.requests.remove(rid)
        turn.buffered.pop(rid, None)
        turn.ended.discard(rid)
        return [ProviderError(turn.id, kind, detail, False), *self._advance(turn)]
