"""The fake Twilio against a tiny gateway built on TwilioProtocol, over a real socket.

Timing bounds are deliberately wide: these tests run on a shared machine.
"""

import asyncio
import json
import time

import numpy as np
import pytest
from aiohttp import WSServerHandshakeError, web

from gateway.http.loopback import serve_on_loopback
from gateway.carriers.events import (
    Audio, Clear, Dtmf, Mark, MarkPlayed, PlayAudio, Started, Stopped)
from gateway.carriers.twilio.sim import CallClosedError, TwilioCallSim, twilio_signature
from telcodecs.g711 import ulaw_encode

FRAME = 160


def ulaw_tone(seconds: float, hz: float = 440.0) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    pcm = (8000 * np.sin(2 * np.pi * hz * t)).astype("<i2")
    return ulaw_encode(pcm.tobytes())


TONE = ulaw_tone(1.0)  # 50 frames


async def sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def test_paced_frames_are_heard_and_the_mark_echoes_after_playout(loopback):
    lead = 0.2

    async def gateway_script(side):
        t0 = time.monotonic()
        for index in range(50):
            await sleep_until(t0 + index * 0.02 - lead)
            await side.send(PlayAudio(TONE[index * FRAME : (index + 1) * FRAME]))
        await side.send(Mark("utt-1"))

    gateway = await loopback(gateway_script)
    sim = TwilioCallSim(gateway.url, custom_parameters={"route": "demo"})
    async with sim:
        assert await sim.wait_for_mark(timeout=5) == "utt-1"
        await sim.wait_idle(quiet=0.1, timeout=5)
    result = sim.result

    assert result.heard == TONE
    assert len(result.frames) == 50
    assert result.violations == []
    assert result.underruns == 0
    assert result.frame_timing().count == 50
    assert not result.closed_by_gateway
    echo_at = result.marks_sent_back[0][0]
    assert [name for _, name in result.marks_sent_back] == ["utt-1"]
    assert 0.9 <= echo_at - result.first_media_at <= 1.6  # after ≈1 s of playout
    assert 0.0 < result.first_audio_latency < 1.0

    side = gateway.side
    started = side.of_type(Started)[0][1]
    assert started.call_id == sim.call_sid and started.stream_id == sim.stream_sid
    assert started.custom_parameters == {"route": "demo"}
    played = side.of_type(MarkPlayed)
    assert [event for _, event in played] == [MarkPlayed("utt-1")]
    assert isinstance(side.events[-1][1], Stopped)
    assert side.errors == []

    audio = side.of_type(Audio)
    assert all(event.payload == b"\xff" * FRAME for _, event in audio)
    rate = (len(audio) - 1) / (audio[-1][0] - audio[0][0])
    assert 40 <= rate <= 60
    assert abs(result.inbound_frames_sent - len(audio)) <= 1

    messages = [json.loads(text) for _, text in side.texts]
    assert [m["event"] for m in messages[:2]] == ["connected", "start"]
    media = [m for m in messages if m["event"] == "media"]
    assert [m["media"]["chunk"] for m in media[:3]] == ["1", "2", "3"]
    assert [m["media"]["timestamp"] for m in media[:3]] == ["0", "20", "40"]
    sequence = [int(m["sequenceNumber"]) for m in messages[1:]]
    assert sequence == list(range(1, len(sequence) + 1))
    assert all(isinstance(m["sequenceNumber"], str) for m in messages[1:])
    echo = next(m for m in messages if m["event"] == "mark")
    assert echo.keys() == {"event", "sequenceNumber", "streamSid", "mark"}


async def test_clear_mid_stream_echoes_the_pending_mark_at_once(loopback):
    cleared_at = []

    async def gateway_script(side):
        for index in range(50):  # a whole second, sent at once
            await side.send(PlayAudio(TONE[index * FRAME : (index + 1) * FRAME]))
        await side.send(Mark("utt-1"))
        await asyncio.sleep(0.3)
        cleared_at.append(await side.send(Clear()))

    gateway = await loopback(gateway_script)
    async with TwilioCallSim(gateway.url) as sim:
        assert await sim.wait_for_mark(timeout=5) == "utt-1"
        heard_at_clear = len(sim.result.heard)
        await asyncio.sleep(0.3)
        heard_later = len(sim.result.heard)
        await gateway.side.wait_for(lambda: gateway.side.of_type(MarkPlayed))
    result = sim.result

    assert result.clears and result.marks_sent_back[0][0] - result.clears[0] < 0.25
    assert heard_later == heard_at_clear  # nothing plays after the clear
    assert 0.15 <= result.heard_seconds <= 0.8
    assert result.heard == TONE[: len(result.heard)]
    assert result.cleared_bytes == len(TONE) - len(result.heard)
    played_at = gateway.side.of_type(MarkPlayed)[0][0]
    assert played_at - cleared_at[0] < 0.25


async def test_gateway_closing_first_is_recorded_not_raised(loopback):
    async def gateway_script(side):
        await side.send(PlayAudio(TONE))
        await side.send(Mark("goodbye"))
        await asyncio.sleep(0.2)
        await side.ws.close()

    gateway = await loopback(gateway_script)
    async with TwilioCallSim(gateway.url) as sim:
        with pytest.raises(CallClosedError, match="gateway closed"):
            await sim.wait_for_mark("goodbye", timeout=5)
        frames_sent = sim.result.inbound_frames_sent
        await asyncio.sleep(0.1)
        assert sim.result.inbound_frames_sent == frames_sent  # the media loop stopped
        with pytest.raises(CallClosedError):
            await sim.send_dtmf("1")
        await sim.wait_idle(timeout=1)
    result = sim.result
    assert result.closed_by_gateway
    assert result.marks_sent_back == []
    assert 0 < len(result.heard) < len(TONE)
    assert result.discarded_at_close_bytes == len(TONE) - len(result.heard)
    assert result.ended_at is not None


async def test_hangup_sends_stop_and_closes(loopback):
    gateway = await loopback()
    sim = TwilioCallSim(gateway.url)
    async with sim:
        await gateway.side.wait_for(lambda: len(gateway.side.of_type(Audio)) >= 3)
        await sim.hangup()
        await sim.hangup()  # idempotent
        with pytest.raises(CallClosedError):
            await sim.send_raw_text("{}")
    await asyncio.wait_for(gateway.side.closed.wait(), 5)
    assert isinstance(gateway.side.events[-1][1], Stopped)
    stop = json.loads(gateway.side.texts[-1][1])
    assert stop["stop"] == {"accountSid": sim.account_sid, "callSid": sim.call_sid}
    assert not sim.result.closed_by_gateway


async def test_dtmf_and_raw_frames_reach_the_gateway(loopback):
    gateway = await loopback()
    async with TwilioCallSim(gateway.url) as sim:
        await sim.send_dtmf("5#")
        await sim.send_raw_text("not json")
        await sim.send_raw_bytes(b"\x00\x01")
        with pytest.raises(ValueError):
            await sim.send_dtmf("x")
        side = gateway.side
        await side.wait_for(lambda: len(side.errors) == 2 and len(side.of_type(Dtmf)) == 2)
    assert [event for _, event in side.of_type(Dtmf)] == [Dtmf("5"), Dtmf("#")]
    assert [error.kind for error in side.errors] == ["not_json", "binary_frame"]


async def test_gateway_violations_are_recorded_and_dropped(loopback):
    async def gateway_script(side):
        await side.ws.send_bytes(b"\xff" * FRAME)
        sid = side.proto.stream_id
        await side.ws.send_str(json.dumps(
            {"event": "media", "streamSid": sid, "media": {"payload": "////", "track": "outbound"}}
        ))
        await side.send(PlayAudio(TONE[:FRAME]))

    gateway = await loopback(gateway_script)
    async with TwilioCallSim(gateway.url, inbound_audio=TONE[:100]) as sim:
        await sim.wait_for_media(frames=1, timeout=5)
        await sim.wait_idle(quiet=0.05, timeout=5)
    result = sim.result
    assert [code for code, _ in result.violations] == ["31950", "31951"]
    assert result.heard == TONE[:FRAME]
    audio = gateway.side.of_type(Audio)
    assert audio[0][1].payload == TONE[:100] + TONE[:60]  # inbound audio loops


async def test_signature_header_and_refused_handshake(loopback):
    gateway = await loopback()
    async with TwilioCallSim(gateway.url, auth_token="secret") as sim:
        await sim.wait_for_media(frames=0)
    signed = gateway.url.replace("ws://", "wss://", 1)
    assert gateway.side.headers["X-Twilio-Signature"] == twilio_signature("secret", signed)

    async def refuse(request):
        raise web.HTTPForbidden()

    app = web.Application()
    app.router.add_get("/", refuse)
    runner, port = await serve_on_loopback(app)
    host = "127.0.0.1"
    try:
        with pytest.raises(WSServerHandshakeError) as info:
            async with TwilioCallSim(f"ws://{host}:{port}/"):
                pass
        assert info.value.status == 403
    finally:
        await runner.cleanup()


async def test_waits_time_out(loopback):
    gateway = await loopback()
    async with TwilioCallSim(gateway.url) as sim:
        with pytest.raises(TimeoutError):
            await sim.wait_for_media(frames=1, timeout=0.05)
        with pytest.raises(TimeoutError):
            await sim.wait_for_mark(timeout=0.05)
