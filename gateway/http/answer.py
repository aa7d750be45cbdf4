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
"""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.carriers.answer import NO_DOCUMENT, answer_document
from gateway.carriers.jsonfields import party
from gateway.carriers.auth import media_path
from gateway.http.jsonbody import BadJson, read_json
from gateway.http.keys import CONFIG, json_error
from gateway.http.verify import check_answer_request, public_origin

log = logging.getLogger(__name__)

DIALPLAN_HINT = ("README.md, section 'Pointing a phone number at the gateway'")
MAX_WEBHOOK_BYTES = 64 << 10  # Vonage's answer webhook is a small JSON object


async def answer(request: web.Request) -> web.Response:
    carrier = request.match_info["carrier"]
    route = request.match_info["route"]
    config = request.app[CONFIG]
    if carrier not in config.carriers:
        return json_error(404, f"carrier {carrier!r} is not enabled; enabled: "
                               f"{', '.join(config.carriers)}")
    if carrier in NO_DOCUMENT:
        return json_error(404, f"{carrier} fetches no answer document: its dialplan connects "
                               f"the call; see {DIALPLAN_HINT}")
    if route not in config.routes:
        return json_error(404, f"route {route!r} is not configured")
    refusal, verified = await check_answer_request(request, carrier, route)
    if refusal is not None:
        return refusal

    settings = config.carriers[carrier]
    origin = public_origin(request)
    media_url = f"wss://{origin.authority}{origin.prefix}" + media_path(
        carrier, route, config.routes[route].token)
    secrets = settings.secrets if verified else {}
    if not verified and (carrier == "signalwire" and "bearer_token" in settings.secrets
                         or carrier == "exotel" and "password" in settings.secrets):
        log.warning("%s answer request for route %s is not verified: the document leaves "
                    "out the stream credentials, so the stream will be refused (see %s)",
                    carrier, route, DIALPLAN_HINT)
    content_type, body = answer_document(
        carrier, media_url, route, settings.options,
        bearer_token=secrets.get("bearer_token"),
        **(await _vonage_call(request) if carrier == "vonage" else {}),
        signed="signature_secret" in settings.secrets,
        username=settings.options.get("username"), password=secrets.get("password"))
    # the document may carry a token or credentials: no cache may keep it
    return web.Response(body=body, content_type=content_type, charset="utf-8",
                        headers={"Cache-Control": "no-store"})


async def _vonage_call(request: web.Request) -> dict:
    """What Vonage's answer webhook says of the call (in the query for GET, in the JSON body
    for POST): its ``uuid`` and the ``from`` and ``to`` numbers, for the NCCO to hand on to
    the stream; each one only when it is a short printable string."""
    fields: dict = dict(request.query)
    if request.method == "POST" and request.content_type == "application/json":
        try:
            body = await read_json(request, max_bytes=MAX_WEBHOOK_BYTES)
        except BadJson:
            body = None
        if isinstance(body, dict):
            fields = {**body, **fields}
    parties = {key: value for key in ("from", "to")
               if (value := party(fields, key)) is not None}
    call_uuid = party(fields, "uuid") or party(fields, "call_uuid")
    return {"call_uuid": call_uuid, "parties": parties}
