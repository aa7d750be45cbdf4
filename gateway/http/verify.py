"""Carrier authentication in front of the media WebSocket and the answer webhooks.

``check_media_request`` runs before the WebSocket upgrade, so a refused carrier sees an
HTTP 403 and never a socket (carriers.md §10). The checks themselves are pure functions in
``gateway/carriers/auth.py``; this module finds the inputs in the request, counts and logs
refusals. Messages name what failed, never a secret or the value that was sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from gateway.carriers import auth
from gateway.config import CarrierConfig
from gateway.http.keys import CONFIG, METRICS, json_error

log = logging.getLogger(__name__)

_warned_no_public_url = False
# SignalWire signs with X-SignalWire-Signature, or X-Twilio-Signature on its cXML surface
# (signalwire-typescript WebhookValidator.ts); the key is the project's Signing Key.
_SIGNALWIRE_HEADERS = ("X-SignalWire-Signature", "X-Twilio-Signature")


@dataclass(frozen=True)
class Refusal:
    reason: str  # the metric label: signature, bearer, jwt, basic, token
    message: str


def public_origin(request: web.Request) -> auth.Origin:
    """Where carriers reach us: ``server.public_url`` when set. Without it we trust the
    proxy's ``X-Forwarded-*``/``Forwarded`` headers (or the request itself), which any
    client can write: fine for the URLs we hand back to that same client, and a forged
    host cannot forge a signature, but production should set ``public_url``."""
    global _warned_no_public_url
    public_url = request.app[CONFIG].server.public_url
    if public_url:
        return auth.origin_from_public_url(public_url)
    if not _warned_no_public_url:
        _warned_no_public_url = True
        log.warning("server.public_url is not set: deriving the public URL from the request's "
                    "Host and X-Forwarded-* headers; set it in production")
    return auth.origin_from_headers(request.headers, request.scheme, request.host)


def check_media_request(request: web.Request, carrier: str, route: str | None
                        ) -> web.Response | None:
    """``None`` if the carrier may open the media stream; else the response to send
    instead of upgrading (403, or 404 for a token on a route that has none)."""
    config = request.app[CONFIG]
    settings = config.carriers.get(carrier)
    refusal = _media_refusal(request, carrier, settings) if settings else None
    if refusal is None:
        # a stream whose path names no route gets the default route, so its token applies
        name = route if route is not None else config.default_route
        if name not in config.routes:
            return None  # the media endpoint answers 404 for an unknown route
        outcome = _token_refusal(request, config.routes[name].token, route)
        if isinstance(outcome, web.Response):
            return outcome
        refusal = outcome
    return None if refusal is None else refuse(request, carrier, route, refusal,
                                               "media connection")


async def check_answer_request(request: web.Request, carrier: str, route: str
                               ) -> tuple[web.Response | None, bool]:
    """``(refusal or None, verified)``: ``verified`` is true when the request proved it
    comes from the carrier (its signature, JWT or Basic credentials) or carries the
    route's token; only then may the answer document hold secrets."""
    config = request.app[CONFIG]
    settings = config.carriers[carrier]
    refusal, verified = await _answer_refusal(request, carrier, settings)
    if refusal is None:
        token = config.routes[route].token
        given = request.match_info.get("token")
        outcome = _token_refusal(request, token, route, verified=verified)
        if isinstance(outcome, web.Response):
            return outcome, False
        refusal = outcome
        verified = verified or (given is not None and refusal is None)
    if refusal is not None:
        return refuse(request, carrier, route, refusal, "answer request"), False
    return None, verified


def refuse(request: web.Request, carrier: str, route: str | None, refusal: Refusal,
           what: str) -> web.Response:
    request.app[METRICS].auth_failures.labels(carrier, refusal.reason).inc()
    forwarded = request.headers.get("X-Forwarded-For")
    client = f"{request.remote} (forwarded for {forwarded})" if forwarded else request.remote
    log.warning("refused %s %s from %s (route %s): %s [%s]", carrier, what, client, route,
                refusal.message, refusal.reason)
    return json_error(403, refusal.message, reason=refusal.reason)


def _token_refusal(request: web.Request, token: str | None, route: str | None, *,
                   verified: bool = False) -> Refusal | web.Response | None:
    given = request.match_info.get("token")
    if given is None:
        if token is None or verified:
            return None
        if route is None:
            return Refusal("token", "this route needs its token in the path: "
                                    "/v1/media/{carrier}/{route}/{token}")
        return Refusal("token", "the route's token is missing from the path")
    if token is None:
        return json_error(404, f"route {route!r} takes no token in its path")
    if not auth.same_secret(token, given):
        return Refusal("token", "the token in the path does not match the route's")
    return None


def _media_refusal(request: web.Request, carrier: str, settings: CarrierConfig
                   ) -> Refusal | None:
    secrets, headers = settings.secrets, request.headers
    if carrier == "twilio" and "auth_token" in secrets:
        return _twilio_signature(request, secrets["auth_token"], ("X-Twilio-Signature",),
                                 scheme="wss", params=())
    if carrier == "signalwire":
        # SignalWire documents authBearerToken for streams (developer.signalwire.com cXML
        # <Stream>); whether it also signs the upgrade is unverified (carriers.md §13.6),
        # so the signature is the stream check only when no bearer token is configured.
        if "bearer_token" in secrets:
            if not auth.check_bearer(secrets["bearer_token"], headers.get("Authorization")):
                return Refusal("bearer", "Authorization: Bearer is missing or does not match")
            return None
        if "auth_token" in secrets:
            return _twilio_signature(request, secrets["auth_token"], _SIGNALWIRE_HEADERS,
                                     scheme="wss", params=())
    if carrier == "plivo" and "auth_token" in secrets:
        # Which scheme Plivo signs for a WebSocket is undocumented (carriers.md §3.5/§13.3)
        url = public_origin(request).url(request.raw_path, scheme="wss")
        return _plivo_signature(request, secrets["auth_token"], "GET",
                                [url, auth.with_scheme(url, "https")], ())
    if carrier == "vonage" and "signature_secret" in secrets:
        problem = auth.vonage_jwt_problem(secrets["signature_secret"],
                                          headers.get("Authorization"))
        return Refusal("jwt", problem) if problem else None
    if carrier in ("exotel", "asterisk") and "password" in secrets:
        if not auth.check_basic(settings.options["username"], secrets["password"],
                                headers.get("Authorization")):
            return Refusal("basic", "HTTP Basic credentials are missing or do not match")
    return None


async def _answer_refusal(request: web.Request, carrier: str, settings: CarrierConfig
                          ) -> tuple[Refusal | None, bool]:
    secrets, headers = settings.secrets, request.headers
    if carrier in ("twilio", "signalwire") and "auth_token" in secrets:
        names = ("X-Twilio-Signature",) if carrier == "twilio" else _SIGNALWIRE_HEADERS
        refusal = _twilio_signature(request, secrets["auth_token"], names, scheme=None,
                                    params=await _form(request))
        return refusal, refusal is None
    if carrier == "plivo" and "auth_token" in secrets:
        url = public_origin(request).url(request.raw_path)
        refusal = _plivo_signature(request, secrets["auth_token"], request.method, [url],
                                   await _form(request))
        return refusal, refusal is None
    if carrier == "vonage" and "signature_secret" in secrets:
        # "Voice API ... support[s] signed callbacks by default" (Vonage Voice API webhook
        # reference): the answer webhook carries the same kind of JWT as the stream
        problem = auth.vonage_jwt_problem(secrets["signature_secret"],
                                          headers.get("Authorization"))
        return (Refusal("jwt", problem), False) if problem else (None, True)
    if carrier == "exotel" and "password" in secrets and headers.get("Authorization"):
        # optional: an applet URL with user:pass@ proves itself; one without is answered
        # with a stream URL that carries no credentials
        if auth.check_basic(settings.options["username"], secrets["password"],
                            headers.get("Authorization")):
            return None, True
        return Refusal("basic", "HTTP Basic credentials do not match"), False
    return None, False


def _twilio_signature(request: web.Request, auth_token: str, header_names: tuple[str, ...],
                      *, scheme: str | None, params: auth.Params) -> Refusal | None:
    """Twilio signs the URL it requested: for a media stream the ``wss://`` URL from the
    TwiML (twilio-labs/twilio-aspnet#162: ``https://`` fails), for a webhook the https one."""
    signatures = [request.headers[h] for h in header_names if h in request.headers]
    if not signatures:
        return Refusal("signature", f"{header_names[0]} is missing")
    url = public_origin(request).url(request.raw_path, scheme=scheme)
    if not any(auth.check_twilio_signature(auth_token, [url], params, s) for s in signatures):
        return Refusal("signature", f"{header_names[0]} does not match this URL "
                                    f"({url.split('://')[0]}://, public host)")
    return None


def _plivo_signature(request: web.Request, auth_token: str, method: str, urls: list[str],
                     params: auth.Params) -> Refusal | None:
    header = request.headers.get("X-Plivo-Signature-V3")
    nonce = request.headers.get("X-Plivo-Signature-V3-Nonce")
    if not header or not nonce:
        return Refusal("signature", "X-Plivo-Signature-V3 or its nonce is missing")
    if not auth.check_plivo_signature(auth_token, method, urls, params, nonce, header):
        return Refusal("signature", "X-Plivo-Signature-V3 does not match this URL")
    return None


async def _form(request: web.Request) -> list[tuple[str, str]]:
    """POSTed form fields (what Twilio and Plivo sign); nothing for other bodies."""
    if request.method != "POST" or request.content_type not in (
            "application/x-www-form-urlencoded", "multipart/form-data"):
        return []
    form = await request.post()
    return [(k, v) for k, v in form.items() if isinstance(v, str)]
