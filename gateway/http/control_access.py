"""Who may use the control API (``/v1/calls``): closed unless a token guards it.

With ``auth.control_token_env`` every request needs ``Authorization: Bearer <token>``.
Without one (``auth.control: token``, the default) the gateway refuses to start on an
address other than loopback, and the API answers only requests that come from this host
directly: not through a proxy or tunnel, which would put it on the internet. Only
``auth.control: open`` serves it to anyone, with a warning at every start.

A browser's WebSocket cannot send headers: the console offers the token as the subprotocol
``tts-gateway.bearer.<base64url(token), unpadded>`` instead, and the socket echoes it.

Whatever the token, a request whose ``Origin`` is another site's is refused: a page the user
visits could otherwise post to a gateway on the user's loopback (CSRF), or open its control
socket (WebSockets have no CORS). Without a token, the ``Host`` must be a loopback name too,
so that a site whose name resolves to 127.0.0.1 (DNS rebinding) is not "this host".
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import logging
from urllib.parse import urlsplit

from aiohttp import web

from gateway.config import GatewayConfig
from gateway.http.keys import CONFIG, METRICS, json_error

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/v1/calls"
#: the prompt cache's endpoints (gateway/http/prompts.py) are guarded the same way
CONTROL_PREFIXES = (CONTROL_PREFIX, "/v1/prompts", "/v1/cluster", "/v1/routes", "/v1/stats")
#: the WebSocket subprotocol that carries the control token from a browser
BEARER_PROTOCOL_PREFIX = "tts-gateway.bearer."
# set by proxies and tunnels (ngrok, cloudflared, nginx): the request is not from this host
_FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP")


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` (a listen address, or a peer's) is this machine only."""
    if not host:
        return False
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False  # another host name: it may resolve to anything
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def exposure_problem(config: GatewayConfig, host: str) -> str | None:
    """Why the control API must not be served on ``host`` with this config, or None."""
    if config.control_token or config.control_auth == "open" or is_loopback_host(host):
        return None
    return (f"the control API (/v1/calls: list every call, speak into it, hang it up) would "
            f"listen on {host}, which is not loopback, without a token. Set "
            "auth.control_token_env to an environment variable that holds one (bots send "
            "Authorization: Bearer <token>), or listen on 127.0.0.1 (server.host, --host), "
            "or, where a private network alone guards the port, set auth.control: open")


def warn_if_open(config: GatewayConfig, host: str, port: int) -> None:
    if config.control_auth == "open" and not config.control_token:
        log.warning("auth.control is open: anyone who reaches %s:%d can list the calls, speak "
                    "into them and hang them up (set auth.control_token_env to close it)",
                    host, port)


def is_local_request(request: web.Request) -> bool:
    """The peer is this host, and no proxy or tunnel passed the request on."""
    if not is_loopback_host(request.remote):
        return False
    return not any(name in request.headers for name in _FORWARDING_HEADERS)


def bearer_protocol(token: str) -> str:
    """The WebSocket subprotocol that carries ``token``."""
    encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    return BEARER_PROTOCOL_PREFIX + encoded


def offered_bearer(request: web.Request) -> str | None:
    """The ``tts-gateway.bearer.*`` subprotocol the client offered, if any."""
    for item in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        if item.strip().startswith(BEARER_PROTOCOL_PREFIX):
            return item.strip()
    return None


def socket_protocols(request: web.Request) -> tuple[str, ...]:
    """The subprotocols a control socket answers with: the bearer one it was offered (a
    browser fails the socket unless the server picks one of those it offered)."""
    offered = offered_bearer(request)
    return (offered,) if offered else ()


def _default_port(scheme: str) -> int:
    return 443 if scheme in ("https", "wss") else 80


def _host_port(netloc: str, scheme: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(f"//{netloc}")
        return (parts.hostname or "", parts.port or _default_port(scheme))
    except ValueError:
        return None


def foreign_origin(request: web.Request) -> bool:
    """The request carries an ``Origin`` that is not this gateway's own (host and port as
    the ``Host`` header names them). No ``Origin`` (curl, bots) is not foreign."""
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return True
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return True  # "null" (a sandboxed frame, a file), or anything odd
    # the scheme may differ behind a TLS proxy; host and port cannot be another site's
    own = _host_port(request.host, parts.scheme)
    return own != (parts.hostname, port or _default_port(parts.scheme))


def _has_token(request: web.Request, token: str) -> bool:
    given = request.headers.get("Authorization", "")
    if hmac.compare_digest(given.encode(errors="backslashreplace"),
                           f"Bearer {token}".encode()):
        return True
    offered = offered_bearer(request)
    return offered is not None and hmac.compare_digest(
        offered.encode(errors="backslashreplace"), bearer_protocol(token).encode())


def _is_control(request: web.Request) -> bool:
    # by the route that matched, not by the raw path, which may be spelt many ways
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical.startswith(CONTROL_PREFIXES)


@web.middleware
async def control_auth(request: web.Request, handler):
    if not _is_control(request):
        return await handler(request)
    config = request.app[CONFIG]
    metrics = request.app[METRICS]
    token = config.control_token
    if foreign_origin(request):
        metrics.control_errors.labels("cross_origin").inc()
        return json_error(403, "the control API answers pages of this gateway's own origin "
                               "only (the request's Origin is another site)")
    if token:
        if not _has_token(request, token):
            metrics.control_errors.labels("unauthorized").inc()
            return json_error(401, "missing or wrong bearer token (Authorization: Bearer "
                                   "<token>, or the WebSocket subprotocol "
                                   f"{BEARER_PROTOCOL_PREFIX}<base64url(token)>)")
    elif config.control_auth != "open" and not is_local_request(request):
        metrics.control_errors.labels("not_local").inc()
        return json_error(403, "the control API has no token, so it answers requests from "
                               "this host only (not through a proxy or tunnel); set "
                               "auth.control_token_env")
    elif config.control_auth != "open" and not is_loopback_host(_host_name(request)):
        metrics.control_errors.labels("cross_origin").inc()
        return json_error(403, "the control API has no token, so it answers requests to a "
                               "loopback name only (Host: localhost or 127.0.0.1), not to "
                               "another name that resolves here")
    return await handler(request)


def _host_name(request: web.Request) -> str | None:
    own = _host_port(request.host, request.scheme)
    return own[0] if own else None
