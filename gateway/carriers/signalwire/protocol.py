"""SignalWire cXML ``<Connect><Stream>`` (bidirectional), server side, as a sans-I/O protocol.

SignalWire's Compatibility API speaks Twilio's Media Streams protocol on its own name:
``connected``, ``start`` (``streamSid``, ``start.callSid``, ``customParameters``,
``mediaFormat``), ``media``, ``dtmf``, ``mark``, ``stop`` in, ``media``/``mark``/``clear``
with the ``streamSid`` out. The one difference the gateway sees is ``<Stream codec=…>``:
SignalWire can stream other codecs than μ-law 8 kHz, and ``start.mediaFormat`` says which.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gateway.carriers.events import MediaFormat, Started
from gateway.carriers.jsonfields import format_encoding, rate_among
from gateway.carriers.twilio.protocol import TwilioProtocol

__all__ = ["SignalWireProtocol"]

# The codecs <Stream codec=…> offers: PCMU@8000h (the default), L16@16000h and L16@24000h
# (developer.signalwire.com compatibility-api/cxml/voice/stream, signalwire/docs PR #546),
# plus PCMA and plain L16 in the REST API's StreamCodec (PCMU, PCMA, L16, L16@16000h,
# L16@24000h). How start.mediaFormat names the non-μ-law ones is not documented: we accept
# the Twilio-style names. Byte order of L16 is not documented either; public SignalWire L16
# bridges pass the payload through as little-endian PCM16, so it is taken as the gateway's
# l16 unchanged. Verify both on a real call.
_ENCODINGS = {
    "audio/x-mulaw": ("mulaw", (8000,)),
    "audio/x-alaw": ("alaw", (8000,)),
    "audio/x-l16": ("l16", (8000, 16000, 24000)),
}


class SignalWireProtocol(TwilioProtocol):
    """One SignalWire media stream: :class:`~gateway.carriers.twilio.TwilioProtocol` with
    the codecs SignalWire's ``<Stream codec=…>`` can select.

    ``start.mediaFormat`` may be ``audio/x-mulaw`` or ``audio/x-alaw`` at 8000 Hz, or
    ``audio/x-l16`` at 8000, 16000 or 24000 Hz (its ``sampleRate`` is then required);
    without a ``mediaFormat`` the stream is μ-law 8 kHz, SignalWire's default. Everything
    else, state and outbound messages included, is Twilio's.
    """

    carrier = "signalwire"
    display_name = "SignalWire"
    _ORDER = "SignalWire sends connected, then start, then media/dtmf/mark, then stop"

    def _parse_start(self, message: dict[str, Any]) -> Started:
        start = message.get("start")
        if type(start) is not dict or "mediaFormat" not in start:
            return TwilioProtocol._parse_start(self, message)
        media_format = _media_format(start["mediaFormat"])
        # Twilio's start rules accept μ-law only: hand them the rest of the start.
        without_format = {k: v for k, v in start.items() if k != "mediaFormat"}
        started = TwilioProtocol._parse_start(self, {**message, "start": without_format})
        return dataclasses.replace(started, media_format=media_format)


def _media_format(value: Any) -> MediaFormat:
    value, (encoding, rates) = format_encoding(
        value, "start.mediaFormat", "sampleRate", _ENCODINGS,
        f"SignalWire streams carry {', '.join(_ENCODINGS)} (<Stream codec=\"PCMU@8000h\">, "
        "PCMA, L16@16000h, …)")
    rate = rate_among(value.get("sampleRate", 8000 if encoding != "l16" else None), rates,
                      "start.mediaFormat.sampleRate", f"SignalWire streams {value['encoding']}")
    return MediaFormat(encoding, rate)
