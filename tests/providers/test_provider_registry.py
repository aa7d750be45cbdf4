"""The provider registry: every folder of gateway/tts/providers declares its facts once
(``SPEC``), and the configuration, the gateway and ``bench pool`` read them from there."""

from __future__ import annotations

from pathlib import Path

import pytest

import gateway.tts.providers as package
from gateway.carriers.events import MediaFormat
from gateway.config import PROVIDER_TYPES
from gateway.tts.providers.base import ProviderProtocol
from gateway.tts.providers.driver import RemoteSettings
from gateway.tts.providers.registry import PROVIDERS
from gateway.tts.providers.spec import ANY_OPTION

FOLDERS = sorted(p.name for p in Path(package.__path__[0]).iterdir()
                 if (p / "__init__.py").exists())
#: Calls per socket: the bound of ``pool.calls_per_connection`` (unchanged by the move).
SHARE_LIMITS = {"inworld": 4, "smallest": 1, "together": 50, "elevenlabs": 4,
                "cartesia": 10, "deepgram": 1, "uplift": 4, "telnyx": 1}


def test_every_folder_is_a_registered_provider():
    assert FOLDERS == sorted(PROVIDERS) == sorted(SHARE_LIMITS)
    assert set(PROVIDER_TYPES) == {"piper", "fake", *PROVIDERS}
    for name in FOLDERS:
        for part in ("protocol.py", "driver.py", "fake.py"):
            assert (Path(package.__path__[0]) / name / part).exists(), (name, part)


@pytest.mark.parametrize("name", sorted(SHARE_LIMITS))
def test_spec_facts(name):
    spec = PROVIDERS[name]
    assert spec.type == name and spec.share_limit == SHARE_LIMITS[name]
    assert spec.endpoint.startswith("wss://")
    assert spec.encodings <= {"pcm_s16le", "mulaw", "alaw"} and spec.encodings
    assert spec.load_fake().PATH == spec.path  # the fake serves the provider's own path
    settings = RemoteSettings(name, name, "key", spec.fake.voice, spec.endpoint)
    driver = spec.new_driver(settings)
    assert driver.type == name and driver.spec is spec
    key = driver.pool_key(MediaFormat("mulaw", 8000))
    driver.connect(key)
    # every protocol speaks the one vocabulary the drivers' base runs it by
    assert isinstance(driver.new_protocol(key), ProviderProtocol)
    if spec.options is not ANY_OPTION:
        with pytest.raises(ValueError, match=r"unknown .* options"):
            spec.new_driver(RemoteSettings(name, name, "key", spec.fake.voice, spec.endpoint,
                                           options={"no_such_option": 1}))


@pytest.mark.parametrize("name", sorted(SHARE_LIMITS))
def test_every_protocol_begins_and_sends_a_turn_the_same_way(name):
    """One vocabulary: ``begin`` and ``send`` give the wire messages, and a turn asks for its
    own audio format only where the provider takes one per turn (else it is a bug)."""
    spec = PROVIDERS[name]
    driver = spec.new_driver(RemoteSettings(name, name, "key", spec.fake.voice, spec.endpoint))
    call = MediaFormat("mulaw", 8000)
    proto = driver.new_protocol(driver.pool_key(call))
    for message in driver.handshake(proto):  # telnyx: the init frame opens the stream
        assert type(message) is str
    encoding, _ = driver.turn_format(call)
    if encoding is None:
        with pytest.raises(ValueError, match="per socket"):
            proto.begin("t0", encoding="pcm_s16le", sample_rate=16000)
    opening = driver.begin(proto, "t1", None, call)
    text = driver.send(proto, "t1", "Hello there.")
    assert all(type(m) is str for m in opening + text) and text
    assert proto.state("t1") is not None
