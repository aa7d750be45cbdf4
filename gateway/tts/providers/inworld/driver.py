"""The inworld driver: how the pool and the session run a turn on its protocol."""

from __future__ import annotations

from collections.abc import Hashable

from gateway.carriers.events import MediaFormat
from gateway.tts.providers.inworld import protocol as inworld
from gateway.tts.providers.driver import Driver


class InworldDriver(Driver[inworld.InworldProtocol]):
    """docs/protocols/tts-providers.md §1: contexts (≤5 per socket); create, send_text (+flush per
    segment), close."""

    tracks_segments = True  # flushCompleted answers the flush after each segment
    splits_whole_text = True
    # Contexts expire after ~60 s without text (§1.4 [O]); an empty send_text keeps a
    # context that waits for streamed text alive (pipecat sends one every 60 s).
    keepalive_s = 30.0
    default_idle_timeout_s = 600.0  # session closed after 10 min idle [C]

    def pool_key(self, output: MediaFormat) -> Hashable:
        return None  # the audio format is chosen per context (create)

    def turn_format(self, output: MediaFormat) -> tuple[str, int]:
        chosen = inworld.choose_audio_format(output.encoding, output.sample_rate)
        return self.configured_format(chosen)

    def connect(self, key):
        s = self.settings
        # the format a μ-law call asks for, validated before a socket is opened
        encoding, rate = self.turn_format(MediaFormat("mulaw", 8000))
        return inworld.connect_params(s.api_key, endpoint=s.endpoint,
                                      model=s.model or inworld.DEFAULT_MODEL, voice=s.voice,
                                      encoding=encoding, sample_rate=rate)

    def new_protocol(self, key):
        s = self.settings
        # the options that are not the gateway's are fields of Inworld's ``create``
        options = self.extra_options("audio_format", "sample_rate")
        return inworld.InworldProtocol(voice=s.voice, model=s.model or inworld.DEFAULT_MODEL,
                                       create_options=options,
                                       word_timestamps=self.word_timestamps)

    def has_room(self, proto):
        return proto.open_contexts <= inworld.MAX_CONTEXTS - 2
