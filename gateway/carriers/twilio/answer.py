"""Twilio's answer document: TwiML (docs/protocols/carriers.md §1.2); SignalWire's cXML is the
same."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from gateway.carriers.answer import XML, AnswerRequest, xml_document


def twiml(media_url: str, route: str, *, codec: str | None = None,
          bearer_token: str | None = None) -> bytes:
    """Twilio TwiML / SignalWire cXML. ``<Connect>`` blocks until we close the stream; the
    ``<Hangup/>`` after it ends the call then (a caller would otherwise sit on a silent
    line: dograh PR #704). The route also rides as a ``<Parameter>`` because Twilio
    forbids query strings in stream URLs."""
    root = ET.Element("Response")
    attrs = {"url": media_url}
    if codec:
        attrs["codec"] = codec
    if bearer_token:
        attrs["authBearerToken"] = bearer_token
    stream = ET.SubElement(ET.SubElement(root, "Connect"), "Stream", attrs)
    ET.SubElement(stream, "Parameter", {"name": "route", "value": route})
    ET.SubElement(root, "Hangup")
    return xml_document(root)


def document(request: AnswerRequest) -> tuple[str, bytes]:
    return XML, twiml(request.media_url, request.route)
