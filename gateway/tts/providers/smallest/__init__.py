"""Smallest.ai Waves (Lightning): one request at a time per socket, no cancel verb.

``protocol.py`` speaks the wire protocol (sans-I/O), ``driver.py`` runs a turn on it for the
pool and the session, ``fake.py`` is a faithful local server for tests and benchmarks.
"""

from __future__ import annotations

from gateway.tts.providers.smallest import protocol
from gateway.tts.providers.smallest.driver import SmallestDriver
from gateway.tts.providers.spec import FakeProfile, ProviderSpec

SPEC = ProviderSpec(
    type="smallest",
    driver=SmallestDriver,
    endpoint=protocol.DEFAULT_ENDPOINT,
    # One active request per socket (docs/protocols/tts-providers.md §2.5): never shared.
    share_limit=1,
    options=frozenset({"timeout_s", "language", "speed", "complete_backoff_ms",
                       "max_buffer_flush_ms", "word_timestamps"}),
    encodings=frozenset(protocol._ENCODINGS.values()),
    fake=FakeProfile(voice="emily", pool_bench=True),
)
