"""Vonage Voice API WebSocket (NCCO ``connect`` to a ``websocket`` endpoint), server side,
as a sans-I/O protocol.

Vonage opens a WebSocket to the gateway for each call leg and mixes frame types::

    Vonage -> gateway   text websocket:connected (once, first), then binary audio frames
                        and text websocket:dtmf / websocket:notify / websocket:cleared
    gateway -> Vonage   binary audio frames, text {"action":"notify"} / {"action":"clear"}

Audio both ways is 16-bit signed little-endian mono PCM at the rate of the NCCO's
``content-type`` (8, 16 or 24 kHz), in frames of exactly 20 ms. There is no ``stop``
event: the leg ends when the socket closes. See docs/protocols/carriers.md §4.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from gateway.carriers.events import (
    Audio,
    Binary,
    CarrierEvent,
    CarrierProtocolError,
    Cleared,
    Dtmf,
    MarkPlayed,
    MediaFormat,
    Started,
)
from gateway.carriers.jsonfields import party, preview
from gateway.carriers.jsonstream import JsonStreamProtocol

__all__ = ["VonageProtocol"]

_RATES = ("8000", "16000", "24000")
# top-level keys of websocket:connected that are not NCCO headers
_RESERVED = ("event", "content-type")
_CALL_ID_HEADERS = ("call_uuid", "uuid")


class VonageProtocol(JsonStreamProtocol):
    """One Vonage WebSocket leg, seen from the gateway (the WebSocket server).

    Inbound: :meth:`receive_text` for each text frame, :meth:`receive_bytes` for each
    binary frame (caller audio). Each returns one normalized event or ``None``. A frame
    that breaks the protocol raises :class:`~gateway.carriers.events.CarrierProtocolError`
    and leaves the state unchanged, so the caller may log it and keep reading.

    State: ``websocket:connected`` must come exactly once, before anything else; it is
    reported as :class:`Started` (Vonage has no separate start message). The call id is the
    ``call_uuid`` or ``uuid`` header when the NCCO sets one, else a generated UUID; the
    stream id is the call id (one socket is one leg). There is no stop event: the socket's
    close ends the leg, so :attr:`stopped` stays ``False``.

    Outbound: :meth:`media_message` returns a :class:`~gateway.carriers.events.Binary`
    and accepts only exactly one 20 ms frame: Vonage closes the socket on any other size
    ("unexpected frame size 160, when required 320", vocode-core #727). Commands are
    UTF-8 JSON text. All raise :class:`RuntimeError` before ``websocket:connected``.
    :meth:`hangup_message` is ``None``: closing the socket ends the WebSocket leg.
    """

    carrier = "vonage"
    display_name = "Vonage"
    #: Whether Vonage echoes (or drops) pending notifies on ``clear`` is undocumented
    #: (docs/protocols/carriers.md §13.4); False makes the gateway forget the marks it cut, so an
    #: echo that does arrive for one is for a mark it no longer waits on, and a missing echo
    #: never stalls it.
    marks_cleared_on_clear = False
    frames_per_message = 1
    #: Frames leave on the clock, one per 20 ms: a burst "plays out at once" and crackles
    #: (vonage-node-sdk #124). Two frames of lead absorb a late tick, which with no lead
    #: at all is a 20 ms hole on the call.
    lead_s: float | None = 0.04

    _EVENTS = {"websocket:connected": "_on_start", "websocket:dtmf": "_on_dtmf",
               "websocket:notify": "_on_notify", "websocket:cleared": "_on_cleared"}
    _ORDER = "Vonage sends websocket:connected first, then audio and events"
    _START_EVENT = "websocket:connected"
    _START_NEEDED = "it carries the content-type that fixes the audio format"
    # Commands are JSON text frames (audio goes as binary frames, see media_message):
    #   mark   {"action":"notify","payload":{"name":…}}: Vonage answers websocket:notify
    #          with the same payload once the audio before it has played
    #   clear  {"action":"clear"}: Vonage drops its buffered audio, answers websocket:cleared
    _mark_prefix = b'{"action":"notify","payload":{"name":'
    _clear_text = b'{"action":"clear"}'

    def __init__(self) -> None:
        super().__init__(MediaFormat("l16", 16000))
        self._frame_bytes = 0

    # ---- inbound ---------------------------------------------------------------

    def receive_bytes(self, data: bytes) -> CarrierEvent | None:
        """A binary frame is caller audio (L16 in :attr:`media_format`)."""
        if self._frame_bytes == 0:
            raise CarrierProtocolError(
                "out_of_order",
                f"binary audio frame of {len(data)} bytes before websocket:connected: "
                f"{self._ORDER}",
            )
        if len(data) % 2:
            raise CarrierProtocolError(
                "bad_frame_size",
                f"binary audio frame of {len(data)} bytes: 16-bit PCM frames have an even "
                f"length ({self._frame_bytes} bytes per 20 ms)",
            )
        return Audio(bytes(data)) if data else None

    def _parse_start(self, message: dict[str, Any]) -> Started:
        media_format = _media_format(message.get("content-type"))
        id_header = next((h for h in _CALL_ID_HEADERS
                          if type(message.get(h)) is str and message[h]), None)
        call_id = message[id_header] if id_header else str(uuid.uuid4())
        # NCCO headers arrive flattened at the top level; only strings make parameters
        custom_parameters = {
            key: value for key, value in message.items()
            if type(value) is str and key not in _RESERVED and key != id_header
        }
        return Started(call_id, call_id, media_format, custom_parameters,
                       caller=party(message, "from"), called=party(message, "to"))

    def _on_started(self) -> None:
        self._frame_bytes = self.media_format.bytes_per_20ms

    def _on_dtmf(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._require_started("websocket:dtmf")
        # Integrations disagree on the shape (docs/protocols/carriers.md §4.2): digit, dtmf,
        # dtmf.digit.
        digit = message.get("digit")
        if digit is None:
            digit = message.get("dtmf")
            if type(digit) is dict:
                digit = digit.get("digit")
        if type(digit) is int and 0 <= digit <= 9:
            digit = str(digit)
        if type(digit) is not str or not digit:
            raise CarrierProtocolError(
                "missing_field",
                "websocket:dtmf has no digit: expected a non-empty string in \"digit\", "
                f"\"dtmf\" or \"dtmf.digit\", got {preview(json.dumps(message))}",
            )
        return Dtmf(digit)

    def _on_notify(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._require_started("websocket:notify")
        payload = message.get("payload")
        name = payload.get("name") if type(payload) is dict else None
        if type(name) is not str:
            raise CarrierProtocolError(
                "missing_field",
                "websocket:notify has no payload.name string: it echoes the payload of "
                "our notify action, which is {\"name\": <mark name>}",
            )
        return MarkPlayed(name)

    def _on_cleared(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._require_started("websocket:cleared")
        return Cleared()

    # ---- outbound --------------------------------------------------------------

    def media_message(self, payload: bytes) -> Binary:
        """One binary frame of exactly one 20 ms L16 frame (320/640/960 bytes)."""
        size = self._frame_bytes
        if len(payload) != size:
            if size == 0:
                raise RuntimeError(self._not_started("media"))
            raise ValueError(
                f"Vonage media must be exactly one 20 ms frame: {size} bytes at "
                f"{self.media_format.sample_rate} Hz, got {len(payload)} (Vonage closes the "
                "socket on a wrong frame size; pad the last frame with silence)"
            )
        return Binary(payload)


def _media_format(content_type: Any) -> MediaFormat:
    """``audio/l16;rate=16000`` -> MediaFormat("l16", 16000)."""
    if type(content_type) is not str:
        raise CarrierProtocolError(
            "missing_field",
            f"websocket:connected has no \"content-type\" string, got {content_type!r}; "
            "expected audio/l16;rate=8000, 16000 or 24000",
        )
    media_type, _, params = content_type.partition(";")
    rate = None
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "rate":
            rate = value.strip()
    if media_type.strip().lower() != "audio/l16" or rate not in _RATES:
        raise CarrierProtocolError(
            "missing_field",
            f"websocket:connected content-type is {content_type!r}; Vonage streams "
            "audio/l16;rate=8000, 16000 or 24000",
        )
    return MediaFormat("l16", int(rate))
