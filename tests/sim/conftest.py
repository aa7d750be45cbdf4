"""A tiny gateway stand-in for driving the carrier simulators over a real socket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import WSMsgType, web

from gateway.http.loopback import serve_on_loopback
from gateway.carriers.events import CarrierCommand, CarrierEvent, CarrierProtocolError, Started
from gateway.carriers.twilio.protocol import TwilioProtocol


@dataclass
class GatewaySide:
    """One accepted media socket, seen from the gateway's side."""

    ws: web.WebSocketResponse
    headers: dict[str, str]
    proto: TwilioProtocol = field(default_factory=TwilioProtocol)
    texts: list[tuple[float, str]] = field(default_factory=list)
    events: list[tuple[float, CarrierEvent]] = field(default_factory=list)
    errors: list[CarrierProtocolError] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, command: CarrierCommand) -> float:
        await self.ws.send_str(self.proto.send(command).decode())
        return time.monotonic()

    def of_type(self, kind: type) -> list[tuple[float, CarrierEvent]]:
        return [(t, e) for t, e in self.events if isinstance(e, kind)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("gateway side: condition not met in time")
            await asyncio.sleep(0.01)

    async def read(self) -> None:
        async for message in self.ws:
            now = time.monotonic()
            try:
                if message.type == WSMsgType.TEXT:
                    self.texts.append((now, message.data))
                    event = self.proto.receive_text(message.data)
                elif message.type == WSMsgType.BINARY:
                    event = self.proto.receive_bytes(message.data)
                else:
                    break
            except CarrierProtocolError as error:
                self.errors.append(error)
                continue
            if event is not None:
                self.events.append((now, event))
                if isinstance(event, Started):
                    self.started.set()
        self.closed.set()


Script = Callable[[GatewaySide], Awaitable[None]]


class LoopbackGateway:
    """Serves ``/v1/media/twilio`` on an ephemeral 127.0.0.1 port; runs ``script`` on each
    socket once Twilio's ``start`` has arrived, while reading everything the sim sends."""

    def __init__(self, script: Script | None) -> None:
        self.script = script
        self.sides: list[GatewaySide] = []
        self.script_errors: list[Exception] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/media/twilio", self._handle)
        self._runner, port = await serve_on_loopback(app, handle_signals=False)
        self.url = f"ws://127.0.0.1:{port}/v1/media/twilio"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def side(self) -> GatewaySide:
        assert self.sides, "no call reached the gateway"
        return self.sides[-1]

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        side = GatewaySide(ws=ws, headers=dict(request.headers))
        self.sides.append(side)
        reader = asyncio.create_task(side.read())
        script = None
        try:
            await asyncio.wait_for(side.started.wait(), 5.0)
            if self.script is not None:
                script = asyncio.create_task(self.script(side))
            await reader
        finally:
            if script is not None:
                if not script.done():
                    script.cancel()
                (outcome,) = await asyncio.gather(script, return_exceptions=True)
                if isinstance(outcome, Exception):
                    self.script_errors.append(outcome)
            reader.cancel()
        return ws


@pytest.fixture
async def loopback():
    gateways: list[LoopbackGateway] = []

    async def start(script: Script | None = None) -> LoopbackGateway:
        gateway = LoopbackGateway(script)
        await gateway.start()
        gateways.append(gateway)
        return gateway

    yield start
    for gateway in gateways:
        await gateway.stop()
    for gateway in gateways:
        assert not gateway.script_errors, f"gateway script failed: {gateway.script_errors!r}"
