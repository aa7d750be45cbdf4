"""Uplift AI and Telnyx TTS through a real gateway to their fakes, over loopback, with the
Twilio simulator as the caller: what only they do. (The tests every provider passes are in
``test_remote_providers.py``.)

Uplift (Socket.IO, requests multiplexed on one connection): overlapping requests on it, of
two calls or of one utterance, come out as clean utterances. Telnyx (one utterance per
socket): five utterances use five sockets, each opened and handshaken before its utterance
was asked for, so a slow handshake is not in the first audio's path; markdown from the bot
is stripped; idle sockets are refreshed before the inactivity timeout.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.carriers.twilio.sim import TwilioCallSim
from tests.e2e.remote_setup import assert_exactly
from tests.e2e.test_twilio_call import metric_value, open_control

# ---- Uplift AI: one Socket.IO connection, requests multiplexed on it -----------------------------


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
        ids = {k: await setup.speak(s.call_sid, texts[k]) for k, s in sims.items()}
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


# ---- Telnyx: one utterance per socket, the next one warm -----------------------------------------


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
            speech_id = await setup.speak(sim.call_sid, text)
            first = await control.next_event("speech.first_audio", speech_id=speech_id,
                                             timeout=30)
            latencies.append(first["latency_ms"])
            done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
            assert done["interrupted"] is False and "error" not in done
        assert setup.session_of(sim.call_sid).connections_used == 5
        await sim.hangup()
    assert sim.result.violations == []
    assert setup.texts() == texts
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
        speech_id = await setup.speak(sim.call_sid, "Are you still there?")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        await sim.hangup()
    assert setup.texts() == ["Are you still there?"]
    assert [s.get("ended") for s in setup.fake["sockets"]].count("inactivity") == 0
    metrics = await setup.gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_pool_reconnects_total", provider="telnyx",
                        reason="idle_refresh") >= 2
    assert metric_value(metrics, "tts_gateway_pool_reconnects_total", provider="telnyx",
                        reason="server_close") == 0
