"""Telnyx's answer document: TeXML (docs/protocols/carriers.md §2.2)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from gateway.carriers.answer import XML, AnswerRequest, xml_document


def texml(media_url: str, *, codec: str, sample_rate: int) -> bytes:
    """Telnyx TeXML. Without ``bidirectionalMode="rtp"`` Telnyx drops what we send back
    (one-way audio: deepgram/deepclaw PR #8); ``inbound_track`` keeps our own speech out
    of what the caller side sends us (telnyx-code-examples PR #104)."""
    root = ET.Element("Response")
    ET.SubElement(ET.SubElement(root, "Connect"), "Stream", {
        "url": media_url, "track": "inbound_track", "codec": codec,
        "bidirectionalMode": "rtp", "bidirectionalCodec": codec,
        "bidirectionalSamplingRate": str(sample_rate)})
    return xml_document(root)


def document(request: AnswerRequest) -> tuple[str, bytes]:
    options = request.options
    return XML, texml(request.media_url, codec=options["codec"],
                      sample_rate=options["sample_rate"])
