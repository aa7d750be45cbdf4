"""JSON from clients, read safely: bounded in size, and every way a text can be bad (not
UTF-8, not JSON, nested deeper than the parser's recursion limit, an integer longer than
Python converts) is one BadJson with a message for the client, never an exception that
escapes as a 500 or closes a socket. No I/O: the HTTP body reader is gateway/http/jsonbody.py.
"""

from __future__ import annotations

import json
from typing import Any


class BadJson(ValueError):
    """The text cannot be taken; ``status`` is the HTTP status that says why (400, 413)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status

    @property
    def kind(self) -> str:
        """The refusal's metric label."""
        return "too_large" if self.status == 413 else "bad_request"


def parse_json(data: str | bytes, *, max_bytes: int) -> Any:
    """The JSON value of ``data``, at most ``max_bytes`` long (characters for text)."""
    if len(data) > max_bytes:
        raise BadJson(f"the message is {len(data)} bytes long, over the limit of {max_bytes}",
                      413)
    try:
        return json.loads(data)
    except RecursionError:
        raise BadJson("the JSON is nested too deeply") from None
    except UnicodeDecodeError:
        raise BadJson("the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BadJson(f"not valid JSON ({_first_line(exc)})") from None
    except ValueError:  # Python's limit on the digits of an integer it converts
        raise BadJson("not valid JSON (a number with too many digits)") from None


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
