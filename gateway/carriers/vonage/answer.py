"""Vonage's answer document: an NCCO (docs/protocols/carriers.md §4.1)."""

from __future__ import annotations

import json
from typing import Any

from gateway.carriers.answer import JSON, AnswerRequest
from gateway.carriers.jsonfields import party


def ncco(media_url: str, route: str, *, sample_rate: int, call_uuid: str | None = None,
         signed: bool = False, parties: dict[str, str] | None = None) -> bytes:
    """Vonage NCCO. ``authorization: {"type": "vonage"}`` makes Vonage send
    ``Authorization: Bearer <JWT>`` signed with the signature secret (vonage-node-sdk
    ``WebsocketAuthorization.ts``); the ``headers`` come back in ``websocket:connected``:
    the call's uuid and the answer webhook's ``from``/``to`` (``parties``) reach the
    stream, which carries neither of its own."""
    headers = {"route": route}
    if call_uuid:
        headers["call_uuid"] = call_uuid
    headers.update(parties or {})
    endpoint: dict[str, Any] = {"type": "websocket", "uri": media_url,
                                "content-type": f"audio/l16;rate={sample_rate}",
                                "headers": headers}
    if signed:
        endpoint["authorization"] = {"type": "vonage"}
    return json.dumps([{"action": "connect", "endpoint": [endpoint]}]).encode()


def document(request: AnswerRequest) -> tuple[str, bytes]:
    """What Vonage's answer webhook says of the call (in the query for GET, in the JSON body
    for POST) goes on to the stream: its ``uuid`` and the ``from`` and ``to`` numbers, each
    one only when it is a short printable string."""
    fields = request.webhook
    parties = {key: value for key in ("from", "to")
               if (value := party(fields, key)) is not None}
    call_uuid = party(fields, "uuid") or party(fields, "call_uuid")
    return JSON, ncco(request.media_url, request.route, sample_rate=request.options["sample_rate"],
                      call_uuid=call_uuid, signed="signature_secret" in request.configured,
                      parties=parties)
