import time

from gateway.carriers.events import MediaFormat
from gateway.config import parse_config
from gateway.http.app import build_providers
from gateway.tts.fake import FakeProvider

from tests.conftest import base_config


async def test_fake_provider_has_the_configured_timing_and_audio_length():
    provider = FakeProvider("f", handshake_ms=50, first_audio_ms=40, burst_factor=5,
                            sample_rate=24000, chars_per_second=20)
    await provider.start()
    t0 = time.monotonic()
    session = await provider.open_session(MediaFormat())
    handshake = time.monotonic() - t0
    t1 = time.monotonic()
    arrivals, samples = [], 0
    async for chunk in session.synthesize("x" * 40):  # 40 chars at 20/s: 2 s of audio
        arrivals.append(time.monotonic() - t1)
        samples += len(chunk.data) // 2
        assert chunk.sample_rate == 24000 and chunk.encoding == "pcm_s16le"
    assert handshake >= 0.05
    assert arrivals[0] >= 0.04
    assert samples == 2 * 24000
    # 20 chunks of 100 ms in bursts 5x faster than real time: about 0.4 s, well under 2 s
    assert len(arrivals) == 20
    assert arrivals[-1] < 1.5


def test_fake_provider_is_configurable():
    data = base_config()
    data["providers"]["bench"] = {"type": "fake", "first_audio_ms": 10, "sample_rate": 16000}
    config = parse_config(data, {})
    providers = build_providers(config)
    assert isinstance(providers["bench"], FakeProvider)
    assert providers["bench"].first_audio == 0.01 and providers["bench"].sample_rate == 16000
