"""Telnyx TTS streaming WebSocket, client side, as a sans-I/O protocol.

Spec: docs/protocols/tts-providers.md §5 (seed 004) and §9; Telnyx's docs
(seed 004 "Text-to-Speech WebSocket streaming examples"; developers.telnyx.com pages
websocket-streaming/configuration, .../parameters, providers/telnyx/naturalhd,
providers/azure). Tags: [C] Telnyx docs, [T] third-party code, [O] observed by others,
[I] inferred here.

The wire model::

    gateway -> Telnyx   wss://api.telnyx.com/v2/text-to-speech/speech?voice=..&audio_format=..
                        Authorization: Bearer <key>; all configuration is locked at connect
                        {"text":" ","voice_settings":{...}}       handshake, first frame [C]
                        {"text":"One sentence.","flush":true}     text, synthesized now [C]
                        {"text":""}                               end: flush, final, close [C]
                        {"force":true}                            stop the synthesis [C]
    Telnyx -> gateway   {"audio":"<b64>","text":..,"isFinal":false,"cached":..,
                         "timeToFirstAudioFrameMs":..}            audio (streamed providers:
                                                                  many chunks with text null,
                                                                  then audio null + the text)
                        {"audio":null,"text":"","isFinal":true}   the last frame [C]
                        {"error":"..."}                           then the socket closes [C]

What the caller must know:

* **One utterance per socket.** The final frame only comes after ``{"text":""}``, after which
  the server closes the socket; text sent later gets nothing [O streamcore PR #74, GetStream
  PR #621, against the docs' "the connection remains open"]. So a protocol object serves
  exactly one turn: :meth:`TelnyxProtocol.start` binds it, and the pool replaces the socket
  afterwards (the driver is ``single_use``). Frames carry no request id: everything that
  arrives belongs to the bound turn.
* The handshake is the first frame, else "Invalid message" [O GetStream PR #621]. It has no
  answer, so a socket is ready once the upgrade succeeded and the handshake is written.
* Plain text frames may sit buffered with no audio for seconds [O]: every segment is sent
  with ``flush: true``.
* Barge-in: ``{"force": true}`` [C]; chunks already under way may still come and are
  flagged (:meth:`TelnyxProtocol.is_cancelled`). The socket is not reused after it.
* Audio format: MP3 is the default and a series of whole MP3 files [O GetStream PR #621],
  so raw PCM is always requested: ``linear16`` at 8 kHz for Telnyx voices, ``mulaw`` 8 kHz
  where the voice's engine offers it (Azure, ElevenLabs) [C provider pages]. Some voices
  ignore ``audio_format`` and send MP3 anyway (Telnyx.KokoroTTS [T vision-agents docs]):
  audio starting with an ID3 tag fails the turn with ``unsupported_format`` instead of
  playing noise.
* Markdown: Telnyx strips it server-side [C seed 004], but ``*``, ``#`` or a URL that
  reaches a voice that does not (BYOK relays) is read out, so :func:`strip_markdown` cleans
  LLM text before it is sent.

The module does no I/O.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from telcodecs import strip_wav_header, whole_samples

from gateway.tts.providers.common import decode_base64, parse_object, with_query
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

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_VOICE",
    "ERROR_KINDS",
    "TelnyxProtocol",
    "choose_format",
    "connect_params",
    "strip_markdown",
]

DEFAULT_ENDPOINT = "wss://api.telnyx.com/v2/text-to-speech/speech"  # [C §5.1]
DEFAULT_VOICE = "Telnyx.NaturalHD.astra"
#: The server closes a socket idle this long (older docs' ``inactivity_timeout``, §5.1).
DEFAULT_INACTIVITY_S = 20

#: Per engine (the voice's first segment, lower-cased): formats and rates offered on the WS
#: [C provider pages, §5.1]. Engines not listed get linear16 [I].
ENGINE_FORMATS: dict[str, tuple[frozenset[str], tuple[int, ...]]] = {
    "telnyx": (frozenset({"mp3", "linear16"}),
               (8000, 16000, 22050, 24000, 44100, 48000, 96000)),
    "azure": (frozenset({"mp3", "wav", "linear16", "mulaw", "alaw"}), (8000, 16000, 24000, 48000)),
    "elevenlabs": (frozenset({"mp3", "linear16", "mulaw"}),
                   (8000, 16000, 22050, 24000, 44100)),
    "inworld": (frozenset({"mp3", "linear16"}), (8000, 16000, 22050, 24000, 32000, 44100, 48000)),
}
#: Telnyx models with a fixed output rate [C §5.1: Qwen fixed 24 kHz].
FIXED_RATES = {"qwen3tts": 24000}
_ENCODINGS = {"linear16": "pcm_s16le", "mulaw": "mulaw", "alaw": "alaw"}
LIVE_FORMATS = frozenset(_ENCODINGS)

#: Bounded ``ProviderError.kind`` labels.
ERROR_KINDS = frozenset({"synthesis_failed", "invalid_voice", "invalid_message",
                         "unsupported_format", "server_error", "connection_closed"})


def engine_of(voice: str) -> tuple[str, str]:
    """``(engine, model)`` of a ``Provider.Model.VoiceId`` voice, lower-cased [C §5.1]."""
    parts = voice.split(".")
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"Telnyx voice {voice!r} must look like Provider.Model.VoiceId "
                         f"(e.g. {DEFAULT_VOICE}, azure.en-US-AvaMultilingualNeural)")
    return parts[0].lower(), (parts[1].lower() if len(parts) > 2 else "")


def choose_format(voice: str, carrier_encoding: str, carrier_rate: int) -> tuple[str, int]:
    """``(audio_format, sample_rate)`` to ask for (§9.1): the carrier's G.711 where the
    voice's engine offers it (passed through untouched), else ``linear16`` at the carrier's
    rate where offered, else at 8 kHz, else at the engine's fixed rate. Never MP3."""
    engine, model = engine_of(voice)
    if model in FIXED_RATES and engine == "telnyx":
        return "linear16", FIXED_RATES[model]
    formats, rates = ENGINE_FORMATS.get(engine, (frozenset({"linear16"}), (8000, 16000, 24000)))
    if carrier_rate == 8000 and carrier_encoding in ("mulaw", "alaw"):
        g711 = "mulaw" if carrier_encoding == "mulaw" else "alaw"
        if g711 in formats:
            return g711, 8000
    if carrier_rate in rates:
        return "linear16", carrier_rate
    return "linear16", 8000 if 8000 in rates else rates[0]


def connect_params(api_key: str, *, endpoint: str = DEFAULT_ENDPOINT, voice: str = DEFAULT_VOICE,
                   audio_format: str = "linear16", sample_rate: int = 8000,
                   language: str | None = None, text_type: str | None = None,
                   disable_cache: bool | None = None, inactivity_timeout_s: int | None = None,
                   ) -> tuple[str, dict[str, str]]:
    """URL and headers of the upgrade [C §5.1]. The key goes in the header only."""
    if not api_key:
        raise ValueError("Telnyx needs an API key (Authorization: Bearer <key>); got none")
    engine_of(voice)
    if audio_format not in LIVE_FORMATS:
        raise ValueError(f"audio_format {audio_format!r}: the live path takes raw linear16, "
                         "mulaw or alaw (mp3 is a series of whole files, §5.4)")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"Telnyx endpoint must be a ws:// or wss:// URL, got {endpoint!r}")
    if text_type not in (None, "text", "ssml"):
        raise ValueError(f"text_type {text_type!r}: text or ssml")
    if inactivity_timeout_s is not None and (type(inactivity_timeout_s) is not int
                                             or inactivity_timeout_s < 1):
        raise ValueError("inactivity_timeout_s must be a positive integer of seconds")
    url = with_query(endpoint, voice=voice, audio_format=audio_format,
                     sample_rate=int(sample_rate), language=language or None,
                     text_type=text_type or None, disable_cache=disable_cache,
                     inactivity_timeout=inactivity_timeout_s)
    return url, {"Authorization": f"Bearer {api_key}"}


# ---- markdown --------------------------------------------------------------------------

_FENCE = re.compile(r"^[ \t]*(?:```|~~~)[^\n]*$", re.M)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\((?:[^()\s]|\([^)]*\))*(?:\s+\"[^\"]*\")?\)")
_REF_LINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_AUTOLINK = re.compile(r"<((?:https?://|mailto:)[^>\s]+)>")
_HEADER = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.*?)[ \t#]*$", re.M)
_QUOTE = re.compile(r"^[ \t]{0,3}>[ \t]?", re.M)
_BULLET = re.compile(r"^[ \t]*[-*+•][ \t]+", re.M)
_RULE = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$", re.M)
_TABLE_RULE = re.compile(r"^[ \t]*\|?(?:[ \t]*:?-{3,}:?[ \t]*\|)+[ \t]*:?-*:?[ \t]*$", re.M)
_STRONG = re.compile(r"(\*\*|__|~~)(?=\S)(.+?)(?<=\S)\1", re.S)
_EM_STAR = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_EM_UNDER = re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_CODE = re.compile(r"(`+)(.+?)\1", re.S)
_STRAY = re.compile(r"\*\*|__|~~|`|(?<!\w)[*_]+(?=\w)|(?<=\w)[*_]+(?!\w)")
_EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F\u200D\u2B50\u2B55]")
_SPACES = re.compile(r"[ \t]+")


def strip_markdown(text: str) -> str:
    """Plain text from LLM markdown: headers, emphasis, code spans and fences, links and
    images, quotes, bullets, rules and emoji go; their words stay. Markers left unbalanced
    by a sentence split (``**Hello.`` / ``World**``) go too. Arithmetic (``5 * 3``) and
    words with underscores (``snake_case``) are kept."""
    if not any(c in text for c in "*_#`[]>~-+|•") and not _EMOJI.search(text):
        return text.strip()
    s = _FENCE.sub("", text)
    s = _IMAGE.sub(r"\1", s)
    s = _LINK.sub(r"\1", s)
    s = _REF_LINK.sub(r"\1", s)
    s = _AUTOLINK.sub(r"\1", s)
    s = _HEADER.sub(r"\1", s)
    s = _RULE.sub("", s)
    s = _TABLE_RULE.sub("", s)
    s = _QUOTE.sub("", s)
    s = _BULLET.sub("", s)
    s = _CODE.sub(r"\2", s)
    for _ in range(2):  # nested: ***both*** / **_both_**
        s = _STRONG.sub(r"\2", s)
        s = _EM_STAR.sub(r"\1", s)
        s = _EM_UNDER.sub(r"\1", s)
    s = _STRAY.sub("", s)
    s = s.replace("|", " ")
    s = _EMOJI.sub("", s)
    lines = [_SPACES.sub(" ", line).strip() for line in s.splitlines()]
    return " ".join(line for line in lines if line)


# ---- the protocol ----------------------------------------------------------------------

# Socket states.
NEW = "new"            # upgraded; handshake not written yet
READY = "ready"        # handshake written: may take its one turn
SPEAKING = "speaking"  # a turn is bound, text may still come
ENDING = "ending"      # {"text":""} sent: audio and the final frame pending
DONE = "done"          # the final frame came: the server closes now
CANCELLED = "cancelled"
FAILED = "failed"      # an error frame: the server closes shortly
CLOSED = "closed"


class TelnyxProtocol(ProtocolDefaults):
    """One Telnyx TTS socket: a handshake, then exactly one turn.

    :meth:`handshake` gives the init frame; :meth:`begin`, :meth:`send`,
    :meth:`finish` and :meth:`cancel` drive the turn; :meth:`receive` parses each text frame.
    """

    provider = "telnyx"

    def __init__(self, *, audio_format: str = "linear16", sample_rate: int = 8000,
                 voice_settings: dict[str, Any] | None = None,
                 markdown: bool = True, voice: str = DEFAULT_VOICE) -> None:
        if audio_format not in LIVE_FORMATS:
            raise ValueError(f"audio_format {audio_format!r}: linear16, mulaw or alaw")
        if audio_format != "linear16" and sample_rate != 8000:
            raise ValueError(f"{audio_format} comes at 8000 Hz only")
        if voice_settings is not None and type(voice_settings) is not dict:
            raise ValueError("voice_settings must be a mapping (e.g. {voice_speed: 1.1})")
        self.audio_format = audio_format
        self.encoding = _ENCODINGS[audio_format]
        self.sample_rate = sample_rate
        self.voice_settings = dict(voice_settings or {})
        self.voice = voice
        self.strip = markdown
        self.phase = NEW
        self.closed = False
        self.turn: str | None = None
        self.sent_text = False
        self.first_chunk = True
        self.odd = b""
        self.time_to_first_audio_ms: float | None = None
        self.cached: bool | None = None
        self.late_audio_bytes = 0
        self.segments_out = 0  # segments whose audio is out (a frame carrying their text)

    # ---- state ---------------------------------------------------------------------

    def is_clean(self) -> bool:
        """Handshaken, unused and open: fit for a turn."""
        return self.phase == READY and not self.closed

    def is_cancelled(self, turn_id: str) -> bool:
        return self.phase == CANCELLED and turn_id == self.turn

    def state(self, turn_id: str) -> str | None:
        """The socket state while ``turn_id`` is bound to it; None once it ended well
        (or for another id)."""
        if turn_id != self.turn or self.phase == DONE:
            return None
        return self.phase

    def segments_done(self, turn_id: str) -> int | None:
        """Segments of the turn whose audio is out (a frame carried their text); None once
        the turn is over or for another id."""
        return self.segments_out if turn_id == self.turn and self.state(turn_id) else None

    @property
    def spent(self) -> bool:
        """Its turn is over (one way or another): the socket serves nothing more."""
        return self.closed or self.turn is not None or self.phase == FAILED

    @property
    def closes_by_design(self) -> bool:
        """The final frame came: the server's close that follows is the protocol's end."""
        return self.phase == DONE

    # ---- outbound ------------------------------------------------------------------

    def handshake(self) -> str:
        """The init frame ``{"text": " "}``, with ``voice_settings`` when set [C]."""
        if self.phase != NEW:
            raise RuntimeError("the Telnyx handshake is sent once, first")
        self.phase = READY
        frame: dict[str, Any] = {"text": " "}
        if self.voice_settings:
            frame["voice_settings"] = self.voice_settings
        return json.dumps(frame)

    def begin(self, turn_id: str, voice: str | None = None, *, encoding: str | None = None,
              sample_rate: int | None = None) -> list[str]:
        """Bind the socket's one turn (no message: the handshake opened the stream). Voice
        and audio format are the socket's (its URL)."""
        self.fixed_per_socket(voice, encoding, sample_rate)
        if self.phase != READY:
            raise RuntimeError(f"this Telnyx socket is {self.phase}: it serves one turn after "
                               "its handshake; open a new one")
        self.turn = turn_id
        self.phase = SPEAKING
        return []

    def _bound(self, turn_id: str, verb: str) -> None:
        if turn_id != self.turn or self.phase != SPEAKING:
            raise RuntimeError(f"{verb} for turn {turn_id!r} on a Telnyx socket that is "
                               f"{self.phase} with turn {self.turn!r}")

    def send(self, turn_id: str, text: str) -> list[str]:
        """One segment (a sentence or more), markdown stripped, synthesized at once."""
        self._bound(turn_id, "send")
        if type(text) is not str:
            raise TypeError(f"text must be str, got {type(text).__name__}")
        clean = strip_markdown(text) if self.strip else text.strip()
        if not clean:
            return []  # the empty text would end the stream
        self.sent_text = True
        return [json.dumps({"text": clean + " ", "flush": True}, ensure_ascii=False)]

    def finish(self, turn_id: str) -> list[str]:
        """``{"text": ""}``: the server sends the rest, the final frame, and closes. A turn
        that sent no text ends at once (nothing is sent; check :meth:`state`)."""
        self._bound(turn_id, "finish")
        if not self.sent_text:
            self.phase = DONE
            return []
        self.phase = ENDING
        return ['{"text": ""}']

    def cancel(self, turn_id: str) -> list[str]:
        """Barge-in: ``{"force": true}`` stops the synthesis [C]; what still comes is flagged."""
        if turn_id != self.turn or self.phase not in (SPEAKING, ENDING):
            if turn_id == self.turn and self.phase == FAILED:
                self.phase = CANCELLED
            return []
        self.phase = CANCELLED
        return ['{"force": true}']

    # ---- inbound -------------------------------------------------------------------

    def connection_made(self) -> list[ProviderEvent]:
        return [ProviderReady()]  # no answer to the handshake exists

    def connection_lost(self) -> list[ProviderEvent]:
        """The socket closed: a turn still waiting for its final frame fails (fatal)."""
        self.closed = True
        if self.turn is not None and self.phase in (SPEAKING, ENDING):
            self.phase = CLOSED
            return [ProviderError(self.turn, "connection_closed",
                                  "Telnyx closed the socket before the final frame", True)]
        if self.phase in (NEW, READY):
            self.phase = CLOSED
        return []  # after the final frame (by design), a cancel or an error

    def receive(self, text: str) -> list[ProviderEvent]:
        msg = parse_object(text, "Telnyx frame", kind="bad_message")
        kind = msg.get("type")
        if msg.get("error") is not None or kind == "error":
            return self._on_error(msg)
        if "audio" not in msg and "isFinal" not in msg and kind not in ("audio_chunk", "final"):
            raise ProviderProtocolError("bad_message", f"Telnyx frame has no audio, isFinal or "
                                        f"error: {_preview(text)}")
        events: list[ProviderEvent] = []
        audio = msg.get("audio")
        if audio is not None:
            if type(audio) is not str:
                raise ProviderProtocolError("bad_audio", "Telnyx audio is not a base64 string")
            events += self._on_audio(audio, msg)
        said = msg.get("text")
        if type(said) is str and said.strip() and self.phase in (SPEAKING, ENDING):
            # a synthesized segment's text comes after (or with) the last of its audio [C]
            self.segments_out += 1
        if msg.get("isFinal") is True or kind == "final":
            events += self._on_final()
        return events

    def _on_audio(self, audio: str, msg: dict) -> list[ProviderEvent]:
        data = decode_base64(audio, "Telnyx audio")
        turn = self.turn
        if turn is None:
            raise ProviderProtocolError("unexpected_audio",
                                        "Telnyx sent audio before any text was sent")
        if self.phase in (CANCELLED, FAILED, DONE, CLOSED):
            self.late_audio_bytes += len(data)
            return [ProviderAudio(turn, data, self.encoding, self.sample_rate)] \
                if self.phase == CANCELLED and data else []
        if self.first_chunk and data:
            self.first_chunk = False
            ttfa = msg.get("timeToFirstAudioFrameMs")
            self.time_to_first_audio_ms = ttfa if isinstance(ttfa, (int, float)) else None
            self.cached = msg.get("cached") if type(msg.get("cached")) is bool else None
            if data[:3] == b"ID3":
                self.phase = FAILED
                return [ProviderError(turn, "unsupported_format", (
                    f"Telnyx sent MP3 although audio_format={self.audio_format} was asked: "
                    f"voice {self.voice!r} ignores audio_format; pick a voice whose engine "
                    "streams raw PCM (e.g. Telnyx.NaturalHD.*)"))]
        if self.encoding == "pcm_s16le":
            if data[:4] == b"RIFF":  # defensive (§9.1): a wav header would click
                data = strip_wav_header(data)
            data, self.odd = whole_samples(self.odd, data)
        if not data:
            return []
        return [ProviderAudio(turn, data, self.encoding, self.sample_rate)]

    def _on_final(self) -> list[ProviderEvent]:
        if self.turn is None or self.phase not in (ENDING, SPEAKING):
            return []  # after a cancel or an error: nothing waits for it
        self.phase = DONE
        return [ProviderDone(self.turn)]

    def _on_error(self, msg: dict) -> list[ProviderEvent]:
        err = msg.get("error")
        text = err if type(err) is str else (json.dumps(err) if err is not None else "")
        text = text or str(msg.get("message") or "error frame without a message")
        kind = _classify(text)
        state = self.phase
        if state not in (CANCELLED, DONE, CLOSED):
            self.phase = FAILED
        if self.turn is not None and state in (SPEAKING, ENDING):
            # the turn failed; the socket closes shortly [C] and is never reused anyway
            return [ProviderError(self.turn, kind, f"Telnyx: {text}")]
        if state in (CANCELLED, DONE):
            return []
        return [ProviderError(None, kind, f"Telnyx: {text}")]


def _classify(text: str) -> str:
    probe = text.lower()
    if "voice" in probe:
        return "invalid_voice"
    if "invalid message" in probe:
        return "invalid_message"
    if "audio response" in probe or "synthes" in probe:
        return "synthesis_failed"
    return "server_error"
