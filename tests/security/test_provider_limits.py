"""What a TTS provider may make the gateway hold: a runaway provider against a real gateway.

A provider that sends audio without end, faster than real time, gets no more of the call's
memory than ``limits.max_buffered_audio_s`` in the playout (the call stops pulling) and as
much again in its turn's queue at the socket, then its turn is cut with an error; the call
plays what it holds, says so in ``speech.done`` and speaks the next utterance. A socket
other calls share is not stalled by it. A provider message over
``limits.max_provider_message_bytes`` is refused: the turn fails, the refusal is counted,
the connection is replaced. The fakes' runaway knobs (``flood_on``, ``oversize_on``) are in
:mod:`gateway.tts.providers.fakes`.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from types import SimpleNamespace

import pytest

from gateway.carriers.events import MediaFormat
from gateway.core.playout import FRAME_SECONDS, MediaClock, Playout
from gateway.http.keys import CALLS
from gateway.metrics import Metrics
from gateway.carriers.twilio.sim import TwilioCallSim
from tests.e2e.remote_setup import PROVIDERS, Setup
from tests.e2e.test_twilio_call import metric_value, open_control

LIMIT_S = 2.0  # limits.max_buffered_audio_s in these tests (the default is 30)
#: one provider chunk (100 ms in the fakes) lands before the call checks the limit
CHUNK_S = 0.1
RUNAWAY_KINDS = ["cartesia", "together", "uplift"]  # JSON, JSON with contexts, Socket.IO


async def _sample(setup: Setup, call_sid: str, peaks: dict[str, float]) -> None:
    """Record the most audio the call's playout and its turn's queue held (every 5 ms)."""
    call = setup.gw.app[CALLS][call_sid]
    while True:
        peaks["playout"] = max(peaks["playout"], call.playout.queued_seconds())
        conn = setup.session_of(call_sid).connection
        if conn is not None:
            for queue in list(conn.turns.values()):
                peaks["turn"] = max(peaks["turn"], queue.audio_s)
        await asyncio.sleep(0.005)


async def _speaks_fine(setup: Setup, control, call_sid: str) -> None:
    speech_id = await setup.speak(call_sid, "This one works fine.")
    done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
    assert done["interrupted"] is False and "error" not in done


def _errors(metrics: str, kind: str, error: str) -> float:
    return metric_value(metrics, "tts_gateway_tts_errors_total", provider=kind, kind=error)


@pytest.mark.parametrize("kind", RUNAWAY_KINDS)
async def test_audio_without_end_is_held_to_the_limit_then_the_utterance_is_cut(remote, kind):
    setup = await remote(kind, fake_profile={"flood_on": "FLOOD"},
                         limits={"max_buffered_audio_s": LIMIT_S})
    peaks = {"playout": 0.0, "turn": 0.0}
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        sampler = asyncio.create_task(_sample(setup, sim.call_sid, peaks))
        speech_id = await setup.speak(sim.call_sid, "Please FLOOD the line.")
        try:
            done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        finally:
            sampler.cancel()
        heard_s = len(sim.result.frames) * FRAME_SECONDS
        # the caller heard what was held, then the bot learnt why it ended
        assert done["interrupted"] is False
        assert "limits.max_buffered_audio_s" in done["error"]
        assert [name for _, name in sim.result.marks_sent_back] == [speech_id]
        await _speaks_fine(setup, control, sim.call_sid)
        await sim.hangup()
    print(f"{kind}: peak {peaks['playout']:.2f} s in the playout, {peaks['turn']:.2f} s in "
          f"the turn's queue; the caller heard {heard_s:.2f} s of the flood")
    assert 0 < peaks["playout"] <= LIMIT_S + CHUNK_S + 0.05
    assert 0 < peaks["turn"] <= LIMIT_S
    assert sim.result.clears == [] and sim.result.violations == []
    assert setup.fake["cancels"]  # the cut turn was stopped upstream
    metrics = await setup.gw.metrics_text()
    assert _errors(metrics, kind, "overflow") == 1
    assert metric_value(metrics, "tts_gateway_utterances_total", carrier="twilio",
                        outcome="failed") == 1


async def test_a_flooding_turn_does_not_stall_another_call_on_the_same_socket(remote):
    """The other call's audio comes at 1.5 times real time, over about three seconds;
    the flood starts in the middle of it, on the same socket, and is cut."""
    setup = await remote("cartesia", fake_profile={"flood_on": "FLOOD", "burst_factor": 1.5},
                         pool={"max": 1, "calls_per_connection": 2},
                         limits={"max_buffered_audio_s": LIMIT_S})
    text = "Your order has shipped. It will arrive on Tuesday between nine and noon."
    url = f"{setup.gw.ws_url}/v1/media/twilio"
    async with TwilioCallSim(url) as flooded, TwilioCallSim(url) as other:
        flooded_control = await open_control(setup.gw, flooded.call_sid)
        other_control = await open_control(setup.gw, other.call_sid)
        assert (setup.session_of(flooded.call_sid).connection
                is setup.session_of(other.call_sid).connection)  # one socket for both
        speech_id = await setup.speak(other.call_sid, text)
        await other_control.next_event("speech.first_audio", speech_id=speech_id, timeout=20)
        flood_id = await setup.speak(flooded.call_sid, "Please FLOOD the line.")
        flood_done = await flooded_control.next_event("speech.done", speech_id=flood_id,
                                                      timeout=30)
        assert "limits.max_buffered_audio_s" in flood_done["error"]
        done = await other_control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        await other.hangup()
        await flooded.hangup()
    print(f"the other call: {other.result.underruns} underrun(s)")
    # the whole text goes to Cartesia sentence by sentence (each sentence's end is known)
    produced = sum(PROVIDERS["cartesia"].seconds(e) for e in setup.fake["log"]
                   if e["text"].strip() in text)
    assert len(other.result.frames) * FRAME_SECONDS == pytest.approx(produced, rel=0.05)
    assert other.result.violations == []


@pytest.mark.parametrize("kind", RUNAWAY_KINDS)
async def test_an_oversize_provider_message_is_refused_and_counted(remote, kind):
    setup = await remote(kind, fake_profile={"oversize_on": "HUGE"})  # 8 MiB; the limit: 4 MiB
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await setup.speak(sim.call_sid, "Say HUGE now.")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False
        assert "limits.max_provider_message_bytes" in done["error"]
        assert sim.result.frames == []  # not a byte of it was played
        await _speaks_fine(setup, control, sim.call_sid)
        await sim.hangup()
    metrics = await setup.gw.metrics_text()
    refused = _errors(metrics, kind, "oversize")
    print(f"{kind}: {refused:.0f} oversize message(s) refused, {setup.connections} connections")
    assert refused >= 1
    assert setup.connections > 2  # the refusing sockets were replaced (warm + spare at start)
    assert metric_value(metrics, "tts_gateway_utterances_total", carrier="twilio",
                        outcome="failed") == 1


# ---- the parts: the playout's back-pressure, the embedded voice ------------------------------


def _playout() -> Playout:
    return Playout(MediaClock(Metrics()), lambda messages: None, lambda: 0, lambda f: f,
                   lead=0.04, carrier="twilio", on_error=lambda exc: None)


async def test_room_waits_while_the_playout_holds_more_than_asked_and_wakes_as_it_drains():
    playout = _playout()
    playout.begin_utterance()
    playout.extend([b"f"] * 100)  # 2 s
    waiter = asyncio.create_task(playout.room(1.0))
    now = 50.0
    for _ in range(40):  # 0.8 s played: still over 1 s queued
        playout.pump(now)
        now += FRAME_SECONDS
        await asyncio.sleep(0)
        assert not waiter.done()
    for _ in range(20):
        playout.pump(now)
        now += FRAME_SECONDS
        await asyncio.sleep(0)
    assert waiter.done() and playout.queued_seconds() <= 1.0
    # a barge-in (clear) or the end of the call (close) wakes a waiting producer too
    for stop in (playout.clear, playout.close):
        playout.extend([b"f"] * 100)
        waiter = asyncio.create_task(playout.room(1.0))
        await asyncio.sleep(0)
        assert not waiter.done()
        stop()
        await asyncio.wait_for(waiter, 1)


async def test_the_embedded_voice_synthesizes_one_sentence_ahead_of_what_the_call_took():
    from gateway.tts.piper import PiperProvider

    made = []

    class Model:  # twenty sentences of 0.1 s, counted as they are synthesized
        def synthesize(self, text):
            for n in range(20):
                made.append(n)
                yield SimpleNamespace(audio_int16_bytes=b"\0\0" * 2205)

    provider = PiperProvider("local")
    provider._model, provider.sample_rate = Model(), 22050
    try:
        session = await provider.open_session(MediaFormat("mulaw", 8000))
        async with aclosing(session.synthesize("Twenty sentences.")) as chunks:
            await anext(chunks)
            await asyncio.sleep(0.3)  # the call holds off (its playout is full)
            assert len(made) <= 2  # the sentence taken and the one after it
            rest = [chunk async for chunk in chunks]
        assert len(rest) == 19 and len(made) == 20
    finally:
        await provider.close()
