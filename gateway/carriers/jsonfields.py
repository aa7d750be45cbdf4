"""Field helpers shared by the JSON carrier protocols (Twilio, Telnyx, Plivo, Exotel, and
Vonage's text frames).

Each helper reads one thing out of a parsed carrier message and raises
:class:`~gateway.carriers.events.CarrierProtocolError` with a bounded kind and a message
that says what was expected, so the protocol modules stay a list of handlers.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from gateway.carriers.events import CarrierProtocolError

__all__ = [
    "binary_frame_error",
    "decode_payload",
    "format_encoding",
    "inbound_track",
    "not_json_error",
    "object_field",
    "party",
    "preview",
    "start_stream_id",
    "string_field",
    "string_map",
    "unknown_event_error",
]

_T = TypeVar("_T")


def preview(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def not_json_error(carrier: str, text: str, exc: Exception) -> CarrierProtocolError:
    return CarrierProtocolError(
        "not_json",
        f"{carrier} text frame is not JSON ({exc}): {preview(text)}; "
        f"every {carrier} message is a JSON object with an \"event\" field",
    )


def unknown_event_error(carrier: str, text: str, message: Any,
                        events: Iterable[str]) -> CarrierProtocolError:
    """For a parsed ``message`` that is not an object with one of ``events`` in "event"."""
    if type(message) is not dict:
        detail = f"is a JSON {type(message).__name__}, expected an object with an \"event\" field"
        return CarrierProtocolError("unknown_event", f"{carrier} message {detail}: {preview(text)}")
    if "event" not in message:
        detail = "has no \"event\" field"
    else:
        detail = f"has unknown event {message['event']!r}"
    return CarrierProtocolError(
        "unknown_event",
        f"{carrier} message {detail}; expected one of {', '.join(events)}: {preview(text)}",
    )


def binary_frame_error(carrier: str, data: bytes) -> CarrierProtocolError:
    return CarrierProtocolError(
        "binary_frame",
        f"binary frame of {len(data)} bytes on a {carrier} stream: {carrier} sends only "
        "JSON text frames (audio is base64 in media.payload)",
    )


def object_field(message: dict[str, Any], key: str, event: str) -> dict[str, Any]:
    value = message.get(key)
    if type(value) is not dict:
        raise CarrierProtocolError(
            "missing_field", f"{event} message has no {key!r} object"
        )
    return value


def string_field(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if type(value) is not str or not value:
        raise CarrierProtocolError(
            "missing_field", f"{where}.{key} must be a non-empty string, got {value!r}"
        )
    return value


def format_encoding(value: Any, where: str, rate_key: str, encodings: dict[str, _T],
                    carries: str) -> tuple[dict[str, Any], _T]:
    """The start's media format object (at ``where``) and what ``encodings`` maps its
    ``encoding`` to; ``carries`` says what the carrier streams, for an encoding it lacks."""
    if type(value) is not dict:
        raise CarrierProtocolError(
            "missing_field",
            f"{where} must be an object with encoding and {rate_key}, got {value!r}",
        )
    name = value.get("encoding")
    known = encodings.get(name) if type(name) is str else None
    if known is None:
        raise CarrierProtocolError("missing_field", f"{where}.encoding is {name!r}; {carries}")
    return value, known


def rate_among(rate: Any, rates: tuple[int, ...], where: str, streams: str) -> int:
    """``rate`` (the value at ``where``) when it is one of ``rates``; ``streams`` names what
    the carrier streams at them, for the error (e.g. "Plivo plays audio/x-l16")."""
    if type(rate) is not int or rate not in rates:
        raise CarrierProtocolError(
            "missing_field",
            f"{where} is {rate!r}; {streams} at {' or '.join(map(str, rates))} Hz",
        )
    return rate


#: the longest caller or called number (or SIP address) a start may give
MAX_PARTY_CHARS = 128


def party(obj: Mapping[str, Any], key: str) -> str | None:
    """The optional caller or called number at ``obj[key]``: a printable string of at most
    ``MAX_PARTY_CHARS``; None when absent or not one (it is information, not a must)."""
    value = obj.get(key)
    if type(value) is str and value and len(value) <= MAX_PARTY_CHARS and value.isprintable():
        return value
    return None


def start_stream_id(message: dict[str, Any], start: dict[str, Any], key: str) -> str:
    """The stream id of a start that may carry it beside "event", inside ``start``, or both
    (then they must agree)."""
    stream_id = message.get(key, start.get(key))
    if type(stream_id) is not str or not stream_id:
        raise CarrierProtocolError(
            "missing_field",
            f"start has no {key} (top-level or start.{key}); "
            "outbound messages cannot be addressed without it",
        )
    if key in start and start[key] != stream_id:
        raise CarrierProtocolError(
            "missing_field",
            f"start.{key} {start[key]!r} differs from the message's {key} {stream_id!r}",
        )
    return stream_id


def string_map(value: Any, where: str) -> dict[str, str]:
    """An optional JSON object of strings (custom parameters); absent is empty."""
    if value is None:
        return {}
    if type(value) is not dict or not all(type(v) is str for v in value.values()):
        raise CarrierProtocolError(
            "missing_field", f"{where} must be an object of strings, got {value!r}"
        )
    return dict(value)


def inbound_track(media: dict[str, Any], carries: str) -> bool:
    """Whether ``media`` is caller audio: ``media.track`` absent or ``'inbound'``. It is not
    for ``'outbound'`` (our own audio, streamed back with both tracks); any other track
    raises, with ``carries`` saying what the carrier's stream carries."""
    track = media.get("track", "inbound")
    if track == "outbound":
        return False
    if track != "inbound":
        raise CarrierProtocolError("missing_field", f"media.track is {track!r}; {carries}")
    return True


def decode_payload(media: dict[str, Any], where: str, what: str) -> bytes:
    """``media["payload"]``, base64-decoded (strictly: no whitespace, right padding)."""
    payload = media.get("payload")
    if type(payload) is not str:
        raise CarrierProtocolError(
            "missing_field", f"{where} has no {where}.payload string (base64 {what})"
        )
    try:
        return binascii.a2b_base64(payload, strict_mode=True)
    except ValueError as exc:  # binascii.Error, or text that is not ASCII
        raise CarrierProtocolError(
            "bad_payload",
            f"{where}.payload is not valid base64 ({exc}): {preview(payload, 40)}",
        ) from None
