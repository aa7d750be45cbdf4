"""Exotel's answer document: the Voicebot applet's ``{"url": ...}`` (docs/protocols/carriers.md
§5.1)."""

from __future__ import annotations

import json
from urllib.parse import quote, urlsplit, urlunsplit

from gateway.carriers.answer import JSON, AnswerRequest


def exotel_url(media_url: str, *, sample_rate: int, username: str | None = None,
               password: str | None = None) -> str:
    """The Voicebot applet's stream URL: the rate rides as ``?sample-rate=`` and Basic
    credentials as userinfo, which Exotel sends as ``Authorization: Basic``
    (developer.exotel.com agentstream docs, docs/protocols/carriers.md §5.1)."""
    parts = urlsplit(media_url)
    netloc = parts.netloc
    if username and password:
        netloc = f"{quote(username, safe='')}:{quote(password, safe='')}@{netloc}"
    return urlunsplit(parts._replace(netloc=netloc, query=f"sample-rate={sample_rate}"))


def exotel(url: str) -> bytes:
    return json.dumps({"url": url}).encode()


def document(request: AnswerRequest) -> tuple[str, bytes]:
    return JSON, exotel(exotel_url(request.media_url, sample_rate=request.options["sample_rate"],
                                   username=request.options.get("username"),
                                   password=request.secrets.get("password")))
