"""Sans-I/O checks of who is calling, shared by the carriers: constant-time comparison,
the public URL a carrier signed, bearer tokens, HTTP Basic, path tokens; and the seam a
carrier's own check (``gateway/carriers/<carrier>/auth.py``) is called through.

Pure functions over strings: no aiohttp here (the glue is ``gateway/http/verify.py``).
Every comparison of a secret-derived value is constant-time (``hmac.compare_digest``).
Parameters are a sequence of ``(name, value)`` pairs so repeated names survive.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

Params = Sequence[tuple[str, str]]

_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}

#: what failed, as the ``auth_failures_total`` metric's ``reason`` label
RefusalReason = Literal["signature", "bearer", "jwt", "basic", "token"]


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: ``message`` names what failed, never a secret."""

    reason: RefusalReason
    message: str


class CarrierRequest(Protocol):
    """The parts of a media upgrade or answer webhook that a carrier's check reads."""

    @property
    def method(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def public_url(self, scheme: str | None = None) -> str:
        """The URL the carrier requested, on the gateway's public origin (``scheme``
        replaces the request's: a stream URL is signed as ``wss://``)."""

    async def form(self) -> Params:
        """The POSTed form fields (what Twilio and Plivo sign); none for other bodies."""


#: ``check(request, options, secrets)``: the refusal, or None if the media stream may open
MediaCheck = Callable[[CarrierRequest, Mapping[str, Any], Mapping[str, str]], "Refusal | None"]
#: ``await check(request, options, secrets)``: ``(refusal or None, verified)``, where
#: ``verified`` means the request proved it comes from the carrier
AnswerCheck = Callable[[CarrierRequest, Mapping[str, Any], Mapping[str, str]],
                       Awaitable["tuple[Refusal | None, bool]"]]


def same_secret(expected: str, given: str | None) -> bool:
    """Constant-time equality of two strings (``False`` when ``given`` is missing)."""
    if given is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


# -- the public URL a carrier signed ----------------------------------------------------

@dataclass(frozen=True)
class Origin:
    """Where carriers reach the gateway: scheme, ``host[:port]``, and a path prefix
    (``https://gw.example.com/tts`` puts the gateway's ``/v1/...`` under ``/tts``)."""

    scheme: str
    authority: str
    prefix: str = ""

    def url(self, raw_path: str, scheme: str | None = None) -> str:
        return f"{scheme or self.scheme}://{self.authority}{self.prefix}{raw_path}"


def origin_from_public_url(public_url: str) -> Origin:
    parts = urlsplit(public_url)
    return Origin(parts.scheme.lower(), parts.netloc, parts.path.rstrip("/"))


def origin_from_headers(headers: Mapping[str, str], scheme: str, host: str) -> Origin:
    """The origin the client used, behind a proxy: ``X-Forwarded-Proto``/``-Host`` first,
    then RFC 7239 ``Forwarded``, then what reached us. Only the nearest value counts (the
    first in a list: the one the client's own proxy wrote)."""
    forwarded = _forwarded(headers.get("Forwarded", ""))
    proto = _first(headers.get("X-Forwarded-Proto")) or forwarded.get("proto") or scheme
    authority = _first(headers.get("X-Forwarded-Host")) or forwarded.get("host") or host
    return Origin(proto.lower(), authority)


def _first(value: str | None) -> str:
    return value.split(",")[0].strip() if value else ""


def _forwarded(value: str) -> dict[str, str]:
    first = value.split(",")[0]
    pairs = {}
    for item in first.split(";"):
        name, _, val = item.strip().partition("=")
        if name and val:
            pairs[name.lower()] = val.strip('"')
    return pairs


def url_variants(url: str) -> list[str]:
    """``url``, and the same with its default port added or removed: Twilio's own
    validator tries both "since sig generation on back end is inconsistent"
    (``request_validator.py`` in Twilio's Python library)."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    if default is None or not parts.hostname:
        return [url]
    userinfo, _, host = parts.netloc.rpartition("@")
    userinfo += "@" if userinfo else ""
    try:
        port = parts.port
    except ValueError:
        return [url]
    if port is None:
        other = f"{userinfo}{host}:{default}"
    elif port == default:
        other = userinfo + host[: host.rfind(":")]
    else:
        return [url]
    return [url, urlunsplit(parts._replace(netloc=other))]


def with_scheme(url: str, scheme: str) -> str:
    return urlunsplit(urlsplit(url)._replace(scheme=scheme))


# -- Authorization: Bearer ------------------------------------------------------------

def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def check_bearer(expected: str, authorization: str | None) -> bool:
    return same_secret(expected, bearer(authorization))


# -- HTTP Basic (Exotel, Asterisk) ------------------------------------------------------

def check_basic(username: str, password: str, authorization: str | None) -> bool:
    if not authorization:
        return False
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, not ASCII, or not UTF-8 once decoded
        return False
    user, sep, given = decoded.partition(":")
    # both halves are always compared, so timing does not tell which one was wrong
    return bool(sep) & same_secret(username, user) & same_secret(password, given)


def basic_pair_problems(options: Mapping[str, Any], secrets: Mapping[str, str]
                        ) -> list[tuple[str | None, str]]:
    """HTTP Basic settings come as a pair: ``username`` and ``password_env``."""
    if ("password" in secrets) != bool(options["username"]):
        return [(None, "basic auth needs both username and password_env")]
    return []


def basic_media_check(request: CarrierRequest, options: Mapping[str, Any],
                      secrets: Mapping[str, str]) -> Refusal | None:
    """The media check of a carrier that presents ``username`` + ``password_env`` as HTTP
    Basic credentials (on when the password is configured)."""
    if "password" in secrets and not check_basic(options["username"], secrets["password"],
                                                 request.headers.get("Authorization")):
        return Refusal("basic", "HTTP Basic credentials are missing or do not match")
    return None


# -- URLs we hand out ------------------------------------------------------------------

def media_path(carrier: str, route: str, token: str | None = None) -> str:
    """``/v1/media/{carrier}/{route}[/{token}]`` with each segment percent-encoded."""
    segments = [carrier, route] + ([token] if token else [])
    return "/v1/media/" + "/".join(quote(s, safe="") for s in segments)
