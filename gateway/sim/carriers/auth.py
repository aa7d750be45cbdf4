"""Credentials carriers present on the WebSocket upgrade (docs/protocols/carriers.md §1.3, §3.5,
§4.5, §5.1, §6.1, §6.3): what every simulated carrier shares; each one's signature or token is
built by its own ``gateway/carriers/<carrier>/sim.py``."""

from __future__ import annotations

import base64

from gateway.carriers.registry import CARRIERS


def as_wss(url: str) -> str:
    """The URL as the carrier configured it: ``wss://`` (what Twilio and Plivo sign)."""
    scheme, sep, rest = url.partition("://")
    return "wss://" + rest if sep and scheme in ("ws", "wss", "http", "https") else url


def basic_auth(username: str, password: str) -> str:
    """``Authorization`` value for Exotel (``wss://KEY:TOKEN@host``) and Asterisk
    (``websocket_client.conf`` username/password)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def auth_headers(carrier: str, url: str, auth: dict[str, str] | None) -> dict[str, str]:
    """The upgrade headers that carry ``auth`` the way ``carrier`` presents credentials.

    The simulated carrier's ``accepted_auth`` says which credential sets it can present
    (docs/protocols/carriers.md §0.3) and its ``signed_headers`` builds what it signs
    (``auth_token`` → ``X-Twilio-Signature`` over the ``wss://`` URL for Twilio and SignalWire, or
    ``X-Plivo-Signature-V3`` + nonce for Plivo; ``signature_secret`` → ``Authorization:
    Bearer <JWT>`` for Vonage). The others are the same everywhere: ``bearer_token`` →
    ``Authorization: Bearer`` (SignalWire ``authBearerToken``); ``custom`` →
    ``Authorization`` verbatim (Vonage type custom); ``username`` + ``password`` →
    ``Authorization: Basic`` (Exotel, Asterisk). Telnyx and AudioSocket document none: use
    the URL token.
    """
    if not auth:
        return {}
    spec = CARRIERS.get(carrier)
    call = spec.simulator_class() if spec else None
    accepted = call.accepted_auth if call else ()
    if frozenset(auth) not in accepted:
        takes = " or ".join(str(sorted(keys)) for keys in accepted) or "none (use the URL token)"
        raise ValueError(f"{carrier} cannot present credentials {sorted(auth)}; it takes {takes}")
    assert call is not None
    headers = call.signed_headers(url, auth)
    if "bearer_token" in auth:
        headers["Authorization"] = f"Bearer {auth['bearer_token']}"
    if "custom" in auth:
        headers["Authorization"] = auth["custom"]
    if "username" in auth:
        headers["Authorization"] = basic_auth(auth["username"], auth["password"])
    return headers
