"""What the caller actually heard: ``speech.done`` of a cut utterance carries ``played_ms``
and ``heard_text``, through a real gateway, a carrier's simulator and a provider's fake.

The fakes voice each word as a tone that names it (``tag_words``, see
:mod:`gateway.tts.providers.fake_voice`), so the test decodes what the simulated caller heard and
holds it against what the gateway says was heard: the sentences heard out (a mark after
each, where the carrier has marks; the media clock where it has none), then the words of
the cut sentence whose audio played (where the provider sends word timings).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.http.keys import TCP_LISTENERS
from gateway.http.loopback import serve_on_loopback
from gateway.sim.carriers import make_call
from gateway.tts.providers.fake_voice import heard_tones, text_tones
from tests.conftest import base_config, start_gateway
from tests.e2e.remote_setup import PROVIDERS, fake_provider_config
from tests.e2e.test_twilio_call import metric_value, open_control

KEY_ENV = {"FAKE_TTS_KEY": "test-key"}
SENTENCES = ["Your order shipped this morning.",
             "It should reach you by Friday evening.",
             "The driver will call before arriving at your door."]
TEXT = " ".join(SENTENCES)
CHARS_PER_SECOND = 30.0  # the fake's pace: a sentence is about 1.1 to 1.7 s long
FRAME_S = 0.020
#: The providers that send word timings, each its own way (see their protocol modules).
WORD_TIMED = ("cartesia", "elevenlabs", "inworld", "smallest", "together")


def seconds_of(sentence: str) -> float:
    return max(0.2, len(sentence) / CHARS_PER_SECOND)


@pytest.fixture
async def tagged():
    """``await tagged(provider_kind)`` -> a gateway whose default route speaks with the
    tone-tagged fake, reachable from Twilio, Plivo, Vonage and AudioSocket."""
    cleanups = []

    async def start(kind: str = "cartesia"):
        p = PROVIDERS[kind]
        fake = p.make_app(**{**p.fake_profile, "tag_words": True,
                             "chars_per_second": CHARS_PER_SECOND})
        runner, port = await serve_on_loopback(fake)
        cleanups.append(runner.cleanup)
        data = base_config()
        data["providers"] = {kind: fake_provider_config(kind, port)}
        data["routes"] = {"bot": {"provider": kind}}
        data["default_route"] = "bot"
        data["carriers"] = {name: {} for name in ("twilio", "plivo", "vonage")}
        data["carriers"]["audiosocket"] = {"host": "127.0.0.1", "port": 0, "route": "bot"}
        gw = await start_gateway(data, KEY_ENV)
        cleanups.append(gw.runner.cleanup)
        cleanups.append(gw.session.close)
        return gw

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


def dial(gw, carrier: str):
    if carrier == "audiosocket":
        port = gw.app[TCP_LISTENERS]["audiosocket"].sockets[0].getsockname()[1]
        return make_call(carrier, f"tcp://127.0.0.1:{port}")
    return make_call(carrier, gw.ws_url, route="bot", media_format="mulaw/8000")


async def cut_while_heard(gw, call, control, text: str, at_s: float) -> dict:
    """Speak ``text``, interrupt once the caller has heard ``at_s`` seconds of it, and
    return the utterance's ``speech.done``."""
    status, body = await gw.post_json(f"/v1/calls/{call.call_id}/speak", {"text": text})
    assert status == 202, body
    speech_id = body["speech_id"]
    async with asyncio.timeout(30):
        while call.result.heard_seconds < at_s:
            await asyncio.sleep(0.01)
    status, _ = await gw.post_json(f"/v1/calls/{call.call_id}/interrupt")
    assert status == 200
    done = await control.next_event("speech.done", speech_id=speech_id, timeout=10)
    assert done["interrupted"] is True and done["cause"] == "api"
    await asyncio.sleep(0.3)  # the clear reaches the carrier; nothing more plays
    return done


# Twilio: marks, echoed on clear (meaning "cut"); Plivo: marks, dropped on clear;
# AudioSocket: no marks at all (the media clock). Every provider that sends word timings,
# on a carrier with marks and on one without.
@pytest.mark.parametrize("carrier, kind", [
    ("twilio", "cartesia"), ("plivo", "cartesia"), ("audiosocket", "cartesia"),
    *[(carrier, kind) for kind in WORD_TIMED[1:] for carrier in ("twilio", "audiosocket")]])
async def test_cut_in_the_third_sentence_the_bot_learns_the_two_heard_and_the_time(
        tagged, carrier, kind):
    gw = await tagged(kind)
    async with dial(gw, carrier) as call:
        control = await open_control(gw, call.call_id)
        into_third = seconds_of(SENTENCES[0]) + seconds_of(SENTENCES[1]) + 0.6
        done = await cut_while_heard(gw, call, control, TEXT, into_third)
        result = call.result
        await call.hangup()
    heard = heard_tones(result.heard_pcm16(), result.sample_rate)
    print(f"{carrier}/{kind}: played_ms={done['played_ms']} simulator heard "
          f"{result.heard_seconds * 1000:.0f} ms; heard_text={done['heard_text']!r}")
    # the gateway's account of the time heard matches the caller's, within a frame or two
    assert done["played_ms"] == pytest.approx(result.heard_seconds * 1000, abs=3 * FRAME_S * 1000)
    # the first two sentences, whole; then the words of the third that played (from the
    # provider's word timings)
    assert done["heard_text"].startswith(" ".join(SENTENCES[:2]) + " ")
    rest = done["heard_text"][len(" ".join(SENTENCES[:2])):].strip()
    assert rest and SENTENCES[2].startswith(rest) and rest != SENTENCES[2]
    # and that is what the caller heard: those sentences, then part of the third, to the
    # word (the caller may have heard the start of one more, cut inside it)
    first_two = text_tones(" ".join(SENTENCES[:2]))
    assert heard[:len(first_two)] == first_two
    third = heard[len(first_two):]
    assert 0 < len(third) < len(text_tones(SENTENCES[2]))
    assert text_tones(SENTENCES[2])[:len(third)] == third
    said = text_tones(done["heard_text"])
    assert heard[:len(said)] == said and len(heard) - len(said) <= 1
    assert result.violations == []


async def test_an_utterance_cut_before_its_first_sentence_ended_was_heard_in_part(tagged):
    gw = await tagged()
    async with dial(gw, "twilio") as call:
        control = await open_control(gw, call.call_id)
        done = await cut_while_heard(gw, call, control, TEXT, 0.4)
        result = call.result
        await call.hangup()
    assert done["heard_text"] and SENTENCES[0].startswith(done["heard_text"])
    said = text_tones(done["heard_text"])
    heard = heard_tones(result.heard_pcm16(), result.sample_rate)
    assert heard[:len(said)] == said and len(heard) - len(said) <= 1
    assert done["played_ms"] == pytest.approx(result.heard_seconds * 1000, abs=3 * FRAME_S * 1000)


async def test_the_embedded_voice_tells_the_sentences_heard(gateway_config):
    """Piper: sentence by sentence (each one's audio comes whole), marks after each."""
    gateway_config["routes"]["quiet"] = {"provider": "local"}
    gw = await start_gateway(gateway_config)
    try:
        async with make_call("twilio", gw.ws_url, route="quiet") as call:
            control = await open_control(gw, call.call_id)
            _, body = await gw.post_json(f"/v1/calls/{call.call_id}/speak", {"text": TEXT})
            speech_id = body["speech_id"]
            await call.wait_for_mark(f"{speech_id}.2", timeout=60)  # the second one heard
            started = time.monotonic()
            await asyncio.sleep(0.3)
            await gw.post_json(f"/v1/calls/{call.call_id}/interrupt")
            done = await control.next_event("speech.done", speech_id=speech_id, timeout=10)
            await asyncio.sleep(0.3)
            result = call.result
            await call.hangup()
    finally:
        await gw.session.close()
        await gw.runner.cleanup()
    print(f"piper: played_ms={done['played_ms']} simulator heard "
          f"{result.heard_seconds * 1000:.0f} ms; heard_text={done['heard_text']!r}; "
          f"cut {time.monotonic() - started:.2f} s after the second mark")
    assert done["interrupted"] is True
    assert done["heard_text"] == " ".join(SENTENCES[:2])
    assert done["played_ms"] == pytest.approx(result.heard_seconds * 1000, abs=3 * FRAME_S * 1000)


async def test_a_cached_greeting_still_tells_the_sentences_heard(gateway_config):
    """The second call plays the greeting from the prompt cache, with no synthesis: the
    marks after its sentences come from the recording, so a cut still says what was heard."""
    gateway_config["routes"]["greet"] = {"provider": "local", "greeting": TEXT}
    gw = await start_gateway(gateway_config)
    dones = []
    try:
        for _ in range(2):
            async with make_call("twilio", gw.ws_url, route="greet") as call:
                control = await open_control(gw, call.call_id)
                started = await control.next_event("speech.started", timeout=30)
                speech_id = started["speech_id"]
                await call.wait_for_mark(f"{speech_id}.2", timeout=60)
                await asyncio.sleep(0.3)
                await gw.post_json(f"/v1/calls/{call.call_id}/interrupt")
                dones.append(await control.next_event("speech.done", speech_id=speech_id,
                                                      timeout=10))
                await asyncio.sleep(0.3)
                result = call.result
                await call.hangup()
        metrics = await gw.metrics_text()
    finally:
        await gw.session.close()
        await gw.runner.cleanup()
    assert metric_value(metrics, "tts_gateway_prompt_cache_total", result="hit") == 1
    for done in dones:
        assert done["interrupted"] is True
        assert done["heard_text"] == " ".join(SENTENCES[:2])
    assert dones[1]["played_ms"] == pytest.approx(result.heard_seconds * 1000,
                                                  abs=3 * FRAME_S * 1000)
