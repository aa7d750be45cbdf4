"""What a remote provider declares about itself, once, in its folder's ``SPEC``.

:mod:`gateway.tts.providers.registry` collects the specs; the configuration (types, share
limits, options), the gateway's providers and ``bench pool`` read them from there instead
of naming providers.
"""

from __future__ import annotations

import builtins
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from gateway.tts.providers.driver import Driver, RemoteSettings

#: ``options`` of a provider that passes any key on to the provider (extra fields of its requests).
ANY_OPTION: frozenset[str] = frozenset({"*"})


@dataclass(frozen=True)
class FakeProfile:
    """What a benchmark needs to use the provider's fake (``<folder>/fake.py``,
    ``make_app(**profile)``, serving the path of the provider's own endpoint)."""

    #: A voice both the fake and the driver accept.
    voice: str
    #: Measured by ``tts-gateway bench pool`` (its fake takes ``handshake_ms``, and a
    #: hang-up mid-turn leaves the socket dirty, so a "cold" call opens a new one).
    pool_bench: bool = False


@dataclass(frozen=True)
class ProviderSpec:
    """One remote provider's facts. Its folder is ``gateway/tts/providers/<type>/``."""

    #: The ``type`` of a provider in ``gateway.yaml``, a metric label, the folder name.
    type: str
    #: The driver class: how the pool and the session run a turn on the protocol.
    driver: builtins.type[Driver]  # ``type`` is the field above
    #: The provider's streaming endpoint (``endpoint`` in ``gateway.yaml`` overrides it).
    endpoint: str
    #: Calls that may share one socket: the upper bound of ``pool.calls_per_connection``.
    share_limit: int
    #: The ``options`` keys the provider understands (anything else is a config error);
    #: :data:`ANY_OPTION` passes any key on.
    options: frozenset[str]
    #: The encodings (``pcm_s16le``, ``mulaw``, ``alaw``) it streams on the live path.
    encodings: frozenset[str]
    fake: FakeProfile
    #: Its own name for 16-bit PCM where ``options.audio_format`` may ask for it (the
    #: benchmark asks for 24 kHz PCM on a μ-law carrier to measure the resampled path).
    pcm_format: str | None = None

    def new_driver(self, settings: RemoteSettings) -> Driver:
        """A driver for one configured provider (raises ValueError on a bad setting)."""
        return self.driver(settings, self)

    @property
    def path(self) -> str:
        """The endpoint's path: where the fake serves too (``ws://127.0.0.1:<port>`` + path)."""
        return urlsplit(self.endpoint).path

    def load_fake(self) -> ModuleType:
        """The fake's module (imported on demand: only tests and benchmarks serve it)."""
        return importlib.import_module(f"gateway.tts.providers.{self.type}.fake")
