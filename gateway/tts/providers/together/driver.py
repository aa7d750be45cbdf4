"""The together driver: how the pool and the session run a turn on its protocol."""

from __future__ import annotations

from collections.abc import Hashable

from gateway.carriers.events import MediaFormat
from gateway.tts.providers.together import protocol as together
from gateway.tts.providers.driver import Driver


class TogetherDriver(Driver[together.TogetherProtocol]):
    """docs/protocols/tts-providers.md §3: realtime-style events, contexts (≤100), 24 kHz PCM,
    ``session.created`` first."""

    tracks_segments = True  # a segment's commits (a sentence each) are done item by item
    splits_whole_text = True
    await_ready = True
    default_idle_timeout_s = 60.0  # undocumented; the fake's default [I]

    def pool_key(self, output: MediaFormat) -> Hashable:
        return int(self.settings.options.get("sample_rate", together.DEFAULT_SAMPLE_RATE))

    def connect(self, key):
        s = self.settings
        extra = self.extra_options("sample_rate")
        return together.connect_params(s.api_key, endpoint=s.endpoint,
                                       model=s.model or together.DEFAULT_MODEL, voice=s.voice,
                                       sample_rate=key,
                                       alignment="word" if self.word_timestamps else None,
                                       **extra)

    def new_protocol(self, key):
        return together.TogetherProtocol(voice=self.settings.voice, sample_rate=key,
                                         word_timestamps=self.word_timestamps)

    nothing_to_cancel = (None, "done", "cancelled")

    def is_done(self, proto, cid):
        return proto.state(cid) in ("done", "cancelled")

    def has_room(self, proto):
        return proto.contexts_left > 1 and len(proto.live_contexts) <= together.MAX_CONTEXTS - 2

    def must_replace(self, proto):
        return False  # a failed socket is not reusable, so the pool replaces it on release

    def reusable(self, proto):
        return proto.is_clean() and proto.contexts_left > 0
