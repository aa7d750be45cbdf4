"""Twilio's check of who is calling: ``X-Twilio-Signature``, base64(HMAC-SHA1) of the URL
it requested (and a webhook's POSTed fields) keyed with the account's auth token.
SignalWire's cXML surface signs the same way (gateway/carriers/signalwire/auth.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.carriers.auth import CarrierRequest, Params, Refusal, same_secret, url_variants

HEADERS = ("X-Twilio-Signature",)


def twilio_signature(auth_token: str, url: str, params: Params = ()) -> str:
    """base64(HMAC-SHA1(auth_token, url + name1 + value1 + ...)), parameters sorted by
    name then value (twilio-python ``RequestValidator.compute_signature``; SignalWire's
    "Scheme B", signalwire-typescript ``WebhookValidator.ts``). A WebSocket upgrade is a
    GET: no parameters, the signed string is the ``wss://`` URL alone."""
    message = url + "".join(name + value for name, value in sorted(params))
    mac = hmac.new(auth_token.encode(), message.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def check_twilio_signature(auth_token: str, urls: Iterable[str], params: Params,
                           signature: str | None) -> bool:
    if not signature:
        return False
    found = False
    for url in urls:
        for variant in url_variants(url):
            # no early exit: every candidate costs the same
            found |= same_secret(twilio_signature(auth_token, variant, params), signature)
    return found


def signature_refusal(request: CarrierRequest, auth_token: str, header_names: tuple[str, ...],
                      *, scheme: str | None, params: Params) -> Refusal | None:
    """Twilio signs the URL it requested: for a media stream the ``wss://`` URL from the
    TwiML (twilio-labs/twilio-aspnet#162: ``https://`` fails), for a webhook the https one."""
    signatures = [request.headers[h] for h in header_names if h in request.headers]
    if not signatures:
        return Refusal("signature", f"{header_names[0]} is missing")
    url = request.public_url(scheme)
    if not any(check_twilio_signature(auth_token, [url], params, s) for s in signatures):
        return Refusal("signature", f"{header_names[0]} does not match this URL "
                                    f"({url.split('://')[0]}://, public host)")
    return None


def signed_media_refusal(request: CarrierRequest, secrets: Mapping[str, str],
                         header_names: tuple[str, ...]) -> Refusal | None:
    """The media upgrade's check where an ``auth_token`` is configured (none without)."""
    if "auth_token" not in secrets:
        return None
    return signature_refusal(request, secrets["auth_token"], header_names, scheme="wss",
                             params=())


async def signed_answer_check(request: CarrierRequest, secrets: Mapping[str, str],
                              header_names: tuple[str, ...]) -> tuple[Refusal | None, bool]:
    """The answer webhook's check where an ``auth_token`` is configured: (refusal, whether
    the request was verified)."""
    if "auth_token" not in secrets:
        return None, False
    refusal = signature_refusal(request, secrets["auth_token"], header_names, scheme=None,
                                params=await request.form())
    return refusal, refusal is None


def check_media(request: CarrierRequest, options: Mapping[str, Any],
                secrets: Mapping[str, str]) -> Refusal | None:
    return signed_media_refusal(request, secrets, HEADERS)


async def check_answer(request: CarrierRequest, options: Mapping[str, Any],
                       secrets: Mapping[str, str]) -> tuple[Refusal | None, bool]:
    return await signed_answer_check(request, secrets, HEADERS)
