"""The process's logging: lines nothing from outside can forge or flood.

A carrier, a provider or an HTTP client chooses many of the values that end up in log
lines (call ids, routes, error texts, paths). Three things keep them harmless:

* :func:`setup` installs a formatter that escapes every control character (newlines,
  carriage returns, terminal escapes, the Unicode line separators) and cuts every
  argument of a record to :data:`MAX_VALUE_CHARS` (and the whole message to
  :data:`MAX_MESSAGE_CHARS`), saying how long it was. It works on every record of every
  logger, so no call site can forget it. Tracebacks are left as they are.
* ``logging.format: json`` writes one JSON object per line (time, level, logger, message,
  and the call's ``call_id``, ``carrier`` and ``route`` when the record belongs to one):
  what log pipelines expect, and injection is impossible by construction.
* :class:`RateLimitedLog` bounds how many lines one source may cause: the first few of
  each kind, then one per interval, and the count of what it suppressed.

The call fields come from :func:`bind_call`: the media endpoint binds each carrier
connection's context in the task that serves it, and every record logged from that task,
or from a task it started (a call's speaker), carries them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import numbers
import re
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime, UTC
from typing import Any, Protocol, TextIO

MAX_VALUE_CHARS = 200  # one argument of a log record
MAX_MESSAGE_CHARS = 2000  # the whole message (one built with an f-string, say)
CALL_FIELDS = ("call_id", "carrier", "route")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the bidi
# overrides and isolates that make a terminal show text in another order than it is.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    return _ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def clip(text: str, limit: int = MAX_VALUE_CHARS, *, escape: bool = True) -> str:
    """``text`` cut to ``limit`` characters (with a note of its length) and, with
    ``escape``, every control character written as an escape: one line, always."""
    if len(text) > limit:
        text = f"{text[:limit]}…({len(text)} chars)"
    return _UNSAFE.sub(_escape, text) if escape else text


class _Shown:
    """A log argument as ``%s`` and ``%r`` show it: clipped."""

    __slots__ = ("escape", "value")

    def __init__(self, value: object, escape: bool):
        self.value = value
        self.escape = escape

    def __str__(self) -> str:
        return clip(str(self.value), escape=self.escape)

    def __repr__(self) -> str:
        return clip(repr(self.value), escape=self.escape)


def _shown(value: object, escape: bool) -> object:
    # numbers stay numbers for %d and %.2f; they cannot carry text
    if value is None or isinstance(value, numbers.Number):
        return value
    return _Shown(value, escape)


def safe_message(record: logging.LogRecord, *, escape: bool = True) -> str:
    """The record's message with each argument clipped, then the whole of it clipped."""
    args = record.args
    if args:
        if isinstance(args, Mapping):
            args = {key: _shown(value, escape) for key, value in args.items()}
        else:
            args = tuple(_shown(value, escape) for value in args)
    try:
        message = str(record.msg) % args if args else str(record.msg)
    except (TypeError, ValueError, KeyError):
        message = f"{record.msg!s} % {args!r}"  # a call site's mistake must not lose the line
    return clip(message, MAX_MESSAGE_CHARS, escape=escape)


class SafeTextFormatter(logging.Formatter):
    """The text format, one line per record whatever its arguments hold."""

    def format(self, record: logging.LogRecord) -> str:
        safe = logging.makeLogRecord(record.__dict__)  # other handlers see the original
        safe.msg, safe.args = safe_message(record), None
        return super().format(safe)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the call's
    fields when the record has them, and the traceback, if any, as ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": safe_message(record, escape=False),
        }
        for name in CALL_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = clip(str(value), escape=False)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry)


# ---- the call a record belongs to --------------------------------------------------


class CallContext(Protocol):
    def log_fields(self) -> Mapping[str, object]:
        """``call_id``, ``carrier``, ``route`` as far as they are known (None if not)."""


_call: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("gateway_call",
                                                                           default=None)


def bind_call(context: CallContext) -> None:
    """Records logged from now on in this task, and in the tasks it starts, belong to
    ``context``'s call. Its fields are read when a record is logged, so they follow the
    call as it learns its id and route."""
    _call.set(context)


class CallFieldsFilter(logging.Filter):
    """Puts the bound call's fields on a record (fields given with ``extra=`` win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _call.get()
        if context is not None:
            for name, value in context.log_fields().items():
                if value is not None and not hasattr(record, name):
                    setattr(record, name, value)
        return True


# ---- setup -------------------------------------------------------------------------


def formatter(fmt: str) -> logging.Formatter:
    """The formatter for ``logging.format``: ``text`` or ``json``."""
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return SafeTextFormatter(TEXT_FORMAT)
    raise ValueError(f"logging.format must be text or json, got {fmt!r}")


class _GatewayHandler(logging.StreamHandler[TextIO]):
    """The handler :func:`setup` installs, known apart from the others on the root logger."""


def setup(level: str | int, fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Log records of ``level`` and above to ``stream`` (stderr) in ``fmt``, every one made
    safe; replaces a handler an earlier ``setup`` installed. Returns the handler."""
    handler = _GatewayHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(CallFieldsFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _GatewayHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


# ---- rate limiting -----------------------------------------------------------------


class RateLimitedLog:
    """Lines of one source (a call, a client address, ...) by kind: the first ``burst``
    of each kind, then one per ``interval`` seconds carrying the count suppressed since
    the last. ``flush`` logs what is still suppressed, one summary line per kind; call it
    when the source goes away. At most ``max_kinds`` kinds are tracked: the oldest goes
    first, with its summary.

    ``kind`` must come from a bounded set (a metric label, a reason), never be a value
    from outside.
    """

    def __init__(self, logger: logging.Logger, *, burst: int = 5, interval: float = 10.0,
                 max_kinds: int = 256, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.burst = burst
        self.interval = interval
        self.max_kinds = max_kinds
        self.clock = clock
        self.suppressed_total = 0
        # kind -> [lines logged, when the next may be, suppressed since the last, level]
        self._kinds: dict[Any, list] = {}

    def warning(self, kind: Any, msg: str, *args: object, **kwargs: Any) -> bool:
        return self.log(logging.WARNING, kind, msg, *args, **kwargs)

    def log(self, level: int, kind: Any, msg: str, *args: object, **kwargs: Any) -> bool:
        """Log the line unless its kind is over its rate; True if it was logged."""
        if not self.logger.isEnabledFor(level):
            return False
        state = self._kinds.get(kind)
        if state is None:
            if len(self._kinds) >= self.max_kinds:
                oldest = next(iter(self._kinds))
                self._summarize(oldest, self._kinds.pop(oldest), {})
            state = self._kinds[kind] = [0, 0.0, 0, level]
        now = self.clock()
        if state[0] < self.burst or now >= state[1]:
            state[0] += 1
            if state[0] >= self.burst:
                state[1] = now + self.interval
            if state[2]:
                msg, args = msg + " (%d more like this suppressed)", (*args, state[2])
                state[2] = 0
            self.logger.log(level, msg, *args, **kwargs)
            return True
        state[2] += 1
        state[3] = level
        self.suppressed_total += 1
        return False

    def flush(self, who: str = "", **kwargs: Any) -> int:
        """Log one summary line per kind with suppressed lines ("<who>: N more <kind> lines
        suppressed") and forget every kind; returns how many were suppressed in all."""
        total = 0
        for kind, state in self._kinds.items():
            total += self._summarize(kind, state, kwargs, who)
        self._kinds.clear()
        return total

    def _summarize(self, kind: Any, state: list, kwargs: Mapping[str, Any], who: str = ""
                   ) -> int:
        count = state[2]
        if count:
            self.logger.log(state[3], "%s%d more %s lines suppressed", f"{who}: " if who else "",
                            count, kind, **kwargs)
        return count
