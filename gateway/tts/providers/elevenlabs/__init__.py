"""ElevenLabs multi-context stream-input: up to 5 contexts per socket; voice, model and
audio format fixed per socket by the URL.

``protocol.py`` speaks the wire protocol (sans-I/O), ``driver.py`` runs a turn on it for the
pool and the session, ``fake.py`` is a faithful local server for tests and benchmarks.
"""

from __future__ import annotations

from gateway.tts.providers.elevenlabs import protocol
from gateway.tts.providers.elevenlabs.driver import ElevenLabsDriver
from gateway.tts.providers.spec import FakeProfile, ProviderSpec

SPEC = ProviderSpec(
    type="elevenlabs",
    driver=ElevenLabsDriver,
    endpoint=protocol.DEFAULT_ENDPOINT,
    # Five contexts per socket (protocol.MAX_CONTEXTS), two per call at most.
    share_limit=4,
    options=ElevenLabsDriver.VOICE_SETTINGS | ElevenLabsDriver.QUERY | {
        "inactivity_timeout", "chunk_length_schedule", "word_timestamps"},
    encodings=frozenset(e for e, _ in protocol.OUTPUT_FORMATS.values()),
    fake=FakeProfile(voice="21m00Tcm4TlvDq8ikWAM", pool_bench=True),
)
