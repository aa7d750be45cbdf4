"""Asterisk ``chan_websocket`` (media over WebSocket), server side, as a sans-I/O protocol.

Asterisk dials the gateway (``Dial(WebSocket/<connection>/c(ulaw))`` or ARI
``externalMedia``) and mixes frame types::

    Asterisk -> gateway   text MEDIA_START (once), then binary audio frames and text
                          DTMF_END, MEDIA_XOFF/MEDIA_XON, MEDIA_MARK_PROCESSED, ERROR, ...
    gateway -> Asterisk   binary audio, text MARK_MEDIA / FLUSH_MEDIA / HANGUP

Control messages come in one of two forms, chosen in Asterisk's configuration
(``control_message_format``): plain text ``EVENT key:value key:value`` or JSON
``{"event": "EVENT", ...}``. Commands must be written in the same form, since Asterisk
parses them in its configured format only; so the form MEDIA_START came in is the form of
every command (``channels/chan_websocket.c``, ``handle_command``).

Rules that shape this module (docs/protocols/carriers.md §6.3, §9 #9, asterisk/asterisk
``channels/chan_websocket.c`` and ``res/res_http_websocket.c``):

- Media is raw codec bytes, re-framed by Asterisk into ``optimal_frame_size`` pieces;
  leftover bytes of a message are dropped, so every message is a multiple of it.
- A WebSocket message above ~65 535 bytes closes the socket and hangs up the call
  ("Cannot fit huge websocket frame"); we stay at or below 65 500.
- A text command longer than 128 bytes is silently ignored (``MAX_TEXT_MESSAGE_LEN``).
- Do not send WebSocket pings (builds before PR #1722 hang up on a ping) and never
  fragment a message (CONTINUATION frames hung up the call before PR #1942).
- Caller audio may arrive before MEDIA_START (#1712): it is counted and dropped.
- There is no hang-up event: Asterisk closes the socket when the channel hangs up.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from gateway.carriers.base import MAX_STREAM_ID, CarrierBase
from gateway.carriers.events import (
    Audio,
    Binary,
    CarrierEvent,
    CarrierFault,
    CarrierProtocolError,
    Dtmf,
    FlowControl,
    MarkPlayed,
    MediaFormat,
    Started,
)
from gateway.carriers.jsonfields import preview as _preview

__all__ = ["MAX_MEDIA_MESSAGE", "MAX_TEXT_MESSAGE", "AsteriskProtocol"]

#: bytes in one binary message, below Asterisk's 65 535-byte frame limit (header included)
MAX_MEDIA_MESSAGE = 65_500
#: bytes in one text command (``MAX_TEXT_MESSAGE_LEN`` in chan_websocket.c)
MAX_TEXT_MESSAGE = 128

# Asterisk format names -> wire format (slin44 is 44.1 kHz)
_FORMATS = {
    "ulaw": MediaFormat("mulaw", 8000),
    "alaw": MediaFormat("alaw", 8000),
    "slin": MediaFormat("l16", 8000),
    **{f"slin{k}": MediaFormat("l16", rate) for k, rate in (
        ("12", 12000), ("16", 16000), ("24", 24000), ("32", 32000), ("44", 44100),
        ("48", 48000), ("96", 96000), ("192", 192000))},
}
_ORDER = "Asterisk sends MEDIA_START first, then media and events"


#: what ``CarrierFault.code`` says of chan_websocket's ERROR texts (:func:`_error_code`)
FAULT_CODES = frozenset({"passthrough_mode", "bad_json_command"})

class AsteriskProtocol(CarrierBase):
    """One chan_websocket channel, seen from the gateway (the WebSocket server).

    Inbound: :meth:`receive_text` for each text frame (either control form, detected per
    message), :meth:`receive_bytes` for each binary frame (caller audio in the channel's
    codec). Each returns one normalized event or ``None`` (QUEUE_DRAINED, STATUS,
    MEDIA_BUFFERING_COMPLETED, early audio). A frame that breaks the protocol raises
    :class:`~gateway.carriers.events.CarrierProtocolError` and leaves the state unchanged.

    Outbound: media as :class:`~gateway.carriers.events.Binary`, commands as UTF-8 text in
    MEDIA_START's form; all raise :class:`RuntimeError` before MEDIA_START.

    There is no stop event (:attr:`stopped` stays ``False``): the socket's close ends the
    channel.
    """

    carrier = "asterisk"
    display_name = "Asterisk"
    #: FLUSH_MEDIA frees the queued MARK_MEDIA markers with the audio: no report comes
    #: for a mark cut by a clear.
    marks_cleared_on_clear = False
    #: Asterisk buffers ~1000 frames and signals MEDIA_XOFF/XON: the configured lead applies
    #: (keep it small: a backlog becomes permanent latency, #2115).
    lead_s: float | None = None

    def __init__(self) -> None:
        super().__init__(MediaFormat("mulaw", 8000))
        self.frames_per_message = 1
        self.optimal_frame_size = 0
        #: "json" or "plain-text": the form of MEDIA_START, and so of our commands
        self.control_format: str | None = None
        #: MEDIA_XOFF received and no MEDIA_XON since
        self.flow_paused = False
        #: binary frames dropped because they came before MEDIA_START (asterisk #1712)
        self.early_audio_frames = 0

    # ---- inbound ---------------------------------------------------------------

    def receive_text(self, text: str) -> CarrierEvent | None:
        """Parse one control message (plain-text or JSON) into an event."""
        stripped = text.strip()
        fields: Any  # the JSON object, or the plain-text message's argument
        if stripped.startswith("{"):
            form = "json"
            event, fields = _parse_json(stripped)
        else:
            form = "plain-text"
            event, _, fields = stripped.partition(" ")
        handler = self._HANDLERS.get(event) if type(event) is str else None
        if handler is None:
            raise CarrierProtocolError(
                "unknown_event",
                f"Asterisk control message has unknown event {event!r}; expected one of "
                f"{', '.join(self._HANDLERS)}: {_preview(text)}",
            )
        if event != "MEDIA_START" and not self.started:
            raise CarrierProtocolError("out_of_order", f"{event} before MEDIA_START: {_ORDER}")
        return handler(self, form, fields)

    def receive_bytes(self, data: bytes) -> CarrierEvent | None:
        """A binary frame is caller audio in :attr:`media_format`."""
        if not self.started:
            self.early_audio_frames += 1
            return None
        if self.media_format.encoding == "l16" and len(data) % 2:
            raise CarrierProtocolError(
                "bad_frame_size",
                f"binary audio frame of {len(data)} bytes: 16-bit PCM frames have an even length",
            )
        return Audio(bytes(data)) if data else None

    def _on_media_start(self, form: str, fields: Any) -> CarrierEvent | None:
        if self.started:
            raise CarrierProtocolError(
                "out_of_order", f"a second MEDIA_START on connection {self.stream_id!r}: {_ORDER}"
            )
        if form == "plain-text":
            fields = _plain_fields(fields)
        name = fields.get("format")
        media_format = _FORMATS.get(name.lower()) if type(name) is str else None
        if media_format is None:
            raise CarrierProtocolError(
                "missing_field",
                f"MEDIA_START format is {name!r}; the gateway speaks ulaw, alaw, slin and "
                "slin12..slin192 (set c(<codec>) in the dial string)",
            )
        frame_size = _positive_int(fields.get("optimal_frame_size"), "optimal_frame_size")
        stream_id = _text(fields, ("connection_id",))
        # without a channel_id (the plain-text example in Asterisk's documentation) the id
        # is the channel name, "WebSocket/<connection>/0x…": _begin maps it to one that
        # needs no escaping in /v1/calls/{id}, and the name stays in the call's details
        call_id = _text(fields, ("channel_id", "channel"))
        channel = fields.get("channel")
        details = {"channel": channel[:MAX_STREAM_ID]} if type(channel) is str and channel else {}
        # only the JSON form carries the channel's variables
        variables = fields.get("channel_variables", {}) if form == "json" else {}
        if type(variables) is not dict or not all(type(v) is str for v in variables.values()):
            raise CarrierProtocolError(
                "missing_field",
                f"MEDIA_START channel_variables must be an object of strings, got {variables!r}",
            )
        # smallest whole number of 20 ms frames that Asterisk can re-frame without a leftover
        bytes_20ms = media_format.bytes_per_20ms
        frames = math.lcm(bytes_20ms, frame_size) // bytes_20ms
        if frames * bytes_20ms > MAX_MEDIA_MESSAGE:
            raise CarrierProtocolError(
                "missing_field",
                f"MEDIA_START optimal_frame_size {frame_size} does not fit whole 20 ms frames "
                f"of {bytes_20ms} bytes into one {MAX_MEDIA_MESSAGE}-byte message",
            )

        started = self._begin(Started(call_id, stream_id, media_format, dict(variables),
                                      details))
        self.control_format = form
        self.optimal_frame_size = frame_size
        self.frames_per_message = frames
        return started

    def _on_dtmf_end(self, form: str, fields: Any) -> CarrierEvent | None:
        if form == "plain-text":
            fields = _plain_fields(fields)
        digit = fields.get("digit")
        if type(digit) is not str or len(digit) != 1:
            raise CarrierProtocolError(
                "missing_field", f"DTMF_END digit must be one character, got {digit!r}"
            )
        return Dtmf(digit)

    def _on_xoff(self, form: str, fields: Any) -> CarrierEvent | None:
        self.flow_paused = True
        return FlowControl(True)

    def _on_xon(self, form: str, fields: Any) -> CarrierEvent | None:
        self.flow_paused = False
        return FlowControl(False)

    def _on_mark_processed(self, form: str, fields: Any) -> CarrierEvent | None:
        # plain form: "MEDIA_MARK_PROCESSED <correlation id>", the id is the rest of the line
        name = fields if form == "plain-text" else fields.get("correlation_id")
        if type(name) is not str or not name:
            raise CarrierProtocolError(
                "missing_field",
                f"MEDIA_MARK_PROCESSED has no correlation_id (the MARK_MEDIA name), got {name!r}",
            )
        return MarkPlayed(name)

    def _on_ignored(self, form: str, fields: Any) -> CarrierEvent | None:
        return None

    def _on_error(self, form: str, fields: Any) -> CarrierEvent | None:
        if form == "plain-text":
            # "ERROR channel_id:<id> error_text:<free text with spaces and colons>"
            _, found, detail = fields.partition("error_text:")
            detail = detail if found else fields
        else:
            detail = fields.get("error_text")
            if type(detail) is not str:
                detail = json.dumps(fields)
        return CarrierFault(_error_code(detail), detail)

    _HANDLERS: dict[str, Callable[[AsteriskProtocol, str, Any], CarrierEvent | None]] = {
        "MEDIA_START": _on_media_start,
        "DTMF_END": _on_dtmf_end,
        "MEDIA_XOFF": _on_xoff,
        "MEDIA_XON": _on_xon,
        "MEDIA_MARK_PROCESSED": _on_mark_processed,
        "QUEUE_DRAINED": _on_ignored,
        "STATUS": _on_ignored,
        "MEDIA_BUFFERING_COMPLETED": _on_ignored,
        "ERROR": _on_error,
    }

    # ---- outbound --------------------------------------------------------------

    def media_message(self, payload: bytes) -> Binary:
        """One binary message: a non-empty multiple of ``optimal_frame_size`` bytes (the
        playout sends ``frames_per_message`` frames), at most 65 500 bytes."""
        size = self.optimal_frame_size
        if not size:
            raise RuntimeError(self._not_started("media"))
        length = len(payload)
        if not length or length % size or length > MAX_MEDIA_MESSAGE:
            raise ValueError(
                f"Asterisk media must be a non-empty multiple of optimal_frame_size ({size} "
                f"bytes) and at most {MAX_MEDIA_MESSAGE} bytes, got {length}: Asterisk drops "
                "the leftover bytes, and hangs up on an oversized message"
            )
        return Binary(payload)

    def mark_message(self, name: str) -> bytes:
        """MARK_MEDIA with ``name`` as correlation id; Asterisk answers
        MEDIA_MARK_PROCESSED once the audio queued before it has been handed to the core.

        Raises ValueError for a name that would not come back intact: a command above
        128 bytes is ignored by Asterisk, and the plain form strips outer whitespace."""
        if not self.started:
            raise RuntimeError(self._not_started("mark"))
        if type(name) is not str:
            raise TypeError(f"mark name must be a str, not {type(name).__name__}")
        if self.control_format == "json":
            message = json.dumps({"command": "MARK_MEDIA", "correlation_id": name},
                                 separators=(",", ":"), ensure_ascii=False).encode()
        else:
            if not name.isprintable() or name.strip() != name:
                raise ValueError(
                    f"mark name {name!r} cannot travel in a plain-text MARK_MEDIA: it must be "
                    "printable, without leading or trailing whitespace"
                )
            message = b"MARK_MEDIA " + name.encode()
        if not name or len(message) > MAX_TEXT_MESSAGE:
            raise ValueError(
                f"mark name of {len(name.encode())} bytes makes a {len(message)}-byte "
                f"MARK_MEDIA; it must be non-empty and the command at most {MAX_TEXT_MESSAGE} "
                "bytes (Asterisk ignores longer text messages)"
            )
        return message

    def clear_message(self) -> bytes:
        """FLUSH_MEDIA: Asterisk drops its queued audio (and marks, without a report)."""
        return self._command("FLUSH_MEDIA")

    def hangup_message(self) -> bytes:
        """HANGUP: Asterisk hangs up the channel and closes the socket."""
        return self._command("HANGUP")

    def _command(self, command: str) -> bytes:
        if self.control_format == "json":
            return b'{"command":"' + command.encode() + b'"}'
        if self.control_format is None:
            raise RuntimeError(self._not_started(command))
        return command.encode()

    @staticmethod
    def _not_started(what: str) -> str:
        return (
            f"cannot send {what} before Asterisk's MEDIA_START: it fixes the audio format, "
            "the frame size and the form (plain-text or JSON) of every command"
        )


# ---- parsing helpers (raise CarrierProtocolError) ------------------------------------


def _parse_json(text: str) -> tuple[Any, dict[str, Any]]:
    try:
        message = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CarrierProtocolError(
            "not_json",
            f"Asterisk control message starts like JSON but does not parse ({exc}): "
            f"{_preview(text)}",
        ) from None
    if type(message) is not dict:
        raise CarrierProtocolError(
            "unknown_event", f"Asterisk JSON control message is not an object: {_preview(text)}"
        )
    return message.get("event"), message


def _plain_fields(rest: str) -> dict[str, str]:
    """``key:value key:value`` -> dict; a token without a colon continues the previous
    value (a value with spaces)."""
    fields: dict[str, str] = {}
    key = None
    for token in rest.split():
        name, colon, value = token.partition(":")
        if colon and name:
            key = name
            fields[key] = value
        elif key is not None:
            fields[key] += " " + token
        else:
            raise CarrierProtocolError(
                "bad_payload",
                "Asterisk plain-text control message: expected key:value pairs, got "
                f"{_preview(rest)}",
            )
    return fields


def _text(fields: dict[str, Any], keys: tuple[str, ...]) -> str:
    for key in keys:
        value = fields.get(key)
        if type(value) is str and value:
            return value
    raise CarrierProtocolError(
        "missing_field", f"MEDIA_START has no {' or '.join(keys)} (a non-empty string)"
    )


def _positive_int(value: Any, key: str) -> int:
    if type(value) is str and value.isdecimal():
        value = int(value)
    if type(value) is not int or value <= 0:
        raise CarrierProtocolError(
            "missing_field", f"MEDIA_START {key} must be a positive integer, got {value!r}"
        )
    return value


def _error_code(detail: str) -> str:
    """A bounded metric label for the ERROR texts chan_websocket sends."""
    if "passthrough mode" in detail:
        return "passthrough_mode"
    if "parse JSON" in detail:
        return "bad_json_command"
    return "other"
