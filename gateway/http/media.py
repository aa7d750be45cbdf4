"""``WS /v1/media/{carrier}[/{route}]``: the carrier's media stream, one socket per call.

The loop here is shared by every carrier; what differs lives in the carrier's sans-I/O
protocol module. A malformed message is logged with the call's context, counted, and
dropped; the call goes on (this is also what Twilio does with ours: warning 31951).
"""

from __future__ import annotations

import logging

from aiohttp import WSMsgType, web

from gateway.carriers.events import (Audio, CarrierProtocolError, Dtmf, MarkPlayed, Started,
                                     Stopped)
from gateway.carriers.twilio import TwilioProtocol
from gateway.core.call import Call
from gateway.http.keys import CALLS, CONFIG, METRICS, SERVICES, json_error
from gateway.http.wsframe import WebSocketSink

log = logging.getLogger(__name__)

PROTOCOLS = {"twilio": TwilioProtocol}
MAX_CARRIER_MESSAGE = 1 << 20


async def media_stream(request: web.Request) -> web.StreamResponse:
    carrier = request.match_info["carrier"]
    config = request.app[CONFIG]
    metrics = request.app[METRICS]
    if carrier not in PROTOCOLS or carrier not in config.carriers:
        return json_error(404, f"carrier {carrier!r} is not enabled; enabled: "
                               f"{', '.join(c for c in config.carriers if c in PROTOCOLS)}")
    route_name = request.match_info.get("route")
    if route_name is not None and route_name not in config.routes:
        metrics.calls.labels(carrier, "rejected").inc()
        return json_error(404, f"route {route_name!r} is not configured")
    calls = request.app[CALLS]
    if len(calls) >= config.limits.max_calls:
        metrics.calls.labels(carrier, "rejected").inc()
        return json_error(503, f"at capacity ({config.limits.max_calls} calls); try another instance")

    # compress=False: the playout writes whole frames to the transport itself (wsframe.py)
    ws = web.WebSocketResponse(heartbeat=None, autoping=True, compress=False,
                               max_msg_size=MAX_CARRIER_MESSAGE)
    await ws.prepare(request)
    protocol = PROTOCOLS[carrier]()
    call: Call | None = None
    outcome = "disconnected"
    sink = WebSocketSink(ws, request)

    def problem(kind: str, detail: str) -> None:
        metrics.carrier_errors.labels(carrier, kind).inc()
        who = f"call {call.id}" if call else f"stream from {request.remote}"
        log.warning("%s (%s): malformed %s message, dropped: %s", who, carrier, kind, detail)

    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                try:
                    event = protocol.receive_text(msg.data)
                except CarrierProtocolError as exc:
                    problem(exc.kind, str(exc))
                    continue
            elif msg.type is WSMsgType.BINARY:
                try:
                    event = protocol.receive_bytes(msg.data)
                except CarrierProtocolError as exc:
                    problem(exc.kind, str(exc))
                    continue
            else:
                break
            if event is None:
                continue
            cls = event.__class__
            if cls is Audio:
                if call:
                    call.on_audio(event.payload)
            elif cls is MarkPlayed:
                if call:
                    call.on_mark(event.name)
            elif cls is Dtmf:
                if call:
                    call.on_dtmf(event.digit)
            elif cls is Started:
                call = _start_call(request, protocol, event, route_name, ws, sink)
                if call is None:
                    outcome = "rejected"
                    break
            elif cls is Stopped:
                outcome = "completed"
                break
    finally:
        if call is not None:
            if call.state == "hanging_up" or call.state == "closed_by_gateway":
                outcome = "hangup"
            calls.pop(call.id, None)
            metrics.active_calls.labels(carrier).dec()
            metrics.calls.labels(carrier, outcome).inc()
            await call.end(outcome)
            log.info("call %s (%s, route %s) ended: %s; %d frames sent, %d underruns", call.id,
                     carrier, call.route.name, outcome, call.playout.frames_sent,
                     call.playout.underruns)
        elif outcome == "rejected":
            metrics.calls.labels(carrier, "rejected").inc()
        if not ws.closed:
            if outcome == "rejected":
                await ws.close(code=1008, message=b"no such route, or call already connected")
            else:
                await ws.close()
    return ws


def _start_call(request: web.Request, protocol, event: Started, route_name: str | None, ws,
                sink: WebSocketSink) -> Call | None:
    config = request.app[CONFIG]
    calls = request.app[CALLS]
    carrier = protocol.carrier
    # Twilio forbids query strings in stream URLs: the route may come as a custom parameter.
    name = route_name or event.custom_parameters.get("route") or config.default_route
    route = config.routes.get(name or "")
    if route is None:
        log.warning("%s stream %s (call %s): route %r is not configured; closing", carrier,
                    event.stream_id, event.call_id, name)
        return None
    if event.call_id in calls:
        log.warning("%s call %s is already connected; refusing a second stream", carrier,
                    event.call_id)
        return None

    async def close_transport() -> None:
        call.state = "closed_by_gateway"
        await ws.close()

    call = Call(request.app[SERVICES], call_id=event.call_id, stream_id=event.stream_id,
                carrier=carrier, route=route, protocol=protocol, media_format=event.media_format,
                sink=sink, close_transport=close_transport)
    calls[call.id] = call
    request.app[METRICS].active_calls.labels(carrier).inc()
    log.info("call %s (%s, route %s) started, stream %s", call.id, carrier, route.name,
             call.stream_id)
    call.start()
    return call
