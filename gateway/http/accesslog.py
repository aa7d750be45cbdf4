"""aiohttp's access log without route tokens (they are a path segment of the media and
answer URLs)."""

from __future__ import annotations

import re

from aiohttp.web_log import AccessLogger

_TOKENED_PATH = re.compile(r"(/v1/(?:media|answer)/[^/?\s]+/[^/?\s]+/)[^/?\s]+")


def redact_path(text: str) -> str:
    """``/v1/media/{carrier}/{route}/<token>`` (or ``/v1/answer/...``) with the token
    segment replaced."""
    return _TOKENED_PATH.sub(r"\1<token>", text)


class RedactingAccessLogger(AccessLogger):
    """aiohttp's access log without route tokens: pass it to the runner as
    ``access_log_class`` (the request line is the only part of the format with a path)."""

    def _format_line(self, request, response, time):
        return [(key, redact_path(value) if key == "first_request_line" else value)
                for key, value in super()._format_line(request, response, time)]
