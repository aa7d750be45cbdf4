"""Telnyx TTS streaming WebSocket: one utterance per socket (the server closes it after
the final frame); voice and audio format fixed by the URL.

``protocol.py`` speaks the wire protocol (sans-I/O), ``driver.py`` runs a turn on it for the
pool and the session, ``fake.py`` is a faithful local server for tests and benchmarks.
"""

from __future__ import annotations

from gateway.tts.providers.telnyx import protocol
from gateway.tts.providers.telnyx.driver import TelnyxDriver
from gateway.tts.providers.spec import FakeProfile, ProviderSpec

SPEC = ProviderSpec(
    type="telnyx",
    driver=TelnyxDriver,
    endpoint=protocol.DEFAULT_ENDPOINT,
    # One utterance per socket: never shared.
    share_limit=1,
    options=frozenset({"voice_settings", "language", "text_type", "disable_cache",
                       "inactivity_timeout_s", "audio_format", "sample_rate",
                       "strip_markdown"}),
    encodings=frozenset(protocol._ENCODINGS.values()),
    # Not in ``bench pool``: every utterance leases its own warm socket (single use), so
    # there is no cold call to compare with.
    fake=FakeProfile(voice=protocol.DEFAULT_VOICE, pool_bench=False),
    pcm_format="linear16",
)
