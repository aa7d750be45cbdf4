"""The bot protocol, sans I/O: the bot's messages in, typed commands out; the gateway's
replies and events out as JSON-ready dicts.

Spoken over the control socket (``WS /v1/calls/{id}/control``) and over the socket the
gateway opens to a route's bot (gateway/bot/dialer.py); the I/O is gateway/bot/channel.py.
The contract: the README's section "Bots: hear the caller, be interrupted, be dialed".

Every value from the bot is type-checked and bounded here; a message that fails becomes a
:class:`ProtocolError` whose ``kind`` is one of :data:`ERROR_KINDS` and whose message names
the field, never echoing more than a few dozen characters of what the bot sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.bot.jsontext import BadJson, parse_json
from gateway.config import BARGE_IN_MODES, BOT_AUDIO_FORMATS, GatewayConfig
from gateway.prompts.settings import PROMPT_NAME, url_problem

#: ``{"type": "error", "kind": ...}``: a malformed message, one over the size limit, a limit
#: on the call's speech (gateway/core/speech.py REFUSALS), a call that takes no more speech,
#: a ``play`` naming no configured prompt
ERROR_KINDS = ("bad_request", "too_large", "queue_full", "utterance_text", "call_text",
               "call_ended", "unknown_prompt")
DEFAULT_AUDIO = "l16/16000"
DEFAULT_PACKET_MS = 20
PACKET_MS_MIN, PACKET_MS_MAX, PACKET_MS_STEP = 20, 200, 20
MAX_NAME_CHARS = 200  # a voice name
_TYPES = ("speak", "play", "interrupt", "hangup", "listen", "barge_in")


class ProtocolError(ValueError):
    """A bot message the gateway cannot take; answered with :func:`error`."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# ---- limits -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageLimits:
    """What bounds a bot's messages: the control API's limits."""

    max_text_chars: int
    providers: tuple[str, ...]

    @classmethod
    def from_config(cls, config: GatewayConfig) -> MessageLimits:
        return cls(config.limits.max_text_chars, tuple(config.providers))

    @property
    def max_message_bytes(self) -> int:
        """The largest message: a speak of ``max_text_chars`` written as JSON escapes (up to
        12 bytes a character), with room for the other fields."""
        return 12 * self.max_text_chars + 4096


# ---- bot -> gateway -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Speak:
    """Text to say; on a socket, pieces accumulate into one utterance until ``flush``."""

    text: str
    flush: bool = False
    voice: str | None = None
    provider: str | None = None
    interruptible: bool = True  # false: the caller's voice and keys do not cut it
    interrupt: bool = False  # cut what is speaking first (the HTTP API's speak)


@dataclass(frozen=True, slots=True)
class Play:
    """A prompt to play, queued like speech: one of ``prompts.items`` by name, or the
    recording at an https URL (exactly one of them)."""

    prompt: str | None = None
    url: str | None = None
    interruptible: bool = True
    interrupt: bool = False  # cut what is speaking first


@dataclass(frozen=True, slots=True)
class Interrupt:
    pass


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


@dataclass(frozen=True, slots=True)
class Listen:
    """The caller's audio on this socket as ``audio`` (one of ``BOT_AUDIO_FORMATS``) in
    packets of ``packet_ms``; ``audio`` None stops it."""

    audio: str | None = DEFAULT_AUDIO
    packet_ms: int = DEFAULT_PACKET_MS

    def describe(self) -> dict[str, Any] | None:
        """As ``call.started`` and ``listen.accepted`` show it."""
        if self.audio is None:
            return None
        return {"format": self.audio, "packet_ms": self.packet_ms}


@dataclass(frozen=True, slots=True)
class BargeIn:
    """Changes to the call's barge-in settings (the values' ranges are the configuration's,
    checked by ``Call.set_barge_in``)."""

    mode: str | None = None
    min_speech_ms: int | None = None
    min_silence_ms: int | None = None

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ("mode", "min_speech_ms", "min_silence_ms")
                if getattr(self, name) is not None}


BotCommand = Speak | Play | Interrupt | Hangup | Listen | BargeIn


def parse_message(data: str | bytes, limits: MessageLimits) -> BotCommand:
    """One text frame from the bot as a command; raises :class:`ProtocolError`."""
    try:
        body = parse_json(data, max_bytes=limits.max_message_bytes)
    except BadJson as exc:
        raise ProtocolError(exc.kind, str(exc)) from None
    kind = body.get("type") if type(body) is dict else None
    if kind == "speak":
        return parse_speak(body, limits, streaming=True)
    if kind == "play":
        return parse_play(body)
    if kind == "interrupt":
        return Interrupt()
    if kind == "hangup":
        return Hangup()
    if kind == "listen":
        return parse_listen(body)
    if kind == "barge_in":
        return parse_barge_in(body)
    raise ProtocolError("bad_request", f"type: expected {', '.join(_TYPES[:-1])} or "
                        f"{_TYPES[-1]}, got {shown(kind)}")


def parse_speak(body: Any, limits: MessageLimits, *, streaming: bool) -> Speak:
    """A speak message (or the HTTP API's speak body, ``streaming`` false: text required)."""
    if type(body) is not dict:
        raise ProtocolError("bad_request", "body must be a JSON object like {\"text\": \"Hello\"}")
    text = body.get("text")
    if type(text) is not str or (not streaming and not text.strip()):
        raise ProtocolError("bad_request", "text: required, a non-empty string")
    if len(text) > limits.max_text_chars:
        raise ProtocolError("bad_request",
                            f"text: {len(text)} characters is over the limit of "
                            f"{limits.max_text_chars} (limits.max_text_chars)")
    provider = body.get("provider")
    if provider is not None and (type(provider) is not str or provider not in limits.providers):
        raise ProtocolError("bad_request",
                            f"provider: {shown(provider)} is not a configured provider "
                            f"(configured: {', '.join(limits.providers)})")
    voice = body.get("voice")
    if voice is not None and (type(voice) is not str or len(voice) > MAX_NAME_CHARS):
        raise ProtocolError("bad_request",
                            f"voice: must be a string of at most {MAX_NAME_CHARS} characters")
    flags = {}
    for flag, default in (("flush", False), ("interrupt", False), ("interruptible", True)):
        value = body.get(flag, default)
        if type(value) is not bool:
            raise ProtocolError("bad_request", f"{flag}: must be true or false")
        flags[flag] = value
    return Speak(text, voice=voice, provider=provider, **flags)


def parse_play(body: Any) -> Play:
    """A play message, or the HTTP API's play body: ``{"prompt": NAME}`` or
    ``{"url": "https://..."}``, with ``interrupt`` and ``interruptible`` as for speak."""
    if type(body) is not dict:
        raise ProtocolError("bad_request", "body must be a JSON object like "
                            "{\"prompt\": \"welcome\"} or {\"url\": \"https://...\"}")
    prompt, url = body.get("prompt"), body.get("url")
    if (prompt is None) == (url is None):
        raise ProtocolError("bad_request", "give exactly one of prompt (a name in "
                            "prompts.items) and url (an https URL of a recording)")
    if prompt is not None and (type(prompt) is not str or not PROMPT_NAME.match(prompt)):
        raise ProtocolError("bad_request", f"prompt: {shown(prompt)} is not a prompt name "
                            "(1 to 64 of A-Z a-z 0-9 _ . -)")
    if url is not None and (problem := url_problem(url)):
        raise ProtocolError("bad_request", f"url: {shown(url)} must be {problem}")
    flags = {}
    for flag, default in (("interrupt", False), ("interruptible", True)):
        value = body.get(flag, default)
        if type(value) is not bool:
            raise ProtocolError("bad_request", f"{flag}: must be true or false")
        flags[flag] = value
    return Play(prompt, url, **flags)


def parse_listen(body: dict[str, Any]) -> Listen:
    """``{"type": "listen", "audio"?: format | null, "packet_ms"?: int}``."""
    audio = body.get("audio", DEFAULT_AUDIO)
    packet_ms = body.get("packet_ms", DEFAULT_PACKET_MS)
    if audio is not None and (type(audio) is not str or audio not in BOT_AUDIO_FORMATS):
        raise ProtocolError("bad_request", f"audio: {shown(audio)} is not one of "
                            f"{', '.join(BOT_AUDIO_FORMATS)} (or null to stop)")
    return Listen(audio, _packet_ms(packet_ms))


def parse_listen_query(query: Mapping[str, str]) -> Listen | None:
    """``?audio=l16/16000&packet_ms=20`` on the control socket's URL; None without them."""
    if "audio" not in query and "packet_ms" not in query:
        return None
    audio = query.get("audio", DEFAULT_AUDIO)
    if audio not in BOT_AUDIO_FORMATS:
        raise ProtocolError("bad_request", f"audio: {shown(audio)} is not one of "
                            f"{', '.join(BOT_AUDIO_FORMATS)}")
    packet_ms = query.get("packet_ms", str(DEFAULT_PACKET_MS))
    if not (packet_ms.isascii() and packet_ms.isdigit() and len(packet_ms) <= 3):
        raise ProtocolError("bad_request", f"packet_ms: {shown(packet_ms)} is not a number of "
                            f"milliseconds from {PACKET_MS_MIN} to {PACKET_MS_MAX}")
    return Listen(audio, _packet_ms(int(packet_ms)))


def _packet_ms(value: Any) -> int:
    if (type(value) is not int or not PACKET_MS_MIN <= value <= PACKET_MS_MAX
            or value % PACKET_MS_STEP):
        raise ProtocolError("bad_request", f"packet_ms: {shown(value)} is not an integer from "
                            f"{PACKET_MS_MIN} to {PACKET_MS_MAX} in steps of {PACKET_MS_STEP}")
    return value


def parse_barge_in(body: dict[str, Any]) -> BargeIn:
    """``{"type": "barge_in", "mode"?, "min_speech_ms"?, "min_silence_ms"?}``."""
    mode = body.get("mode")
    if mode is not None and (type(mode) is not str or mode not in BARGE_IN_MODES):
        raise ProtocolError("bad_request", f"mode: {shown(mode)} is not one of "
                            f"{', '.join(BARGE_IN_MODES)}")
    values = {}
    for name in ("min_speech_ms", "min_silence_ms"):
        value = body.get(name)
        if value is not None and type(value) is not int:
            raise ProtocolError("bad_request", f"{name}: {shown(value)} is not an integer")
        values[name] = value
    command = BargeIn(mode, **values)
    if not command.changes():
        raise ProtocolError("bad_request", "barge_in: give at least one of mode, "
                            "min_speech_ms, min_silence_ms")
    return command


# ---- gateway -> bot -----------------------------------------------------------------------


def error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "kind": kind, "message": message}


def speak_accepted(speech_id: str, flushed: bool) -> dict[str, Any]:
    return {"type": "speak.accepted", "speech_id": speech_id, "flushed": flushed}


def play_accepted(speech_id: str, prompt: str | None) -> dict[str, Any]:
    return {"type": "play.accepted", "speech_id": speech_id, "prompt": prompt}


def interrupt_done(interrupted: int) -> dict[str, Any]:
    return {"type": "interrupt.done", "interrupted": interrupted}


def hangup_accepted() -> dict[str, Any]:
    return {"type": "hangup.accepted"}


def listen_accepted(listen: Listen) -> dict[str, Any]:
    return {"type": "listen.accepted", "audio": listen.describe()}


def barge_in_accepted(mode: str, min_speech_ms: int, min_silence_ms: int) -> dict[str, Any]:
    return {"type": "barge_in.accepted", "mode": mode, "min_speech_ms": min_speech_ms,
            "min_silence_ms": min_silence_ms}


def started_fields(*, carrier: str, route: str, stream_id: str, caller: str | None,
                   called: str | None, custom_parameters: Mapping[str, str],
                   encoding: str, sample_rate: int) -> dict[str, Any]:
    """The fields of the ``call.started`` event (the EventHub adds type, call_id, ts, seq;
    each socket adds the ``audio`` it receives, see :func:`started_frame`)."""
    return {"carrier": carrier, "route": route, "stream_id": stream_id,
            "from": caller, "to": called, "custom_parameters": dict(custom_parameters),
            "media_format": {"encoding": encoding, "sample_rate": sample_rate}}


def started_frame(event: Mapping[str, Any], listen: Listen | None) -> dict[str, Any]:
    """``call.started`` as one socket receives it: with the audio that socket gets."""
    return {**event, "audio": listen.describe() if listen else None}


def shown(value: object) -> str:
    """A value from the bot, as it may appear in a reply: bounded."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
