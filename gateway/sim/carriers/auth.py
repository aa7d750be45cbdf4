"""Credentials carriers present on the WebSocket upgrade (carriers.md §1.3, §3.5, §4.5,
§5.1, §6.1, §6.3)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid

from yarl import URL


def twilio_signature(auth_token: str, url: str) -> str:
    """``X-Twilio-Signature`` for a WebSocket upgrade: base64(HMAC-SHA1(token, url)).

    ``url`` is the full ``wss://`` URL as configured in the TwiML (an upgrade is a GET, so
    no POST parameters are appended).
    """
    digest = hmac.new(auth_token.encode(), url.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def as_wss(url: str) -> str:
    """The URL as the carrier configured it: ``wss://`` (what Twilio and Plivo sign)."""
    scheme, sep, rest = url.partition("://")
    return "wss://" + rest if sep and scheme in ("ws", "wss", "http", "https") else url


def plivo_signature_v3(auth_token: str, url: str, nonce: str) -> str:
    """``X-Plivo-Signature-V3``: base64(HMAC-SHA256(auth_token, f"{url}.{nonce}")); ``url``
    is the full URL with its query sorted (a GET has no body parameters)."""
    target = URL(url)
    if target.query:
        target = target.with_query(sorted(target.query.items()))
    digest = hmac.new(auth_token.encode(), f"{target}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def plivo_headers(auth_token: str, url: str, nonce: str | None = None) -> dict[str, str]:
    nonce = nonce or str(secrets.randbelow(10**20))
    return {"X-Plivo-Signature-V3": plivo_signature_v3(auth_token, as_wss(url), nonce),
            "X-Plivo-Signature-V3-Nonce": nonce}


def vonage_jwt(signature_secret: str, *, application_id: str | None = None,
               now: float | None = None, ttl: int = 300) -> str:
    """The HS256 JWT Vonage sends as ``Authorization: Bearer`` for an NCCO websocket endpoint
    with ``authorization: {"type": "vonage"}`` (claims iat, exp, jti, application_id)."""
    issued = int(time.time() if now is None else now)
    claims = {"iat": issued, "exp": issued + ttl, "jti": str(uuid.uuid4()),
              "application_id": application_id or str(uuid.uuid4())}
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = f"{_b64url_json(header)}.{_b64url_json(claims)}"
    signature = hmac.new(signature_secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def basic_auth(username: str, password: str) -> str:
    """``Authorization`` value for Exotel (``wss://KEY:TOKEN@host``) and Asterisk
    (``websocket_client.conf`` username/password)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_json(value: dict) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


#: the credential sets each carrier can present (carriers.md §0.3)
ACCEPTED_AUTH: dict[str, tuple[frozenset[str], ...]] = {
    "twilio": (frozenset({"auth_token"}),),
    "signalwire": (frozenset({"auth_token"}), frozenset({"bearer_token"}),
                   frozenset({"auth_token", "bearer_token"})),
    "plivo": (frozenset({"auth_token"}), frozenset({"auth_token", "nonce"})),
    "vonage": (frozenset({"signature_secret"}), frozenset({"signature_secret", "application_id"}),
               frozenset({"custom"})),
    "exotel": (frozenset({"username", "password"}),),
    "asterisk": (frozenset({"username", "password"}),),
}


def auth_headers(carrier: str, url: str, auth: dict[str, str] | None) -> dict[str, str]:
    """The upgrade headers that carry ``auth`` the way ``carrier`` presents credentials.

    ``auth_token`` → ``X-Twilio-Signature`` over the ``wss://`` URL (Twilio, SignalWire) or
    ``X-Plivo-Signature-V3`` + nonce (Plivo); ``bearer_token`` → ``Authorization: Bearer``
    (SignalWire ``authBearerToken``); ``signature_secret`` → ``Authorization: Bearer <JWT>``
    (Vonage, authorization type vonage); ``custom`` → ``Authorization`` verbatim (Vonage type
    custom); ``username`` + ``password`` → ``Authorization: Basic`` (Exotel, Asterisk).
    Telnyx and AudioSocket document none: use the URL token.
    """
    if not auth:
        return {}
    accepted = ACCEPTED_AUTH.get(carrier, ())
    if frozenset(auth) not in accepted:
        takes = " or ".join(str(sorted(keys)) for keys in accepted) or "none (use the URL token)"
        raise ValueError(f"{carrier} cannot present credentials {sorted(auth)}; it takes {takes}")
    headers: dict[str, str] = {}
    if carrier == "plivo":
        headers.update(plivo_headers(auth["auth_token"], url, auth.get("nonce")))
    elif "auth_token" in auth:
        headers["X-Twilio-Signature"] = twilio_signature(auth["auth_token"], as_wss(url))
    if "bearer_token" in auth:
        headers["Authorization"] = f"Bearer {auth['bearer_token']}"
    if "signature_secret" in auth:
        token = vonage_jwt(auth["signature_secret"], application_id=auth.get("application_id"))
        headers["Authorization"] = f"Bearer {token}"
    if "custom" in auth:
        headers["Authorization"] = auth["custom"]
    if "username" in auth:
        headers["Authorization"] = basic_auth(auth["username"], auth["password"])
    return headers
