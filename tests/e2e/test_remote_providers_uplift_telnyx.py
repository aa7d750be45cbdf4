"""Calls through a real gateway to the Uplift AI and Telnyx TTS fakes, over loopback, with
the Twilio simulator as the caller.

For both: the caller hears the whole utterance (within 5 % of what the fake produced), an
interrupt lets no late audio through, an error frame gives the bot a ``speech.done`` with
an error and the call goes on, and a provider that drops its sockets is healed before the
next utterance. Uplift (Socket.IO, requests multiplexed on one connection): every utterance
of a call goes over one connection, and overlapping requests on it, of two calls or of one
utterance, come out as clean utterances. Telnyx (one utterance per socket): five utterances
use five sockets, each opened and handshaken before its utterance was asked for, so a slow
handshake is not in the first audio's path.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from telcodecs import ulaw_decode

from gateway.http.loopback import serve_on_loopback
from gateway.sim.providers import telnyx_tts, uplift
from gateway.sim.providers.common import close_all
from gateway.sim.twilio import TwilioCallSim
from tests.conftest import base_config, start_gateway
from tests.e2e.speech_check import assert_speech
from tests.e2e.test_remote_providers import KEY_ENV, Setup, speak
from tests.e2e.test_twilio_call import LONG_TEXT, metric_value, open_control

KINDS = ("uplift", "telnyx")
FAKES = {
    "uplift": (uplift.make_app, uplift.PATH, "v_meklc281", {}),
    "telnyx": (telnyx_tts.make_app, telnyx_tts.PATH, "Telnyx.NaturalHD.astra",
               {"burst_factor": 8.0}),
}


class TwoSetup(Setup):
    def produced_seconds(self) -> float:
        total = 0.0
        for e in self.fake["log"]:
            if e["format"] in ("ULAW_8000_8", "mulaw", "alaw"):
                total += e["bytes"] / 8000
            else:
                total += e["bytes"] / 2 / e["sample_rate"]
        return total


@pytest.fixture
async def remote():
    """``await remote(kind, fake_profile={}, pool={}, options={})`` -> TwoSetup."""
    cleanups = []

    async def start(kind: str, *, fake_profile: dict | None = None, pool: dict | None = None,
                    options: dict | None = None) -> TwoSetup:
        make_app, path, voice, default_profile = FAKES[kind]
        fake = make_app(**{**default_profile, **(fake_profile or {})})
        runner, port = await serve_on_loopback(fake)
        cleanups.append(runner.cleanup)
        data = base_config()
        data["providers"] = {kind: {
            "type": kind, "api_key_env": "FAKE_TTS_KEY", "voice": voice,
            "endpoint": f"ws://127.0.0.1:{port}{path}", "options": dict(options or {}),
            "pool": {"min_idle": 1, "max": 6, **(pool or {})},
        }}
        data["routes"] = {"bot": {"provider": kind}}
        data["default_route"] = "bot"
        gw = await start_gateway(data, KEY_ENV)
        cleanups.append(gw.runner.cleanup)
        cleanups.append(gw.session.close)
        return TwoSetup(kind, fake, gw)

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


def fake_texts(setup: TwoSetup) -> list[str]:
    return [e["text"].strip() for e in setup.fake["log"]]


def assert_exactly(heard: bytes, audio: bytes) -> None:
    """The caller heard ``audio`` byte for byte (μ-law passed through), then at most one
    frame's silence padding."""
    assert heard[:len(audio)] == audio
    assert len(heard) - len(audio) < 160 and set(heard[len(audio):]) <= {0xFF}


# ---- both providers ---------------------------------------------------------------------------


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
    produced = setup.produced_seconds()
    assert produced > 3.0
    assert len(result.frames) * 0.020 == pytest.approx(produced, rel=0.05)
    assert_speech(ulaw_decode(result.heard))
    assert " ".join(fake_texts(setup)).split() == text.split()
    if kind == "uplift":  # μ-law 8 kHz straight through, untouched
        assert [e["format"] for e in setup.fake["log"]] == ["ULAW_8000_8"]
        assert_exactly(result.heard, setup.fake["log"][0]["audio"])
    else:  # raw PCM at 8 kHz, never MP3
        assert [(e["format"], e["sample_rate"]) for e in setup.fake["log"]] == [("linear16", 8000)]


@pytest.mark.parametrize("kind", KINDS)
async def test_interrupt_stops_the_utterance_and_no_late_audio_reaches_the_carrier(remote, kind):
    setup = await remote(kind, fake_profile={"late_chunks": 3})
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
        await asyncio.sleep(1.5)  # the fake still sends the cut request's late chunks
        late = [t for t, _ in sim.result.frames if t > clear_at]
        assert late == [], f"{len(late)} frames after the clear"
        assert len(sim.result.frames) * 0.020 < 2.0 < setup.produced_seconds()
        speech_id = await speak(setup, sim.call_sid, "Sorry, go ahead.")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        # Uplift cancelled the request and kept its socket; a Telnyx socket serves one
        # utterance: the force-stopped one was dropped and the next came from the pool
        used = setup.session_of(sim.call_sid).connections_used
        assert used == (1 if kind == "uplift" else 2)
        await sim.hangup()
    assert sim.result.violations == []
    if kind == "uplift":
        assert setup.fake["cancels"] == [setup.fake["log"][0]["request_id"]]
    else:
        assert setup.fake["forces"] == [setup.fake["log"][0]["socket"]]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_provider_error_frame_fails_that_utterance_only(remote, kind):
    setup = await remote(kind, fake_profile={"fail_on": "FAILME"})
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await speak(setup, sim.call_sid, "Please FAILME now.")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=20)
        expected = "synthesis failed" if kind == "uplift" else "Error in audio response"
        assert done["interrupted"] is True and expected in done["error"]
        speech_id = await speak(setup, sim.call_sid, "This one works fine.")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        assert len(sim.result.frames) * 0.020 == pytest.approx(
            len("This one works fine.") / 15, rel=0.05)
        await sim.hangup()
    metrics = await setup.gw.metrics_text()
    assert sum(float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith('tts_gateway_tts_errors_total{kind="') and kind in line) == 1
    assert fake_texts(setup) == ["This one works fine."]  # the failed text was not replayed


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
    assert fake_texts(setup)[-1] == "Second, after the restart."
    metrics = await setup.gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_pool_reconnects_total", provider=kind,
                        reason="server_close") >= 1


# ---- Uplift AI: one Socket.IO connection, requests multiplexed on it -------------------------------


async def test_uplift_all_utterances_of_a_call_go_over_one_connection(remote):
    setup = await remote("uplift")
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
    assert setup.connections == 2  # the call's and the spare behind it
    assert fake_texts(setup) == texts and {e["socket"] for e in setup.fake["log"]} == {1}
    metrics = await setup.gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_pool_hits_total", provider="uplift") == 1
    assert metric_value(metrics, "tts_gateway_pool_misses_total", provider="uplift") == 0


async def test_uplift_two_overlapping_requests_on_one_connection_are_two_clean_utterances(remote):
    """Two calls share one socket; both speak at once; the fake interleaves the two
    requests' chunks on the wire; each caller hears exactly its own audio."""
    setup = await remote("uplift", fake_profile={"burst_factor": 4.0},
                         pool={"calls_per_connection": 2})
    texts = {"a": "The first caller hears this sentence about a parcel.",
             "b": "The second caller hears another one, about a refund."}
    url = f"{setup.gw.ws_url}/v1/media/twilio"
    async with TwilioCallSim(url) as sim_a, TwilioCallSim(url) as sim_b:
        sims = {"a": sim_a, "b": sim_b}
        controls = {k: await open_control(setup.gw, s.call_sid) for k, s in sims.items()}
        ids = {k: await speak(setup, s.call_sid, texts[k]) for k, s in sims.items()}
        for k in sims:
            done = await controls[k].next_event("speech.done", speech_id=ids[k], timeout=30)
            assert done["interrupted"] is False and "error" not in done
        shared = {k: setup.session_of(s.call_sid).connection for k, s in sims.items()}
        assert shared["a"] is shared["b"]  # one connection for both calls
        for s in sims.values():
            await s.hangup()
    log = {e["text"]: e for e in setup.fake["log"]}
    assert {e["socket"] for e in log.values()} == {1}
    wire = [rid for _, rid in setup.fake["wire"]]
    spans = [(wire.index(r), len(wire) - 1 - wire[::-1].index(r))
             for r in (log[texts["a"]]["request_id"], log[texts["b"]]["request_id"])]
    assert max(s[0] for s in spans) < min(s[1] for s in spans), "no overlap on the wire"
    for k, sim in sims.items():
        assert sim.result.violations == []
        assert_exactly(sim.result.heard, log[texts[k]]["audio"])
    assert log[texts["a"]]["audio"][:4000] != log[texts["b"]]["audio"][:4000]


async def test_uplift_sentences_of_one_utterance_are_pipelined_and_played_in_order(remote):
    """Streamed sentences go out as requests at once (pipelined on the connection); the
    second overlaps the first on the wire, and the caller hears first then second."""
    setup = await remote("uplift", fake_profile={"burst_factor": 3.0})
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        await control.ws.send_json({"type": "speak",
                                    "text": "A rather long first sentence, to be slow. "})
        await control.ws.send_json({"type": "speak", "text": "Short second.", "flush": True})
        first = await control.next_event("speech.first_audio", timeout=20)
        done = await control.next_event("speech.done", speech_id=first["speech_id"], timeout=30)
        assert done["interrupted"] is False and "error" not in done
        await sim.hangup()
    one, two = setup.fake["log"]
    assert (one["text"], two["text"]) == ("A rather long first sentence, to be slow.",
                                          "Short second.")
    wire = [rid for _, rid in setup.fake["wire"]]
    assert wire.index(two["request_id"]) < len(wire) - 1 - wire[::-1].index(one["request_id"])
    assert_exactly(sim.result.heard, one["audio"] + two["audio"])


# ---- Telnyx: one utterance per socket, the next one warm --------------------------------------------


async def test_telnyx_five_utterances_use_five_sockets_none_waits_for_a_handshake(remote):
    handshake_ms, first_audio_ms = 600, 30
    setup = await remote("telnyx", fake_profile={"handshake_ms": handshake_ms,
                                                 "first_audio_ms": first_audio_ms,
                                                 "burst_factor": 10.0})
    texts = ["Hello, thanks for calling.", "Your order has shipped.", "It left on Monday.",
             "It arrives on Tuesday.", "Anything else today?"]
    asked: list[float] = []
    latencies: list[float] = []
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        for text in texts:
            asked.append(time.monotonic())
            speech_id = await speak(setup, sim.call_sid, text)
            first = await control.next_event("speech.first_audio", speech_id=speech_id,
                                             timeout=30)
            latencies.append(first["latency_ms"])
            done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
            assert done["interrupted"] is False and "error" not in done
        assert setup.session_of(sim.call_sid).connections_used == 5
        await sim.hangup()
    assert sim.result.violations == []
    assert fake_texts(setup) == texts
    sockets = {s["n"]: s for s in setup.fake["sockets"]}
    used = [sockets[e["socket"]] for e in setup.fake["log"]]
    assert len({s["n"] for s in used}) == 5  # one socket per utterance...
    assert all(s["ended"] == "final" for s in used)
    # ...each opened and handshaken before its utterance was even asked for: the 600 ms
    # handshake was never in an utterance's path (the structural proof)...
    for sock, t in zip(used, asked):
        assert sock["accepted_at"] < sock["handshake_at"] < t < sock["first_text_at"]
    # ...and the latencies show it (generous bound: half the handshake + the fake's TTFA)
    assert all(ms < handshake_ms / 2 + first_audio_ms for ms in latencies[1:]), latencies
    assert setup.connections == 6  # the five, and the next one already warm
    metrics = await setup.gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_pool_hits_total", provider="telnyx") == 5
    assert metric_value(metrics, "tts_gateway_pool_misses_total", provider="telnyx") == 0
    assert "tts_gateway_pool_reconnects_total{" not in metrics  # spent sockets are no reconnects


async def test_telnyx_markdown_from_the_bot_is_stripped_before_it_is_sent(remote):
    setup = await remote("telnyx")
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        for piece in ["## **Great news!** Your order `A-123`", " has shipped. See [the tracking",
                      " page](https://example.com/t?id=1) for _details_."]:
            await control.ws.send_json({"type": "speak", "text": piece})
        await control.ws.send_json({"type": "speak", "text": "", "flush": True})
        first = await control.next_event("speech.first_audio", timeout=20)
        done = await control.next_event("speech.done", speech_id=first["speech_id"], timeout=30)
        assert done["interrupted"] is False and "error" not in done
        await sim.hangup()
    [sock] = [s for s in setup.fake["sockets"] if s["texts"]]
    sent = "".join(sock["texts"])
    assert not set(sent) & set("*#`[]_") and "https://" not in sent
    assert sent.split() == ("Great news! Your order A-123 has shipped. "
                            "See the tracking page for details.").split()
    assert len(sim.result.frames) * 0.020 == pytest.approx(setup.produced_seconds(), rel=0.05)


async def test_telnyx_idle_sockets_are_refreshed_before_the_inactivity_timeout(remote):
    setup = await remote("telnyx", fake_profile={"inactivity_timeout_s": 1.0},
                         options={"inactivity_timeout_s": 1})
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        await asyncio.sleep(2.5)  # the warm socket would have timed out twice meanwhile
        speech_id = await speak(setup, sim.call_sid, "Are you still there?")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        await sim.hangup()
    assert fake_texts(setup) == ["Are you still there?"]
    assert [s.get("ended") for s in setup.fake["sockets"]].count("inactivity") == 0
    metrics = await setup.gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_pool_reconnects_total", provider="telnyx",
                        reason="idle_refresh") >= 2
    assert metric_value(metrics, "tts_gateway_pool_reconnects_total", provider="telnyx",
                        reason="server_close") == 0
