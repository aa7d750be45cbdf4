"""Calls through a real gateway to the ElevenLabs, Cartesia and Deepgram Aura fakes, over
loopback, with the Twilio simulator as the carrier (issue 6; the same checks as
``test_remote_providers.py`` for Inworld, Smallest and Together, plus μ-law passthrough).

For each provider: the caller hears the whole utterance (duration within 5 % of what the
fake produced) and, on this μ-law carrier, exactly the μ-law bytes the fake sent (it was
asked for μ-law 8 kHz; nothing was transcoded); an interrupt lets no late audio reach the
carrier and cancels upstream with the provider's own verb; an error frame gives the bot a
``speech.done`` with an error while the call goes on; a socket the provider closed (restart,
idle timeout) is healed before the next utterance; and every utterance of a call goes over
one connection (the fake's connection count). Plus per-provider quirks: Cartesia's 1 s
context expiry during a slow streamed turn, Deepgram's flush per sentence.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from dataclasses import dataclass

import pytest
from aiohttp import web
from telcodecs import silence_byte, ulaw_decode

from gateway.carriers.events import MediaFormat
from gateway.http.keys import CALLS, PROVIDERS
from gateway.http.loopback import serve_on_loopback
from gateway.metrics import Metrics
from gateway.sim.providers import cartesia, deepgram, elevenlabs
from gateway.sim.providers.common import close_all
from gateway.sim.twilio import TwilioCallSim
from gateway.tts.remote.drivers import RemoteSettings
from gateway.tts.remote.pool import PoolSettings
from gateway.tts.remote.session import RemoteProvider
from tests.conftest import RunningGateway, base_config, start_gateway
from tests.e2e.speech_check import assert_speech
from tests.e2e.test_twilio_call import LONG_TEXT, metric_value, open_control

KINDS = ("elevenlabs", "cartesia", "deepgram")
KEY_ENV = {"FAKE_TTS_KEY": "test-key"}
#: kind -> (make_app, path, voice)
FAKES = {
    "elevenlabs": (elevenlabs.make_app, elevenlabs.PATH, "21m00Tcm4TlvDq8ikWAM"),
    "cartesia": (cartesia.make_app, cartesia.PATH, "a0e99841-438c-4a64-b679-ae501e7d6091"),
    "deepgram": (deepgram.make_app, deepgram.PATH, "aura-2-thalia-en"),
}
#: how each fake names the turn an entry of its log belongs to
TURN_KEY = {"elevenlabs": "context_id", "cartesia": "context_id", "deepgram": None}


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
            fmt = entry.get("output_format") or entry.get("encoding")
            width = 1 if fmt in ("ulaw_8000", "alaw_8000", "pcm_mulaw", "pcm_alaw", "mulaw",
                                 "alaw") else 2
            rate = entry.get("sample_rate") or 8000
            total += entry["bytes"] / width / rate
        return total

    def asked_for_ulaw_8k(self) -> bool:
        if self.kind == "elevenlabs":
            return all(c["output_format"] == "ulaw_8000" for c in self.fake["connects"])
        if self.kind == "deepgram":
            return all((c["encoding"], c["sample_rate"]) == ("mulaw", 8000)
                       for c in self.fake["connects"])
        return all(m["output_format"] == {"container": "raw", "encoding": "pcm_mulaw",
                                          "sample_rate": 8000}
                   for m in self.fake["received"] if "transcript" in m)

    def session_of(self, call_sid: str):
        call = self.gw.app[CALLS][call_sid]
        return call._sessions[self.kind].result()


@pytest.fixture
async def remote():
    """``await remote(kind, fake_profile={}, pool={}, options={})`` -> Setup."""
    cleanups = []

    async def start(kind: str, *, fake_profile: dict | None = None, pool: dict | None = None,
                    options: dict | None = None) -> Setup:
        make_app, path, voice = FAKES[kind]
        fake = make_app(**(fake_profile or {}))
        runner, port = await serve_on_loopback(fake)
        cleanups.append(runner.cleanup)
        data = base_config()
        data["providers"] = {kind: {
            "type": kind, "api_key_env": "FAKE_TTS_KEY", "voice": voice,
            "endpoint": f"ws://127.0.0.1:{port}{path}", "options": dict(options or {}),
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


def stopped_upstream(setup: Setup) -> list:
    """What the gateway sent to stop turns upstream, with the provider's own verb."""
    received = setup.fake["received"]
    if setup.kind == "elevenlabs":
        # close_context; for a whole text it already went out after the text, at the end of
        # input (what was flushed goes on being generated, asyncapi [C]) and is dropped
        return [m["context_id"] for m in received if m.get("close_context") is True]
    if setup.kind == "cartesia":
        return list(setup.fake["cancels"])
    return [m for m in received if m.get("type") == "Clear"]


@pytest.mark.parametrize("kind", KINDS)
async def test_the_caller_hears_the_whole_utterance_as_the_providers_own_ulaw(remote, kind):
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
    # μ-law passthrough: the provider was asked for μ-law 8 kHz, and the caller heard its
    # bytes as they were sent (the last frame padded with μ-law silence), nothing transcoded
    assert setup.asked_for_ulaw_8k()
    sent = b"".join(e["audio"] for e in setup.fake["log"])
    assert result.heard[:len(sent)] == sent
    padding = result.heard[len(sent):]
    assert len(padding) < 160 and set(padding) <= {silence_byte("mulaw")}


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
        assert heard_before < 2.0 < setup.produced_seconds()
        # the turn was stopped upstream with the provider's verb (close_context, cancel,
        # Clear), and the socket stays with the call: each of them can cancel
        stopped = stopped_upstream(setup)
        assert len(stopped) == 1
        if kind != "deepgram":  # the cut turn's context (Deepgram has no ids)
            assert stopped[0] == setup.fake["log"][0]["context_id"]
        # the provider did send audio of the cut turn after the cut: dropped at the socket
        assert setup.session_of(sim.call_sid).connection.late_chunks_dropped > 0
        speech_id = await speak(setup, sim.call_sid, "Sorry, go ahead.")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        assert setup.session_of(sim.call_sid).connections_used == 1
        await sim.hangup()
    assert sim.result.violations == []
    assert setup.fake["log"][-1]["text"] == "Sorry, go ahead."


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
               if line.startswith("tts_gateway_tts_errors_total{") and kind in line) == 1


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


IDLE = {  # kind -> (fake profile, pool settings, provider options): a 1 s idle limit
    "elevenlabs": ({}, {}, {"inactivity_timeout": 1}),
    "cartesia": ({"idle_timeout_s": 1.0}, {"idle_timeout_s": 1.0}, {}),
    "deepgram": ({"idle_timeout_s": 1.0}, {"idle_timeout_s": 1.0}, {}),
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
    assert setup.fake["closed"]  # it was the provider's idle timeout that closed it


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
    setup = await remote(kind)
    setup.gw.app[PROVIDERS][kind].driver.keepalive_s = None
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        for piece in ["Thanks for", " waiting. Your", " order has"]:
            await control.ws.send_json({"type": "speak", "text": piece})
        first = await control.next_event("speech.first_audio", timeout=20)  # before the rest
        await asyncio.sleep(1.2)  # a slow bot: longer than Cartesia keeps a quiet context
        await control.ws.send_json({"type": "speak", "text": " shipped.", "flush": True})
        done = await control.next_event("speech.done", speech_id=first["speech_id"], timeout=30)
        assert done["interrupted"] is False and "error" not in done
        await sim.hangup()
    log = setup.fake["log"]
    # each sentence went out as soon as it was complete, not the whole text at the end
    assert [e["text"].strip() for e in log] == ["Thanks for waiting.", "Your order has shipped."]
    assert len(sim.result.frames) * 0.020 == pytest.approx(setup.produced_seconds(), rel=0.05)
    if kind == "elevenlabs":  # one context for the utterance
        assert log[0]["context_id"] == log[1]["context_id"]
    elif kind == "cartesia":
        # the first context expired during the pause (1 s after its last audio, [C]); the
        # second sentence went to a fresh context of the same turn instead of being lost
        first_ctx, second_ctx = log[0]["context_id"], log[1]["context_id"]
        assert second_ctx == first_ctx + "~1"
        assert setup.fake["expired"] == [first_ctx]
    else:  # one Speak and one Flush per sentence, on the socket's one stream
        assert [m["type"] for m in setup.fake["received"]] == ["Speak", "Flush", "Speak", "Flush"]


async def test_cartesia_keeps_one_context_when_the_next_sentence_comes_in_time(remote):
    setup = await remote("cartesia")
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        await control.ws.send_json({"type": "speak", "text": "Thanks for waiting. Your"})
        first = await control.next_event("speech.first_audio", timeout=20)
        await control.ws.send_json({"type": "speak", "text": " order has shipped.",
                                    "flush": True})
        done = await control.next_event("speech.done", speech_id=first["speech_id"], timeout=30)
        assert done["interrupted"] is False and "error" not in done
        await sim.hangup()
    log = setup.fake["log"]
    assert [e["text"] for e in log] == ["Thanks for waiting.", "Your order has shipped."]
    assert log[0]["context_id"] == log[1]["context_id"]  # prosody carries over
    assert setup.fake["expired"] == []
    inputs = [m for m in setup.fake["received"] if "transcript" in m]
    assert inputs[-1]["continue"] is False and inputs[-1]["transcript"] == ""


@pytest.mark.parametrize("kind", KINDS)
async def test_a_pcm_carrier_gets_pcm_from_the_provider(kind):
    """A wideband carrier (L16 16 kHz): the provider is asked for PCM at 16 kHz, no μ-law."""
    make_app, path, voice = FAKES[kind]
    fake = make_app()
    runner, port = await serve_on_loopback(fake)
    provider = RemoteProvider(RemoteSettings(name=kind, type=kind, api_key="test-key",
                                             voice=voice, endpoint=f"ws://127.0.0.1:{port}{path}"),
                              PoolSettings(min_idle=0, max=2))
    provider.use_metrics(Metrics())
    await provider.start()
    try:
        session = await provider.open_session(MediaFormat("l16", 16000))
        chunks = []
        async with aclosing(session.synthesize("Wideband audio for this call.")) as stream:
            async for chunk in stream:
                chunks.append(chunk)
        await session.release()
        assert chunks and {(c.encoding, c.sample_rate) for c in chunks} == {("pcm_s16le", 16000)}
        assert b"".join(c.data for c in chunks) == fake["log"][0]["audio"]
        if kind == "elevenlabs":
            assert fake["connects"][0]["output_format"] == "pcm_16000"
        elif kind == "deepgram":
            assert (fake["connects"][0]["encoding"], fake["connects"][0]["sample_rate"]) == (
                "linear16", 16000)
        else:
            assert fake["log"][0]["encoding"] == "pcm_s16le"
    finally:
        await provider.close()
        await runner.cleanup()


async def test_elevenlabs_rapid_barge_ins_move_the_call_to_a_fresh_socket_not_past_5_contexts():
    """Cut turns keep their context until ``isFinal`` (close_context goes on flushing); six
    barge-ins in a row would open a 6th context, which ElevenLabs answers by closing the
    socket with 1008 (§6 [O], livekit-js #1985). The call moves to a fresh socket instead."""
    make_app, path, voice = FAKES["elevenlabs"]
    fake = make_app(close_delay_ms=3000)  # isFinal late: the cut contexts stay open
    runner, port = await serve_on_loopback(fake)
    provider = RemoteProvider(RemoteSettings(name="el", type="elevenlabs", api_key="test-key",
                                             voice=voice, endpoint=f"ws://127.0.0.1:{port}{path}"),
                              PoolSettings(min_idle=0, max=4))
    provider.use_metrics(Metrics())
    await provider.start()
    try:
        session = await provider.open_session(MediaFormat("mulaw", 8000))
        for turn in range(7):
            async with aclosing(session.synthesize(f"Answer {turn}. " + LONG_TEXT)) as stream:
                async for chunk in stream:
                    assert chunk.encoding == "mulaw"
                    break  # barge-in at the first audio
        assert session.connections_used == 2
        assert "max_active_conversations" not in fake["closed"]
        assert len(fake["log"]) == 7  # every turn was heard
        await session.release()
    finally:
        await provider.close()
        await runner.cleanup()
