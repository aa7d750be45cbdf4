"""What one control client may make a call hold (issue 12, findings 2 and 10), through the
real server on loopback with the fake provider and simulated Twilio calls.

* text streamed on the control socket without a sentence end: 300 pieces of 20,000
  characters are refused beyond ``limits.max_utterance_chars`` while a healthy call goes on,
  and the event loop is never blocked for long (the old gateway re-scanned the whole text
  for each piece: 7-10 s of stall);
* the text a call holds across utterances (``limits.max_call_text_chars``), its speak queue
  (``limits.max_queued_utterances``) and its control sockets (``limits.max_control_sockets``)
  are bounded, each refusal answered 413/429 and counted by kind.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from gateway.http.keys import CONFIG
from gateway.carriers.twilio.sim import TwilioCallSim
from tests.conftest import start_gateway
from tests.e2e.test_twilio_call import metric_value, open_control

# 19,980 characters of words without a sentence end: the attack of issue 12
PIECE = "lorem ipsum dolor sit amet " * 740
# 201 characters: 13 s at the fake provider's 15 characters a second
GREETING = ("Hello, this is the healthy call. It keeps on talking for a good while, so that "
            "there is something to interrupt. It goes on and on about nothing in particular, "
            "just to fill the time until it is cut off.")


@pytest.fixture
def fake_config(gateway_config):
    gateway_config["providers"] = {"fake": {"type": "fake", "handshake_ms": 0,
                                            "first_audio_ms": 20, "chars_per_second": 15}}
    gateway_config["routes"] = {"bot": {"provider": "fake", "greeting": GREETING}}
    gateway_config["default_route"] = "bot"
    return gateway_config


class StallMonitor:
    """The longest the event loop was away, seen by a task that sleeps 10 ms at a time."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            now = loop.time()
            self.worst = max(self.worst, now - last - 0.01)
            last = now

    async def stop(self) -> float:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return self.worst


async def _replies(ws, count: int, timeout: float) -> list[dict]:
    """The next ``count`` replies to speak messages (events in between are skipped)."""
    replies = []
    async with asyncio.timeout(timeout):
        while len(replies) < count:
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.TEXT, f"the control socket closed: {msg}"
            reply = json.loads(msg.data)
            if reply["type"] in ("speak.accepted", "error"):
                replies.append(reply)
    return replies


async def test_streamed_text_beyond_the_limits_is_refused_and_never_stalls_the_loop(fake_config):
    gw = await start_gateway(fake_config)
    limit = gw.app[CONFIG].limits.max_utterance_chars
    try:
        async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/bot") as healthy, \
                TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/bot") as target:
            await healthy.wait_for_media(frames=5, timeout=20)
            control = await open_control(gw, target.call_sid)
            monitor = StallMonitor()

            async def interrupt_the_healthy_call() -> tuple[int, dict, float]:
                asked = time.monotonic()
                status, body = await gw.post_json(f"/v1/calls/{healthy.call_sid}/interrupt")
                return status, body, (time.monotonic() - asked) * 1000

            started = time.monotonic()
            for index in range(300):
                await control.ws.send_str(json.dumps({"type": "speak", "text": PIECE}))
                if index == 150:  # in the middle of the attack
                    interrupting = asyncio.get_running_loop().create_task(
                        interrupt_the_healthy_call())
            replies = await _replies(control.ws, 300, timeout=120)
            attack_s = time.monotonic() - started
            status, body, interrupt_ms = await interrupting
            worst = await monitor.stop()
            frames = len(healthy.result.frames)
            await control.ws.close()
            await healthy.hangup()
            await target.hangup()
        metrics = await gw.metrics_text()
    finally:
        await gw.session.close()
        await gw.runner.cleanup()
    print(f"\n300 pieces of {len(PIECE)} characters answered in {attack_s:.2f} s; worst event "
          f"loop stall {worst * 1000:.1f} ms; the healthy call's interrupt answered in "
          f"{interrupt_ms:.1f} ms ({frames} frames heard)")
    accepted = [r for r in replies if r["type"] == "speak.accepted"]
    refused = [r for r in replies if r["type"] == "error"]
    assert len(accepted) == limit // len(PIECE) == 5
    assert len(refused) == 295
    assert {r["kind"] for r in refused} == {"utterance_text"}
    assert "limits.max_utterance_chars" in refused[0]["message"]
    assert metric_value(metrics, "tts_gateway_control_errors_total", kind="utterance_text") == 295
    assert status == 200 and body["interrupted"] == 1
    assert worst < 0.5, f"the event loop stalled for {worst * 1000:.0f} ms"


async def test_the_text_a_call_holds_across_utterances_is_bounded(fake_config):
    fake_config["limits"] = {"max_text_chars": 100, "max_utterance_chars": 100,
                             "max_call_text_chars": len(GREETING) + 50}
    gw = await start_gateway(fake_config)
    try:
        async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/bot") as sim:
            await open_control(gw, sim.call_sid)
            path = f"/v1/calls/{sim.call_sid}/speak"
            # the greeting (the operator's) is held too: 40 more characters fit, 80 do not
            assert (await gw.post_json(path, {"text": "x" * 40}))[0] == 202
            status, body = await gw.post_json(path, {"text": "z" * 40})
            assert status == 413 and "limits.max_call_text_chars" in body["error"]["message"]
            # streamed text counts too; a refused piece leaves the utterance open
            control = await open_control(gw, sim.call_sid)
            await control.ws.send_str(json.dumps({"type": "speak", "text": "w" * 20}))
            (reply,) = await _replies(control.ws, 1, timeout=10)
            assert reply["type"] == "error" and reply["kind"] == "call_text"
            # once speech is cut, the room is back
            assert (await gw.post_json(f"/v1/calls/{sim.call_sid}/interrupt"))[0] == 200
            await control.ws.send_str(json.dumps({"type": "speak", "text": "w" * 20}))
            (reply,) = await _replies(control.ws, 1, timeout=10)
            assert reply["type"] == "speak.accepted"
            await control.ws.close()
            await sim.hangup()
        metrics = await gw.metrics_text()
    finally:
        await gw.session.close()
        await gw.runner.cleanup()
    assert metric_value(metrics, "tts_gateway_control_errors_total", kind="call_text") == 2


async def test_the_speak_queue_is_bounded(fake_config):
    fake_config["limits"] = {"max_queued_utterances": 3}
    gw = await start_gateway(fake_config)
    try:
        async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/bot") as sim:
            await open_control(gw, sim.call_sid)
            path = f"/v1/calls/{sim.call_sid}/speak"
            # the greeting is still playing: it is one of the three
            statuses = [(await gw.post_json(path, {"text": f"Number {i}."}))[0] for i in range(3)]
            assert statuses == [202, 202, 429]
            status, body = await gw.post_json(path, {"text": "One more."})
            assert status == 429 and "limits.max_queued_utterances" in body["error"]["message"]
            # interrupting empties the queue; speak with interrupt makes room for itself
            assert (await gw.post_json(path, {"text": "Now.", "interrupt": True}))[0] == 202
            await sim.hangup()
        metrics = await gw.metrics_text()
    finally:
        await gw.session.close()
        await gw.runner.cleanup()
    assert metric_value(metrics, "tts_gateway_control_errors_total", kind="queue_full") == 2


async def test_control_sockets_per_call_are_bounded(fake_config):
    fake_config["limits"] = {"max_control_sockets": 2}
    gw = await start_gateway(fake_config)
    try:
        async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/bot") as sim:
            first = await open_control(gw, sim.call_sid)
            second = await open_control(gw, sim.call_sid)
            url = f"{gw.ws_url}/v1/calls/{sim.call_sid}/control"
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await gw.session.ws_connect(url)
            assert refused.value.status == 429
            async with gw.session.get(gw.http_url + url.removeprefix(gw.ws_url),
                                      headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                               "Sec-WebSocket-Version": "13",
                                               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
                                      ) as resp:
                body = await resp.json()
            assert resp.status == 429
            assert "limits.max_control_sockets" in body["error"]["message"]
            # the sockets that are open work, and a closed one frees its place
            await second.ws.send_str(json.dumps({"type": "interrupt"}))
            assert (await second.next_event("interrupt.done"))["type"] == "interrupt.done"
            await first.ws.close()
            await asyncio.sleep(0.05)
            third = await open_control(gw, sim.call_sid)
            await third.ws.close()
            await second.ws.close()
            await sim.hangup()
        metrics = await gw.metrics_text()
    finally:
        await gw.session.close()
        await gw.runner.cleanup()
    assert metric_value(metrics, "tts_gateway_control_errors_total", kind="too_many_sockets") == 2
