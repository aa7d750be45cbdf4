"""examples/bot.py, the reference bot, against the real gateway on loopback: the gateway
dials it, the simulated caller hears its greeting and its answer to a key; and ``tts-gateway
dial --caller-audio`` sends real audio as the caller's.

The provider is the tone-tagged Cartesia fake, so what the caller heard decodes to words.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys

import numpy as np
import pytest
from telcodecs import ulaw_decode, write_wav

from gateway.cli import main as cli_main
from gateway.http.keys import CALLS
from gateway.http.loopback import serve_on_loopback
from gateway.sim.dial import dial_and_report
from gateway.tts.providers.cartesia import fake as cartesia
from gateway.tts.providers.fake_voice import heard_tones, text_tones
from gateway.carriers.twilio.sim import TwilioCallSim
from gateway.tts.fake import speechlike_pcm
from tests.conftest import ROOT, base_config, start_gateway
from tests.e2e.remote_setup import fake_provider_config

sys.path.insert(0, str(ROOT / "examples"))
import bot as example_bot

SECRET = "example-secret"


@pytest.fixture
async def gateway_with_example_bot():
    cleanups = []
    fake = cartesia.make_app(tag_words=True, chars_per_second=30.0)
    runner, fake_port = await serve_on_loopback(fake)
    cleanups.append(runner.cleanup)
    bot_app = example_bot.make_app(SECRET)
    runner, bot_port = await serve_on_loopback(bot_app)
    cleanups.append(runner.cleanup)
    data = base_config()
    data["providers"] = {"fake": fake_provider_config("cartesia", fake_port)}
    data["routes"] = {"bot": {"provider": "fake", "bot": {
        "url": f"ws://127.0.0.1:{bot_port}/bot", "secret_env": "BOT_SECRET",
        "audio": "l16/16000"}}}
    data["default_route"] = "bot"
    gw = await start_gateway(data, {"FAKE_TTS_KEY": "test-key", "BOT_SECRET": SECRET})
    cleanups += [gw.runner.cleanup, gw.session.close]
    try:
        yield gw
    finally:
        for cleanup in reversed(cleanups):
            await cleanup()


def heard(sim) -> list[int]:
    return heard_tones(ulaw_decode(sim.result.heard))


async def test_the_example_bot_greets_and_repeats_a_key(gateway_with_example_bot, caplog):
    gw = gateway_with_example_bot
    caplog.set_level(logging.INFO, logger="example-bot")
    greeting = text_tones(example_bot.GREETING)
    async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio") as sim:
        await sim.wait_for(lambda _: heard(sim) == greeting, timeout=20, what="the greeting")
        await sim.send_dtmf("7")
        answer = text_tones(example_bot.GREETING + " You pressed 7.")
        await sim.wait_for(lambda _: heard(sim) == answer, timeout=20, what="the key repeated")
        await sim.wait_idle(quiet=0.5, timeout=10)
        assert not sim.result.violations
        call_seconds = sim.result.inbound_frames_sent * 0.02
    async with asyncio.timeout(5):
        while "ended:" not in caplog.text:
            await asyncio.sleep(0.02)
    line = re.search(r"ended: ([\d.]+) s of audio, [\d.]+ s of speech, keys (\S*)", caplog.text)
    assert line and line.group(2) == "7"
    print(f"the bot heard {line.group(1)} s of the caller's {call_seconds:.1f} s")
    assert float(line.group(1)) > 0.5 * call_seconds


async def test_dial_sends_a_wav_file_as_the_callers_audio(gateway_with_example_bot, tmp_path):
    gw = gateway_with_example_bot
    wav = tmp_path / "caller.wav"
    speech = speechlike_pcm(1.0, 16000)
    write_wav(wav, speech, 16000)
    inbound: list[bytes] = []

    async def listen() -> None:  # what reaches the gateway as the caller's audio
        while not gw.app[CALLS]:
            await asyncio.sleep(0.005)
        call = next(iter(gw.app[CALLS].values()))
        call.caller_audio.subscribe(inbound.append)

    listener = asyncio.ensure_future(listen())
    report = await dial_and_report(base_url=gw.ws_url, caller_audio=str(wav),
                                   caller_audio_at=0.6, quiet_seconds=0.5, max_seconds=20)
    listener.cancel()
    assert report["heard_seconds"] > 1  # the bot's greeting
    pcm = np.frombuffer(ulaw_decode(b"".join(inbound)), "<i2").astype(float)
    frames = pcm[: len(pcm) // 160 * 160].reshape(-1, 160)
    loud = np.flatnonzero(np.sqrt((frames ** 2).mean(axis=1)) > 300)
    start_s, length_s = loud[0] * 0.02, (loud[-1] - loud[0] + 1) * 0.02
    print(f"caller speech from {start_s:.2f} s for {length_s:.2f} s")
    assert 0.5 <= start_s <= 0.8  # silence first (the first frames may come before listen)
    assert 0.8 <= length_s <= 1.1  # then the second of speech, once


def test_dial_refuses_a_file_that_is_not_a_wav(tmp_path, capsys):
    bad = tmp_path / "caller.wav"
    bad.write_bytes(b"not a wav file at all")
    assert cli_main(["dial", "--url", "ws://127.0.0.1:9", "--caller-audio", str(bad)]) == 2
    assert "not a WAV file" in capsys.readouterr().err
