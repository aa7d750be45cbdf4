"""The limits on carrier connections, through the real server on loopback (issue 12,
findings 3, 4, 7, 10 and 14): max_calls counted from the upgrade, the start, idle and header
timeouts, the per-address connection limit, starts the gateway cannot serve, oversized
media frames, and call ids usable as keys. The attackers only hold sockets: a healthy call
beside them must go on."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp
import pytest

from gateway.logs import RateLimitedLog
from gateway.http.keys import TCP_LISTENERS
from gateway.sim.carriers import make_call
from tests.conftest import start_gateway
from tests.e2e.test_twilio_call import metric_value, open_control
from tests.ops.test_drain import GatewayProcess, drain_config, free_port

ATTACKER = "127.0.0.2"  # loopback too: the per-address limit tells it from the caller's
HANGUP = b"\x00\x00\x00"


def config(**limits) -> dict:
    return {
        "server": {"host": "127.0.0.1", "port": 0},
        "providers": {"fake": {"type": "fake", "handshake_ms": 0, "first_audio_ms": 20,
                               "chars_per_second": 30.0}},
        "routes": {"bot": {"provider": "fake"}},
        "default_route": "bot",
        "carriers": {"twilio": {}, "asterisk": {},
                     "audiosocket": {"host": "127.0.0.1", "port": 0, "route": "bot"}},
        "limits": limits,
    }


async def running(**limits):
    return await start_gateway(config(**limits))


async def stop(gw) -> None:
    await gw.session.close()
    await gw.runner.cleanup()


def twilio_start(call_sid: str, rate: int = 8000) -> str:
    stream_sid = "MZ" + call_sid[2:]
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
                       "start": {"callSid": call_sid, "streamSid": stream_sid,
                                 "tracks": ["inbound"], "customParameters": {},
                                 "mediaFormat": {"encoding": "audio/x-mulaw",
                                                 "sampleRate": rate, "channels": 1}}})


def call_sid(n: int) -> str:
    return f"CA{n:032x}"


def audiosocket_port(gw) -> int:
    return gw.app[TCP_LISTENERS]["audiosocket"].sockets[0].getsockname()[1]


async def refused_count(gw, reason: str) -> float:
    return metric_value(await gw.metrics_text(), "tts_gateway_connections_refused_total",
                        reason=reason)


async def eventually(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (bounded)."""
    data = b""
    async with asyncio.timeout(timeout):
        while chunk := await reader.read(65536):
            data += chunk
    return data


async def open_tcp(port: int, source: str = "127.0.0.1"):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def started_socket(gw, sid: str) -> aiohttp.ClientWebSocketResponse:
    """A raw Twilio media socket whose call has started (and that sends nothing more)."""
    ws = await gw.session.ws_connect(f"{gw.ws_url}/v1/media/twilio/bot")
    await ws.send_str(twilio_start(sid))
    await eventually(lambda: _calls_are(gw, 1))
    return ws


async def close_frame(ws: aiohttp.ClientWebSocketResponse, timeout: float):
    """The server's close frame (what comes before it is skipped)."""
    async with asyncio.timeout(timeout):
        while (msg := await ws.receive()).type is not aiohttp.WSMsgType.CLOSE:
            pass
    return msg


# ---- finding 3: max_calls ---------------------------------------------------------------


async def test_max_calls_counts_streams_from_the_upgrade(caplog):
    gw = await running(max_calls=2)
    sockets = []
    try:
        url = f"{gw.ws_url}/v1/media/twilio/bot"
        with caplog.at_level(logging.WARNING, logger="gateway"):
            attempts = await asyncio.gather(*(gw.session.ws_connect(url) for _ in range(20)),
                                            return_exceptions=True)
        # 18 refusals, one log line (the next one says how many were held back)
        assert len([r for r in caplog.records if "at capacity" in r.getMessage()]) == 1
        sockets = [ws for ws in attempts if isinstance(ws, aiohttp.ClientWebSocketResponse)]
        statuses = [a.status for a in attempts if isinstance(a, aiohttp.WSServerHandshakeError)]
        assert len(sockets) == 2 and statuses == [503] * 18
        for n, ws in enumerate(sockets):
            await ws.send_str(twilio_start(call_sid(n)))

        async def both_started() -> bool:
            return len((await gw.get_json("/v1/calls"))[1]["calls"]) == 2

        await eventually(both_started)
        metrics = await gw.metrics_text()
        assert metric_value(metrics, "tts_gateway_active_calls", carrier="twilio") == 2
        assert metric_value(metrics, "tts_gateway_connections_refused_total",
                            reason="capacity") == 18
        assert metric_value(metrics, "tts_gateway_calls_total", carrier="twilio",
                            outcome="rejected") == 18
        # a place frees when a call ends
        await sockets.pop().close()
        await eventually(lambda: _calls_are(gw, 1))
        sockets.append(await gw.session.ws_connect(url))
    finally:
        for ws in sockets:
            await ws.close()
        await stop(gw)


async def _calls_are(gw, n: int) -> bool:
    return len((await gw.get_json("/v1/calls"))[1]["calls"]) == n


# ---- finding 4: timeouts ----------------------------------------------------------------


async def test_a_media_socket_that_never_starts_is_closed_after_start_timeout():
    gw = await running(start_timeout_s=0.3, max_calls=1)
    url = f"{gw.ws_url}/v1/media/twilio/bot"
    try:
        ws = await gw.session.ws_connect(url)
        began = time.monotonic()
        async with asyncio.timeout(10):
            msg = await ws.receive()
        print(f"closed {time.monotonic() - began:.2f} s after the upgrade (limit 0.3 s)")
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1008
        assert "no start within 0.3 s" in msg.extra
        assert await refused_count(gw, "start_timeout") == 1

        async def place_is_free() -> bool:  # the socket held the one call's place
            try:
                await (await gw.session.ws_connect(url)).close()
                return True
            except aiohttp.WSServerHandshakeError:
                return False

        await eventually(place_is_free)
    finally:
        await stop(gw)


async def test_an_audiosocket_connection_that_never_sends_its_uuid_is_hung_up():
    gw = await running(start_timeout_s=0.3)
    try:
        reader, writer = await open_tcp(audiosocket_port(gw))
        writer.write(b"\x01\x00")  # half a UUID header, then nothing
        assert await read_until_closed(reader, 10) == HANGUP
        writer.close()
        assert await refused_count(gw, "start_timeout") == 1
    finally:
        await stop(gw)


async def test_a_started_call_that_goes_silent_is_closed_as_dead():
    gw = await running(media_idle_timeout_s=1.0)
    try:
        ws = await started_socket(gw, call_sid(7))
        began = time.monotonic()
        msg = await close_frame(ws, 10)
        print(f"closed {time.monotonic() - began:.2f} s after the start (idle limit 1 s)")
        assert msg.data == 1008 and "no message from the carrier for 1 s" in msg.extra
        await eventually(lambda: _calls_are(gw, 0))
        metrics = await gw.metrics_text()
        assert metric_value(metrics, "tts_gateway_connections_refused_total",
                            reason="idle_timeout") == 1
        assert metric_value(metrics, "tts_gateway_calls_total", carrier="twilio",
                            outcome="timeout") == 1
    finally:
        await stop(gw)


async def test_a_live_call_is_never_idle():
    gw = await running(media_idle_timeout_s=1.0)
    try:
        async with make_call("twilio", gw.ws_url, route="bot") as call:
            await asyncio.sleep(2.5)  # media 50 times a second: the idle watch sees it
            assert (await gw.get_json(f"/v1/calls/{call.call_id}"))[0] == 200
            await call.hangup()
        assert await refused_count(gw, "idle_timeout") == 0
    finally:
        await stop(gw)


async def dribble(port: int, source: str = "127.0.0.1", every_s: float = 0.1):
    """A client that sends a request head one byte at a time and never finishes it; returns
    what the server answered once it closed, and after how long."""
    return await dribble_on(*await open_tcp(port, source), every_s=every_s)


async def dribble_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     every_s: float = 0.1):
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    began = time.monotonic()

    async def send() -> None:
        for byte in head:
            writer.write(bytes((byte,)))
            await asyncio.sleep(every_s)

    sender = asyncio.ensure_future(send())
    try:
        answer = await read_until_closed(reader, 30)
    finally:
        sender.cancel()
        writer.close()
    return answer, time.monotonic() - began


async def get_healthz(port: int, source: str = "127.0.0.1") -> bytes:
    """The raw answer to one GET /healthz on a new connection."""
    reader, writer = await open_tcp(port, source)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    try:
        return await read_until_closed(reader, 10)
    finally:
        writer.close()


async def test_a_client_dribbling_its_request_head_is_closed_after_header_timeout():
    gw = await running(header_timeout_s=0.5)
    try:
        answer, after = await dribble(gw.port)
        print(f"dribbler closed after {after:.2f} s (limit 0.5 s)")
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["status"] == 408
        assert await refused_count(gw, "header_timeout") == 1
        # a request whose head comes at once, and a kept-alive connection, are unaffected
        for _ in range(3):
            assert (await gw.get_json("/healthz"))[0] == 200
            await asyncio.sleep(0.3)
        assert await refused_count(gw, "header_timeout") == 1
    finally:
        await stop(gw)


async def test_the_header_timeout_also_covers_the_next_request_on_a_kept_alive_connection():
    gw = await running(header_timeout_s=0.5)
    try:
        reader, writer = await open_tcp(gw.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            first = await reader.readuntil(b'"ok"}')
        assert first.startswith(b"HTTP/1.1 200 ")
        await asyncio.sleep(0.8)  # idle between requests is keep-alive's business
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # then half a head
        assert (await read_until_closed(reader, 10)).startswith(b"HTTP/1.1 408 ")
        writer.close()
    finally:
        await stop(gw)


# ---- finding 4: connections per address --------------------------------------------------


async def test_the_per_address_limit_refuses_the_next_connection_until_one_closes():
    gw = await running(max_connections_per_address=3, header_timeout_s=60)
    held = []
    try:
        for _ in range(3):  # accepted in this order, so counted before the next one
            held.append(await open_tcp(gw.port, ATTACKER))
        answer = await get_healthz(gw.port, ATTACKER)
        assert answer.startswith(b"HTTP/1.1 429 ")
        message = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["message"]
        assert "at most 3 open" in message
        # AudioSocket counts toward the same limit, and is hung up
        reader, writer = await open_tcp(audiosocket_port(gw), ATTACKER)
        assert await read_until_closed(reader, 10) == HANGUP
        writer.close()
        assert await refused_count(gw, "per_address") == 2

        held.pop()[1].close()

        async def accepted_again() -> bool:
            return (await get_healthz(gw.port, ATTACKER)).startswith(b"HTTP/1.1 200 ")

        await eventually(accepted_again)
        # the caller's own address was never limited
        assert (await gw.get_json("/healthz"))[0] == 200
    finally:
        for _, writer in held:
            writer.close()
        await stop(gw)


async def test_a_healthy_call_goes_on_while_attackers_hold_sockets():
    gw = await running(max_calls=10, max_connections_per_address=6, start_timeout_s=30,
                       header_timeout_s=30)
    held: list = []
    dribblers: list[asyncio.Task] = []
    try:
        connector = aiohttp.TCPConnector(local_addr=(ATTACKER, 0))
        async with aiohttp.ClientSession(connector=connector) as attacker:
            for _ in range(2):  # AudioSocket connections that never send their UUID
                held.append((await open_tcp(audiosocket_port(gw), ATTACKER))[1])
            for _ in range(2):  # media sockets that never start
                held.append(await attacker.ws_connect(f"{gw.ws_url}/v1/media/twilio/bot"))
            for _ in range(2):  # clients dribbling their request heads
                connection = await open_tcp(gw.port, ATTACKER)
                dribblers.append(asyncio.ensure_future(dribble_on(*connection, every_s=0.5)))
            assert (await get_healthz(gw.port, ATTACKER)).startswith(b"HTTP/1.1 429 ")

            async with make_call("twilio", gw.ws_url, route="bot") as call:
                control = await open_control(gw, call.call_id)
                status, body = await gw.post_json(f"/v1/calls/{call.call_id}/speak",
                                                  {"text": "Your order has shipped."})
                assert status == 202
                done = await control.next_event("speech.done", speech_id=body["speech_id"],
                                                timeout=30)
                assert done["interrupted"] is False and "error" not in done
                await call.hangup()
            assert call.result.frames and call.result.violations == []
            print(f"healthy call: {len(call.result.frames)} frames while the attacker held 6 "
                  "connections")
            assert not any(task.done() for task in dribblers)  # they still held theirs
            for socket in held:
                if isinstance(socket, aiohttp.ClientWebSocketResponse):
                    await socket.close()
                else:
                    socket.close()
    finally:
        for task in dribblers:
            task.cancel()
        await asyncio.gather(*dribblers, return_exceptions=True)
        await stop(gw)


# ---- finding 7: starts the gateway cannot serve -------------------------------------------


@pytest.mark.parametrize("rate", [22050, 12345])
async def test_a_start_at_a_rate_the_gateway_cannot_produce_is_refused(rate, caplog):
    gw = await running()
    try:
        ws = await gw.session.ws_connect(f"{gw.ws_url}/v1/media/twilio/bot")
        with caplog.at_level(logging.WARNING, logger="gateway"):
            await ws.send_str(twilio_start(call_sid(1), rate=rate))
            async with asyncio.timeout(10):
                msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1008
        assert msg.extra == "refused: unsupported_format"
        assert (await gw.get_json("/v1/calls"))[1]["calls"] == []
        metrics = await gw.metrics_text()
        assert metric_value(metrics, "tts_gateway_carrier_errors_total", carrier="twilio",
                            kind="unsupported_format") == 1
        assert metric_value(metrics, "tts_gateway_calls_total", carrier="twilio",
                            outcome="rejected") == 1
        lines = [r.getMessage() for r in caplog.records if "cannot produce" in r.getMessage()]
        assert len(lines) == 1 and f"mulaw at {rate} Hz" in lines[0]
        assert not [r for r in caplog.records if r.exc_info]
    finally:
        await stop(gw)


# ---- finding 10: an oversized media frame -------------------------------------------------


async def test_an_oversized_media_frame_drops_the_call_and_says_why(caplog):
    gw = await running()
    try:
        ws = await started_socket(gw, call_sid(2))
        with caplog.at_level(logging.WARNING, logger="gateway"):
            await ws.send_str('{"event":"media","media":{"payload":"' + "A" * (2 << 20) + '"}}')
            msg = await close_frame(ws, 20)
            await eventually(lambda: _calls_are(gw, 0))
        assert msg.data == 1009
        lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
        assert len(lines) == 1, lines
        assert "exceeds limit 1048576" in lines[0] and f"call {call_sid(2)}" in lines[0]
        assert metric_value(await gw.metrics_text(), "tts_gateway_carrier_errors_total",
                            carrier="twilio", kind="message_too_big") == 1
    finally:
        await stop(gw)


# ---- finding 14: call ids usable in /v1/calls/{id} ----------------------------------------


async def test_an_asterisk_call_without_channel_id_gets_an_id_that_needs_no_escaping():
    gw = await running()
    try:
        async with make_call("asterisk", gw.ws_url, route="bot", send_channel_id=False) as call:
            await eventually(lambda: _calls_are(gw, 1))
            (listed,) = (await gw.get_json("/v1/calls"))[1]["calls"]
            call_id = listed["id"]
            assert "/" not in call_id and call_id.startswith("WebSocket-tts-gateway-0x")
            status, body = await gw.get_json(f"/v1/calls/{call_id}")
            assert status == 200 and body["details"] == {"channel": call.channel}
            status, body = await gw.post_json(f"/v1/calls/{call_id}/speak", {"text": "Hello."})
            assert status == 202, body
            await call.hangup()
    finally:
        await stop(gw)


# ---- the same limits under `tts-gateway serve` ---------------------------------------------


async def test_serve_closes_a_dribbling_client_and_limits_connections_per_address(tmp_path):
    settings = drain_config(free_port(), drain_timeout_s=5)
    settings["limits"] = {"header_timeout_s": 0.5, "max_connections_per_address": 2}
    gw = GatewayProcess(tmp_path, settings)
    try:
        await gw.wait_ready()
        answer, after = await dribble(gw.port, ATTACKER)
        print(f"serve: dribbler closed after {after:.2f} s (limit 0.5 s)")
        assert answer.startswith(b"HTTP/1.1 408 ")
        held = [await open_tcp(gw.port, ATTACKER) for _ in range(2)]
        assert (await get_healthz(gw.port, ATTACKER)).startswith(b"HTTP/1.1 429 ")
        for _, writer in held:
            writer.close()
        metrics = await gw.session.get(gw.http_url + "/metrics")
        text = await metrics.text()
        for reason in ("header_timeout", "per_address"):
            assert metric_value(text, "tts_gateway_connections_refused_total", reason=reason) >= 1
        assert "Traceback" not in gw.log()
    finally:
        await gw.close()


def test_the_refusal_log_says_how_many_lines_it_held_back(caplog):
    now = [100.0]
    refusals = RateLimitedLog(logging.getLogger("gateway.http.guard"), burst=1,
                              interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="gateway.http.guard"):
        for _ in range(500):
            refusals.warning("capacity", "refused %s", "x")
            refusals.warning("per_address", "too many from %s", "y")
        now[0] += 10.0
        refusals.warning("capacity", "refused %s", "z")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["refused x", "too many from y",
                     "refused z (499 more like this suppressed)"]
