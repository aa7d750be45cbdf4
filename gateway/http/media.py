"""The carriers' media streams, one connection per call.

``WS /v1/media/{carrier}[/{route}[/{token}]]`` for WebSocket carriers, and a plain TCP
listener for each carrier that connects over TCP (AudioSocket). The loop here is shared by
every carrier; what differs lives in the carrier's sans-I/O protocol module. A malformed
message is logged with the call's context, counted, and dropped; the call goes on (this is
also what Twilio does with ours: warning 31951). Who may connect is checked before the
upgrade (gateway/http/verify.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal, cast

from aiohttp import WSCloseCode, WSMsgType, web

from gateway import logs
from gateway.carriers.base import ByteStreamCarrierProtocol, CarrierProtocol
from gateway.carriers.events import (Audio, CarrierFault, CarrierProtocolError, Cleared, Dtmf,
                                     FlowControl, MarkPlayed, Started, StartRefused, Stopped)
from gateway.carriers.registry import CARRIERS
from gateway.core.call import Call
from gateway.http.guard import CONNECTIONS, peer_address
from gateway.http.keys import CALLS, CONFIG, DRAIN, METRICS, SERVICES, WORKER, json_error
from gateway.http.verify import check_media_request
from gateway.http.wsframe import StreamSink, WebSocketSink
from gateway.metrics import CARRIER_ERROR_KINDS, CARRIER_FAULT_CODES, bounded

log = logging.getLogger(__name__)

WEBSOCKET_CARRIERS = tuple(name for name, spec in CARRIERS.items()
                           if spec.transport == "websocket")
MAX_CARRIER_MESSAGE = 1 << 20
#: the idle watch looks this many times per ``limits.media_idle_timeout_s``
_IDLE_CHECKS = 4
#: how a carrier stream ended, as the ``calls_total`` metric's ``outcome`` label
StreamOutcome = Literal["disconnected", "completed", "rejected", "hangup", "timeout"]
# (carrier, inbound encoding) pairs whose start disagreed with the played format: logged once
_format_notes: set[tuple[str, str]] = set()


class CarrierStream:
    """One carrier connection and the call it carries: normalized events in, the call's
    life cycle and its accounting out. Transport-neutral (WebSocket or TCP)."""

    def __init__(self, app: web.Application, carrier: str, protocol: CarrierProtocol, sink,
                 close_transport: Callable[[], Awaitable[None]],
                 refuse_transport: Callable[[str], Awaitable[None]], route_name: str | None,
                 peer: str):
        """``close_transport`` ends the connection; ``refuse_transport(why)`` ends it in
        the carrier's own way of refusing (WebSocket close 1008, AudioSocket hang-up)."""
        self.app = app
        self.carrier = carrier
        self.protocol = protocol
        self.sink = sink
        self.close_transport = close_transport
        self.refuse_transport = refuse_transport
        self.route_name = route_name
        self.peer = peer
        self.call: Call | None = None
        self.outcome: StreamOutcome = "disconnected"
        self.refusal = ""  # why the gateway ended the stream, for the close
        self.metrics = app[METRICS]
        self.warnings = logs.RateLimitedLog(log)  # a carrier sending garbage: a few lines
        logs.bind_call(self)  # this task's records (and its call's) carry log_fields()
        self.guard = app[CONNECTIONS]
        #: messages (WebSocket) or reads (TCP) from the carrier, for the idle watch
        self.received = 0
        self._start_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self.ending: asyncio.Task | None = None  # the refusal's close, once started

    def log_fields(self) -> dict[str, str | None]:
        call = self.call
        return {"call_id": call.id if call else None, "carrier": self.carrier,
                "route": call.route.name if call else self.route_name}

    # ---- the clocks: a start within start_timeout_s, then never silent for long ----------

    def watch(self) -> None:
        """Start the clocks: no start within ``limits.start_timeout_s``, or no message at
        all for ``limits.media_idle_timeout_s`` (a live carrier sends media 50 times a
        second), and the stream is closed and counted."""
        limits = self.app[CONFIG].limits
        loop = asyncio.get_running_loop()
        self._start_timer = loop.call_later(limits.start_timeout_s, self._start_timed_out)
        self._idle_timer = loop.call_later(limits.media_idle_timeout_s / _IDLE_CHECKS,
                                           self._check_idle, loop.time(), 0)

    def unwatch(self) -> None:
        for timer in (self._start_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._start_timer = self._idle_timer = None

    def _start_timed_out(self) -> None:
        if self.call is None and self.ending is None and not self.protocol.started:
            timeout = self.app[CONFIG].limits.start_timeout_s
            self._end("start_timeout", f"no start within {timeout:g} s", "start_timeout_s")

    def _check_idle(self, quiet_since: float, seen: int) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.app[CONFIG].limits.media_idle_timeout_s
        now = loop.time()
        if self.received != seen:
            quiet_since, seen = now, self.received
        elif now - quiet_since >= timeout and self.ending is None:
            self._end("idle_timeout", f"no message from the carrier for {timeout:g} s",
                      "media_idle_timeout_s")
            return
        self._idle_timer = loop.call_later(timeout / _IDLE_CHECKS, self._check_idle,
                                           quiet_since, seen)

    def _end(self, reason: str, why: str, limit_key: str) -> None:
        self.guard.refuse(reason, "%s (%s) closed: %s (limits.%s)", self._who(), self.carrier,
                          why, limit_key)
        if self.call is not None:
            self.outcome = "timeout"
        self.refusal = why
        self.ending = asyncio.ensure_future(self.refuse_transport(why))

    # ---- events ------------------------------------------------------------------------

    def problem(self, kind: str, detail: str) -> None:
        self.metrics.carrier_errors.labels(self.carrier, kind).inc()
        self.warnings.warning(f"malformed {bounded(kind, CARRIER_ERROR_KINDS)}",
                              "%s (%s): malformed %s message, dropped: %s", self._who(),
                              self.carrier, kind, detail)

    def _who(self) -> str:
        return f"call {self.call.id}" if self.call else f"stream from {self.peer}"

    def refuse_start(self, exc: StartRefused) -> None:
        """A start the gateway cannot take (a format it cannot produce, an id it cannot
        key): counted by kind, logged, and the stream refused in the carrier's way."""
        self.metrics.carrier_errors.labels(self.carrier, exc.kind).inc()
        self.guard.log.warning(exc.kind, "%s (%s) refused: %s", self._who(), self.carrier, exc)
        self.outcome = "rejected"
        self.refusal = f"refused: {exc.kind}"

    def dropped(self, exc: BaseException | None) -> None:
        """The WebSocket broke (aiohttp closed it): say why, and count it."""
        too_big = getattr(exc, "code", None) == WSCloseCode.MESSAGE_TOO_BIG
        kind = "message_too_big" if too_big else "bad_frame"
        self.metrics.carrier_errors.labels(self.carrier, kind).inc()
        self.guard.log.warning(kind, "%s (%s) dropped: %s%s", self._who(), self.carrier,
                               str(exc)[:200], " (the limit for one carrier message)"
                               if too_big else "")

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
            if self.ending is not None:
                return False  # too late: the start timeout is closing the stream
            if self._start_timer is not None:
                self._start_timer.cancel()  # the idle watch goes on
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
        self.unwatch()
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
            self.refusal = "no such route"
            return None
        if route.token and self.route_name is None:
            # a route with a token takes calls only on its tokened path (checked before the
            # upgrade), never by naming it in a custom parameter
            log.warning("%s call %s names route %r, which needs its path token; closing",
                        carrier, event.call_id, name, extra={"call_id": event.call_id})
            self.refusal = "this route needs its token in the path"
            return None
        if event.call_id in calls:
            log.warning("%s call %s is already connected; refusing a second stream", carrier,
                        event.call_id, extra={"call_id": event.call_id})
            self.refusal = "call already connected"
            return None
        if len(calls) >= config.limits.max_calls:
            # streams are counted from the upgrade, so this holds already; checked again
            # where the call is made, in case a stream ever got past the count
            self.guard.refuse("capacity", "%s call %s refused at start: at capacity (%d calls, "
                              "limits.max_calls)", carrier, event.call_id, len(calls))
            self.refusal = "at capacity"
            return None

        async def close_transport() -> None:
            call.state = "closed_by_gateway"
            await self.close_transport()

        # the call speaks in the format the carrier plays ours in, which is not always the
        # one it streams (Telnyx: the answer's bidirectionalCodec)
        played, inbound = self.protocol.media_format, event.media_format
        call = Call(self.app[SERVICES], call_id=event.call_id, stream_id=event.stream_id,
                    carrier=carrier, route=route, protocol=self.protocol,
                    media_format=played, sink=self.sink,
                    close_transport=close_transport, details=event.details,
                    inbound_format=inbound)
        calls[call.id] = call
        self.metrics.active_calls.labels(carrier).inc()
        log.info("call %s (%s, route %s) started, stream %s, %s at %d Hz%s", call.id, carrier,
                 route.name, call.stream_id, played.encoding, played.sample_rate,
                 "" if inbound == played else
                 f" (streaming {inbound.encoding} at {inbound.sample_rate} Hz to us)",
                 extra={"call_id": call.id, "route": route.name})
        if inbound != played and (carrier, inbound.encoding) not in _format_notes:
            _format_notes.add((carrier, inbound.encoding))
            log.warning("%s streams %s at %d Hz to the gateway while its answer document asked "
                        "it to play %s at %d Hz: the gateway sends what the document asked "
                        "for (logged once)", carrier, inbound.encoding, inbound.sample_rate,
                        played.encoding, played.sample_rate)
        call.start()
        return call


def _refuse_early(app: web.Application, route_name: str | None) -> tuple[int, str] | None:
    """Why a new stream cannot be taken before any protocol work, as an HTTP status and a
    message, or None. Capacity counts the media streams open, started or not: a socket
    that has not sent its start yet holds a call's place (until ``start_timeout_s``)."""
    config = app[CONFIG]
    guard = app[CONNECTIONS]
    draining = app[DRAIN].refusal()  # shutting down: calls in progress go on, no new ones
    if draining:
        guard.refuse("draining", "refused a media stream: draining")
        return 503, draining
    if route_name is not None and route_name not in config.routes:
        return 404, f"route {route_name!r} is not configured"
    limit = config.limits.max_calls
    if guard.media_streams >= limit:
        guard.refuse("capacity", "refused a media stream: at capacity (%d streams open, "
                     "limits.max_calls)", guard.media_streams)
        return 503, f"at capacity ({limit} calls); try another instance"
    return None


async def media_stream(request: web.Request) -> web.StreamResponse:
    carrier = request.match_info["carrier"]
    app = request.app
    config = app[CONFIG]
    metrics = app[METRICS]
    guard = app[CONNECTIONS]
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

    # counted from here (no await since the capacity check), so no burst of upgrades can
    # get past limits.max_calls
    guard.media_streams += 1
    try:
        return await _websocket_stream(request, carrier, route_name)
    finally:
        guard.media_streams -= 1


async def _websocket_stream(request: web.Request, carrier: str, route_name: str | None
                            ) -> web.WebSocketResponse:
    app = request.app
    # compress=False: the playout writes whole frames to the transport itself (wsframe.py).
    # No heartbeat: old Asterisk builds hang up on a WebSocket ping.
    ws = web.WebSocketResponse(heartbeat=None, autoping=True, compress=False,
                               max_msg_size=MAX_CARRIER_MESSAGE)
    await ws.prepare(request)

    async def close_transport() -> None:
        await ws.close()

    async def refuse_transport(why: str) -> None:
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=_close_reason(why))

    protocol = CARRIERS[carrier].new_protocol(app[CONFIG].carriers[carrier].options)
    stream = CarrierStream(app, carrier, protocol, WebSocketSink(ws, request), close_transport,
                           refuse_transport, route_name, str(request.remote))
    stream.watch()
    try:
        async for msg in ws:
            stream.received += 1
            try:
                if msg.type is WSMsgType.TEXT:
                    event = protocol.receive_text(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    event = protocol.receive_bytes(msg.data)
                else:
                    if msg.type is WSMsgType.ERROR:
                        stream.dropped(msg.data)
                    break
            except StartRefused as exc:
                stream.refuse_start(exc)
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
                await refuse_transport(stream.refusal or "refused")
            else:
                await ws.close()
        if stream.ending is not None:
            await stream.ending  # a timeout's close, bounded by the WebSocket's close timeout
    return ws


def _close_reason(why: str) -> bytes:
    """A WebSocket close reason: at most 123 bytes (RFC 6455 §5.5), ASCII."""
    return why.encode("ascii", "replace")[:123]


# ---- carriers on plain TCP (AudioSocket) ---------------------------------------------


def _new_tcp_protocol(app: web.Application, carrier: str) -> ByteStreamCarrierProtocol:
    protocol = CARRIERS[carrier].new_protocol(app[CONFIG].carriers[carrier].options)
    return cast(ByteStreamCarrierProtocol, protocol)  # transport "tcp": it has feed()


async def start_tcp_carrier(app: web.Application, carrier: str) -> asyncio.AbstractServer:
    """Listen for ``carrier``'s connections on its ``host`` and ``port``
    (``carriers.<carrier>``, e.g. Asterisk's AudioSocket)."""
    options = app[CONFIG].carriers[carrier].options

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        guard = app[CONNECTIONS]
        address = peer_address(writer.transport)
        if not guard.open(address):  # a TCP carrier has no status code: hang up
            writer.write(_new_tcp_protocol(app, carrier).hangup_message() or b"")
            await _close_writer(writer)
            return
        try:
            await _tcp_call(app, carrier, reader, writer)
        finally:
            guard.close(address)

    # one of ``serve --workers N``: the workers share the port, the kernel spreads connections
    reuse_port = True if app.get(WORKER) is not None else None
    server = await asyncio.start_server(on_connection, options["host"], options["port"],
                                        reuse_port=reuse_port)
    ports = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in server.sockets)
    log.info("%s listening on %s", CARRIERS[carrier].display_name, ports)
    return server


async def _tcp_call(app: web.Application, carrier: str, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
    route_name = app[CONFIG].carriers[carrier].options["route"]
    protocol = _new_tcp_protocol(app, carrier)
    peer = writer.get_extra_info("peername")
    guard = app[CONNECTIONS]

    async def close_transport() -> None:
        writer.close()

    async def refuse_transport(why: str) -> None:
        if not writer.is_closing():
            writer.write(protocol.hangup_message() or b"")
            writer.close()

    stream = CarrierStream(app, carrier, protocol, StreamSink(writer), close_transport,
                           refuse_transport, route_name, str(peer))
    refusal = _refuse_early(app, route_name)
    if refusal:
        # a TCP carrier has no status code: hang up the channel (the refusal is logged, and
        # rate-limited, where it is counted; the route was checked with the config)
        stream.outcome = "rejected"
        writer.write(protocol.hangup_message() or b"")
        await stream.finish()
        await _close_writer(writer)
        return
    guard.media_streams += 1
    stream.watch()
    try:
        while data := await reader.read(65536):
            stream.received += 1
            try:
                events = protocol.feed(data)
            except StartRefused as exc:
                stream.refuse_start(exc)
                break
            except CarrierProtocolError as exc:
                stream.problem(exc.kind, str(exc))
                break  # a byte stream cannot resync after a broken message
            if not all(stream.handle(event) for event in events):
                break
    except (ConnectionError, OSError):
        pass
    finally:
        guard.media_streams -= 1
        await stream.finish()
        if stream.outcome == "rejected":
            await refuse_transport(stream.refusal)
        await _close_writer(writer)


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    if not writer.is_closing():
        writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass
