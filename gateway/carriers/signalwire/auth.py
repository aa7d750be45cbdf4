"""SignalWire's check of who is calling: the stream's ``authBearerToken`` when one is
configured, else Twilio's signature scheme with the project's Signing Key, sent as
``X-SignalWire-Signature`` or, on its cXML surface, ``X-Twilio-Signature``
(signalwire-typescript WebhookValidator.ts)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.carriers.auth import CarrierRequest, Refusal, check_bearer
from gateway.carriers.twilio.auth import signed_answer_check, signed_media_refusal

HEADERS = ("X-SignalWire-Signature", "X-Twilio-Signature")


def check_media(request: CarrierRequest, options: Mapping[str, Any],
                secrets: Mapping[str, str]) -> Refusal | None:
    # SignalWire documents authBearerToken for streams (developer.signalwire.com cXML
    # <Stream>); whether it also signs the upgrade is unverified (docs/protocols/carriers.md §13.6),
    # so the signature is the stream check only when no bearer token is configured.
    if "bearer_token" in secrets:
        if not check_bearer(secrets["bearer_token"], request.headers.get("Authorization")):
            return Refusal("bearer", "Authorization: Bearer is missing or does not match")
        return None
    return signed_media_refusal(request, secrets, HEADERS)


async def check_answer(request: CarrierRequest, options: Mapping[str, Any],
                       secrets: Mapping[str, str]) -> tuple[Refusal | None, bool]:
    return await signed_answer_check(request, secrets, HEADERS)
