"""The carriers' media streams, one connection per call.

``WS /v1/media/{carrier}[/{route}[/{token}]]`` for WebSocket carriers, and a plain TCP
listener for AudioSocket. The loop here is shared by every carrier; what differs lives in
the carrier's sans-I/O protocol module. A malformed message is logged with the call's
context, counted, and dropped; the call goes on (this is also what Twilio does with ours:
warning 31951). Who may connect is checked before the upgrade (gateway/http/verify.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

from gateway import logs
from gateway.carriers import PROTOCOLS, protocol_class
from gateway.carriers.events import (Audio, CarrierFault, CarrierProtocolError, Cleared, Dtmf,
                                     FlowControl, MarkPlayed, Started, Stopped)
from gateway.core.call import Call
from gateway.http.keys import CALLS, CONFIG, DRAIN, METRICS, SERVICES, json_error
from gateway.http.verify import check_media_request
from gateway.http.wsframe import StreamSink, WebSocketSink
from gateway.metrics import CARRIER_ERROR_KINDS, CARRIER_FAULT_CODES, bounded

log = logging.getLogger(__name__)

WEBSOCKET_CARRIERS = tuple(c for c in PROTOCOLS if c != "audiosocket")
MAX_CARRIER_MESSAGE = 1 << 20


class CarrierStream:
    """One carrier connection and the call it carries: normalized events in, the call's
    life cycle and its accounting out. Transport-neutral (WebSocket or TCP)."""

    def __init__(self, app: web.Application, carrier: str, protocol, sink,
                 close_transport: Callable[[], Awaitable[None]], route_name: str | None,
                 peer: str):
        self.app = app
        self.carrier = carrier
        self.protocol = protocol
        self.sink = sink
        self.close_transport = close_transport
        self.route_name = route_name
        self.peer = peer
        self.call: Call | None = None
        self.outcome = "disconnected"
        self.metrics = app[METRICS]
        self.warnings = logs.RateLimitedLog(log)  # a carrier sending garbage: a few lines
        logs.bind_call(self)  # this task's records (and its call's) carry log_fields()

    def log_fields(self) -> dict[str, str | None]:
        call = self.call
        return {"call_id": call.id if call else None, "carrier": self.carrier,
                "route": call.route.name if call else self.route_name}

    def problem(self, kind: str, detail: str) -> None:
        self.metrics.carrier_errors.labels(self.carrier, kind).inc()
        self.warnings.warning(f"malformed {bounded(kind, CARRIER_ERROR_KINDS)}",
                              "%s (%s): malformed %s message, dropped: %s", self._who(),
                              self.carrier, kind, detail)

    def _who(self) -> str:
        return f"call {self.call.id}" if self.call else f"stream from {self.peer}"

    def handle(self, event) -> bool:
        """Act on one event; False when the stream is over."""
        call = self.call
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
            self.call = self._start_call(event)
            if self.call is None:
                self.outcome = "rejected"
                return False
        elif cls is Stopped:
            self.outcome = "completed"
            return False
        elif cls is FlowControl:
            if call:
                call.on_flow_control(event.paused)
        elif cls is CarrierFault:
            self.metrics.carrier_faults.labels(self.carrier, event.code).inc()
            self.warnings.warning(f"carrier error {bounded(event.code, CARRIER_FAULT_CODES)}",
                                  "%s (%s): the carrier reports an error %s: %s", self._who(),
                                  self.carrier, event.code, event.detail)
        elif cls is Cleared:
            pass  # the ack of our clear; nothing is waiting on it
        return True

    async def finish(self) -> None:
        self.warnings.flush(f"{self._who()} ({self.carrier})")
        call = self.call
        if call is None:
            if self.outcome == "rejected":
                self.metrics.calls.labels(self.carrier, "rejected").inc()
            return
        if call.state in ("hanging_up", "closed_by_gateway"):
            self.outcome = "hangup"
        self.app[CALLS].pop(call.id, None)
        self.metrics.active_calls.labels(self.carrier).dec()
        self.metrics.calls.labels(self.carrier, self.outcome).inc()
        await call.end(self.outcome)
        log.info("call %s (%s, route %s) ended: %s; %d frames sent, %d underruns", call.id,
                 self.carrier, call.route.name, self.outcome, call.playout.frames_sent,
                 call.playout.underruns)

    def _start_call(self, event: Started) -> Call | None:
        config = self.app[CONFIG]
        calls = self.app[CALLS]
        carrier = self.carrier
        # Twilio forbids query strings in stream URLs: the route may come as a custom parameter.
        name = self.route_name or event.custom_parameters.get("route") or config.default_route
        route = config.routes.get(name or "")
        if route is None:
            log.warning("%s stream %s (call %s): route %r is not configured; closing", carrier,
                        event.stream_id, event.call_id, name, extra={"call_id": event.call_id})
            return None
        if route.token and self.route_name is None:
            # a route with a token takes calls only on its tokened path (checked before the
            # upgrade), never by naming it in a custom parameter
            log.warning("%s call %s names route %r, which needs its path token; closing",
                        carrier, event.call_id, name, extra={"call_id": event.call_id})
            return None
        if event.call_id in calls:
            log.warning("%s call %s is already connected; refusing a second stream", carrier,
                        event.call_id, extra={"call_id": event.call_id})
            return None

        async def close_transport() -> None:
            call.state = "closed_by_gateway"
            await self.close_transport()

        call = Call(self.app[SERVICES], call_id=event.call_id, stream_id=event.stream_id,
                    carrier=carrier, route=route, protocol=self.protocol,
                    media_format=event.media_format, sink=self.sink,
                    close_transport=close_transport)
        calls[call.id] = call
        self.metrics.active_calls.labels(carrier).inc()
        log.info("call %s (%s, route %s) started, stream %s, %s at %d Hz", call.id, carrier,
                 route.name, call.stream_id, event.media_format.encoding,
                 event.media_format.sample_rate, extra={"call_id": call.id, "route": route.name})
        call.start()
        return call


def _refuse_early(app: web.Application, route_name: str | None) -> tuple[int, str] | None:
    """Why a new stream cannot be taken before any protocol work, as an HTTP status and a
    message, or None."""
    config = app[CONFIG]
    draining = app[DRAIN].refusal()  # shutting down: calls in progress go on, no new ones
    if draining:
        return 503, draining
    if route_name is not None and route_name not in config.routes:
        return 404, f"route {route_name!r} is not configured"
    if len(app[CALLS]) >= config.limits.max_calls:
        return 503, f"at capacity ({config.limits.max_calls} calls); try another instance"
    return None


async def media_stream(request: web.Request) -> web.StreamResponse:
    carrier = request.match_info["carrier"]
    app = request.app
    config = app[CONFIG]
    metrics = app[METRICS]
    if carrier not in WEBSOCKET_CARRIERS or carrier not in config.carriers:
        enabled = ", ".join(c for c in config.carriers if c in WEBSOCKET_CARRIERS)
        return json_error(404, f"carrier {carrier!r} is not enabled here; enabled: {enabled}")
    route_name = request.match_info.get("route")
    refusal = _refuse_early(app, route_name)
    if refusal:
        metrics.calls.labels(carrier, "rejected").inc()
        return json_error(*refusal)
    denied = check_media_request(request, carrier, route_name)
    if denied is not None:
        return denied

    # compress=False: the playout writes whole frames to the transport itself (wsframe.py).
    # No heartbeat: old Asterisk builds hang up on a WebSocket ping.
    ws = web.WebSocketResponse(heartbeat=None, autoping=True, compress=False,
                               max_msg_size=MAX_CARRIER_MESSAGE)
    await ws.prepare(request)

    async def close_transport() -> None:
        await ws.close()

    stream = CarrierStream(app, carrier, protocol_class(carrier)(),
                           WebSocketSink(ws, request), close_transport, route_name,
                           str(request.remote))
    protocol = stream.protocol
    try:
        async for msg in ws:
            try:
                if msg.type is WSMsgType.TEXT:
                    event = protocol.receive_text(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    event = protocol.receive_bytes(msg.data)
                else:
                    break
            except CarrierProtocolError as exc:
                stream.problem(exc.kind, str(exc))
                continue
            if event is not None and not stream.handle(event):
                break
    finally:
        await stream.finish()
        if not ws.closed:
            if stream.outcome == "rejected":
                await ws.close(code=1008, message=b"no such route, or call already connected")
            else:
                await ws.close()
    return ws


# ---- AudioSocket: plain TCP ---------------------------------------------------------


async def start_audiosocket(app: web.Application) -> asyncio.AbstractServer:
    """Listen for Asterisk's AudioSocket connections (``carriers.audiosocket``)."""
    options = app[CONFIG].carriers["audiosocket"].options

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        await _audiosocket_call(app, reader, writer)

    server = await asyncio.start_server(on_connection, options["host"], options["port"])
    ports = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in server.sockets)
    log.info("AudioSocket listening on %s", ports)
    return server


async def _audiosocket_call(app: web.Application, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
    protocol = protocol_class("audiosocket")()
    peer = writer.get_extra_info("peername")
    route_name = app[CONFIG].carriers["audiosocket"].options["route"]

    async def close_transport() -> None:
        writer.close()

    stream = CarrierStream(app, "audiosocket", protocol, StreamSink(writer), close_transport,
                           route_name, str(peer))
    refusal = _refuse_early(app, route_name)
    try:
        if refusal:
            # AudioSocket has no status code: say it in the log, hang up the channel
            log.warning("AudioSocket connection from %s refused: %s", peer, refusal[1])
            stream.outcome = "rejected"
            writer.write(protocol.hangup_message())
            return
        while data := await reader.read(65536):
            try:
                events = protocol.feed(data)
            except CarrierProtocolError as exc:
                stream.problem(exc.kind, str(exc))
                break  # a byte stream cannot resync after a broken message
            if not all(stream.handle(event) for event in events):
                break
    except (ConnectionError, OSError):
        pass
    finally:
        await stream.finish()
        if not writer.is_closing():
            writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
