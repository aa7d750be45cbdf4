"""Graceful drain on SIGTERM, with the real ``tts-gateway serve`` process.

The gateway runs as a subprocess (``python -m gateway.cli serve``) on a free loopback port
with a temporary config (the in-process fake provider: no network, audio exactly as long
as the text says). A simulated Twilio call speaks a long utterance when the signal comes:

* the first SIGTERM turns ``/readyz`` 503 "draining" and refuses new media streams with
  503 and a message that says so, while the call in progress hears its utterance to the
  end (its mark echo comes back, ``speech.done`` is not interrupted) and its control API
  still takes speech; the process exits 0 as soon as the last call has ended;
* when ``server.drain_timeout_s`` passes, a call still there is hung up by the gateway
  (accepted speech plays out first, bounded by ``playout.hangup_mark_timeout_s``) and the
  process exits 0;
* a second SIGTERM hangs up at once (the carrier's buffer is cleared) and exits 0.

And in-process, without signals: a draining application refuses WebSocket media streams
(503) and AudioSocket connections (the hang-up message), and counts them as rejected.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from gateway.config import ConfigError, parse_config
from gateway.http.keys import DRAIN, TCP_LISTENERS
from gateway.carriers.twilio.sim import TwilioCallSim
from tests.conftest import start_gateway
from tests.e2e.test_twilio_call import metric_value, open_control, speech_marks

ROOT = Path(__file__).resolve().parents[2]
CHARS_PER_SECOND = 15.0  # the fake provider's speaking rate: audio lasts len(text) / 15 s
# 60 characters: 4.0 s of audio
LONG_TEXT = "Your order has shipped and will arrive on Tuesday morning ok."
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drain_config(port: int, *, drain_timeout_s: float, hangup_mark_timeout_s: float = 5.0
                 ) -> dict:
    return {
        "server": {"host": "127.0.0.1", "port": port, "drain_timeout_s": drain_timeout_s},
        "providers": {"fake": {"type": "fake", "handshake_ms": 0, "first_audio_ms": 50,
                               "chars_per_second": CHARS_PER_SECOND}},
        "carriers": ["twilio"],
        "routes": {"bot": {"provider": "fake"}},
        "default_route": "bot",
        "playout": {"hangup_mark_timeout_s": hangup_mark_timeout_s},
        "logging": {"level": "INFO"},
    }


class GatewayProcess:
    """``tts-gateway serve`` in a subprocess; the attributes ``open_control`` needs."""

    def __init__(self, tmp_path: Path, config: dict, args: tuple[str, ...] = ()):
        self.port = config["server"]["port"]
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log_path = tmp_path / "gateway.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), *args],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.session = aiohttp.ClientSession()
        self.signalled_at: float | None = None

    def log(self) -> str:
        return self.log_path.read_text()

    async def get_json(self, path: str):
        async with self.session.get(self.http_url + path) as resp:
            return resp.status, await resp.json()

    async def post_json(self, path: str, body=None):
        async with self.session.post(self.http_url + path, json=body) as resp:
            return resp.status, await resp.json()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the gateway exited:\n{self.log()}"
            try:
                status, _ = await self.get_json("/readyz")
                if status == 200:
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"the gateway was not ready within {timeout} s:\n{self.log()}")

    def sigterm(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()

    async def wait_exit(self, timeout: float) -> tuple[int, float]:
        """The exit code and the seconds from the first SIGTERM to the exit."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"the gateway did not exit within {timeout} s:\n{self.log()}")
            await asyncio.sleep(0.02)
        return self.proc.returncode, time.monotonic() - (self.signalled_at or 0.0)

    async def close(self) -> None:
        await self.session.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


async def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def gateway_process(tmp_path):
    started: list[GatewayProcess] = []

    async def start(**settings) -> GatewayProcess:
        gw = GatewayProcess(tmp_path, drain_config(free_port(), **settings))
        started.append(gw)
        await gw.wait_ready()
        return gw

    yield start
    for gw in started:
        await gw.close()


async def speak(gw, call_sid: str, text: str) -> str:
    status, body = await gw.post_json(f"/v1/calls/{call_sid}/speak", {"text": text})
    assert status == 202, body
    return body["speech_id"]


async def test_sigterm_drains_the_call_to_its_end_refuses_new_ones_and_exits_0(gateway_process):
    gw = await gateway_process(drain_timeout_s=30)
    async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/bot") as sim:
        control = await open_control(gw, sim.call_sid)
        speech_id = await speak(gw, sim.call_sid, LONG_TEXT)
        await sim.wait_for_media(frames=10, timeout=10)
        gw.sigterm()

        async def draining():
            status, body = await gw.get_json("/readyz")
            return (status, body) if body.get("draining") else None

        status, body = await wait_until(draining, 5, "/readyz to say draining")
        assert status == 503 and body["ready"] is False and body["status"] == "draining"
        assert body["active_calls"] == 1 and 0 < body["drain_seconds_left"] <= 30

        # a new media stream is refused before the upgrade, with a clear reason
        async with gw.session.get(f"{gw.http_url}/v1/media/twilio/bot", headers=UPGRADE) as resp:
            assert resp.status == 503
            assert "draining" in (await resp.json())["error"]["message"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/bot"):
                pass
        assert refused.value.status == 503

        # the call in progress goes on: its control API still takes speech, and it hears
        # its utterance to the end (speech.done comes from the carrier's mark echo)
        closing_id = await speak(gw, sim.call_sid, "Goodbye now.")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=15)
        assert done["interrupted"] is False
        done = await control.next_event("speech.done", speech_id=closing_id, timeout=10)
        assert done["interrupted"] is False
        assert speech_marks(sim.result) == [speech_id, closing_id]
        heard = len(sim.result.frames) * 0.020
        expected = (len(LONG_TEXT) + len("Goodbye now.")) / CHARS_PER_SECOND
        assert heard == pytest.approx(expected, abs=0.1)
        assert gw.proc.poll() is None, "the gateway exited while a call was in progress"
        assert not sim.ended
        await sim.hangup()  # the caller hangs up: the last call is over
    code, after_signal = await gw.wait_exit(timeout=15)
    assert code == 0, gw.log()
    assert after_signal < 30
    assert sim.result.violations == []
    assert not sim.result.closed_by_gateway
    log = gw.log()
    assert "draining" in log and "every call ended by itself" in log


async def test_at_the_drain_limit_calls_are_hung_up_and_the_process_exits_0(gateway_process):
    gw = await gateway_process(drain_timeout_s=1.0, hangup_mark_timeout_s=1.0)
    async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/bot") as sim:
        control = await open_control(gw, sim.call_sid)
        speech_id = await speak(gw, sim.call_sid, LONG_TEXT * 3)  # 12 s: longer than the limit
        await sim.wait_for_media(frames=5, timeout=10)
        gw.sigterm()
        ended = await control.next_event("call.ended", timeout=10)
        assert ended["outcome"] == "hangup"

        async def closed():
            return sim.ended

        await wait_until(closed, 5, "the gateway to close the media stream")
        assert sim.result.closed_by_gateway
        code, after_signal = await gw.wait_exit(timeout=10)
    assert code == 0, gw.log()
    # limit 1 s, then at most 1 s for accepted speech to play out, then the server stops
    assert after_signal < 1.0 + 1.0 + 5.0
    heard = len(sim.result.frames) * 0.020
    assert heard < 12.0 - 5.0  # the 12 s utterance was cut: the limit held
    assert all(e.get("speech_id") != speech_id or e["type"] != "speech.done"
               or e["interrupted"] for e in control.events)
    assert "limit reached" in gw.log()


async def test_a_second_sigterm_hangs_up_at_once(gateway_process):
    gw = await gateway_process(drain_timeout_s=60)
    async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/bot") as sim:
        await open_control(gw, sim.call_sid)
        await speak(gw, sim.call_sid, LONG_TEXT * 3)
        await sim.wait_for_media(frames=5, timeout=10)
        gw.sigterm()
        await asyncio.sleep(0.3)
        assert gw.proc.poll() is None  # draining, for up to 60 s
        gw.sigterm()
        code, after_signal = await gw.wait_exit(timeout=10)
        assert code == 0, gw.log()
        assert after_signal < 10  # nowhere near the 60 s limit
        await sim.wait_for_clear(timeout=2)  # cut: the carrier's buffer was cleared

        async def closed():
            return sim.ended

        await wait_until(closed, 2, "the media stream to close")
    assert sim.result.closed_by_gateway
    assert "cut short" in gw.log()


def test_the_drain_limit_is_configured_under_server():
    port = free_port()
    assert parse_config(drain_config(port, drain_timeout_s=42)).server.drain_timeout_s == 42.0
    data = drain_config(port, drain_timeout_s=0)
    del data["server"]["drain_timeout_s"]
    assert parse_config(data).server.drain_timeout_s == 300.0
    for bad in (-1, "soon", 100000):
        with pytest.raises(ConfigError) as error:
            parse_config(drain_config(port, drain_timeout_s=bad))
        assert any(p.startswith("server.drain_timeout_s") for p in error.value.problems)


async def test_a_draining_app_refuses_media_streams_and_audiosocket_calls(gateway_config):
    gateway_config["carriers"] = {"twilio": {},
                                  "audiosocket": {"host": "127.0.0.1", "port": 0,
                                                  "route": "demo"}}
    gw = await start_gateway(gateway_config)
    try:
        status, body = await gw.get_json("/readyz")
        assert status == 200 and body["status"] == "ready" and body["draining"] is False
        gw.app[DRAIN].begin("test")
        status, body = await gw.get_json("/readyz")
        assert status == 503 and body["status"] == "draining"
        status, body = await gw.get_json("/healthz")
        assert status == 200  # alive: Kubernetes must not restart a draining gateway
        async with gw.session.get(f"{gw.http_url}/v1/media/twilio/demo", headers=UPGRADE) as resp:
            assert resp.status == 503
            assert "draining" in json.loads(await resp.text())["error"]["message"]
        port = gw.app[TCP_LISTENERS]["audiosocket"].sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            async with asyncio.timeout(5):
                assert await reader.read() == b"\x00\x00\x00"  # hang-up, then EOF
        finally:
            writer.close()
        metrics = await gw.metrics_text()
        assert metric_value(metrics, "tts_gateway_calls_total", carrier="twilio",
                            outcome="rejected") == 1
        assert metric_value(metrics, "tts_gateway_calls_total", carrier="audiosocket",
                            outcome="rejected") == 1
    finally:
        await gw.session.close()
        await gw.runner.cleanup()
