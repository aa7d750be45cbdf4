"""Field helpers shared by the JSON carrier protocols (Twilio, Telnyx, Plivo, Exotel).

Each helper reads one thing out of a parsed carrier message and raises
:class:`~gateway.carriers.events.CarrierProtocolError` with a bounded kind and a message
that says what was expected, so the protocol modules stay a list of handlers.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Iterable
from typing import Any

from gateway.carriers.events import CarrierProtocolError

__all__ = [
    "binary_frame_error",
    "decode_payload",
    "load_message",
    "object_field",
    "preview",
    "string_field",
    "string_map",
]


def preview(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def load_message(text: str, carrier: str, events: Iterable[str]) -> tuple[str, dict[str, Any]]:
    """One text frame as ``(event, message)``; ``event`` is one of ``events``."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CarrierProtocolError(
            "not_json",
            f"{carrier} text frame is not JSON ({exc}): {preview(text)}; "
            f"every {carrier} message is a JSON object with an \"event\" field",
        ) from None
    if type(message) is not dict:
        raise CarrierProtocolError(
            "unknown_event",
            f"{carrier} message is a JSON {type(message).__name__}, expected an object "
            f"with an \"event\" field: {preview(text)}",
        )
    event = message.get("event")
    if type(event) is not str or event not in events:
        if "event" not in message:
            detail = "has no \"event\" field"
        else:
            detail = f"has unknown event {event!r}"
        raise CarrierProtocolError(
            "unknown_event",
            f"{carrier} message {detail}; expected one of {', '.join(events)}: {preview(text)}",
        )
    return event, message


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


def string_map(value: Any, where: str) -> dict[str, str]:
    """An optional JSON object of strings (custom parameters); absent is empty."""
    if value is None:
        return {}
    if type(value) is not dict or not all(type(v) is str for v in value.values()):
        raise CarrierProtocolError(
            "missing_field", f"{where} must be an object of strings, got {value!r}"
        )
    return dict(value)


def decode_payload(media: dict[str, Any], where: str, what: str) -> bytes:
    """``media["payload"]``, base64-decoded (strictly: no whitespace, right padding)."""
    payload = media.get("payload")
    if type(payload) is not str:
        raise CarrierProtocolError(
            "missing_field", f"{where} has no {where}.payload string (base64 {what})"
        )
    try:
        return binascii.a2b_base64(payload, strict_mode=True)
    except binascii.Error as exc:
        raise CarrierProtocolError(
            "bad_payload",
            f"{where}.payload is not valid base64 ({exc}): {preview(payload, 40)}",
        ) from None
