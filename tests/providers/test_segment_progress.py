"""``RemoteSession.stream(..., on_segments_done=...)`` against every provider's fake.

Failover needs to know which text segments' audio has all arrived. Each provider tells it
its own way (Cartesia's ``flush_done``, Inworld's ``flushCompleted``, Deepgram's
``Flushed``, Together's ``audio_output.done`` per commit, Uplift's ``audio_end`` per
request, Telnyx's text frame after a segment's audio); Smallest takes a request per
segment, and ElevenLabs, which cannot tell, gets a context per segment. For each: every
report comes only once the audio of those segments (as the fake logged it) has been
yielded, the reports come sentence by sentence while the rest is still coming, and the
last one counts every segment.
"""

from __future__ import annotations

from contextlib import aclosing

import pytest

from gateway.carriers.events import MediaFormat
from gateway.http.loopback import serve_on_loopback
from gateway.metrics import Metrics
from gateway.tts.providers.cartesia import fake as cartesia
from gateway.tts.providers.deepgram import fake as deepgram
from gateway.tts.providers.elevenlabs import fake as elevenlabs
from gateway.tts.providers.inworld import fake as inworld
from gateway.tts.providers.smallest import fake as smallest
from gateway.tts.providers.telnyx import fake as telnyx
from gateway.tts.providers.together import fake as together
from gateway.tts.providers.uplift import fake as uplift
from gateway.tts.providers.driver import RemoteSettings
from gateway.tts.remote.pool import PoolSettings
from gateway.tts.remote.session import RemoteProvider

#: kind -> (make_app, path, voice, options)
FAKES = {
    "inworld": (inworld.make_app, inworld.PATH, "Ashley", {}),
    "smallest": (smallest.make_app, "/waves/v1/tts/live", "meher", {"complete_backoff_ms": 50}),
    "together": (together.make_app, together.PATH, "af_alloy", {}),
    "uplift": (uplift.make_app, uplift.PATH, "v_meklc281", {}),
    "telnyx": (telnyx.make_app, telnyx.PATH, "Telnyx.NaturalHD.astra", {}),
    "elevenlabs": (elevenlabs.make_app, elevenlabs.PATH, "21m00Tcm4TlvDq8ikWAM", {}),
    "cartesia": (cartesia.make_app, cartesia.PATH, "a0e99841-438c-4a64-b679-ae501e7d6091", {}),
    "deepgram": (deepgram.make_app, deepgram.PATH, "aura-2-thalia-en", {}),
}
SENTENCES = ["First one here.", "The second sentence is a little longer.", "Third."]


async def _segments():
    for sentence in SENTENCES:
        yield sentence


@pytest.mark.parametrize("kind", list(FAKES))
async def test_each_segment_is_reported_once_its_audio_is_all_in(kind):
    make_app, path, voice, options = FAKES[kind]
    fake = make_app()
    runner, port = await serve_on_loopback(fake)
    provider = RemoteProvider(RemoteSettings(name=kind, type=kind, api_key="test-key",
                                             voice=voice, endpoint=f"ws://127.0.0.1:{port}{path}",
                                             options=options),
                              PoolSettings(min_idle=0, max=4))
    provider.use_metrics(Metrics())
    await provider.start()
    received = 0
    reports: list[tuple[int, int]] = []  # (segments done, audio bytes yielded by then)
    try:
        session = await provider.open_session(MediaFormat("mulaw", 8000))
        stream = session.stream(_segments(), None,
                                on_segments_done=lambda n: reports.append((n, received)))
        async with aclosing(stream) as chunks:
            async for chunk in chunks:
                received += len(chunk.data)
        await session.release()
    finally:
        await provider.close()
        await runner.cleanup()
    log = fake["log"]
    assert [e["text"].strip() for e in log] == SENTENCES  # one synthesis per sentence
    produced = [e["bytes"] for e in log]
    assert received == sum(produced)
    counts = [n for n, _ in reports]
    assert counts == sorted(counts) and counts[-1] == len(SENTENCES)
    for n, by_then in reports:
        assert by_then >= sum(produced[:n]), (n, by_then, produced)
    # reported sentence by sentence, not only when the turn ended
    first = min(by_then for n, by_then in reports if n >= 1)
    assert first < received
    assert reports[0][0] == 1 and reports[0][1] < sum(produced[:2])
