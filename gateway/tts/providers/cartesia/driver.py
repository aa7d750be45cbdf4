"""The cartesia driver: how the pool and the session run a turn on its protocol."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from gateway.carriers.events import MediaFormat
from gateway.tts.providers.cartesia import protocol as cartesia
from gateway.tts.providers.driver import Driver


class CartesiaDriver(Driver[cartesia.CartesiaProtocol]):
    """docs/protocols/tts-providers.md §7: a context per turn; a sentence is an input (``continue:
    true``) plus a manual flush, the end is ``continue: false`` (then ``done``), barge-in is
    ``cancel``. The audio format travels in every input, so one socket serves every carrier
    format."""

    tracks_segments = True  # flush_done answers the manual flush after each segment
    splits_whole_text = True
    GENERATION = frozenset({"speed", "volume", "emotion"})  # generation_config [T pipecat]
    default_idle_timeout_s = 300.0  # idle sockets closed after 5 min (§7 [O])

    def pool_key(self, output: MediaFormat) -> Hashable:
        return None  # the format is chosen per context

    def connect(self, key):
        s = self.settings
        return cartesia.connect_params(s.api_key, endpoint=s.endpoint,
                                       version=s.options.get("version", cartesia.API_VERSION))

    def new_protocol(self, key):
        s, o = self.settings, self.settings.options
        extra: dict[str, Any] = {}
        generation = {k: o[k] for k in self.GENERATION if k in o}
        if generation:
            extra["generation_config"] = generation
        if "pronunciation_dict_id" in o:
            extra["pronunciation_dict_id"] = o["pronunciation_dict_id"]
        return cartesia.CartesiaProtocol(
            voice=s.voice, model=s.model or cartesia.DEFAULT_MODEL,
            language=o.get("language", "en"),
            max_buffer_delay_ms=o.get("max_buffer_delay_ms", 0), extra=extra,
            word_timestamps=self.word_timestamps)

    def turn_format(self, output: MediaFormat) -> tuple[str, int]:
        return cartesia.choose_output_format(output.encoding, output.sample_rate)
