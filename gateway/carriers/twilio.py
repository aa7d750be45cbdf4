"""Twilio Media Streams (bidirectional), server side, as a sans-I/O protocol.

Twilio opens a WebSocket to the gateway for each ``<Connect><Stream>`` and speaks JSON in
text frames only::

    Twilio -> gateway   connected, start (once), then media / dtmf / mark ..., stop
    gateway -> Twilio   media {payload}, mark {name}, clear   (each with the streamSid)

:class:`TwilioProtocol` turns inbound frames into the normalized events of
:mod:`gateway.carriers.events` and commands into outbound frames. It does no I/O: the caller
reads frames from its socket, feeds them in, and writes the strings it gets back.

Outbound building is on the hot path (one ``media`` message per 20 ms per call), so the
constant parts of every message are rendered once, at ``start``, and a frame costs one
base64 encoding and one string concatenation.
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
from gateway.carriers.jsonfields import object_field as _object
from gateway.carriers.jsonfields import preview as _preview
from gateway.carriers.jsonfields import string_field as _string

__all__ = ["TwilioProtocol"]

_TWILIO_ENCODINGS = {"audio/x-mulaw": "mulaw"}
_ORDER = "Twilio sends connected, then start, then media/dtmf/mark, then stop"


class TwilioProtocol:
    """One Twilio media stream, seen from the gateway (the WebSocket server).

    Inbound: :meth:`receive_text` for each text frame, :meth:`receive_bytes` for each
    binary frame. Each call returns one normalized event, or ``None`` for a frame that
    carries nothing for the gateway (outbound-track media). A frame that breaks the
    protocol raises :class:`~gateway.carriers.events.CarrierProtocolError`; the protocol's
    state is unchanged by a rejected frame, so the caller may log it and keep reading.

    State: ``connected`` is optional (accepted once, before ``start``), ``start`` must come
    exactly once before any ``media``/``dtmf``/``mark``; ``stop`` may come at any time and
    ends the stream: every frame after it is ``out_of_order``.

    Outbound: :meth:`media_message`, :meth:`mark_message`, :meth:`clear_message` and
    :meth:`send` return the JSON text to write. They need the ``streamSid``, so they raise
    :class:`RuntimeError` until ``start`` has been received.
    """

    carrier = "twilio"
    #: Twilio echoes every pending mark when it executes a ``clear``; an echo that arrives
    #: after a clear we sent means "not played", not "played".
    marks_cleared_on_clear = True
    #: any length is legal; the gateway sends one 20 ms frame per message
    frames_per_message = 1
    #: the configured lead (Twilio buffers up to ~10 minutes)
    lead_s: float | None = None

    def __init__(self) -> None:
        self.stream_id: str | None = None
        self.call_id: str | None = None
        self.media_format: MediaFormat = MediaFormat("mulaw", 8000)
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
        """Parse one text frame from Twilio into an event (``None``: nothing to report)."""
        if text.startswith('{"event":"media"') and self._media_prefix is not None:
            audio = self._fast_inbound_media(text)
            if audio is not None:
                return audio
        try:
            message = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise CarrierProtocolError(
                "not_json",
                f"Twilio text frame is not JSON ({exc}): {_preview(text)}; "
                "every Twilio message is a JSON object with an \"event\" field",
            ) from None
        if type(message) is not dict:
            raise CarrierProtocolError(
                "unknown_event",
                f"Twilio message is a JSON {type(message).__name__}, expected an object "
                f"with an \"event\" field: {_preview(text)}",
            )
        event = message.get("event")
        handler = self._HANDLERS.get(event) if type(event) is str else None
        if handler is None:
            if "event" not in message:
                detail = "has no \"event\" field"
            else:
                detail = f"has unknown event {event!r}"
            raise CarrierProtocolError(
                "unknown_event",
                f"Twilio message {detail}; expected one of "
                f"{', '.join(self._HANDLERS)}: {_preview(text)}",
            )
        if self._stopped:
            raise CarrierProtocolError(
                "out_of_order", f"{event} after stop: stop ends the stream ({_ORDER})"
            )
        if (
            self.stream_id is not None
            and "streamSid" in message
            and message["streamSid"] != self.stream_id
        ):
            raise CarrierProtocolError(
                "missing_field",
                f"{event} for streamSid {message['streamSid']!r}, but this socket carries "
                f"stream {self.stream_id!r}: one socket is one stream",
            )
        return handler(self, message)

    def _fast_inbound_media(self, text: str) -> Audio | None:
        """Caller audio arrives 50 times a second: take it without a JSON parse when the
        message is plainly well formed (one payload, inbound track, our stream). Anything
        else returns None and goes through the full parser, which names the problem."""
        start = text.find('"payload":"')
        if start < 0 or not text.endswith("}"):
            return None
        start += 11
        end = text.find('"', start)
        if (end < 0 or text.find('"payload"', end) >= 0 or '"track":"inbound"' not in text
                or self._stream_id_json not in text or self._stopped):
            return None
        try:
            return Audio(binascii.a2b_base64(text[start:end], strict_mode=True))
        except binascii.Error:
            return None

    def receive_bytes(self, data: bytes) -> CarrierEvent | None:
        """Twilio never sends binary frames; any binary frame is a protocol error."""
        raise CarrierProtocolError(
            "binary_frame",
            f"binary frame of {len(data)} bytes on a Twilio stream: Twilio sends only "
            "JSON text frames (audio is base64 in media.payload)",
        )

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
        start = _object(message, "start", "start")
        call_id = _string(start, "callSid", "start")
        stream_id = message.get("streamSid", start.get("streamSid"))
        if type(stream_id) is not str or not stream_id:
            raise CarrierProtocolError(
                "missing_field",
                "start has no streamSid (top-level or start.streamSid); "
                "outbound messages cannot be addressed without it",
            )
        if "streamSid" in start and start["streamSid"] != stream_id:
            raise CarrierProtocolError(
                "missing_field",
                f"start.streamSid {start['streamSid']!r} differs from the message's "
                f"streamSid {stream_id!r}",
            )
        media_format = _media_format(start.get("mediaFormat"))
        custom_parameters = _custom_parameters(start.get("customParameters"))

        self.stream_id = stream_id
        self.call_id = call_id
        self.media_format = media_format
        self.custom_parameters = custom_parameters
        sid = json.dumps(stream_id)
        # Outbound messages are UTF-8 bytes, ready to frame: the media message is built
        # 50 times a second per call, so it is one concatenation around the base64.
        self._stream_id_json = '"streamSid":' + sid
        sid_bytes = sid.encode()
        self._media_prefix = b'{"event":"media","streamSid":' + sid_bytes + b',"media":{"payload":"'
        self._mark_prefix = b'{"event":"mark","streamSid":' + sid_bytes + b',"mark":{"name":'
        self._clear_text = b'{"event":"clear","streamSid":' + sid_bytes + b"}"
        return Started(
            call_id=call_id,
            stream_id=stream_id,
            media_format=media_format,
            custom_parameters=dict(custom_parameters),
        )

    def _on_media(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._require_started("media")
        media = _object(message, "media", "media")
        track = media.get("track", "inbound")
        if track == "outbound":
            return None
        if track != "inbound":
            raise CarrierProtocolError(
                "missing_field",
                f"media.track is {track!r}; a Twilio stream carries 'inbound' "
                "(or 'outbound' with both_tracks)",
            )
        payload = media.get("payload")
        if type(payload) is not str:
            raise CarrierProtocolError(
                "missing_field", "media has no media.payload string (base64 μ-law)"
            )
        try:
            audio = binascii.a2b_base64(payload, strict_mode=True)
        except binascii.Error as exc:
            raise CarrierProtocolError(
                "bad_payload",
                f"media.payload is not valid base64 ({exc}): {_preview(payload, 40)}",
            ) from None
        return Audio(audio)

    def _on_dtmf(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._require_started("dtmf")
        dtmf = _object(message, "dtmf", "dtmf")
        return Dtmf(_string(dtmf, "digit", "dtmf"))

    def _on_mark(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._require_started("mark")
        mark = _object(message, "mark", "mark")
        name = mark.get("name")
        if type(name) is not str:
            raise CarrierProtocolError("missing_field", "mark has no mark.name string")
        return MarkPlayed(name)

    def _on_stop(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._stopped = True
        return Stopped()

    def _require_started(self, event: str) -> None:
        if self.stream_id is None:
            raise CarrierProtocolError("out_of_order", f"{event} before start: {_ORDER}")

    _HANDLERS: dict[str, Callable[[TwilioProtocol, dict[str, Any]], CarrierEvent | None]] = {
        "connected": _on_connected,
        "start": _on_start,
        "media": _on_media,
        "dtmf": _on_dtmf,
        "mark": _on_mark,
        "stop": _on_stop,
    }

    # ---- outbound --------------------------------------------------------------

    def media_message(self, payload: bytes) -> bytes:
        """``{"event":"media","streamSid":…,"media":{"payload":<base64 of payload>}}``.

        ``payload`` is raw μ-law/8000 (no file headers), any length. Like every outbound
        message, the result is the UTF-8 JSON of one text frame.
        """
        prefix = self._media_prefix
        if prefix is None:
            raise RuntimeError(self._not_started("media"))
        return prefix + binascii.b2a_base64(payload, newline=False) + b'"}}'

    def mark_message(self, name: str) -> bytes:
        """``{"event":"mark","streamSid":…,"mark":{"name":…}}``; Twilio echoes it once the
        audio sent before it has played (or has been cleared)."""
        if self._media_prefix is None:
            raise RuntimeError(self._not_started("mark"))
        if type(name) is not str:
            raise TypeError(f"mark name must be a str, not {type(name).__name__}")
        return self._mark_prefix + json.dumps(name).encode() + b"}}"

    def clear_message(self) -> bytes:
        """``{"event":"clear","streamSid":…}``: Twilio drops its buffered audio and echoes
        every pending mark."""
        if self._media_prefix is None:
            raise RuntimeError(self._not_started("clear"))
        return self._clear_text

    def hangup_message(self) -> bytes | None:
        """``None``: closing the socket ends the stream (TwiML after ``<Connect>`` runs)."""
        return None

    def send(self, command: CarrierCommand) -> bytes:
        """The text frame for a normalized command."""
        if type(command) is PlayAudio:
            return self.media_message(command.payload)
        if type(command) is Mark:
            return self.mark_message(command.name)
        if type(command) is Clear:
            return self.clear_message()
        raise TypeError(f"Twilio has no message for command {command!r}")

    @staticmethod
    def _not_started(what: str) -> str:
        return (
            f"cannot send {what} before Twilio's start message: every outbound message "
            "carries the streamSid that start delivers"
        )


# ---- field helpers (raise CarrierProtocolError("missing_field")) ---------------------


def _media_format(value: Any) -> MediaFormat:
    if value is None:
        return MediaFormat("mulaw", 8000)
    if type(value) is not dict:
        raise CarrierProtocolError(
            "missing_field", f"start.mediaFormat must be an object, got {value!r}"
        )
    name = value.get("encoding")
    encoding = _TWILIO_ENCODINGS.get(name) if type(name) is str else None
    if encoding is None:
        raise CarrierProtocolError(
            "missing_field",
            f"start.mediaFormat.encoding is {value.get('encoding')!r}; "
            "Twilio Media Streams carry 'audio/x-mulaw'",
        )
    rate = value.get("sampleRate", 8000)
    if type(rate) is not int or rate <= 0:
        raise CarrierProtocolError(
            "missing_field",
            f"start.mediaFormat.sampleRate must be a positive integer, got {rate!r}",
        )
    return MediaFormat(encoding, rate)


def _custom_parameters(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if type(value) is not dict or not all(type(v) is str for v in value.values()):
        raise CarrierProtocolError(
            "missing_field",
            f"start.customParameters must be an object of strings, got {value!r}",
        )
    return value
