"""Small pieces every provider protocol module uses alike (no provider rules here)."""

from __future__ import annotations

import binascii
import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard
from urllib.parse import urlencode

from gateway.tts.base import MAX_WORD_CHARS, WordTiming
from gateway.tts.providers.events import ProviderProtocolError


#: Where a WebSocket provider's socket opens: its URL and the handshake's headers (which
#: hold the key: never log them).
WebSocketParams = tuple[str, dict[str, str]]


@dataclass(frozen=True)
class SocketIOParams:
    """Where and how a Socket.IO provider's connection opens (what ``Driver.connect``
    gives for a provider spoken to over Socket.IO). ``auth`` holds the key: never log it."""

    url: str  # scheme://host[:port], the Engine.IO server
    namespace: str
    auth: dict[str, str] = field(repr=False)
    socketio_path: str = "socket.io"  # Engine.IO's default path
    headers: dict[str, str] = field(default_factory=dict, repr=False)


def with_query(endpoint: str, **params: Any) -> str:
    """``endpoint`` with ``params`` added to its query string, in order: None values left
    out, booleans written ``true``/``false`` (as the providers' query parameters take them)."""
    query = urlencode({name: ("true" if value else "false") if type(value) is bool else value
                       for name, value in params.items() if value is not None})
    return endpoint + ("&" if "?" in endpoint else "?") + query


def decode_base64(value: Any, what: str, kind: str = "bad_audio") -> bytes:
    """Audio a provider sent as base64 text; anything else (a non-string, invalid or
    non-ASCII base64) is a ProviderProtocolError naming ``what``."""
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError, TypeError) as exc:  # ValueError: non-ASCII text
        raise ProviderProtocolError(kind, f"{what} is not valid base64 ({exc})") from None


def preview(text: Any, limit: int = 80) -> str:
    """A frame (or a message already decoded), shortened for an error message."""
    text = text if isinstance(text, str) else repr(text)
    return repr(text if len(text) <= limit else text[:limit] + "…")


def choose_g711_or_pcm(carrier_encoding: str, carrier_rate: int, rates: Sequence[int], *,
                       pcm: str, mulaw: str, alaw: str) -> tuple[str, int]:
    """``(encoding, sample_rate)``: the provider's ``mulaw``/``alaw`` at 8 kHz for G.711
    carriers, passed through untouched (docs/protocols/tts-providers.md §9.1), else ``pcm``
    at the carrier's rate if one of ``rates`` (ascending; a ``range`` for any rate within
    bounds), else the next higher one, else the highest."""
    if carrier_rate == 8000 and carrier_encoding == "mulaw":
        return mulaw, 8000
    if carrier_rate == 8000 and carrier_encoding == "alaw":
        return alaw, 8000
    index = bisect.bisect_left(rates, carrier_rate)
    return pcm, rates[min(index, len(rates) - 1)]


def parse_object(raw: Any, what: str, *, kind: str = "bad_frame",
                 expected: str = "an object") -> dict[str, Any]:
    """A server message that must be a JSON object: ``raw`` is its text (or an object
    already decoded, e.g. by Socket.IO); ``what`` names it in errors (``"Inworld frame"``).
    Not JSON is a ``not_json`` ProviderProtocolError, JSON of another type one of ``kind``
    (each provider keeps its own metric label)."""
    message = raw
    if isinstance(raw, (str, bytes)):
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise ProviderProtocolError(
                "not_json", f"{what} is not JSON ({exc}): {preview(raw)}") from None
    if type(message) is not dict:
        raise ProviderProtocolError(
            kind, f"{what} is a JSON {type(message).__name__}, expected {expected}: "
            f"{preview(raw)}")
    return message


def parse_typed_frame(text: str, provider: str, *, kind: str = "bad_frame") -> dict[str, Any]:
    """A server text frame that must be a JSON object with a string ``type``."""
    message = parse_object(text, f"{provider} frame", kind=kind,
                           expected="an object with a string \"type\"")
    if type(message.get("type")) is not str:
        raise ProviderProtocolError(
            kind, f"{provider} frame is not an object with a string \"type\": "
            f"{preview(text)}")
    return message


def remember(table: dict[str, Any], key: str, value: Any = None, limit: int = 256) -> None:
    """Put ``key`` last in a bounded table of past ids (a dict: insertion-ordered), dropping
    the oldest beyond ``limit``."""
    table.pop(key, None)
    table[key] = value
    while len(table) > limit:
        del table[next(iter(table))]


#: Word timings read from one provider message at most (a longer list is cut).
MAX_WORDS_PER_MESSAGE = 1000


def is_seconds(value: Any) -> TypeGuard[float]:
    """A time a provider sent: a number of seconds, finite, not negative, under a day."""
    return type(value) in (int, float) and 0 <= value < 86400


def parallel_word_timings(words: Any, starts: Any, ends: Any,
                          base_s: float) -> tuple[WordTiming, ...]:
    """Word timings from three parallel lists (word, start, end in seconds), shifted by
    ``base_s``. Bounded: at most :data:`MAX_WORDS_PER_MESSAGE` words, each cut to
    ``MAX_WORD_CHARS``; entries that do not make sense (not a string, blank, a
    time that is not a number, an end before its start) are skipped, not fatal."""
    if not (type(words) is list and type(starts) is list and type(ends) is list):
        return ()
    out = []
    for word, start, end in zip(words[:MAX_WORDS_PER_MESSAGE], starts, ends):
        if type(word) is not str or not is_seconds(start) or not is_seconds(end):
            continue
        word = word.strip()[:MAX_WORD_CHARS]
        if word and start <= end:
            out.append(WordTiming(word, base_s + start, base_s + end))
    return tuple(out)
