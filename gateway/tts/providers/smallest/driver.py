"""The smallest driver: how the pool and the session run a turn on its protocol."""

from __future__ import annotations

from collections.abc import Hashable

from gateway.carriers.events import MediaFormat
from gateway.tts.providers.smallest import protocol as smallest
from gateway.tts.providers.spec import ProviderSpec
from gateway.tts.providers.driver import Driver, RemoteSettings


class SmallestDriver(Driver[smallest.SmallestProtocol]):
    """docs/protocols/tts-providers.md §2: one request per synthesis, one at a time, no cancel
    (replace the socket)."""

    turn_per_segment = True

    def __init__(self, settings: RemoteSettings, spec: ProviderSpec):
        super().__init__(settings, spec)
        self.timeout_s = int(settings.options.get("timeout_s", 60))
        self.default_idle_timeout_s = float(self.timeout_s)

    def pool_key(self, output: MediaFormat) -> Hashable:
        return smallest.choose_format(output.encoding, output.sample_rate)

    def connect(self, key):
        s = self.settings
        return smallest.connect_params(s.endpoint, s.api_key, timeout_s=self.timeout_s)

    def new_protocol(self, key):
        s = self.settings
        output_format, rate = key
        extra = self.extra_options("timeout_s")
        return smallest.SmallestProtocol(s.voice, model=s.model or "lightning_v3.1",
                                         output_format=output_format, sample_rate=rate,
                                         word_timestamps=self.word_timestamps, **extra)

    def is_done(self, proto, cid):
        return proto.state(cid) == "done"

    def must_replace(self, proto):
        return proto.needs_replacement  # after a barge-in (no cancel verb) or a fatal error
