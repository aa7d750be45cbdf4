"""What the carriers' answer documents share: what one is built from, and the XML
declaration. Each carrier that fetches a document builds its own
(``gateway/carriers/<carrier>/answer.py``); it tells the carrier to stream the call to
``wss://<public host>/v1/media/<carrier>/<route>[/<token>]``.

Built with ``xml.etree``/``json`` only, so route names and URLs are always escaped.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

XML = "application/xml"
JSON = "application/json"


@dataclass(frozen=True)
class AnswerRequest:
    """What an answer document is built from."""

    media_url: str
    route: str
    #: the carrier's ``carriers:`` settings
    options: Mapping[str, Any]
    #: the carrier's secrets, only when the webhook request proved it came from the carrier
    #: (a document must not hand them to anyone who asks); else empty
    secrets: Mapping[str, str] = field(default_factory=dict)
    #: the names of the secrets configured, verified request or not
    configured: frozenset[str] = frozenset()
    #: what the webhook says of the call: its query, and its JSON body for a JSON POST
    webhook: Mapping[str, Any] = field(default_factory=dict)


#: ``(content type, body)`` of a carrier's answer document
AnswerDocument = Callable[[AnswerRequest], tuple[str, bytes]]


def xml_document(root: ET.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8",
                                                                     xml_declaration=False)
