"""Every carrier end to end: the real server on loopback, the real embedded voice, and each
carrier's simulator speaking its own wire protocol with its own buffering.

The caller must hear speech (decoded from the carrier's wire format and checked against
noise: a wrong codec, rate or byte order fails), marks/checkpoints/notifies must drive
``speech.done``, an interrupt must clear with that carrier's semantics and no late audio,
DTMF must reach the bot, and hanging up must clean the call away.
"""

from __future__ import annotations

import asyncio
import statistics

import pytest

from gateway.http.keys import TCP_LISTENERS
from gateway.sim.carriers import make_call
from tests.conftest import base_config, running_gateway
from tests.e2e.speech_check import assert_speech
from tests.e2e.test_twilio_call import LONG_TEXT, metric_value, open_control
import itertools

SENTENCE = "Your order has shipped, and it will arrive on Tuesday morning."

# (carrier, format the carrier announces): every encoding and rate each carrier offers
# that the gateway must produce, so the same utterance is checked in each of them. Telnyx
# plays what its answer document asked for (carriers.telnyx.codec, PCMU here); its other
# formats: tests/carriers/test_telnyx_played_format.py.
FORMATS = [
    ("twilio", "mulaw/8000"),
    ("signalwire", "mulaw/8000"),
    ("telnyx", "mulaw/8000"),
    ("plivo", "mulaw/8000"),
    ("plivo", "l16/16000"),
    ("vonage", "l16/16000"),
    ("vonage", "l16/8000"),
    ("exotel", "l16/8000"),
    ("exotel", "l16/24000"),
    ("asterisk", "mulaw/8000"),
    ("asterisk", "l16/16000"),
    ("audiosocket", "l16/8000"),
]
CARRIERS = ["twilio", "signalwire", "telnyx", "plivo", "vonage", "exotel", "asterisk",
            "audiosocket"]
# bytes of one media message from the gateway, by carrier and format
EXOTEL_CHUNK = {8000: 3200, 16000: 3200, 24000: 3840}  # >= 3.2 KB and a multiple of 320


def expected_chunk(carrier: str, fmt: str) -> int:
    encoding, rate = fmt.split("/")
    per_20ms = int(rate) // 50 * (2 if encoding == "l16" else 1)
    return EXOTEL_CHUNK[int(rate)] if carrier == "exotel" else per_20ms


@pytest.fixture(scope="module")
def carriers_config() -> dict:
    data = base_config()
    data["routes"]["quiet"] = {"provider": "local"}  # no greeting: the test speaks
    data["carriers"] = {name: {} for name in CARRIERS}
    data["carriers"]["audiosocket"] = {"host": "127.0.0.1", "port": 0, "route": "quiet"}
    return data


@pytest.fixture
async def gw(carriers_config):
    async with running_gateway(carriers_config) as gateway:
        yield gateway


def dial(gw, carrier: str, fmt: str | None = None):
    if carrier == "audiosocket":
        port = gw.app[TCP_LISTENERS]["audiosocket"].sockets[0].getsockname()[1]
        return make_call(carrier, f"tcp://127.0.0.1:{port}", media_format=fmt)
    return make_call(carrier, gw.ws_url, route="quiet", media_format=fmt)


async def speak(gw, call_id: str, text: str) -> str:
    status, body = await gw.post_json(f"/v1/calls/{call_id}/speak", {"text": text})
    assert status == 202, body
    return body["speech_id"]


async def eventually(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("carrier,fmt", FORMATS, ids=[f"{c}-{f}" for c, f in FORMATS])
async def test_caller_hears_speech_in_the_carriers_format_and_the_call_cleans_up(gw, carrier,
                                                                                  fmt):
    async with dial(gw, carrier, fmt) as call:
        control = await open_control(gw, call.call_id)
        speech_id = await speak(gw, call.call_id, SENTENCE)
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=60)
        assert done["interrupted"] is False and "error" not in done
        if call.has_marks:  # done came from the carrier's echo, i.e. after playback
            assert speech_id in [name for _, name in call.result.marks_sent_back]
        await call.send_dtmf("7#")
        assert (await control.next_event("dtmf"))["digit"] == "7"
        assert (await control.next_event("dtmf"))["digit"] == "#"
        await call.hangup()
    result = call.result
    assert result.violations == []
    chunk = expected_chunk(carrier, fmt)
    assert result.frames and all(len(payload) == chunk for _, payload in result.frames)
    stats = assert_speech(result.heard_pcm16(), result.sample_rate)
    assert stats["seconds"] > 2.0  # the whole sentence, not a fragment

    async def cleaned_up() -> bool:
        status, _ = await gw.get_json(f"/v1/calls/{call.call_id}")
        text = await gw.metrics_text()
        return (status == 404
                and metric_value(text, "tts_gateway_active_calls", carrier=carrier) == 0)

    await eventually(cleaned_up)
    text = await gw.metrics_text()
    ended = sum(metric_value(text, "tts_gateway_calls_total", carrier=carrier, outcome=o)
                for o in ("completed", "disconnected"))
    assert ended == 1


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_interrupt_clears_with_the_carriers_semantics_and_speech_goes_on(gw, carrier):
    async with dial(gw, carrier) as call:
        control = await open_control(gw, call.call_id)
        speech_id = await speak(gw, call.call_id, LONG_TEXT)
        await control.next_event("speech.first_audio", speech_id=speech_id, timeout=30)
        await asyncio.sleep(0.4)
        status, body = await gw.post_json(f"/v1/calls/{call.call_id}/interrupt")
        interrupted_at = asyncio.get_running_loop().time()
        assert status == 200 and body["interrupted"] == 1
        done = await control.next_event("speech.done", speech_id=speech_id)
        assert done["interrupted"] is True
        if call.has_clear:
            stop_at = await call.wait_for_clear()
        else:  # AudioSocket holds nothing: stopping to send is the whole barge-in
            stop_at = interrupted_at + 0.05
        await asyncio.sleep(1.0)  # late audio of the cut utterance would arrive by now
        result = call.result
        late = [t for t, _ in result.frames if t > stop_at]
        assert late == [], f"{len(late)} frames after the barge-in"
        assert result.heard_seconds < 3.0  # LONG_TEXT runs ~15 s: it was cut
        if carrier == "plivo":
            assert "clearedAudio" in [kind for _, kind in result.notices_sent]
        if carrier == "vonage":
            assert "websocket:cleared" in [kind for _, kind in result.notices_sent]
        # after a clear the stream still plays (a reported Telnyx pitfall)
        heard_before = result.heard_seconds
        next_id = await speak(gw, call.call_id, "Still here.")
        done = await control.next_event("speech.done", speech_id=next_id, timeout=30)
        assert done["interrupted"] is False
        assert call.result.heard_seconds > heard_before + 0.5
        await call.hangup()
    assert call.result.violations == []
    text = await gw.metrics_text()
    assert metric_value(text, "tts_gateway_barge_ins_total", carrier=carrier, cause="api") == 1


@pytest.mark.parametrize("carrier,lead", [("vonage", 0.04), ("audiosocket", 0.0)])
async def test_frames_leave_on_the_clock_where_the_carrier_cannot_buffer(gw, carrier, lead):
    """Vonage wants one 20 ms frame per message and AudioSocket plays frames as they come:
    the gateway sends each frame near its play time, never a burst ahead of it.

    Measured as the audio the carrier holds when each frame arrives (frames play back to
    back in arrival order): a burst raises it, a busy machine's late ticks only lower it,
    so the bound holds on a loaded machine too."""
    async with dial(gw, carrier) as call:
        control = await open_control(gw, call.call_id)
        speech_id = await speak(gw, call.call_id, SENTENCE)
        await control.next_event("speech.done", speech_id=speech_id, timeout=60)
        await call.hangup()
    result = call.result
    frame_bytes = result.sample_rate // 50 * 2
    assert len(result.frames) > 100
    assert all(len(payload) == frame_bytes for _, payload in result.frames)
    held, playing_until = [], 0.0
    for arrival, _ in result.frames:
        held.append(max(0.0, playing_until - arrival))
        playing_until = max(playing_until, arrival) + 0.020
    times = [t for t, _ in result.frames]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    print(f"{carrier}: {len(times)} frames over {times[-1] - times[0]:.3f} s, median gap "
          f"{statistics.median(gaps) * 1000:.1f} ms, most audio held at the carrier "
          f"{max(held) * 1000:.1f} ms (lead {lead * 1000:.0f} ms)")
    # the lead, plus the frame in the tick and half a tick of scheduling slack
    assert max(held) <= lead + 0.020 + 0.010 + 0.002
    assert 0.015 <= statistics.median(gaps) <= 0.025
