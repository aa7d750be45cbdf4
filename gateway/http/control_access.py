"""Who may use the control API (``/v1/calls``): closed unless a token guards it.

With ``auth.control_token_env`` every request needs ``Authorization: Bearer <token>``.
Without one (``auth.control: token``, the default) the gateway refuses to start on an
address other than loopback, and the API answers only requests that come from this host
directly: not through a proxy or tunnel, which would put it on the internet. Only
``auth.control: open`` serves it to anyone, with a warning at every start.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging

from aiohttp import web

from gateway.config import GatewayConfig
from gateway.http.keys import CONFIG, METRICS, json_error

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/v1/calls"
#: the prompt cache's endpoints (gateway/http/prompts.py) are guarded the same way
CONTROL_PREFIXES = (CONTROL_PREFIX, "/v1/prompts", "/v1/cluster")
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
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(errors="backslashreplace"),
                                   f"Bearer {token}".encode()):
            metrics.control_errors.labels("unauthorized").inc()
            return json_error(401, "missing or wrong bearer token (Authorization: Bearer <token>)")
    elif config.control_auth != "open" and not is_local_request(request):
        metrics.control_errors.labels("not_local").inc()
        return json_error(403, "the control API has no token, so it answers requests from "
                               "this host only (not through a proxy or tunnel); set "
                               "auth.control_token_env")
    return await handler(request)
