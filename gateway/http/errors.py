"""Every HTTP error in the gateway's own shape, and no traceback for a client's mistake.

The router's 404 and 405 and aiohttp's 413 become ``{"error": {"status", "message"}}``
like every other error. A request aiohttp cannot even parse (a malformed header, an
unknown method on a kept-alive connection) is answered 400 by aiohttp itself, which logs
it at ERROR with a traceback; that record becomes one INFO line without client bytes.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.http.keys import json_error

log = logging.getLogger(__name__)


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        response = json_error(exc.status, exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except (TimeoutError, ConnectionError):
        raise  # aiohttp's own answers: 504, or nothing to a client that is gone
    except Exception:
        if request.writer is None or request.writer.output_size > 0:
            raise  # a response (a WebSocket) is under way: aiohttp closes it
        log.exception("%s %s: unexpected failure", request.method, request.path[:200])
        return json_error(500, "internal error")


class _ClientErrorsWithoutTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            what = (exc.message or "").splitlines()[0].rstrip(":")[:100] or "unparsable"
            record.msg, record.args = "bad HTTP request from %s (%d): %s", (peer, exc.code, what)
            record.levelno = min(record.levelno, logging.INFO)
            record.levelname = logging.getLevelName(record.levelno)
            record.exc_info, record.exc_text = None, None
        return True


def quiet_client_errors() -> None:
    """Install the filter on aiohttp's server logger (once per process)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _ClientErrorsWithoutTraceback) for f in logger.filters):
        logger.addFilter(_ClientErrorsWithoutTraceback())
