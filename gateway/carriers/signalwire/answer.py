"""SignalWire's answer document: cXML (docs/protocols/carriers.md §6.1), TwiML with the stream's
codec and its ``authBearerToken``."""

from __future__ import annotations

from gateway.carriers.answer import XML, AnswerRequest
from gateway.carriers.twilio.answer import twiml


def document(request: AnswerRequest) -> tuple[str, bytes]:
    return XML, twiml(request.media_url, request.route, codec=request.options.get("codec"),
                      bearer_token=request.secrets.get("bearer_token"))
