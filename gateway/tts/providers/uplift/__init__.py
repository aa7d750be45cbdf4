"""Uplift AI multi-stream TTS over Socket.IO: a request per text segment, pipelined;
the audio format is chosen per request.

``protocol.py`` speaks the wire protocol (sans-I/O), ``driver.py`` runs a turn on it for the
pool and the session, ``fake.py`` is a faithful local server for tests and benchmarks.
"""

from __future__ import annotations

from gateway.tts.providers.uplift import protocol
from gateway.tts.providers.uplift.driver import UpliftDriver
from gateway.tts.providers.spec import FakeProfile, ProviderSpec

SPEC = ProviderSpec(
    type="uplift",
    driver=UpliftDriver,
    endpoint=protocol.DEFAULT_ENDPOINT,
    # Requests of several turns run concurrently on one socket [T]; the limit is 60
    # requests a minute per connection, so a few calls share one at most [I].
    share_limit=4,
    options=frozenset({"speed", "phrase_replacement_config_id", "requests_per_minute"}),
    encodings=frozenset(e for e, _ in protocol.LIVE_FORMATS.values()),
    # Not in ``bench pool`` yet: its Socket.IO fake was never measured there.
    fake=FakeProfile(voice=protocol.DEFAULT_VOICE, pool_bench=False),
)
