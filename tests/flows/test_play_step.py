"""A flow's ``play`` step plays a recorded prompt (gateway/prompts/recorded.py) and the flow
goes on when it has played, through the real server and a carrier simulator."""

from __future__ import annotations

import wave

import numpy as np

from gateway.sim.carriers import make_call
from tests.conftest import base_config, running_gateway
from tests.e2e.test_twilio_call import open_control

FAST = {"type": "fake", "handshake_ms": 0, "first_audio_ms": 20, "chars_per_second": 40}


def write_tone(path, seconds: float = 0.6, rate: int = 16000) -> None:
    t = np.arange(round(seconds * rate)) / rate
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes())


async def test_a_play_step_plays_the_recording_then_the_flow_goes_on(tmp_path):
    write_tone(tmp_path / "welcome.wav")
    data = base_config()
    data["providers"]["fast"] = FAST
    data["prompts"] = {"dir": str(tmp_path), "items": {"welcome": {"file": "welcome.wav"}}}
    data["routes"] = {"ivr": {"provider": "fast", "flow": {"start": "hello", "steps": {
        "hello": {"play": "welcome", "next": "after"},
        "after": {"say": "After the recording.", "next": "wait"},
        "wait": {"gather": {"timeout_s": 30}}}}}}
    data["default_route"] = "ivr"
    async with running_gateway(data) as gw:
        async with make_call("twilio", gw.ws_url, route="ivr") as sim:
            control = await open_control(gw, sim.call_id)
            started = await control.next_event("speech.started", source="prompt", timeout=15)
            assert started["prompt"] == "welcome"
            done = await control.next_event("speech.done", speech_id=started["speech_id"],
                                            timeout=15)
            assert done["interrupted"] is False and "error" not in done, done
            await control.next_event("flow.step", step="after", timeout=15)
            said = await control.next_event("speech.started", source="flow", timeout=15)
            await control.next_event("speech.done", speech_id=said["speech_id"], timeout=15)
            heard = sim.result.heard_seconds
    assert heard >= 0.6  # the recording, then the sentence after it
