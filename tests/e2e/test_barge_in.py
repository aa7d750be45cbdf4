"""Barge-in end to end: the real server on loopback, the embedded voice speaking, and the
carrier simulator's caller speaking real speech (Piper and espeak-ng phrases) over it.

One gateway for the module; each test is one short call. Detection delays (the caller's
first speech frame sent -> the carrier's clear) are printed, not asserted.
"""

from __future__ import annotations

import asyncio
import random

import pytest
import pytest_asyncio
from telcodecs import Transcoder, ulaw_encode

from gateway.core.speech import Utterance
from gateway.http.keys import CALLS
from gateway.sim.carriers import caller_speech as cs
from gateway.sim.carriers import make_call
from tests.conftest import base_config, running_gateway
from tests.e2e.test_twilio_call import LONG_TEXT, metric_value, open_control

pytestmark = pytest.mark.asyncio(loop_scope="module")

SENTENCE = "Please hold while I look that up for you, it will only take a moment."
DELAYS: list[float] = []


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gw():
    data = base_config()
    data["routes"]["barge"] = {"provider": "local", "barge_in": {"mode": "speech"}}
    async with running_gateway(data) as gateway:
        yield gateway
    if DELAYS:
        print(f"\nbarge-in delay, first speech frame sent -> clear received: "
              f"{', '.join(f'{d * 1000:.0f}' for d in DELAYS)} ms")


@pytest.fixture(scope="module")
def phrases() -> dict[str, list[bytes]]:
    texts = cs.PHRASES[:2]
    return {"piper": [cs.trimmed(p, 8000) for p in cs.piper_phrases(texts, 8000)],
            "espeak": [cs.trimmed(p, 8000) for p in cs.espeak_phrases(texts, 8000)]}


def server_call(gw, call_id: str):
    return gw.app[CALLS][call_id]


async def speak(gw, sim, text: str) -> str:
    status, body = await gw.post_json(f"/v1/calls/{sim.call_id}/speak", {"text": text})
    assert status == 202, body
    return body["speech_id"]


@pytest.mark.parametrize("carrier,fmt,voice,level", [
    ("twilio", None, "piper", -10.0),
    ("twilio", None, "espeak", -35.0),
    ("twilio", None, "piper", -35.0),
    ("vonage", "l16/16000", "espeak", -20.0),
])
async def test_caller_speech_interrupts_a_long_utterance(gw, phrases, carrier, fmt, voice,
                                                         level):
    speech = cs.at_level(phrases[voice][0], 8000, level)
    async with make_call(carrier, gw.ws_url, route="barge", media_format=fmt) as sim:
        control = await open_control(gw, sim.call_id)
        speech_id = await speak(gw, sim, LONG_TEXT)
        await control.next_event("speech.first_audio", speech_id=speech_id)
        await asyncio.sleep(random.uniform(0.2, 1.5))
        sent_at = await sim.speak_as_caller(speech, 8000)
        started = await control.next_event("caller.speech_started")
        done = await control.next_event("speech.done", speech_id=speech_id)
        assert done["interrupted"] is True and done["cause"] == "speech"
        clear_at = await sim.wait_for_clear()
        DELAYS.append(clear_at - sent_at)
        await asyncio.sleep(0.5)  # a late frame of the cut utterance would arrive by now
        late = [t for t, _ in sim.result.frames if t > clear_at]
        assert late == [], f"{len(late)} frames after the clear"
        stopped = await control.next_event("caller.speech_stopped")
        assert stopped["at_ms"] > started["at_ms"] >= 0
        assert stopped["speech_ms"] == stopped["at_ms"] - started["at_ms"]
    metrics = await gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_barge_ins_total", carrier=carrier,
                        cause="speech") >= 1


async def test_no_barge_in_on_noise_and_the_gateways_own_echo(gw):
    """-45 dBFS white noise plus what the caller hears coming back 25 dB weaker: the
    utterance plays to its end and no caller turn is reported."""
    noise = ulaw_encode(cs.white_noise(2.0, 8000, -45.0, seed=7))
    async with make_call("twilio", gw.ws_url, route="barge", inbound_audio=noise,
                         line_echo_db=25.0) as sim:
        control = await open_control(gw, sim.call_id)
        speech_id = await speak(gw, sim, SENTENCE + " " + SENTENCE)
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=40)
        assert done["interrupted"] is False
        assert sim.result.clears == []
        assert not [e for e in control.events if e["type"].startswith("caller.")]


async def test_an_uninterruptible_sentence_plays_to_its_end_while_the_caller_talks(
        gw, phrases):
    async with make_call("twilio", gw.ws_url, route="barge") as sim:
        control = await open_control(gw, sim.call_id)
        notice = server_call(gw, sim.call_id).speak(
            Utterance.whole(SENTENCE, interruptible=False))
        await control.next_event("speech.first_audio", speech_id=notice.id)
        await sim.speak_as_caller(cs.at_level(phrases["piper"][1], 8000, -15.0), 8000)
        await control.next_event("caller.speech_started")
        done = await control.next_event("speech.done", speech_id=notice.id)
        assert done["interrupted"] is False
        assert sim.result.clears == []


@pytest.mark.parametrize("mode,interrupts", [("dtmf", True), ("any", True), ("off", False),
                                             ("speech", False)])
async def test_a_key_interrupts_in_modes_dtmf_and_any(gw, mode, interrupts):
    async with make_call("twilio", gw.ws_url, route="barge") as sim:
        control = await open_control(gw, sim.call_id)
        server_call(gw, sim.call_id).set_barge_in(mode=mode)  # as a bot's barge_in does
        speech_id = await speak(gw, sim, SENTENCE)
        await control.next_event("speech.first_audio", speech_id=speech_id)
        await sim.send_dtmf("5")
        await control.next_event("dtmf", digit="5")
        done = await control.next_event("speech.done", speech_id=speech_id)
        if interrupts:
            assert done["interrupted"] is True and done["cause"] == "dtmf"
            await sim.wait_for_clear()
        else:
            assert done["interrupted"] is False
            assert sim.result.clears == []


async def test_speech_does_not_interrupt_when_barge_in_is_off_or_dtmf(gw, phrases):
    async with make_call("twilio", gw.ws_url, route="barge") as sim:
        control = await open_control(gw, sim.call_id)
        server_call(gw, sim.call_id).set_barge_in(mode="dtmf")
        speech_id = await speak(gw, sim, SENTENCE)
        await control.next_event("speech.first_audio", speech_id=speech_id)
        await sim.speak_as_caller(cs.at_level(phrases["espeak"][0], 8000, -15.0), 8000)
        done = await control.next_event("speech.done", speech_id=speech_id)
        assert done["interrupted"] is False
        assert sim.result.clears == []
        assert not [e for e in control.events if e["type"].startswith("caller.")]


async def test_caller_audio_at_reaches_the_gateway_as_sent_and_barges_in(gw, phrases):
    """``make_call(caller_audio=..., caller_audio_at=...)`` on Telnyx's big-endian L16 at
    16 kHz: the gateway receives exactly the speech converted to the wire (frame aligned,
    after silence), and it interrupts the utterance under way."""
    speech = cs.at_level(phrases["piper"][0], 8000, -20.0)
    transcoder = Transcoder("pcm_s16le", 8000, "pcm_s16le", 16000)
    expected = transcoder.feed(speech) + transcoder.flush()
    received = bytearray()
    async with make_call("telnyx", gw.ws_url, route="barge", media_format="l16/16000",
                         caller_audio=(speech, 8000), caller_audio_at=1.2) as sim:
        control = await open_control(gw, sim.call_id)
        server_call(gw, sim.call_id).caller_audio.subscribe(received.extend)
        speech_id = await speak(gw, sim, LONG_TEXT)
        done = await control.next_event("speech.done", speech_id=speech_id)
        assert done["interrupted"] is True and done["cause"] == "speech"
        await sim.wait_for(lambda r: len(sim.caller_speech_sent) == 1, what="the speech sent")
        await asyncio.sleep(len(speech) / 2 / 8000 + 0.3)
    start = bytes(received).find(expected[:640])
    assert start >= 0 and start % 640 == 0, "the speech is not in the caller's audio, aligned"
    assert bytes(received[start:start + len(expected)]) == expected
    assert not any(received[:start])  # silence before it
