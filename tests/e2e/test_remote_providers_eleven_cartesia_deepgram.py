"""ElevenLabs, Cartesia and Deepgram Aura through a real gateway to their fakes, over
loopback: what only they do. (The tests every provider passes, μ-law passthrough included,
are in ``test_remote_providers.py``.)

Cartesia keeps one context when the next sentence comes in time; a wideband carrier gets
PCM from each of them, not μ-law; ElevenLabs' cap of five contexts a socket survives rapid
barge-ins.
"""

from __future__ import annotations

from contextlib import aclosing

import pytest

from gateway.carriers.events import MediaFormat
from gateway.http.loopback import serve_on_loopback
from gateway.metrics import Metrics
from gateway.carriers.twilio.sim import TwilioCallSim
from gateway.tts.providers.driver import RemoteSettings
from gateway.tts.remote.pool import PoolSettings
from gateway.tts.remote.session import RemoteProvider
from tests.e2e.remote_setup import PROVIDERS
from tests.e2e.test_twilio_call import LONG_TEXT, open_control

KINDS = ("elevenlabs", "cartesia", "deepgram")


def fake_of(kind: str):
    """(make_app, path, voice) of a provider's fake."""
    p = PROVIDERS[kind]
    return p.make_app, p.path, p.voice


async def test_cartesia_keeps_one_context_when_the_next_sentence_comes_in_time(remote):
    setup = await remote("cartesia")
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        await control.ws.send_json({"type": "speak", "text": "Thanks for waiting. Your"})
        first = await control.next_event("speech.first_audio", timeout=20)
        await control.ws.send_json({"type": "speak", "text": " order has shipped.",
                                    "flush": True})
        done = await control.next_event("speech.done", speech_id=first["speech_id"], timeout=30)
        assert done["interrupted"] is False and "error" not in done
        await sim.hangup()
    log = setup.fake["log"]
    assert [e["text"] for e in log] == ["Thanks for waiting.", "Your order has shipped."]
    assert log[0]["context_id"] == log[1]["context_id"]  # prosody carries over
    assert setup.fake["expired"] == []
    inputs = [m for m in setup.fake["received"] if "transcript" in m]
    assert inputs[-1]["continue"] is False and inputs[-1]["transcript"] == ""


@pytest.mark.parametrize("kind", KINDS)
async def test_a_pcm_carrier_gets_pcm_from_the_provider(kind):
    """A wideband carrier (L16 16 kHz): the provider is asked for PCM at 16 kHz, no μ-law."""
    make_app, path, voice = fake_of(kind)
    fake = make_app()
    runner, port = await serve_on_loopback(fake)
    provider = RemoteProvider(RemoteSettings(name=kind, type=kind, api_key="test-key",
                                             voice=voice, endpoint=f"ws://127.0.0.1:{port}{path}"),
                              PoolSettings(min_idle=0, max=2))
    provider.use_metrics(Metrics())
    await provider.start()
    try:
        session = await provider.open_session(MediaFormat("l16", 16000))
        chunks = []
        async with aclosing(session.synthesize("Wideband audio for this call.")) as stream:
            async for chunk in stream:
                chunks.append(chunk)
        await session.release()
        assert chunks and {(c.encoding, c.sample_rate) for c in chunks} == {("pcm_s16le", 16000)}
        assert b"".join(c.data for c in chunks) == fake["log"][0]["audio"]
        if kind == "elevenlabs":
            assert fake["connects"][0]["output_format"] == "pcm_16000"
        elif kind == "deepgram":
            assert (fake["connects"][0]["encoding"], fake["connects"][0]["sample_rate"]) == (
                "linear16", 16000)
        else:
            assert fake["log"][0]["encoding"] == "pcm_s16le"
    finally:
        await provider.close()
        await runner.cleanup()


async def test_elevenlabs_rapid_barge_ins_move_the_call_to_a_fresh_socket_not_past_5_contexts():
    """Cut turns keep their context until ``isFinal`` (close_context goes on flushing); six
    barge-ins in a row would open a 6th context, which ElevenLabs answers by closing the
    socket with 1008 (docs/protocols/tts-providers.md §6 [O], livekit-js #1985). The call moves to a
    fresh socket instead."""
    make_app, path, voice = fake_of("elevenlabs")
    fake = make_app(close_delay_ms=3000)  # isFinal late: the cut contexts stay open
    runner, port = await serve_on_loopback(fake)
    provider = RemoteProvider(RemoteSettings(name="el", type="elevenlabs", api_key="test-key",
                                             voice=voice, endpoint=f"ws://127.0.0.1:{port}{path}"),
                              PoolSettings(min_idle=0, max=4))
    provider.use_metrics(Metrics())
    await provider.start()
    try:
        session = await provider.open_session(MediaFormat("mulaw", 8000))
        for turn in range(7):
            async with aclosing(session.synthesize(f"Answer {turn}. " + LONG_TEXT)) as stream:
                async for chunk in stream:
                    assert chunk.encoding == "mulaw"
                    break  # barge-in at the first audio
        assert session.connections_used == 2
        assert "max_active_conversations" not in fake["closed"]
        assert len(fake["log"]) == 7  # every turn was heard
        await session.release()
    finally:
        await provider.close()
        await runner.cleanup()
