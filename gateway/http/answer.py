"""``GET|POST /v1/answer/{carrier}/{route}[/{token}]``: the carrier's answer webhook.

Returns the call-control document (TwiML, cXML, TeXML, Plivo XML, NCCO, Exotel's
``{"url": ...}``) that connects the call to this gateway's media endpoint. Every carrier
lets the webhook method be chosen (Vonage's answer_url and Exotel's applet use GET by
default, the others POST), so both are served.

The document reveals the route's token, so the request is verified first where the
carrier signs it and its secret is configured; where it cannot be (Telnyx, an Exotel
applet URL without credentials) a route with a token needs it in the answer URL's path
too. Secrets beyond the route token (SignalWire's ``authBearerToken``, Exotel's Basic
credentials) go into a document only when the request was verified: without that, the
document would hand them to anyone who asks, and the stream is refused instead.

In a cluster (``cluster.redis_url``), an instance that drains or is full points the stream
at the instance with the most room that has a ``cluster.public_url``, from the registry's
snapshot (gateway/cluster/directory.py ``redirect_target``): the answer never waits on Redis.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from gateway.carriers.answer import AnswerRequest
from gateway.carriers.auth import media_path, origin_from_public_url
from gateway.carriers.registry import CARRIERS
from gateway.http.jsonbody import BadJson, read_json
from gateway.http.keys import CLUSTER, CONFIG, METRICS, json_error
from gateway.http.verify import check_answer_request, public_origin

log = logging.getLogger(__name__)

DIALPLAN_HINT = ("README.md, section 'Pointing a phone number at the gateway'")
MAX_WEBHOOK_BYTES = 64 << 10  # an answer webhook's JSON body is a small object


async def answer(request: web.Request) -> web.Response:
    carrier = request.match_info["carrier"]
    route = request.match_info["route"]
    config = request.app[CONFIG]
    if carrier not in config.carriers:
        return json_error(404, f"carrier {carrier!r} is not enabled; enabled: "
                               f"{', '.join(config.carriers)}")
    spec = CARRIERS[carrier]
    if spec.answer is None:
        return json_error(404, f"{carrier} fetches no answer document: its dialplan connects "
                               f"the call; see {DIALPLAN_HINT}")
    if route not in config.routes:
        return json_error(404, f"route {route!r} is not configured")
    refusal, verified = await check_answer_request(request, carrier, route)
    if refusal is not None:
        return refusal

    settings = config.carriers[carrier]
    origin = _origin_with_room(request)
    media_url = f"wss://{origin.authority}{origin.prefix}" + media_path(
        carrier, route, config.routes[route].token)
    if not verified and any(name in settings.secrets for name in spec.document_secrets):
        log.warning("%s answer request for route %s is not verified: the document leaves "
                    "out the stream credentials, so the stream will be refused (see %s)",
                    carrier, route, DIALPLAN_HINT)
    content_type, body = spec.answer(AnswerRequest(
        media_url, route, settings.options, secrets=settings.secrets if verified else {},
        configured=frozenset(settings.secrets), webhook=await _webhook_fields(request)))
    # the document may carry a token or credentials: no cache may keep it
    return web.Response(body=body, content_type=content_type, charset="utf-8",
                        headers={"Cache-Control": "no-store"})


def _origin_with_room(request: web.Request):
    """This instance's public origin, or another's where it has room and this one not."""
    directory = request.app.get(CLUSTER)
    target = directory.redirect_target() if directory is not None else None
    if target is None:
        return public_origin(request)
    reason, public_url = target
    request.app[METRICS].cluster_redirects.labels(reason).inc()
    return origin_from_public_url(public_url)


async def _webhook_fields(request: web.Request) -> dict[str, Any]:
    """What the answer webhook says of the call, for the carrier's document: its query
    (GET), and for a JSON POST its body's fields too (Vonage's answer webhook)."""
    fields: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.content_type == "application/json":
        try:
            body = await read_json(request, max_bytes=MAX_WEBHOOK_BYTES)
        except BadJson:
            body = None
        if isinstance(body, dict):
            fields = {**body, **fields}
    return fields
