"""Every carrier the gateway speaks, by name: each one's :class:`CarrierSpec`, declared in
its own package. Adding a carrier is adding its package and one line here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.carriers import (asterisk, audiosocket, exotel, plivo, signalwire, telnyx, twilio,
                              vonage)
from gateway.carriers.answer import AnswerRequest
from gateway.carriers.base import CarrierProtocol
from gateway.carriers.spec import CarrierSpec

CARRIERS: dict[str, CarrierSpec] = {spec.name: spec for spec in (
    twilio.SPEC, signalwire.SPEC, telnyx.SPEC, plivo.SPEC, vonage.SPEC, exotel.SPEC,
    asterisk.SPEC, audiosocket.SPEC)}
#: the carrier of a configuration without ``carriers:``, and ``dial``'s
DEFAULT_CARRIER = "twilio"


def new_protocol(carrier: str, options: Mapping[str, Any]) -> CarrierProtocol:
    return CARRIERS[carrier].new_protocol(options)


def answer_document(carrier: str, request: AnswerRequest) -> tuple[str, bytes]:
    """``(content type, body)`` of ``carrier``'s answer document."""
    document = CARRIERS[carrier].answer
    if document is None:
        raise ValueError(f"carrier {carrier!r} fetches no answer document")
    return document(request)
