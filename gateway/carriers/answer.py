"""Sans-I/O call-control documents: what a carrier's answer webhook gets back so that the
call streams to ``wss://<public host>/v1/media/<carrier>/<route>[/<token>]``.

Built with ``xml.etree``/``json`` only, so route names and URLs are always escaped.
Attribute names: carriers.md §1.2 (TwiML), §6.1 (SignalWire cXML), §2.2 (Telnyx TeXML),
§3.1-3.2 (Plivo XML), §4.1 (Vonage NCCO), §5.1 (Exotel Voicebot applet).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

XML = "application/xml"
JSON = "application/json"
# carriers the gateway connects to but that fetch no answer document
NO_DOCUMENT = ("asterisk", "audiosocket")


def _xml(root: ET.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8",
                                                                     xml_declaration=False)


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
    return _xml(root)


def texml(media_url: str, *, codec: str, sample_rate: int) -> bytes:
    """Telnyx TeXML. Without ``bidirectionalMode="rtp"`` Telnyx drops what we send back
    (one-way audio: deepgram/deepclaw PR #8); ``inbound_track`` keeps our own speech out
    of what the caller side sends us (telnyx-code-examples PR #104)."""
    root = ET.Element("Response")
    ET.SubElement(ET.SubElement(root, "Connect"), "Stream", {
        "url": media_url, "track": "inbound_track", "codec": codec,
        "bidirectionalMode": "rtp", "bidirectionalCodec": codec,
        "bidirectionalSamplingRate": str(sample_rate)})
    return _xml(root)


def plivo_xml(media_url: str, *, content_type: str, sample_rate: int) -> bytes:
    """Plivo XML. Plivo's pages disagree on the defaults of ``contentType`` and
    ``keepCallAlive``, so both are always explicit (carriers.md §3.2)."""
    root = ET.Element("Response")
    stream = ET.SubElement(root, "Stream", {
        "bidirectional": "true", "keepCallAlive": "true", "audioTrack": "inbound",
        "contentType": f"{content_type};rate={sample_rate}"})
    stream.text = media_url
    return _xml(root)


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


def exotel_url(media_url: str, *, sample_rate: int, username: str | None = None,
               password: str | None = None) -> str:
    """The Voicebot applet's stream URL: the rate rides as ``?sample-rate=`` and Basic
    credentials as userinfo, which Exotel sends as ``Authorization: Basic``
    (developer.exotel.com agentstream docs, carriers.md §5.1)."""
    parts = urlsplit(media_url)
    netloc = parts.netloc
    if username and password:
        netloc = f"{quote(username, safe='')}:{quote(password, safe='')}@{netloc}"
    return urlunsplit(parts._replace(netloc=netloc, query=f"sample-rate={sample_rate}"))


def exotel(url: str) -> bytes:
    return json.dumps({"url": url}).encode()


def answer_document(carrier: str, media_url: str, route: str, options: dict[str, Any], *,
                    bearer_token: str | None = None, call_uuid: str | None = None,
                    signed: bool = False, username: str | None = None,
                    password: str | None = None,
                    parties: dict[str, str] | None = None) -> tuple[str, bytes]:
    """``(content type, body)`` for ``carrier``; ``options`` are its ``carriers:`` settings."""
    if carrier == "twilio":
        return XML, twiml(media_url, route)
    if carrier == "signalwire":
        return XML, twiml(media_url, route, codec=options.get("codec"),
                          bearer_token=bearer_token)
    if carrier == "telnyx":
        return XML, texml(media_url, codec=options["codec"], sample_rate=options["sample_rate"])
    if carrier == "plivo":
        return XML, plivo_xml(media_url, content_type=options["content_type"],
                              sample_rate=options["sample_rate"])
    if carrier == "vonage":
        return JSON, ncco(media_url, route, sample_rate=options["sample_rate"],
                          call_uuid=call_uuid, signed=signed, parties=parties)
    if carrier == "exotel":
        return JSON, exotel(exotel_url(media_url, sample_rate=options["sample_rate"],
                                       username=username, password=password))
    raise ValueError(f"carrier {carrier!r} fetches no answer document")
