"""Plivo's check of who is calling: ``X-Plivo-Signature-V3`` and its nonce, base64(HMAC-SHA256)
keyed with the account's auth token."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from gateway.carriers.auth import (CarrierRequest, Params, Refusal, same_secret, url_variants,
                                   with_scheme)


def plivo_signed_url(method: str, url: str, params: Params = ()) -> str:
    """The string Plivo signs before ``.{nonce}`` (plivo-python ``utils/signature_v3.py``,
    ``construct_get_url``/``construct_post_url``): the URL without its query, then for a
    GET ``?`` and the query sorted as ``a=1&b=2``; for a POST with a body, ``?``, the
    sorted query and ``.`` if there is one, then the body sorted as ``name value``
    pairs without separators."""
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if method.upper() == "GET":
        pairs, params = [*pairs, *params], ()
    query = "&".join(f"{name}={value}" for name, value in sorted(pairs))
    if not params:
        return f"{base}?{query}" if query else base
    body = "".join(name + value for name, value in sorted(params))
    return f"{base}?{query}.{body}" if query else f"{base}?{body}"


def plivo_signature(auth_token: str, signed_url: str, nonce: str) -> str:
    mac = hmac.new(auth_token.encode(), f"{signed_url}.{nonce}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def check_plivo_signature(auth_token: str, method: str, urls: Iterable[str], params: Params,
                          nonce: str | None, header: str | None) -> bool:
    """The header may carry several comma-separated signatures (one per valid auth token
    while Plivo rotates it): any one matching is enough."""
    if not nonce or not header:
        return False
    given = [s.strip() for s in header.split(",") if s.strip()]
    found = False
    for url in urls:
        for variant in url_variants(url):
            expected = plivo_signature(auth_token, plivo_signed_url(method, variant, params),
                                       nonce)
            for signature in given:
                found |= same_secret(expected, signature)
    return found


def signature_refusal(request: CarrierRequest, auth_token: str, method: str, urls: list[str],
                      params: Params) -> Refusal | None:
    header = request.headers.get("X-Plivo-Signature-V3")
    nonce = request.headers.get("X-Plivo-Signature-V3-Nonce")
    if not header or not nonce:
        return Refusal("signature", "X-Plivo-Signature-V3 or its nonce is missing")
    if not check_plivo_signature(auth_token, method, urls, params, nonce, header):
        return Refusal("signature", "X-Plivo-Signature-V3 does not match this URL")
    return None


def check_media(request: CarrierRequest, options: Mapping[str, Any],
                secrets: Mapping[str, str]) -> Refusal | None:
    if "auth_token" not in secrets:
        return None
    # Which scheme Plivo signs for a WebSocket is undocumented (docs/protocols/carriers.md
    # §3.5/§13.3)
    url = request.public_url("wss")
    return signature_refusal(request, secrets["auth_token"], "GET",
                             [url, with_scheme(url, "https")], ())


async def check_answer(request: CarrierRequest, options: Mapping[str, Any],
                       secrets: Mapping[str, str]) -> tuple[Refusal | None, bool]:
    if "auth_token" not in secrets:
        return None, False
    refusal = signature_refusal(request, secrets["auth_token"], request.method,
                                [request.public_url()], await request.form())
    return refusal, refusal is None
