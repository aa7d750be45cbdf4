"""``tts-gateway bench --bot``: every call a bot call. The loopback bot checks the upgrade's
signature as the gateway makes it, and a short bench run through the real gateway process
gives every call's bot its call.started and its caller audio, with the VAD on every frame
and the gateway's caller-audio delay histogram filled. Behaviour only: figures are printed."""

from __future__ import annotations

import json
import time

import aiohttp
import pytest

from gateway.bench.botserver import LoopbackBot
from gateway.bench.load import free_port, run_once
from gateway.bot.dialer import signature_headers
from gateway.config import BotConfig


class FakeCall:
    def __init__(self) -> None:
        self.bot_started = False
        self.packets = 0

    def bot_packet(self, now: float) -> float:
        self.packets += 1
        return 0.001


async def test_the_loopback_bot_checks_the_signature_the_gateway_makes():
    port = free_port()
    url = f"ws://127.0.0.1:{port}/bot"
    call = FakeCall()
    delays = []
    bot = LoopbackBot(url, "s3cret", 640, {"CA1": call}, delays.append)
    await bot.start(port)
    try:
        async with aiohttp.ClientSession() as http:
            for secret, when, refusal in (("wrong", None, "signature"),
                                          ("s3cret", time.time() - 3600, "timestamp")):
                headers = signature_headers(BotConfig(url=url, secret=secret), "CA1", now=when)
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(url, headers=headers)
                assert refused.value.status == 401
                assert bot.stats.refused[refusal] == 1
            headers = signature_headers(BotConfig(url=url, secret="s3cret"), "CA1")
            async with http.ws_connect(url, headers=headers) as ws:
                await ws.send_str(json.dumps({"type": "call.started", "call_id": "CA1",
                                              "audio": {"format": "l16/16000", "packet_ms": 20}}))
                for _ in range(3):
                    await ws.send_bytes(b"\x00" * 640)
                await ws.send_bytes(b"\x00" * 320)  # not one packet
                await ws.send_str(json.dumps({"type": "call.ended", "call_id": "CA1"}))
                await ws.close()  # the bot answers the close frame
            assert ws.close_code == 1000
        assert bot.stats.accepted == 1 and bot.stats.started == 1 and bot.stats.ended == 1
        assert bot.stats.packets == 4 and bot.stats.bad_packets == 1
        assert call.bot_started and call.packets == 4 and delays == [0.001] * 4
    finally:
        await bot.close(wait=1.0)


async def test_a_short_bot_bench_through_the_real_gateway(tmp_path):
    calls, duration = 4, 4.0
    run = await run_once(calls, duration, bot=True, pinned=False, workdir=tmp_path,
                         ramp_per_second=20.0, interrupt_fraction=0.0)
    print(json.dumps({k: v for k, v in run.items()
                      if k not in ("timeline", "first_media_latencies_ms")}, indent=1))
    assert run["calls_connected"] == calls and run["calls_failed"] == 0
    # every call's bot: a signed socket, call.started first (checked by the bot), audio
    # packets of 20 ms l16/16000, call.ended when the caller hung up
    assert run["bot_refused"] == {} and run["bot_violations"] == []
    assert run["bot_sockets"] == calls and run["bot_call_started"] == calls
    assert run["bot_events"]["call.ended"] == calls
    assert run["bot_connections"]["connected"] == calls
    assert run["bot_bad_packets"] == 0
    # one 20 ms packet per caller frame from the moment the bot listens: each call lives
    # about ``duration`` s, and at most every frame sent becomes a packet
    assert run["bot_packets_per_call_min"] >= 0.7 * duration * 50
    assert 0.7 * run["caller_frames_sent"] <= run["bot_packets"] <= run["caller_frames_sent"]
    # the gateway measured each packet it handed to a bot's socket
    assert run["caller_audio_delay_samples"] >= 0.9 * run["bot_packets"]
    assert run["caller_audio_delay_p99_ms"] is not None
    assert run["bot_delay_load_side_p50_ms"] is not None
    # the voice activity detector took every caller frame, and the line's noise never
    # counted as the caller speaking
    assert run["vad_frames"] == run["caller_frames_sent"]
    assert run["speech_barge_ins"] == 0
    assert "caller.speech_started" not in run["bot_events"]
