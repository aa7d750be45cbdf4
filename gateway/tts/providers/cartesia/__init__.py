"""Cartesia TTS WebSocket: a context per turn; the audio format travels in every input, so
one socket serves every carrier format.

``protocol.py`` speaks the wire protocol (sans-I/O), ``driver.py`` runs a turn on it for the
pool and the session, ``fake.py`` is a faithful local server for tests and benchmarks.
"""

from __future__ import annotations

from gateway.tts.providers.cartesia import protocol
from gateway.tts.providers.cartesia.driver import CartesiaDriver
from gateway.tts.providers.spec import FakeProfile, ProviderSpec

SPEC = ProviderSpec(
    type="cartesia",
    driver=CartesiaDriver,
    endpoint=protocol.DEFAULT_ENDPOINT,
    # A socket takes "dozens of concurrent generations" (WebSocket reference [C]);
    # concurrency is counted per account. Ten calls per socket [I].
    share_limit=10,
    options=CartesiaDriver.GENERATION | {"language", "version", "max_buffer_delay_ms",
                                       "pronunciation_dict_id", "word_timestamps"},
    encodings=frozenset(protocol.ENCODINGS.values()),
    # Not in ``bench pool``: a cancelled turn leaves its socket clean (late audio is dropped
    # by context id), so a hang-up mid-turn does not close it and a "cold" run would reuse it.
    fake=FakeProfile(voice="a0e99841-438c-4a64-b679-ae501e7d6091", pool_bench=False),
)
