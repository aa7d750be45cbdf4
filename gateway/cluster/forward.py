"""Control requests for a call this instance does not hold: found in the directory and
forwarded to the owner's ``instance_url``; its answer is passed back as it came.

The owner is told by :data:`HOP_HEADER` that the request was forwarded already: it answers
from its own calls only (a 404 if the call just ended), so a request crosses at most one
hop. The caller's ``Authorization`` goes along: the owner checks it as its own.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from gateway.bot import protocol
from gateway.cluster import ClusterUnavailable
from gateway.http.control_access import socket_protocols
from gateway.http.keys import CALLS, CLUSTER, HTTP, METRICS, json_error

if TYPE_CHECKING:
    from gateway.cluster.directory import CallDirectory

HOP_HEADER = "X-Tts-Gateway-Hop"
_PASSED_HEADERS = ("Authorization", "Content-Type")
_MAX_ANSWER_BYTES = 8 << 20  # an owner's answer (a call's summary and recent events)
_MAX_BODY_BYTES = 1 << 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def directory_of(request: web.Request) -> CallDirectory | None:
    """The cluster directory, unless cluster is off or the request was forwarded to us."""
    if HOP_HEADER in request.headers:
        return None
    return request.app.get(CLUSTER)


def forwarding(op: str) -> Callable[[Handler], Handler]:
    """A control handler for ``/v1/calls/{id}...``: a call held elsewhere in the cluster is
    answered by its owner."""
    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def handle(request: web.Request) -> web.StreamResponse:
            call_id = request.match_info["id"]
            directory = directory_of(request)
            if directory is None or call_id in request.app[CALLS]:
                return await handler(request)
            return await forward(request, directory, call_id, op)
        return handle
    return wrap


def unavailable(request: web.Request, exc: ClusterUnavailable) -> web.Response:
    request.app[METRICS].control_errors.labels("cluster_unavailable").inc()
    return json_error(503, f"the cluster directory cannot be read: {exc}; calls this instance "
                      "holds still answer here", retry_after_s=1)


async def forward(request: web.Request, directory: CallDirectory, call_id: str,
                  op: str) -> web.StreamResponse:
    started = time.perf_counter()
    owner = await _owner(request, directory, call_id)
    if isinstance(owner, web.Response):
        return owner
    if request.content_length is not None and request.content_length > _MAX_BODY_BYTES:
        request.app[METRICS].control_errors.labels("too_large").inc()
        return json_error(413, f"body larger than {_MAX_BODY_BYTES} bytes")
    body = await request.content.read(_MAX_BODY_BYTES + 1)
    if len(body) > _MAX_BODY_BYTES:
        request.app[METRICS].control_errors.labels("too_large").inc()
        return json_error(413, f"body larger than {_MAX_BODY_BYTES} bytes")
    status, content_type, answer = await _send(request, owner, body, directory)
    if status is None:
        request.app[METRICS].control_errors.labels("owner_unreachable").inc()
        return json_error(502, f"the instance holding call {protocol.shown(call_id)} did not "
                          f"answer: {answer.decode()}")
    request.app[METRICS].cluster_forward.labels(op).observe(time.perf_counter() - started)
    return web.Response(status=status, body=answer, content_type=content_type)


async def _owner(request: web.Request, directory: CallDirectory,
                 call_id: str) -> str | web.Response:
    """The owner's URL, or the answer when there is none (404) or Redis cannot say (503)."""
    try:
        owner = await directory.owner(call_id)
    except ClusterUnavailable as exc:
        return unavailable(request, exc)
    if owner is None or owner == directory.instance_url:
        request.app[METRICS].control_errors.labels("unknown_call").inc()
        return json_error(404, f"no active call with id {protocol.shown(call_id)} "
                          "in the cluster")
    return owner


def _headers(request: web.Request, directory: CallDirectory) -> dict[str, str]:
    headers = {name: request.headers[name] for name in _PASSED_HEADERS if name in request.headers}
    headers[HOP_HEADER] = directory.instance_url
    return headers


async def forward_socket(request: web.Request, directory: CallDirectory, call_id: str, *,
                         max_msg_size: int) -> web.StreamResponse:
    """The control socket for a call held elsewhere: a socket to the owner's, and every
    message passed on both ways until either side closes."""
    started = time.perf_counter()
    owner = await _owner(request, directory, call_id)
    if isinstance(owner, web.Response):
        return owner
    try:
        upstream = await asyncio.wait_for(request.app[HTTP].ws_connect(
            owner + request.rel_url.path_qs, headers=_headers(request, directory),
            protocols=socket_protocols(request), max_msg_size=max_msg_size, heartbeat=30),
            directory.config.forward_timeout_s)
    except aiohttp.WSServerHandshakeError as exc:  # the owner's own refusal (404, 429, ...)
        return json_error(exc.status, f"the instance holding call {protocol.shown(call_id)} "
                          f"refused the control socket (HTTP {exc.status})")
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        request.app[METRICS].control_errors.labels("owner_unreachable").inc()
        return json_error(502, f"the instance holding call {protocol.shown(call_id)} did not "
                          f"answer: {type(exc).__name__}")
    request.app[METRICS].cluster_forward.labels("control").observe(time.perf_counter() - started)
    try:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=max_msg_size,
                                   protocols=socket_protocols(request))
        await ws.prepare(request)
        pipes = [asyncio.ensure_future(_pipe(ws, upstream)),
                 asyncio.ensure_future(_pipe(upstream, ws))]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
        await ws.close()
        return ws
    finally:
        await upstream.close()


async def _pipe(source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
                sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> None:
    async for msg in source:
        if msg.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        else:
            return


async def fetch_json(request: web.Request, owner: str, path: str,
                     directory: CallDirectory) -> dict | None:
    """GET ``path`` from ``owner`` as a forwarded request: its JSON, or None."""
    status, _, answer = await _send(request, owner, b"", directory, method="GET", path=path)
    if status != 200:
        return None
    try:
        data = json.loads(answer)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def _send(request: web.Request, owner: str, body: bytes, directory: CallDirectory, *,
                method: str | None = None, path: str | None = None
                ) -> tuple[int | None, str, bytes]:
    headers = _headers(request, directory)
    url = owner + (path or request.rel_url.path_qs)
    timeout = aiohttp.ClientTimeout(total=directory.config.forward_timeout_s)
    try:
        async with request.app[HTTP].request(method or request.method, url, data=body or None,
                                             headers=headers, timeout=timeout,
                                             allow_redirects=False) as resp:
            answer = await resp.content.read(_MAX_ANSWER_BYTES + 1)
            if len(answer) > _MAX_ANSWER_BYTES:
                return None, "", b"its answer was too large"
            return resp.status, resp.content_type, answer
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return None, "", type(exc).__name__.encode()


async def list_cluster(request: web.Request, directory: CallDirectory,
                       local: list[dict]) -> web.Response:
    """Every call of the cluster: this instance's, and each other owner's own listing (its
    calls are named with ``"state": "unknown"`` when it does not answer)."""
    started = time.perf_counter()
    try:
        owners = await directory.owners()
    except ClusterUnavailable as exc:
        return unavailable(request, exc)
    here = request.app[CALLS]
    elsewhere: dict[str, list[str]] = {}
    for call_id, owner in owners.items():
        if owner != directory.instance_url and call_id not in here:
            elsewhere.setdefault(owner, []).append(call_id)
    answers = await asyncio.gather(*(fetch_json(request, owner, "/v1/calls", directory)
                                     for owner in elsewhere))
    calls = [{**summary, "instance": directory.instance_url} for summary in local]
    unreachable = []
    for (owner, ids), answer in zip(elsewhere.items(), answers):
        listed = answer.get("calls") if answer else None
        if not isinstance(listed, list):
            unreachable.append(owner)
            calls.extend({"id": call_id, "instance": owner, "state": "unknown"}
                         for call_id in ids)
            continue
        calls.extend({**summary, "instance": owner} for summary in listed
                     if isinstance(summary, dict))
    request.app[METRICS].cluster_forward.labels("list").observe(time.perf_counter() - started)
    return web.json_response({"calls": calls, "unreachable": unreachable})


async def cluster_status(request: web.Request) -> web.Response:
    """``GET /v1/cluster``: this instance and the registry (404 with cluster off)."""
    directory = request.app.get(CLUSTER)
    if directory is None:
        return json_error(404, "cluster is off (set cluster.redis_url)")
    try:
        instances = await directory.instances()
    except ClusterUnavailable as exc:
        return unavailable(request, exc)
    return web.json_response({"instance": directory.instance_url, "redis_up": directory.up,
                              "instances": instances})
