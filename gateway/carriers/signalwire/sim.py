"""Fake SignalWire: Twilio's simulated call (SignalWire's cXML ``<Connect><Stream>`` speaks
Twilio's wire protocol, docs/protocols/carriers.md §6.1), at ``/v1/media/signalwire``, with
SignalWire's credentials."""

from __future__ import annotations

from gateway.carriers.twilio.sim import TwilioCall


class SignalWireCall(TwilioCall):
    """SignalWire's media stream: Twilio's messages, at ``/v1/media/signalwire``."""

    carrier = "signalwire"
    accepted_auth = (frozenset({"auth_token"}), frozenset({"bearer_token"}),
                     frozenset({"auth_token", "bearer_token"}))
