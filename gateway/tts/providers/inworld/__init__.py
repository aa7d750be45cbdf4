"""Inworld TTS: one bidirectional WebSocket carries up to 5 contexts; a turn is a context.

``protocol.py`` speaks the wire protocol (sans-I/O), ``driver.py`` runs a turn on it for the
pool and the session, ``fake.py`` is a faithful local server for tests and benchmarks.
"""

from __future__ import annotations

from gateway.tts.providers.inworld import protocol
from gateway.tts.providers.inworld.driver import InworldDriver
from gateway.tts.providers.spec import ANY_OPTION, FakeProfile, ProviderSpec

SPEC = ProviderSpec(
    type="inworld",
    driver=InworldDriver,
    endpoint=protocol.DEFAULT_ENDPOINT,
    # Five contexts per socket (protocol.MAX_CONTEXTS) and a call holds two briefly (a cut
    # turn closing, the next one): four calls share a socket at most.
    share_limit=4,
    # extra ``create`` fields (temperature, autoMode, ...): docs/protocols/tts-providers.md §1.2
    options=ANY_OPTION,
    encodings=frozenset(e for e, _ in protocol._ENCODINGS.values()),
    fake=FakeProfile(voice="Ashley", pool_bench=True),
    pcm_format="PCM",
)
