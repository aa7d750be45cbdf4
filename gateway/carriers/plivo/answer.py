"""Plivo's answer document: Plivo XML (docs/protocols/carriers.md §3.1-3.2)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from gateway.carriers.answer import XML, AnswerRequest, xml_document


def plivo_xml(media_url: str, *, content_type: str, sample_rate: int) -> bytes:
    """Plivo XML. Plivo's pages disagree on the defaults of ``contentType`` and
    ``keepCallAlive``, so both are always explicit (docs/protocols/carriers.md §3.2)."""
    root = ET.Element("Response")
    stream = ET.SubElement(root, "Stream", {
        "bidirectional": "true", "keepCallAlive": "true", "audioTrack": "inbound",
        "contentType": f"{content_type};rate={sample_rate}"})
    stream.text = media_url
    return xml_document(root)


def document(request: AnswerRequest) -> tuple[str, bytes]:
    options = request.options
    return XML, plivo_xml(request.media_url, content_type=options["content_type"],
                          sample_rate=options["sample_rate"])
