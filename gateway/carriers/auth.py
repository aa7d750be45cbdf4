"""Sans-I/O checks of who is calling: carrier signatures, JWTs, Basic auth, path tokens.

Pure functions over strings: no aiohttp here (the glue is ``gateway/http/verify.py``).
Every comparison of a secret-derived value is constant-time (``hmac.compare_digest``).
Parameters are a sequence of ``(name, value)`` pairs so repeated names survive.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import jwt

Params = Sequence[tuple[str, str]]

_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}
JWT_LEEWAY_S = 30
# Vonage honours a JWT without ``exp`` for 15 minutes after ``iat`` (Vonage API support,
# "How long is my JSON Web Token valid for?"); we hold its tokens to the same bound.
JWT_MAX_AGE_S = 15 * 60


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
    (twilio-python ``request_validator.py``)."""
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


# -- Twilio and SignalWire (cXML): X-Twilio-Signature / X-SignalWire-Signature ----------

def twilio_signature(auth_token: str, url: str, params: Params = ()) -> str:
    """base64(HMAC-SHA1(auth_token, url + name1 + value1 + ...)), parameters sorted by
    name then value (twilio-python ``RequestValidator.compute_signature``; SignalWire's
    "Scheme B", signalwire-typescript ``WebhookValidator.ts``). A WebSocket upgrade is a
    GET: no parameters, the signed string is the ``wss://`` URL alone."""
    message = url + "".join(name + value for name, value in sorted(params))
    mac = hmac.new(auth_token.encode(), message.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def check_twilio_signature(auth_token: str, urls: Iterable[str], params: Params,
                           signature: str | None) -> bool:
    if not signature:
        return False
    found = False
    for url in urls:
        for variant in url_variants(url):
            # no early exit: every candidate costs the same
            found |= same_secret(twilio_signature(auth_token, variant, params), signature)
    return found


# -- Plivo: X-Plivo-Signature-V3 + X-Plivo-Signature-V3-Nonce ---------------------------

def plivo_signed_url(method: str, url: str, params: Params = ()) -> str:
    """The string Plivo signs before ``.{nonce}`` (plivo-python ``utils/signature_v3.py``,
    ``construct_get_url``/``construct_post_url``): the URL without its query, then for a
    GET ``?`` and the query sorted as ``a=1&b=2``; for a POST with a body, ``?``, the
    sorted query and ``.`` if there is one, then the body sorted as ``name value``
    pairs without separators."""
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if method.upper() == "GET":
        pairs, params = [*pairs, *params], ()
    query = "&".join(f"{name}={value}" for name, value in sorted(pairs))
    if not params:
        return f"{base}?{query}" if query else base
    body = "".join(name + value for name, value in sorted(params))
    return f"{base}?{query}.{body}" if query else f"{base}?{body}"


def plivo_signature(auth_token: str, signed_url: str, nonce: str) -> str:
    mac = hmac.new(auth_token.encode(), f"{signed_url}.{nonce}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def check_plivo_signature(auth_token: str, method: str, urls: Iterable[str], params: Params,
                          nonce: str | None, header: str | None) -> bool:
    """The header may carry several comma-separated signatures (one per valid auth token
    while Plivo rotates it): any one matching is enough."""
    if not nonce or not header:
        return False
    given = [s.strip() for s in header.split(",") if s.strip()]
    found = False
    for url in urls:
        for variant in url_variants(url):
            expected = plivo_signature(auth_token, plivo_signed_url(method, variant, params),
                                       nonce)
            for signature in given:
                found |= same_secret(expected, signature)
    return found


# -- Vonage: Authorization: Bearer <HS256 JWT signed with the signature secret> ---------

def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def check_bearer(expected: str, authorization: str | None) -> bool:
    return same_secret(expected, bearer(authorization))


def vonage_jwt_problem(signature_secret: str, authorization: str | None,
                       now: float | None = None) -> str | None:
    """Why Vonage's JWT is not acceptable, or ``None`` if it is.

    HS256 only (so ``alg: none`` and every other algorithm are refused), signed with the
    account signature secret, as Vonage's own SDK verifies it (vonage-python-sdk
    ``vonage_jwt/verify_jwt.py``: ``jwt.decode(token, secret, algorithms='HS256')``).
    ``iat`` is required and may not be in the future; ``exp`` is honoured when present;
    either way a token older than ``JWT_MAX_AGE_S`` is refused. ``payload_hash`` is not
    checked: Vonage says it is needed only over plain HTTP, and carriers reach us over TLS.
    """
    token = bearer(authorization)
    if token is None:
        return "Authorization: Bearer <JWT> is missing"
    now = time.time() if now is None else now
    try:
        claims = jwt.decode(token, signature_secret, algorithms=["HS256"],
                            options={"require": ["iat"]}, leeway=JWT_LEEWAY_S)
        # PyJWT checks iat against the wall clock; ``now`` is for tests and replay bounds
        if claims["iat"] > now + JWT_LEEWAY_S:
            return "the JWT is issued in the future"
        if now - claims["iat"] > JWT_MAX_AGE_S + JWT_LEEWAY_S:
            return "the JWT is too old"
    except jwt.ExpiredSignatureError:
        return "the JWT has expired"
    except jwt.ImmatureSignatureError:
        return "the JWT is not valid yet"
    except jwt.MissingRequiredClaimError:
        return "the JWT has no iat claim"
    except jwt.InvalidAlgorithmError:
        return "the JWT is not signed with HS256"
    except jwt.InvalidSignatureError:
        return "the JWT signature does not match"
    except jwt.InvalidTokenError as exc:
        return f"the JWT is malformed ({type(exc).__name__})"
    return None


# -- Exotel, Asterisk: HTTP Basic ------------------------------------------------------

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


# -- URLs we hand out ------------------------------------------------------------------

def media_path(carrier: str, route: str, token: str | None = None) -> str:
    """``/v1/media/{carrier}/{route}[/{token}]`` with each segment percent-encoded."""
    segments = [carrier, route] + ([token] if token else [])
    return "/v1/media/" + "/".join(quote(s, safe="") for s in segments)
