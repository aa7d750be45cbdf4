"""Carrier authentication in front of the media WebSocket and the answer webhooks.

``check_media_request`` runs before the WebSocket upgrade, so a refused carrier sees an
HTTP 403 and never a socket (docs/protocols/carriers.md §10). Each carrier's check is its own
(``gateway/carriers/<carrier>/auth.py``, named by its ``SPEC``) over the pure functions in
``gateway/carriers/auth.py``; this module hands it the request, checks the route's token,
counts and logs refusals. Messages name what failed, never a secret or the value that was sent.
"""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.carriers import auth
from gateway.carriers.auth import Refusal
from gateway.carriers.registry import CARRIERS
from gateway.config import CarrierConfig
from gateway.http.keys import CONFIG, METRICS, json_error

log = logging.getLogger(__name__)

_warned_no_public_url = False


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


class _CarrierRequest:
    """An aiohttp request as a carrier's check sees it (``auth.CarrierRequest``)."""

    def __init__(self, request: web.Request, origin: auth.Origin | None = None):
        self.request = request
        self.method = request.method
        self.headers = request.headers
        self.origin = origin

    def public_url(self, scheme: str | None = None) -> str:
        origin = self.origin or public_origin(self.request)
        return origin.url(self.request.raw_path, scheme=scheme)

    async def form(self) -> auth.Params:
        return await _form(self.request)


def _media_refusal(request: web.Request, carrier: str, settings: CarrierConfig
                   ) -> Refusal | None:
    check = CARRIERS[carrier].check_media
    if check is None:
        return None
    refusal = check(_CarrierRequest(request), settings.options, settings.secrets)
    own_url = request.app[CONFIG].cluster.public_url
    if refusal is not None and own_url:
        # another instance's answer pointed the carrier at this one's own address, and the
        # carrier signed that URL (gateway/http/answer.py)
        own = _CarrierRequest(request, auth.origin_from_public_url(own_url))
        if check(own, settings.options, settings.secrets) is None:
            return None
    return refusal


async def _answer_refusal(request: web.Request, carrier: str, settings: CarrierConfig
                          ) -> tuple[Refusal | None, bool]:
    check = CARRIERS[carrier].check_answer
    if check is None:
        return None, False
    return await check(_CarrierRequest(request), settings.options, settings.secrets)


async def _form(request: web.Request) -> list[tuple[str, str]]:
    """POSTed form fields (what Twilio and Plivo sign); nothing for other bodies."""
    if request.method != "POST" or request.content_type not in (
            "application/x-www-form-urlencoded", "multipart/form-data"):
        return []
    form = await request.post()
    return [(k, v) for k, v in form.items() if isinstance(v, str)]
