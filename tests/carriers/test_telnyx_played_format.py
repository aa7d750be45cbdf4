"""Telnyx plays what the gateway sends in the codec its answer document asked for
(``bidirectionalCodec``), whatever the inbound stream announces: Telnyx transcodes the
inbound stream only between PCMU and PCMA, so a PCMU call answered with L16 both ways
streams PCMU to the gateway and plays L16 at 16 kHz. Through the real server, with the
Telnyx simulator playing the bidirectional codec."""

from __future__ import annotations

import logging

import pytest

from gateway.http import media
from gateway.sim.carriers import make_call
from tests.conftest import base_config, start_gateway
from tests.e2e.speech_check import assert_speech
from tests.e2e.test_twilio_call import open_control

SENTENCE = "Your order has shipped, and it will arrive on Tuesday morning."
FRAME_BYTES = {"mulaw/8000": 160, "alaw/8000": 160, "l16/8000": 320, "l16/16000": 640}


def telnyx_config(codec: str, sample_rate: int) -> dict:
    data = base_config()
    data["providers"] = {"fake": {"type": "fake", "handshake_ms": 0, "first_audio_ms": 20,
                                  "chars_per_second": 30.0}}
    data["routes"] = {"quiet": {"provider": "fake"}}
    data["default_route"] = "quiet"
    data["carriers"] = {"telnyx": {"codec": codec, "sample_rate": sample_rate}}
    return data


# (carriers.telnyx codec, sample_rate; what Telnyx plays; what it streams and announces)
CASES = [
    ("L16", 16000, "l16/16000", "mulaw/8000"),   # the finding: a PCMU call, L16 answer
    ("L16", 16000, "l16/16000", "l16/16000"),
    ("L16", 8000, "l16/8000", "alaw/8000"),
    ("PCMA", 8000, "alaw/8000", "alaw/8000"),
    ("PCMU", 8000, "mulaw/8000", "alaw/8000"),   # transcoded inbound: a PCMA call
]


@pytest.mark.parametrize("codec, rate, played, streamed", CASES,
                         ids=[f"{c}{r}-streams-{s}" for c, r, _, s in CASES])
async def test_the_gateway_sends_what_its_answer_asked_telnyx_to_play(codec, rate, played,
                                                                      streamed, caplog,
                                                                      monkeypatch):
    # logged once per process: start this test afresh
    monkeypatch.setattr(media, "_format_notes", set(), raising=False)
    gw = await start_gateway(telnyx_config(codec, rate))
    try:
        with caplog.at_level(logging.INFO, logger="gateway.http.media"):
            async with make_call("telnyx", gw.ws_url, route="quiet", media_format=played,
                                 stream_format=streamed) as call:
                control = await open_control(gw, call.call_id)
                status, body = await gw.post_json(f"/v1/calls/{call.call_id}/speak",
                                                  {"text": SENTENCE})
                assert status == 202, body
                done = await control.next_event("speech.done", speech_id=body["speech_id"],
                                                timeout=30)
                assert done["interrupted"] is False and "error" not in done
                summary = (await gw.get_json(f"/v1/calls/{call.call_id}"))[1]
                await call.hangup()
    finally:
        await gw.session.close()
        await gw.runner.cleanup()
    result = call.result
    assert result.violations == []
    assert result.frames and {len(p) for _, p in result.frames} == {FRAME_BYTES[played]}
    assert_speech(result.heard_pcm16(), result.sample_rate)
    encoding, sample_rate = played.split("/")
    assert summary["media_format"] == {"encoding": encoding, "sample_rate": int(sample_rate)}
    disagreement = [r for r in caplog.records if "answer document asked" in r.getMessage()]
    print(f"{codec}/{rate} streaming {streamed}: {len(result.frames)} frames of "
          f"{FRAME_BYTES[played]} B; disagreement logged: {len(disagreement)}")
    assert len(disagreement) == (played != streamed)
