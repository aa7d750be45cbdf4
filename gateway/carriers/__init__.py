"""One sans-I/O protocol module per carrier (see base.py for what each offers)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

# carrier -> module:class, imported on first use
PROTOCOLS = {
    "twilio": "twilio:TwilioProtocol",
    "signalwire": "signalwire:SignalWireProtocol",
    "telnyx": "telnyx:TelnyxProtocol",
    "plivo": "plivo:PlivoProtocol",
    "vonage": "vonage:VonageProtocol",
    "exotel": "exotel:ExotelProtocol",
    "asterisk": "asterisk:AsteriskProtocol",
    "audiosocket": "audiosocket:AudioSocketProtocol",
}


def protocol_class(carrier: str):
    module, name = PROTOCOLS[carrier].split(":")
    return getattr(importlib.import_module(f"gateway.carriers.{module}"), name)


def new_protocol(carrier: str, options: Mapping[str, Any]):
    """The protocol for one stream of ``carrier``, set up from its ``carriers:`` settings
    (what the gateway's answer document told the carrier, where that matters)."""
    return protocol_class(carrier).from_options(options)
