"""JSON request bodies, read safely: no further than the limit, then parsed by
:func:`gateway.bot.jsontext.parse_json` (every way a body can be bad is one BadJson)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.bot.jsontext import BadJson, parse_json

__all__ = ["BadJson", "parse_json", "read_json"]


async def read_json(request: web.Request, *, max_bytes: int) -> Any:
    """The request's JSON body (see ``parse_json``), read no further than ``max_bytes``."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise BadJson(f"the body is {declared} bytes long, over the limit of {max_bytes}", 413)
    body = bytearray()
    while len(body) <= max_bytes:
        chunk = await request.content.read(max_bytes + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return parse_json(bytes(body), max_bytes=max_bytes)
