"""Exotel AgentStream (Voicebot applet, bidirectional), server side, as a sans-I/O protocol.

Exotel opens a WebSocket to the gateway from the Voicebot applet and speaks JSON in text
frames only::

    Exotel -> gateway   connected, start (once), then media / dtmf / mark ..., stop
    gateway -> Exotel   media {payload}, mark {name}, clear      (each with the stream_sid)

Audio is raw 16-bit little-endian mono PCM both ways, at the rate the applet URL asks for
(``?sample-rate=16000``/``24000``, default 8000). Read it from ``start``: advertising 16 kHz
and decoding 8 kHz is a known cause of choppy calls. Outbound chunks must be at least
3200 bytes, a multiple of 320 bytes and at most 100 KB; shorter or ragged chunks make
Exotel wait or jitter, so :attr:`ExotelProtocol.frames_per_message` is set at ``start``
and :meth:`~ExotelProtocol.media_message` refuses anything else.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from typing import Any

from gateway.carriers.events import (
    Audio,
    CarrierCommand,
    CarrierEvent,
    CarrierProtocolError,
    Clear,
    Connected,
    Dtmf,
    Mark,
    MarkPlayed,
    MediaFormat,
    PlayAudio,
    Started,
    Stopped,
)
from gateway.carriers.jsonfields import (
    binary_frame_error,
    decode_payload,
    load_message,
    object_field,
    string_field,
    string_map,
)

__all__ = ["ExotelProtocol"]

_RATES = (8000, 16000, 24000)
_MIN_CHUNK = 3200
_CHUNK_STEP = 320
_MAX_CHUNK = 100_000
_ORDER = "Exotel sends connected, then start, then media/dtmf/mark, then stop"


def _frames_per_message(frame_bytes: int) -> int:
    """The fewest 20 ms frames that make a legal chunk (≥ 3200 B, a multiple of 320 B)."""
    frames = 1
    while frames * frame_bytes < _MIN_CHUNK or frames * frame_bytes % _CHUNK_STEP:
        frames += 1
    return frames


class ExotelProtocol:
    """One Exotel AgentStream stream, seen from the gateway (the WebSocket server).

    Inbound: :meth:`receive_text` for each text frame, :meth:`receive_bytes` for each
    binary frame. Each returns one normalized event. A frame that breaks the protocol
    raises :class:`~gateway.carriers.events.CarrierProtocolError` and leaves the state
    unchanged.

    State: ``connected`` is optional (once, before ``start``); ``start`` comes once, before
    any ``media``/``dtmf``/``mark``; ``stop`` may come at any time and ends the stream:
    every frame after it is ``out_of_order``.

    Outbound: :meth:`media_message`, :meth:`mark_message`, :meth:`clear_message` and
    :meth:`send` return the UTF-8 JSON of one text frame; they raise :class:`RuntimeError`
    before ``start`` (they carry the stream_sid).
    """

    carrier = "exotel"
    #: Exotel does not document what a ``clear`` does to pending marks. ``False`` is the
    #: choice that cannot stall: the gateway writes off the marks a clear cuts instead of
    #: waiting for echoes that may never come, and an echo that does come later is a name
    #: it no longer waits for. ``True`` would wait on Exotel for nothing if it drops them.
    marks_cleared_on_clear = False
    #: set at ``start`` from the sample rate: 10 frames at 8 kHz, 5 at 16 kHz, 4 at 24 kHz
    frames_per_message = _frames_per_message(MediaFormat("l16", 8000).bytes_per_20ms)
    lead_s: float | None = None

    def __init__(self) -> None:
        self.stream_id: str | None = None
        self.call_id: str | None = None
        self.media_format: MediaFormat = MediaFormat("l16", 8000)
        self.custom_parameters: dict[str, str] = {}
        self._connected = False
        self._stopped = False
        self._media_prefix: bytes | None = None
        self._mark_prefix = b""
        self._clear_text = b""

    @property
    def started(self) -> bool:
        """``start`` has been received: :attr:`stream_id` and friends are set."""
        return self.stream_id is not None

    @property
    def stopped(self) -> bool:
        """``stop`` has been received: the stream is over."""
        return self._stopped

    # ---- inbound ---------------------------------------------------------------

    def receive_text(self, text: str) -> CarrierEvent | None:
        """Parse one text frame from Exotel into an event."""
        event, message = load_message(text, "Exotel", self._HANDLERS)
        if self._stopped:
            raise CarrierProtocolError(
                "out_of_order", f"{event} after stop: stop ends the stream ({_ORDER})"
            )
        if self.started and "stream_sid" in message and message["stream_sid"] != self.stream_id:
            raise CarrierProtocolError(
                "missing_field",
                f"{event} for stream_sid {message['stream_sid']!r}, but this socket carries "
                f"stream {self.stream_id!r}: one socket is one stream",
            )
        return self._HANDLERS[event](self, message)

    def receive_bytes(self, data: bytes) -> CarrierEvent | None:
        """Exotel never sends binary frames; any binary frame is a protocol error."""
        raise binary_frame_error("Exotel", data)

    def _on_connected(self, message: dict[str, Any]) -> CarrierEvent | None:
        if self._connected or self.started:
            where = "a second connected" if self._connected else "connected after start"
            raise CarrierProtocolError("out_of_order", f"{where}: {_ORDER}")
        self._connected = True
        return Connected()

    def _on_start(self, message: dict[str, Any]) -> CarrierEvent | None:
        if self.started:
            raise CarrierProtocolError(
                "out_of_order", f"a second start on stream {self.stream_id!r}: {_ORDER}"
            )
        start = object_field(message, "start", "start")
        call_id = string_field(start, "call_sid", "start")
        stream_id = message.get("stream_sid", start.get("stream_sid"))
        if type(stream_id) is not str or not stream_id:
            raise CarrierProtocolError(
                "missing_field",
                "start has no stream_sid (top-level or start.stream_sid); "
                "outbound messages cannot be addressed without it",
            )
        if "stream_sid" in start and start["stream_sid"] != stream_id:
            raise CarrierProtocolError(
                "missing_field",
                f"start.stream_sid {start['stream_sid']!r} differs from the message's "
                f"stream_sid {stream_id!r}",
            )
        media_format = _media_format(start.get("media_format"))
        custom_parameters = string_map(start.get("custom_parameters"), "start.custom_parameters")

        self.stream_id = stream_id
        self.call_id = call_id
        self.media_format = media_format
        self.custom_parameters = custom_parameters
        self.frames_per_message = _frames_per_message(media_format.bytes_per_20ms)
        sid = json.dumps(stream_id).encode()
        self._media_prefix = b'{"event":"media","stream_sid":' + sid + b',"media":{"payload":"'
        self._mark_prefix = b'{"event":"mark","stream_sid":' + sid + b',"mark":{"name":'
        self._clear_text = b'{"event":"clear","stream_sid":' + sid + b"}"
        return Started(
            call_id=call_id,
            stream_id=stream_id,
            media_format=media_format,
            custom_parameters=dict(custom_parameters),
        )

    def _on_media(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._require_started("media")
        media = object_field(message, "media", "media")
        return Audio(decode_payload(media, "media", "16-bit little-endian PCM"))

    def _on_dtmf(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._require_started("dtmf")
        dtmf = object_field(message, "dtmf", "dtmf")
        return Dtmf(string_field(dtmf, "digit", "dtmf"))

    def _on_mark(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._require_started("mark")
        name = object_field(message, "mark", "mark").get("name")
        if type(name) is not str:
            raise CarrierProtocolError("missing_field", "mark has no mark.name string")
        return MarkPlayed(name)

    def _on_stop(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._stopped = True
        return Stopped()

    def _require_started(self, event: str) -> None:
        if not self.started:
            raise CarrierProtocolError("out_of_order", f"{event} before start: {_ORDER}")

    _HANDLERS: dict[str, Callable[[ExotelProtocol, dict[str, Any]], CarrierEvent | None]] = {
        "connected": _on_connected,
        "start": _on_start,
        "media": _on_media,
        "dtmf": _on_dtmf,
        "mark": _on_mark,
        "stop": _on_stop,
    }

    # ---- outbound --------------------------------------------------------------

    def media_message(self, payload: bytes) -> bytes:
        """``{"event":"media","stream_sid":…,"media":{"payload":<base64>}}``.

        ``payload`` is 16-bit little-endian PCM at :attr:`media_format`'s rate, 3200 to
        100 000 bytes and a multiple of 320 (:attr:`frames_per_message` frames; pad the
        last chunk of an utterance with silence). Anything else raises :class:`ValueError`.
        """
        prefix = self._media_prefix
        if prefix is None:
            raise RuntimeError(self._not_started("media"))
        size = len(payload)
        if size < _MIN_CHUNK or size % _CHUNK_STEP or size > _MAX_CHUNK:
            raise ValueError(
                f"Exotel media chunks must be {_MIN_CHUNK}..{_MAX_CHUNK} bytes and a multiple "
                f"of {_CHUNK_STEP}, got {size} bytes: send {self.frames_per_message} frames "
                "per message and pad the last one with silence"
            )
        return prefix + binascii.b2a_base64(payload, newline=False) + b'"}}'

    def mark_message(self, name: str) -> bytes:
        """``{"event":"mark","stream_sid":…,"mark":{"name":…}}``; Exotel echoes it once the
        audio sent before it has played."""
        if self._media_prefix is None:
            raise RuntimeError(self._not_started("mark"))
        if type(name) is not str:
            raise TypeError(f"mark name must be a str, not {type(name).__name__}")
        return self._mark_prefix + json.dumps(name).encode() + b"}}"

    def clear_message(self) -> bytes:
        """``{"event":"clear","stream_sid":…}``: Exotel drops its buffered audio."""
        if self._media_prefix is None:
            raise RuntimeError(self._not_started("clear"))
        return self._clear_text

    def hangup_message(self) -> bytes | None:
        """``None``: closing the socket ends the stream and the call flow moves on to the
        applet after the Voicebot."""
        return None

    def send(self, command: CarrierCommand) -> bytes:
        """The text frame for a normalized command."""
        if type(command) is PlayAudio:
            return self.media_message(command.payload)
        if type(command) is Mark:
            return self.mark_message(command.name)
        if type(command) is Clear:
            return self.clear_message()
        raise TypeError(f"Exotel has no message for command {command!r}")

    @staticmethod
    def _not_started(what: str) -> str:
        return (
            f"cannot send {what} before Exotel's start message: every outbound message "
            "carries the stream_sid that start delivers"
        )


def _media_format(value: Any) -> MediaFormat:
    if type(value) is not dict:
        raise CarrierProtocolError(
            "missing_field",
            f"start.media_format must be an object with encoding and sample_rate, got {value!r}",
        )
    if value.get("encoding") != "audio/x-raw":
        raise CarrierProtocolError(
            "missing_field",
            f"start.media_format.encoding is {value.get('encoding')!r}; Exotel streams "
            "carry 'audio/x-raw' (16-bit little-endian PCM)",
        )
    rate = value.get("sample_rate")
    # Exotel sends the numbers as strings ("8000", "16"); take a number too.
    if type(rate) is str and rate.isdecimal():
        rate = int(rate)
    if type(rate) is not int or rate not in _RATES:
        raise CarrierProtocolError(
            "missing_field",
            f"start.media_format.sample_rate is {value.get('sample_rate')!r}; Exotel "
            "streams at \"8000\", \"16000\" or \"24000\"",
        )
    bits = value.get("bit_rate", "16")
    if bits not in ("16", 16):
        raise CarrierProtocolError(
            "missing_field",
            f"start.media_format.bit_rate is {bits!r}; Exotel streams 16-bit PCM",
        )
    return MediaFormat("l16", rate)
