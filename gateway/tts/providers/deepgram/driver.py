"""The deepgram driver: how the pool and the session run a turn on its protocol."""

from __future__ import annotations

from collections.abc import Hashable

from gateway.carriers.events import MediaFormat
from gateway.tts.providers.deepgram import protocol as deepgram
from gateway.tts.providers.spec import ProviderSpec
from gateway.tts.providers.driver import Driver, RemoteSettings


class DeepgramDriver(Driver[deepgram.DeepgramProtocol]):
    """docs/protocols/tts-providers.md §8: the socket is one stream (one turn at a time, no ids;
    binary audio). A turn is Speak (+Flush) per sentence and a final Flush; ``Flushed`` ends it;
    barge-in is ``Clear``. The voice is the model, in the URL with the audio format."""

    tracks_segments = True  # Flushed answers the Flush after each sentence (budget allowing)
    # No idle limit is documented (§8, §10); set pool.idle_timeout_s if one shows up.
    default_idle_timeout_s = None
    voice_in_url = True

    def __init__(self, settings: RemoteSettings, spec: ProviderSpec):
        super().__init__(settings, spec)
        if settings.model and settings.model != settings.voice:
            raise ValueError("deepgram: the Aura voice is the model (e.g. voice: "
                             "aura-2-thalia-en); leave model unset")

    def pool_key(self, output: MediaFormat) -> Hashable:
        chosen = deepgram.choose_format(output.encoding, output.sample_rate)
        return self.configured_format(chosen)

    def connect(self, key):
        s, o = self.settings, self.settings.options
        encoding, rate = key
        return deepgram.connect_params(s.api_key, endpoint=s.endpoint, model=s.voice,
                                       encoding=encoding, sample_rate=rate, speed=o.get("speed"),
                                       mip_opt_out=o.get("mip_opt_out"))

    def new_protocol(self, key):
        encoding, rate = key
        return deepgram.DeepgramProtocol(encoding=encoding, sample_rate=rate)

    def has_room(self, proto):
        return False
