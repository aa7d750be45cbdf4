"""Together AI realtime TTS: contexts (up to 100 per socket), 24 kHz PCM, realtime-style events.

``protocol.py`` speaks the wire protocol (sans-I/O), ``driver.py`` runs a turn on it for the
pool and the session, ``fake.py`` is a faithful local server for tests and benchmarks.
"""

from __future__ import annotations

from gateway.tts.providers.together import protocol
from gateway.tts.providers.together.driver import TogetherDriver
from gateway.tts.providers.spec import FakeProfile, ProviderSpec

SPEC = ProviderSpec(
    type="together",
    driver=TogetherDriver,
    endpoint=protocol.DEFAULT_ENDPOINT,
    # 100 contexts per socket (protocol.MAX_CONTEXTS); a call may hold two at once.
    share_limit=50,
    options=frozenset({"sample_rate", "speed", "language", "word_timestamps"}),
    encodings=frozenset({"pcm_s16le"}),
    fake=FakeProfile(voice="af_alloy", pool_bench=True),
)
