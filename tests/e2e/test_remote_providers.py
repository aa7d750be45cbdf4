"""Calls through a real gateway to each remote provider's faithful fake, over loopback.

For Inworld, Smallest.ai and Together AI: the caller hears the whole utterance (duration
within 5 % of what the fake produced), an interrupt lets no late audio reach the carrier,
an error frame gives the bot a ``speech.done`` with an error while the call goes on, a
socket the provider closed (idle timeout, restart) is healed before the next utterance
without the bot noticing, and every utterance of a call goes over one connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from aiohttp import web
from telcodecs import ulaw_decode

from gateway.http.keys import CALLS, PROVIDERS
from gateway.http.loopback import serve_on_loopback
from gateway.sim.providers import inworld, smallest, together
from gateway.sim.providers.common import close_all
from gateway.sim.twilio import TwilioCallSim
from tests.conftest import RunningGateway, base_config, start_gateway
from tests.e2e.speech_check import assert_speech
from tests.e2e.test_twilio_call import LONG_TEXT, metric_value, open_control

KINDS = ("inworld", "smallest", "together")
KEY_ENV = {"FAKE_TTS_KEY": "test-key"}
FAKES = {
    "inworld": (inworld.make_app, inworld.PATH, "Ashley", {}),
    "smallest": (smallest.make_app, "/waves/v1/tts/live", "meher", {"complete_backoff_ms": 50}),
    "together": (together.make_app, together.PATH, "af_alloy", {}),
}


@dataclass
class Setup:
    kind: str
    fake: web.Application
    gw: RunningGateway

    @property
    def connections(self) -> int:
        return self.fake["stats"].connections

    def produced_seconds(self) -> float:
        """Seconds of audio the fake synthesized, from its own log."""
        total = 0.0
        for entry in self.fake["log"]:
            if self.kind == "inworld":
                total += entry["bytes"] / (8000 if entry["encoding"] in ("MULAW", "ALAW") else 16000)
            elif self.kind == "smallest":
                width = 1 if entry["format"] in ("ulaw", "alaw") else 2
                total += entry["bytes"] / width / entry["sample_rate"]
            else:
                total += entry["bytes"] / 2 / entry["sample_rate"]
        return total

    def session_of(self, call_sid: str):
        call = self.gw.app[CALLS][call_sid]
        return call._sessions[self.kind].result()


@pytest.fixture
async def remote():
    """``await remote(kind, fake_profile={}, pool={}, options={})`` -> Setup."""
    cleanups = []

    async def start(kind: str, *, fake_profile: dict | None = None, pool: dict | None = None,
                    options: dict | None = None) -> Setup:
        make_app, path, voice, default_options = FAKES[kind]
        fake = make_app(**(fake_profile or {}))
        runner, port = await serve_on_loopback(fake)
        cleanups.append(runner.cleanup)
        data = base_config()
        data["providers"] = {kind: {
            "type": kind, "api_key_env": "FAKE_TTS_KEY", "voice": voice,
            "endpoint": f"ws://127.0.0.1:{port}{path}",
            "options": {**default_options, **(options or {})},
            "pool": {"min_idle": 1, "max": 4, **(pool or {})},
        }}
        data["routes"] = {"bot": {"provider": kind}}
        data["default_route"] = "bot"
        gw = await start_gateway(data, KEY_ENV)
        cleanups.append(gw.runner.cleanup)
        cleanups.append(gw.session.close)
        return Setup(kind, fake, gw)

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


async def speak(setup: Setup, call_sid: str, text: str) -> str:
    status, body = await setup.gw.post_json(f"/v1/calls/{call_sid}/speak", {"text": text})
    assert status == 202, body
    return body["speech_id"]


@pytest.mark.parametrize("kind", KINDS)
async def test_the_caller_hears_the_whole_utterance(remote, kind):
    setup = await remote(kind)
    text = "Your order has shipped. It will arrive on Tuesday between nine and noon."
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await speak(setup, sim.call_sid, text)
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        await sim.hangup()
    result = sim.result
    assert result.violations == []
    assert all(len(payload) == 160 for _, payload in result.frames)
    heard = len(result.frames) * 0.020
    produced = setup.produced_seconds()
    assert produced > 3.0
    assert heard == pytest.approx(produced, rel=0.05)
    assert_speech(ulaw_decode(result.heard))
    assert " ".join(e["text"] for e in setup.fake["log"]).split() == text.split()


@pytest.mark.parametrize("kind", KINDS)
async def test_interrupt_stops_the_utterance_and_no_late_audio_reaches_the_carrier(remote, kind):
    setup = await remote(kind)
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await speak(setup, sim.call_sid, LONG_TEXT)
        await control.next_event("speech.first_audio", speech_id=speech_id, timeout=20)
        await asyncio.sleep(0.3)
        status, body = await setup.gw.post_json(f"/v1/calls/{sim.call_sid}/interrupt")
        assert status == 200 and body["interrupted"] == 1
        done = await control.next_event("speech.done", speech_id=speech_id)
        assert done["interrupted"] is True
        clear_at = await sim.wait_for_clear()
        await asyncio.sleep(1.5)  # the fake goes on sending the cut turn's audio meanwhile
        late = [t for t, _ in sim.result.frames if t > clear_at]
        assert late == [], f"{len(late)} frames after the clear"
        heard_before = len(sim.result.frames) * 0.020
        # the utterance was ~16 s; the provider synthesized far more than the caller heard
        assert heard_before < 2.0 < setup.produced_seconds()
        # and the call goes on: the next utterance plays in full
        speech_id = await speak(setup, sim.call_sid, "Sorry, go ahead.")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        # Smallest has no cancel: its socket still carries the cut request's audio, so the
        # call moved to a fresh one; the others cancelled the turn and kept their socket
        used = setup.session_of(sim.call_sid).connections_used
        assert used == (2 if kind == "smallest" else 1)
        await sim.hangup()
    assert sim.result.violations == []


@pytest.mark.parametrize("kind", KINDS)
async def test_a_provider_error_frame_fails_that_utterance_only(remote, kind):
    setup = await remote(kind, fake_profile={"fail_on": "FAILME"})
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await speak(setup, sim.call_sid, "Please FAILME now.")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=20)
        assert done["interrupted"] is True and "synthesis failed" in done["error"]
        speech_id = await speak(setup, sim.call_sid, "This one works fine.")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        assert len(sim.result.frames) * 0.020 == pytest.approx(
            len("This one works fine.") / 15, rel=0.05)
        await sim.hangup()
    metrics = await setup.gw.metrics_text()
    assert sum(float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith(f'tts_gateway_tts_errors_total{{kind="') and kind in line) == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_a_server_close_is_healed_before_the_next_utterance(remote, kind):
    setup = await remote(kind)
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await speak(setup, sim.call_sid, "First, before the restart.")
        await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        before = setup.connections
        assert await close_all(setup.fake) >= 1  # the provider drops every socket
        await asyncio.sleep(0.3)
        speech_id = await speak(setup, sim.call_sid, "Second, after the restart.")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        assert setup.connections > before
        await sim.hangup()
    assert [e["text"].strip() for e in setup.fake["log"]][-1] == "Second, after the restart."
    metrics = await setup.gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_pool_reconnects_total", provider=kind,
                        reason="server_close") >= 1


IDLE = {
    "inworld": ({"idle_timeout_s": 1.0}, {"idle_timeout_s": 1.0}, {}),
    "smallest": ({}, {}, {"timeout_s": 1}),
    "together": ({"idle_timeout_s": 1.0}, {"idle_timeout_s": 1.0}, {}),
}


@pytest.mark.parametrize("kind", KINDS)
async def test_an_idle_timeout_is_healed_without_the_bot_noticing(remote, kind):
    fake_profile, pool, options = IDLE[kind]
    setup = await remote(kind, fake_profile=fake_profile, pool=pool, options=options)
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await speak(setup, sim.call_sid, "Hello there.")
        await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        leased = setup.session_of(sim.call_sid).connection
        await asyncio.sleep(2.0)  # the provider drops the call's idle socket meanwhile
        assert leased.closed
        speech_id = await speak(setup, sim.call_sid, "Are you still there?")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        await sim.hangup()
    assert [e["text"].strip() for e in setup.fake["log"]][-1] == "Are you still there?"


@pytest.mark.parametrize("kind", KINDS)
async def test_all_utterances_of_a_call_go_over_one_connection(remote, kind):
    setup = await remote(kind, pool={"min_idle": 1})
    await asyncio.sleep(0.2)
    assert setup.connections == 1  # the warm one
    texts = ["One.", "Two, a bit longer.", "Three is the last one."]
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        for text in texts:
            speech_id = await speak(setup, sim.call_sid, text)
            done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
            assert done["interrupted"] is False and "error" not in done
        assert setup.session_of(sim.call_sid).connections_used == 1
        await sim.hangup()
    # the call leased the warm socket, the pool opened one spare behind it, and three
    # utterances opened nothing more
    assert setup.connections == 2
    assert [e["text"].strip() for e in setup.fake["log"]] == texts
    metrics = await setup.gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_pool_hits_total", provider=kind) == 1
    assert metric_value(metrics, "tts_gateway_pool_misses_total", provider=kind) == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_streamed_tokens_are_sent_sentence_by_sentence_in_one_turn(remote, kind):
    setup = await remote(kind, fake_profile={"context_idle_s": 0.6} if kind == "inworld" else {})
    # a slow bot: contexts expire after 0.6 s without text; the keepalive must hold it open
    setup.gw.app[PROVIDERS][kind].driver.keepalive_s = 0.2 if kind == "inworld" else None
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        for piece in ["Thanks for", " waiting. Your", " order has"]:
            await control.ws.send_json({"type": "speak", "text": piece})
        first = await control.next_event("speech.first_audio", timeout=20)  # before the rest
        await asyncio.sleep(1.2)
        await control.ws.send_json({"type": "speak", "text": " shipped.", "flush": True})
        done = await control.next_event("speech.done", speech_id=first["speech_id"], timeout=30)
        assert done["interrupted"] is False and "error" not in done
        await sim.hangup()
    log = setup.fake["log"]
    # each sentence went out as soon as it was complete, not the whole text at the end
    assert [e["text"].strip() for e in log] == ["Thanks for waiting.", "Your order has shipped."]
    turn = {"inworld": "contextId", "together": "context_id", "smallest": "request_id"}[kind]
    if kind == "smallest":  # one request at a time: a request per sentence
        assert log[0][turn] != log[1][turn]
    else:  # one context for the utterance
        assert log[0][turn] == log[1][turn]
    assert len(sim.result.frames) * 0.020 == pytest.approx(setup.produced_seconds(), rel=0.05)
