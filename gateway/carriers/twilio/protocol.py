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
from typing import Any

from gateway.carriers.events import (
    Audio,
    CarrierEvent,
    CarrierProtocolError,
    MediaFormat,
    Started,
)
from gateway.carriers.jsonfields import (
    decode_payload,
    format_encoding,
    inbound_track,
    object_field,
    start_stream_id,
    string_field,
    string_map,
)
from gateway.carriers.jsonstream import JsonStreamProtocol, media_stream_parts

__all__ = ["TwilioProtocol"]

_TWILIO_ENCODINGS = {"audio/x-mulaw": "mulaw"}


class TwilioProtocol(JsonStreamProtocol):
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
    :class:`RuntimeError` until ``start`` has been received. :meth:`hangup_message` is
    ``None``: closing the socket ends the stream (TwiML after ``<Connect>`` runs).
    """

    carrier = "twilio"
    display_name = "Twilio"
    #: Twilio echoes every pending mark when it executes a ``clear``; an echo that arrives
    #: after a clear we sent means "not played", not "played".
    marks_cleared_on_clear = True
    #: any length is legal; the gateway sends one 20 ms frame per message
    frames_per_message = 1
    #: the configured lead (Twilio buffers up to ~10 minutes)
    lead_s: float | None = None

    _EVENTS = {"connected": "_on_connected", "start": "_on_start", "media": "_on_media",
               "dtmf": "_on_dtmf", "mark": "_on_mark", "stop": "_on_stop"}
    _STREAM_FIELD = "streamSid"
    _ORDER = "Twilio sends connected, then start, then media/dtmf/mark, then stop"
    _START_NEEDED = "every outbound message carries the streamSid that start delivers"

    def __init__(self) -> None:
        super().__init__(MediaFormat("mulaw", 8000))

    # ---- inbound ---------------------------------------------------------------

    def receive_text(self, text: str) -> CarrierEvent | None:
        """Parse one text frame from Twilio into an event (``None``: nothing to report)."""
        if text.startswith('{"event":"media"') and self._media_prefix is not None:
            audio = self._fast_inbound_media(text)
            if audio is not None:
                return audio
        return JsonStreamProtocol.receive_text(self, text)

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
        except ValueError:  # binascii.Error or not ASCII: the full parse says what is wrong
            return None

    def _parse_start(self, message: dict[str, Any]) -> Started:
        start = object_field(message, "start", "start")
        call_id = string_field(start, "callSid", "start")
        stream_id = start_stream_id(message, start, "streamSid")
        media_format = _media_format(start.get("mediaFormat"))
        custom_parameters = string_map(start.get("customParameters"), "start.customParameters")
        return Started(call_id, stream_id, media_format, custom_parameters)

    def _on_started(self) -> None:
        # Outbound, each addressed with the streamSid:
        #   media  {"event":"media","streamSid":…,"media":{"payload":<base64 μ-law/8000>}}
        #   mark   {"event":"mark","streamSid":…,"mark":{"name":…}}: echoed once the audio
        #          sent before it has played (or has been cleared)
        #   clear  {"event":"clear","streamSid":…}: Twilio drops its buffered audio and
        #          echoes every pending mark
        # They are UTF-8 bytes, ready to frame, and their constant parts are rendered here:
        # the media message is built 50 times a second per call, so it is one
        # concatenation around the base64.
        assert self.stream_id is not None  # _begin has set it
        self._media_prefix, self._mark_prefix, self._clear_text = media_stream_parts(
            "streamSid", self.stream_id)
        self._stream_id_json = '"streamSid":' + json.dumps(self.stream_id)

    def _on_media(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._require_started("media")
        media = object_field(message, "media", "media")
        if not inbound_track(media, "a Twilio stream carries 'inbound' (or 'outbound' with "
                                    "both_tracks)"):
            return None
        return Audio(decode_payload(media, "media", "μ-law"))


# ---- field helpers (raise CarrierProtocolError("missing_field")) ---------------------


def _media_format(value: Any) -> MediaFormat:
    if value is None:
        return MediaFormat("mulaw", 8000)
    value, encoding = format_encoding(value, "start.mediaFormat", "sampleRate", _TWILIO_ENCODINGS,
                                      "Twilio Media Streams carry 'audio/x-mulaw'")
    rate = value.get("sampleRate", 8000)
    if type(rate) is not int or rate <= 0:
        raise CarrierProtocolError(
            "missing_field",
            f"start.mediaFormat.sampleRate must be a positive integer, got {rate!r}",
        )
    return MediaFormat(encoding, rate)

