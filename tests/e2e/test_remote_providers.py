"""Calls through a real gateway to each remote provider's faithful fake, over loopback, with
the Twilio simulator as the carrier: the tests every provider must pass, over the table of
all eight providers in ``remote_setup.PROVIDERS`` (each row's quirks change an expectation).

The caller hears the whole utterance (duration within 5 % of what the fake produced) and,
where the provider sends μ-law 8 kHz, exactly the bytes the fake sent; an interrupt lets no
late audio reach the carrier and stops the turn upstream with the provider's own verb; an
error frame gives the bot a ``speech.done`` with an error while the call goes on; a socket
the provider closed (restart, idle timeout) is healed before the next utterance without the
bot noticing; every utterance of a call goes over one connection; and streamed text goes
out sentence by sentence. Each provider's own quirks are tested in
``test_remote_providers_eleven_cartesia_deepgram.py`` and
``test_remote_providers_uplift_telnyx.py``.
"""

from __future__ import annotations

import asyncio

import pytest
from telcodecs import ulaw_decode

from gateway.http.keys import PROVIDERS as GATEWAY_PROVIDERS
from gateway.tts.providers.fakes import close_all
from gateway.carriers.twilio.sim import TwilioCallSim
from tests.e2e.remote_setup import Provider, assert_exactly, providers
from tests.e2e.speech_check import assert_speech
from tests.e2e.test_twilio_call import LONG_TEXT, metric_value, open_control


@pytest.mark.parametrize("p", providers())
async def test_the_caller_hears_the_whole_utterance(remote, p: Provider):
    setup = await remote(p.kind)
    text = "Your order has shipped. It will arrive on Tuesday between nine and noon."
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await setup.speak(sim.call_sid, text)
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
    assert " ".join(e["text"] for e in setup.fake["log"]).split() == text.split()
    if p.asked_format:
        p.asked_format(setup)
    if p.ulaw_passthrough:  # the caller heard the provider's μ-law as sent, nothing transcoded
        assert_exactly(result.heard, b"".join(e["audio"] for e in setup.fake["log"]))


@pytest.mark.parametrize("p", providers())
async def test_interrupt_stops_the_utterance_and_no_late_audio_reaches_the_carrier(remote,
                                                                                   p: Provider):
    setup = await remote(p.kind, fake_profile=p.interrupt_profile)

    def assert_stopped_upstream():
        # the cut turn was stopped upstream with the provider's verb (close_context,
        # cancel, Clear, force-stop), once
        stopped = p.stops(setup)
        assert len(stopped) == 1
        if p.cut_turn:  # the cut turn's id (Deepgram has none)
            assert stopped[0] == p.cut_turn(setup)

    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await setup.speak(sim.call_sid, LONG_TEXT)
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
        # the utterance was ~16 s; the provider synthesized far more than the caller heard
        assert len(sim.result.frames) * 0.020 < 2.0 < setup.produced_seconds()
        if p.stops and p.stops_checked == "at_cut":
            assert_stopped_upstream()
        if p.counts_late_chunks:  # the cut turn's audio sent after the cut: dropped at the socket
            assert setup.session_of(sim.call_sid).connection.late_chunks_dropped > 0
        # and the call goes on: the next utterance plays in full
        speech_id = await setup.speak(sim.call_sid, "Sorry, go ahead.")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        # the providers that can cancel kept their socket; Smallest (no cancel: its socket
        # still carries the cut request's audio) and Telnyx (a socket serves one utterance)
        # moved the call to a fresh one
        assert setup.session_of(sim.call_sid).connections_used == p.connections_after_interrupt
        await sim.hangup()
    assert sim.result.violations == []
    if p.stops and p.stops_checked == "after_call":
        assert_stopped_upstream()
    if p.logs_exact_text:
        assert setup.fake["log"][-1]["text"] == "Sorry, go ahead."


@pytest.mark.parametrize("p", providers())
async def test_a_provider_error_frame_fails_that_utterance_only(remote, p: Provider):
    setup = await remote(p.kind, fake_profile={"fail_on": "FAILME"})
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await setup.speak(sim.call_sid, "Please FAILME now.")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=20)
        assert done["interrupted"] is False and p.error_text in done["error"]
        speech_id = await setup.speak(sim.call_sid, "This one works fine.")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        assert len(sim.result.frames) * 0.020 == pytest.approx(
            len("This one works fine.") / 15, rel=0.05)
        await sim.hangup()
    metrics = await setup.gw.metrics_text()
    assert sum(float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith('tts_gateway_tts_errors_total{kind="') and p.kind in line) == 1
    if p.checks_no_replay:
        assert setup.texts() == ["This one works fine."]  # the failed text was not replayed


@pytest.mark.parametrize("p", providers())
async def test_a_server_close_is_healed_before_the_next_utterance(remote, p: Provider):
    setup = await remote(p.kind)
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await setup.speak(sim.call_sid, "First, before the restart.")
        await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        before = setup.connections
        assert await close_all(setup.fake) >= 1  # the provider drops every socket
        await asyncio.sleep(0.3)
        speech_id = await setup.speak(sim.call_sid, "Second, after the restart.")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        assert setup.connections > before
        await sim.hangup()
    assert setup.texts()[-1] == "Second, after the restart."
    metrics = await setup.gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_pool_reconnects_total", provider=p.kind,
                        reason="server_close") >= 1


@pytest.mark.parametrize("p", providers(where=lambda p: p.idle))
async def test_an_idle_timeout_is_healed_without_the_bot_noticing(remote, p: Provider):
    fake_profile, pool, options = p.idle
    setup = await remote(p.kind, fake_profile=fake_profile, pool=pool, options=options)
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await setup.speak(sim.call_sid, "Hello there.")
        await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        leased = setup.session_of(sim.call_sid).connection
        await asyncio.sleep(2.0)  # the provider drops the call's idle socket meanwhile
        assert leased.closed
        speech_id = await setup.speak(sim.call_sid, "Are you still there?")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        await sim.hangup()
    assert setup.texts()[-1] == "Are you still there?"
    if p.records_closes:
        assert setup.fake["closed"]  # it was the provider's idle timeout that closed it


@pytest.mark.parametrize("p", providers(where=lambda p: p.one_connection_per_call))
async def test_all_utterances_of_a_call_go_over_one_connection(remote, p: Provider):
    setup = await remote(p.kind, pool={"min_idle": 1})
    await asyncio.sleep(0.2)
    assert setup.connections == 1  # the warm one
    texts = ["One.", "Two, a bit longer.", "Three is the last one."]
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        for text in texts:
            speech_id = await setup.speak(sim.call_sid, text)
            done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
            assert done["interrupted"] is False and "error" not in done
        assert setup.session_of(sim.call_sid).connections_used == 1
        await sim.hangup()
    # the call leased the warm socket, the pool opened one spare behind it, and three
    # utterances opened nothing more
    assert setup.connections == 2
    assert setup.texts() == texts
    if p.multiplexed:
        assert {e["socket"] for e in setup.fake["log"]} == {1}
    metrics = await setup.gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_pool_hits_total", provider=p.kind) == 1
    assert metric_value(metrics, "tts_gateway_pool_misses_total", provider=p.kind) == 0


@pytest.mark.parametrize("p", providers(where=lambda p: p.streamed))
async def test_streamed_tokens_are_sent_sentence_by_sentence_in_one_turn(remote, p: Provider):
    setup = await remote(p.kind, fake_profile=p.streamed_profile)
    setup.gw.app[GATEWAY_PROVIDERS][p.kind].driver.keepalive_s = p.keepalive_s
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
    # each sentence went out as soon as it was complete, not the whole text at the end
    assert setup.texts() == ["Thanks for waiting.", "Your order has shipped."]
    p.streamed(setup)
    assert len(sim.result.frames) * 0.020 == pytest.approx(setup.produced_seconds(), rel=0.05)


@pytest.mark.parametrize("item_per_sentence", [False, True], ids=["item_per_commit",
                                                                  "item_per_sentence"])
async def test_together_is_heard_whole_whichever_way_a_commit_is_cut_into_items(
        remote, item_per_sentence):
    """docs/protocols/tts-providers.md §3.5 leaves open whether a commit makes one audio item or one
    per sentence; the gateway commits a sentence at a time, so each commit makes one item
    either way and the end of the turn is the last commit's item, not the first item."""
    setup = await remote("together", fake_profile={"item_per_sentence": item_per_sentence})
    sentences = ["Your order has shipped.", "It will arrive on Tuesday.",
                 "The driver calls before arriving."]
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await setup.speak(sim.call_sid, " ".join(sentences))
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        assert setup.session_of(sim.call_sid).connection.late_chunks_dropped == 0
        await sim.hangup()
    assert setup.texts() == sentences  # an item per sentence, whichever reading
    assert len(sim.result.frames) * 0.020 == pytest.approx(setup.produced_seconds(), rel=0.05)
    metrics = await setup.gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_tts_errors_total", provider="together",
                        kind="frame_audio_after_done") == 0
