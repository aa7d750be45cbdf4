"""The gateway dials the bot (issue 13, part 2), through the real server and the carrier
simulator, against a test bot server on loopback.

The provider is the tone-tagged Cartesia fake (each word a tone that names it), so a test
can tell from what the simulated caller heard that it was the route's ``failure_text``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time

import pytest
from aiohttp import WSMsgType, web
from telcodecs import ulaw_decode

from gateway.bot.dialer import backoff_delays
from gateway.http.keys import CALLS, CONFIG, HTTP
from gateway.http.loopback import serve_on_loopback
from gateway.tts.providers.cartesia import fake as cartesia
from gateway.tts.providers.fake_voice import heard_tones, text_tones
from gateway.carriers.twilio.sim import TwilioCallSim
from tests.conftest import ROOT, base_config, start_gateway
from tests.e2e.remote_setup import fake_provider_config
from tests.e2e.test_twilio_call import metric_value

sys.path.insert(0, str(ROOT / "examples"))
from verify_signature import verify_gateway_signature  # the README's snippet

SECRET = "s3cret-for-tests"
FAILURE = "Our assistant is away today, please call again later."
LONG = ("Thank you for calling the example line. This sentence goes on for a while so "
        "that the caller hears speech while the bot is gone. Please stay on the line.")


class BotServer:
    """A bot on loopback: records each connection's headers, events and audio; can refuse
    upgrades (``refuse``, an HTTP status) and kill the open socket without a close."""

    def __init__(self, *, secret: str | None = SECRET, on_event=None,
                 close_at_once: bool = False):
        self.secret = secret
        self.close_at_once = close_at_once  # accept the upgrade, then close
        self.on_event = on_event  # async (ws, event) -> None
        self.refuse: int | None = None
        self.connections: list[dict] = []
        self.url = ""
        self._runner = None
        self._changed = asyncio.Event()

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/bot", self._handle)
        self._runner, port = await serve_on_loopback(app)
        self.url = f"ws://127.0.0.1:{port}/bot?tenant=t1"
        return self.url

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.refuse:
            return web.Response(status=self.refuse)
        if self.secret and not verify_gateway_signature(request.headers, self.url, self.secret):
            return web.Response(status=401)
        conn = {"headers": dict(request.headers), "events": [], "audio_bytes": 0,
                "transport": request.transport}
        self.connections.append(conn)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._notify()
        if self.close_at_once:
            await ws.close()
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                conn["audio_bytes"] += len(msg.data)
            elif msg.type is WSMsgType.TEXT:
                event = json.loads(msg.data)
                conn["events"].append(event)
                if self.on_event:
                    await self.on_event(ws, event)
                self._notify()
        self._notify()
        return ws

    def kill(self) -> None:
        """The bot's process dies: its socket vanishes, no close frame."""
        self.connections[-1]["transport"].abort()

    def events(self, kind: str) -> list[dict]:
        return [e for c in self.connections for e in c["events"] if e["type"] == kind]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, predicate, timeout: float = 10.0, what: str = "condition") -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                changed = self._changed
                try:
                    await asyncio.wait_for(changed.wait(), 0.1)
                except TimeoutError:
                    pass


@pytest.fixture
async def bot_gateway():
    """``await bot_gateway(bot={...})`` -> the running gateway whose default route "bot"
    speaks with the tone-tagged fake and dials ``bot``."""
    cleanups = []

    async def start(*, bot: dict, **route):
        fake = cartesia.make_app(tag_words=True, chars_per_second=30.0)
        runner, port = await serve_on_loopback(fake)
        cleanups.append(runner.cleanup)
        data = base_config()
        data["providers"] = {"fake": fake_provider_config("cartesia", port)}
        data["routes"] = {"bot": {"provider": "fake", "bot": {
            "secret_env": "BOT_SECRET", "failure_text": FAILURE, **bot}, **route}}
        data["default_route"] = "bot"
        gw = await start_gateway(data, {"FAKE_TTS_KEY": "test-key", "BOT_SECRET": SECRET})
        cleanups.append(gw.runner.cleanup)
        cleanups.append(gw.session.close)
        return gw

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


def heard(sim) -> list[int]:
    return heard_tones(ulaw_decode(sim.result.heard))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_the_upgrade_is_signed_as_the_readme_snippet_checks(bot_gateway):
    bot = BotServer()
    url = await bot.start()
    try:
        gw = await bot_gateway(bot={"url": url})
        async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio") as sim:
            await bot.wait(lambda: bot.events("call.started"))
            headers = bot.connections[0]["headers"]
            assert headers["X-TTS-Gateway-Call-Id"] == sim.call_sid
            timestamp = int(headers["X-TTS-Gateway-Timestamp"])
            assert abs(timestamp - time.time()) < 60
            assert headers["X-TTS-Gateway-Signature"].startswith("v1=")
            assert verify_gateway_signature(headers, url, SECRET)
            assert not verify_gateway_signature(headers, url, "another-secret")
            assert not verify_gateway_signature(headers, url.replace("t1", "t2"), SECRET)
            assert not verify_gateway_signature(headers, url, SECRET, now=timestamp + 301)
            assert verify_gateway_signature(headers, url, SECRET, now=timestamp + 299)
            forged = {**headers, "X-TTS-Gateway-Timestamp": str(timestamp + 1)}
            assert not verify_gateway_signature(forged, url, SECRET)
        await bot.wait(lambda: bot.events("call.ended"))
        metrics = await gw.metrics_text()
        assert metric_value(metrics, "tts_gateway_bot_connections_total",
                            outcome="connected") == 1
    finally:
        await bot.stop()


async def hears_failure_and_hangs_up(gw, *, outcome: str) -> None:
    started = time.monotonic()
    async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio") as sim:
        await sim.wait_ended(timeout=20)
        assert sim.result.closed_by_gateway
        assert heard(sim) == text_tones(FAILURE)
        assert not sim.result.violations
    print(f"failure text heard and call ended after {time.monotonic() - started:.2f} s")
    async with asyncio.timeout(5):
        while gw.app[CALLS]:
            await asyncio.sleep(0.02)
    metrics = await gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_bot_connections_total", outcome=outcome) == 1
    assert metric_value(metrics, "tts_gateway_calls_total", carrier="twilio",
                        outcome="hangup") == 1


async def test_a_bot_with_another_secret_refuses_and_the_caller_hears_the_failure_text(
        bot_gateway):
    bot = BotServer(secret="not-the-routes-secret")
    url = await bot.start()
    try:
        gw = await bot_gateway(bot={"url": url, "connect_timeout_ms": 500})
        await hears_failure_and_hangs_up(gw, outcome="unreachable")
        assert bot.connections == []
    finally:
        await bot.stop()


async def test_a_closed_port_is_unreachable(bot_gateway):
    gw = await bot_gateway(bot={"url": f"ws://127.0.0.1:{closed_port()}/bot",
                                "connect_timeout_ms": 500})
    await hears_failure_and_hangs_up(gw, outcome="unreachable")


async def test_a_bot_that_accepts_tcp_but_never_upgrades_is_unreachable(bot_gateway):
    accepted = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read(65536)  # the upgrade request, never answered

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = await bot_gateway(bot={"url": f"ws://127.0.0.1:{port}/bot",
                                    "connect_timeout_ms": 400})
        await hears_failure_and_hangs_up(gw, outcome="unreachable")
        assert accepted
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_on_failure_continue_says_the_text_and_keeps_the_call(bot_gateway):
    gw = await bot_gateway(bot={"url": f"ws://127.0.0.1:{closed_port()}/bot",
                                "connect_timeout_ms": 300, "on_failure": "continue"})
    async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio") as sim:
        async with asyncio.timeout(20):
            while heard(sim) != text_tones(FAILURE):
                await asyncio.sleep(0.1)
        await sim.wait_idle(quiet=1.0, timeout=20)
        assert not sim.ended  # the call goes on without its bot: the control API still works
        status, _ = await gw.post_json(f"/v1/calls/{sim.call_sid}/speak", {"text": "Still here."})
        assert status == 202
        await sim.wait_for(lambda _: heard(sim) == text_tones(FAILURE + " Still here."),
                           timeout=20, what="the second utterance")
        assert not sim.ended


async def test_a_killed_bot_socket_is_redialed_and_gets_the_missed_events_in_order(
        bot_gateway):
    async def speak_long(ws, event):
        if event["type"] == "call.started":
            await ws.send_json({"type": "speak", "text": LONG, "flush": True})

    bot = BotServer(on_event=speak_long)
    url = await bot.start()
    try:
        gw = await bot_gateway(bot={"url": url, "reconnect_s": 20})
        async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio") as sim:
            await bot.wait(lambda: bot.events("speech.first_audio"), timeout=15)
            await sim.wait_for_media(frames=10)
            bot.refuse = 503  # the bot is restarting: the redials fail for a while
            bot.kill()
            call = gw.app[CALLS][sim.call_sid]
            async with asyncio.timeout(5):  # the drop is seen; the dialer redials
                while call.bot.connections != 1 or call.bot._serving:
                    await asyncio.sleep(0.02)
            await sim.send_dtmf("123")  # events the bot misses while it is away
            async with asyncio.timeout(5):
                while len(call.dtmf) < 3:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # more redials fail, audio keeps coming
            bot.refuse = None
            await bot.wait(lambda: len(bot.connections) == 2, timeout=10)
            await bot.wait(lambda: len(bot.events("dtmf")) == 3, timeout=5)
            await bot.wait(lambda: bot.events("speech.done"), timeout=30)
            await sim.wait_idle(quiet=0.5, timeout=10)
            result = sim.result
        await bot.wait(lambda: bot.events("call.ended"))
        # the gateway's events (its replies to the bot's messages carry no seq)
        first, second = ([e for e in c["events"] if "seq" in e] for c in bot.connections)
        for events in (first, second):  # each socket gets its events in order
            seqs = [e["seq"] for e in events]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert first[0]["type"] == "call.started"
        assert second[0]["seq"] == first[-1]["seq"] + 1  # the replay starts where it left off
        merged = [e["seq"] for e in first + second]
        assert merged == list(range(1, len(merged) + 1))  # no event lost, none twice
        assert [e["digit"] for e in bot.events("dtmf")] == ["1", "2", "3"]
        assert second[-1]["type"] == "call.ended"
        assert bot.connections[1]["audio_bytes"] > 0  # the audio flows again
        # the call's media never waited on the bot
        timing = result.frame_timing()
        print(f"frames: {len(result.frames)}, lateness p50 {timing.p50 * 1000:.2f} ms, "
              f"p99 {timing.p99 * 1000:.2f} ms, max {timing.max * 1000:.2f} ms; "
              f"underruns {result.underruns}")
        assert result.underruns == 0
        assert not result.violations
        assert heard(sim) == text_tones(LONG)
        metrics = await gw.metrics_text()
        for outcome, count in (("connected", 1), ("dropped", 1), ("reconnected", 1)):
            assert metric_value(metrics, "tts_gateway_bot_connections_total",
                                outcome=outcome) == count, outcome
        undelivered = metric_value(metrics, "tts_gateway_bot_audio_dropped_seconds_total",
                                   reason="disconnected")
        print(f"caller audio undelivered while the bot was away: {undelivered:.2f} s")
        assert 0.4 < undelivered < 20
    finally:
        await bot.stop()


async def test_a_bot_that_stays_away_past_reconnect_s_ends_the_call_with_the_failure_text(
        bot_gateway):
    bot = BotServer()
    url = await bot.start()
    try:
        gw = await bot_gateway(bot={"url": url, "reconnect_s": 0.5})
        async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio") as sim:
            await bot.wait(lambda: bot.events("call.started"))
            bot.refuse = 503
            bot.kill()
            await sim.wait_ended(timeout=20)
            assert heard(sim) == text_tones(FAILURE)
        metrics = await gw.metrics_text()
        assert metric_value(metrics, "tts_gateway_bot_connections_total",
                            outcome="gave_up") == 1
    finally:
        await bot.stop()


async def test_a_bot_that_accepts_and_closes_at_once_is_given_up_on_after_reconnect_s(
        bot_gateway):
    bot = BotServer(close_at_once=True)
    url = await bot.start()
    try:
        gw = await bot_gateway(bot={"url": url, "reconnect_s": 1.5})
        async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio") as sim:
            await sim.wait_ended(timeout=20)
            assert heard(sim) == text_tones(FAILURE)
        print(f"{len(bot.connections)} connections before giving up")
        assert 2 <= len(bot.connections) <= 12  # backed off, not a tight loop
        metrics = await gw.metrics_text()
        assert metric_value(metrics, "tts_gateway_bot_connections_total",
                            outcome="gave_up") == 1
    finally:
        await bot.stop()


def test_backoff_doubles_with_jitter_up_to_its_cap():
    delays = backoff_delays(0.1, 2.0)
    waits = [next(delays) for _ in range(10)]
    for wait, nominal in zip(waits, [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0, 2.0]):
        assert nominal / 2 <= wait <= nominal


async def test_the_client_session_has_room_for_a_bot_socket_on_every_call(gateway):
    # a WebSocket holds its connector slot for the whole call (aiohttp's default is 100 in
    # all: the 101st call's bot would never be dialed)
    max_calls = gateway.app[CONFIG].limits.max_calls
    assert gateway.app[HTTP].connector.limit >= 2 * max_calls
