"""Deepgram Aura streaming TTS: the socket is one stream (no ids, binary audio); the voice
is the model, in the URL with the audio format.

``protocol.py`` speaks the wire protocol (sans-I/O), ``driver.py`` runs a turn on it for the
pool and the session, ``fake.py`` is a faithful local server for tests and benchmarks.
"""

from __future__ import annotations

from gateway.tts.providers.deepgram import protocol
from gateway.tts.providers.deepgram.driver import DeepgramDriver
from gateway.tts.providers.spec import FakeProfile, ProviderSpec

SPEC = ProviderSpec(
    type="deepgram",
    driver=DeepgramDriver,
    endpoint=protocol.DEFAULT_ENDPOINT,
    # A Clear empties the whole socket's buffers: calls never share one.
    share_limit=1,
    options=frozenset({"speed", "mip_opt_out", "audio_format", "sample_rate"}),
    encodings=frozenset(protocol.ENCODINGS.values()),
    fake=FakeProfile(voice="aura-2-thalia-en", pool_bench=True),
    pcm_format="linear16",
)
