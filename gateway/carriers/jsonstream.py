"""What the JSON carrier protocols share: the text-frame dispatch, the start/stop state, the
common events and the outbound messages built from pre-rendered parts.

Twilio (and SignalWire), Telnyx, Plivo, Exotel and Vonage's control frames are JSON objects
whose ``"event"`` picks a handler. :class:`JsonStreamProtocol` parses a frame, rejects
what comes after ``stop`` or names another stream, and calls the handler; a carrier module
fills in its event table, the names and wording its errors use, and the handlers and
outbound parts that are its own.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from typing import Any, ClassVar

from gateway.carriers.base import CarrierBase
from gateway.carriers.events import (
    CarrierEvent,
    CarrierProtocolError,
    Connected,
    Dtmf,
    MarkPlayed,
    MediaFormat,
    Started,
    Stopped,
)
from gateway.carriers.jsonfields import (
    binary_frame_error,
    not_json_error,
    object_field,
    string_field,
    unknown_event_error,
)

__all__ = ["JsonStreamProtocol", "media_stream_parts"]


def media_stream_parts(stream_field: str, stream_id: str) -> tuple[bytes, bytes, bytes]:
    """The constant parts of Twilio's outbound messages, which Exotel copies with its own
    field name: the media message up to its base64, the mark message up to its JSON name,
    and the whole clear message, each addressed with ``"<stream_field>":<stream_id>``."""
    address = b'"' + stream_field.encode() + b'":' + json.dumps(stream_id).encode()
    return (
        b'{"event":"media",' + address + b',"media":{"payload":"',
        b'{"event":"mark",' + address + b',"mark":{"name":',
        b'{"event":"clear",' + address + b"}",
    )


class JsonStreamProtocol(CarrierBase):
    """A carrier stream whose text frames are JSON objects with an ``"event"`` field.

    A subclass sets, besides :class:`~gateway.carriers.base.CarrierBase`'s attributes:

    - ``_EVENTS``: event name -> name of its handler method (``handler(message)``), in
      the order error messages list the events. Handlers are looked up when the class is
      created, so a subclass that overrides a handler needs no table of its own.
    - ``_STREAM_FIELD``: the field in which inbound messages name their stream; a message
      that names another stream than the started one is rejected (``None``: no field).
    - ``_ORDER``: the order the carrier sends its messages in, for ``out_of_order`` errors;
      ``_START_EVENT``, the message that starts the stream (``start``), and
      ``_START_NEEDED``, why nothing can be sent before it, for error messages too.
    - ``_parse_start(message)``: the :class:`~gateway.carriers.events.Started` event of
      its start message, all validated; and ``_on_started()`` to set what depends on it.

    Outbound, :meth:`media_message` wraps the base64 of a payload in ``_media_prefix`` and
    ``"}}``; :meth:`mark_message` puts the JSON name between ``_mark_prefix`` and
    ``_MARK_END``; :meth:`clear_message` is ``_clear_text``. ``_media_prefix`` stays
    ``None`` until ``_on_started`` sets it; the other two may be class constants. Errors
    name the messages ``_MEDIA_EVENT``, ``_MARK_EVENT`` and ``_CLEAR_EVENT``.
    """

    _EVENTS: ClassVar[dict[str, str]] = {}
    _HANDLERS: ClassVar[dict[str, Callable[[Any, dict[str, Any]], CarrierEvent | None]]] = {}
    _STREAM_FIELD: ClassVar[str | None] = None
    _ORDER: ClassVar[str] = ""
    _START_EVENT: ClassVar[str] = "start"
    _START_NEEDED: ClassVar[str] = ""
    _MEDIA_EVENT: ClassVar[str] = "media"
    _MARK_EVENT: ClassVar[str] = "mark"
    _CLEAR_EVENT: ClassVar[str] = "clear"
    _MARK_END: ClassVar[bytes] = b"}}"

    # set at start, or class constants; never both: an instance attribute that shadows a
    # class attribute is read without CPython 3.13's fast path (hence no class-level
    # default for _media_prefix either, which media_message reads 50 times a second)
    _mark_prefix: bytes
    _clear_text: bytes

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._HANDLERS = {event: getattr(cls, method) for event, method in cls._EVENTS.items()}

    def __init__(self, media_format: MediaFormat) -> None:
        super().__init__(media_format)
        self._connected = False
        self._media_prefix: bytes | None = None

    # ---- inbound ---------------------------------------------------------------

    def receive_text(self, text: str) -> CarrierEvent | None:
        """Parse one text frame into an event (``None``: nothing to report)."""
        try:
            message = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise not_json_error(self.display_name, text, exc) from None
        event = message.get("event") if type(message) is dict else None
        handler = self._HANDLERS.get(event) if type(event) is str else None
        if handler is None:
            raise unknown_event_error(self.display_name, text, message, self._HANDLERS)
        if self._stopped:
            raise CarrierProtocolError(
                "out_of_order", f"{event} after stop: stop ends the stream ({self._ORDER})"
            )
        stream_id = self.stream_id
        if stream_id is not None:
            field = self._STREAM_FIELD  # None is never a key of a JSON object
            if field in message and message[field] != stream_id:
                raise CarrierProtocolError(
                    "missing_field",
                    f"{event} for {field} {message[field]!r}, but this socket carries "
                    f"stream {stream_id!r}: one socket is one stream",
                )
        return handler(self, message)

    def receive_bytes(self, data: bytes) -> CarrierEvent | None:
        """The carrier never sends binary frames; any binary frame is a protocol error."""
        raise binary_frame_error(self.display_name, data)

    def _require_started(self, event: str) -> None:
        if self.stream_id is None:
            raise CarrierProtocolError(
                "out_of_order", f"{event} before {self._START_EVENT}: {self._ORDER}"
            )

    def _on_start(self, message: dict[str, Any]) -> CarrierEvent | None:
        if self.stream_id is not None:
            raise CarrierProtocolError(
                "out_of_order",
                f"a second {self._START_EVENT} on stream {self.stream_id!r}: {self._ORDER}",
            )
        started = self._begin(self._parse_start(message))
        self._on_started()
        return started

    def _parse_start(self, message: dict[str, Any]) -> Started:
        raise NotImplementedError

    def _on_started(self) -> None:
        """Set what depends on the stream's metadata (outbound parts, frame sizes)."""

    # the events Twilio defined and Telnyx, Exotel (and Plivo's dtmf) repeat

    def _on_connected(self, message: dict[str, Any]) -> CarrierEvent | None:
        if self._connected or self.stream_id is not None:
            where = "a second connected" if self._connected else "connected after start"
            raise CarrierProtocolError("out_of_order", f"{where}: {self._ORDER}")
        self._connected = True
        return Connected()

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

    # ---- outbound --------------------------------------------------------------

    def media_message(self, payload: bytes) -> bytes:
        """The UTF-8 JSON of one media message carrying ``payload``, base64-encoded."""
        prefix = self._media_prefix
        if prefix is None:
            raise RuntimeError(self._not_started(self._MEDIA_EVENT))
        return prefix + binascii.b2a_base64(payload, newline=False) + b'"}}'

    def mark_message(self, name: str) -> bytes:
        """The mark message for ``name``; the carrier echoes it once the audio sent before
        it has played."""
        if self.stream_id is None:
            raise RuntimeError(self._not_started(self._MARK_EVENT))
        if type(name) is not str:
            raise TypeError(f"{self._MARK_EVENT} name must be a str, not {type(name).__name__}")
        return self._mark_prefix + json.dumps(name).encode() + self._MARK_END

    def clear_message(self) -> bytes:
        """The message that drops the audio the carrier has buffered."""
        if self.stream_id is None:
            raise RuntimeError(self._not_started(self._CLEAR_EVENT))
        return self._clear_text

    def hangup_message(self) -> bytes | None:
        """``None``: closing the socket ends the stream (each carrier module says how the
        call itself ends)."""
        return None

    def _not_started(self, what: str) -> str:
        return (
            f"cannot send {what} before {self.display_name}'s {self._START_EVENT} message: "
            f"{self._START_NEEDED}"
        )
