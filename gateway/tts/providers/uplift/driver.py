"""The uplift driver: how the pool and the session run a turn on its protocol."""

from __future__ import annotations

from collections.abc import Hashable

from gateway.carriers.events import MediaFormat
from gateway.tts.providers.uplift import protocol as uplift
from gateway.tts.providers.spec import ProviderSpec
from gateway.tts.providers.driver import Driver, RemoteSettings

#: Turns one call holds at once at most: a cut one whose requests drain, and the next.
CONTEXTS_PER_CALL = 2


class UpliftDriver(Driver[uplift.UpliftProtocol]):
    """docs/protocols/tts-providers.md §4: Socket.IO multi-stream. A turn is one or more one-shot
    requests (one per text segment, pipelined); their interleaved chunks are demultiplexed by
    request id and played in submission order; barge-in cancels each request in flight. The audio
    format is chosen per request, so one socket serves every carrier format."""

    tracks_segments = True  # a request per segment; audio_end ends each
    await_ready = True  # the server's "ready" message [C]
    default_idle_timeout_s = None  # undocumented; Socket.IO pings keep the socket alive

    def __init__(self, settings: RemoteSettings, spec: ProviderSpec):
        super().__init__(settings, spec)
        if settings.model:
            raise ValueError("uplift has no model setting: the voice id chooses the voice")
        o = settings.options
        rpm = o.get("requests_per_minute", uplift.REQUESTS_PER_MINUTE)
        if type(rpm) is not int or rpm < 1:
            raise ValueError(f"uplift requests_per_minute must be a positive integer, got {rpm!r}")
        phrase = o.get("phrase_replacement_config_id")
        if phrase is not None and type(phrase) is not str:
            raise ValueError("uplift phrase_replacement_config_id must be a string")
        self.requests_per_minute = rpm

    def pool_key(self, output: MediaFormat) -> Hashable:
        return None  # the output format travels in every request

    def connect(self, key):
        s = self.settings
        return uplift.connect_params(s.api_key, s.endpoint)

    def new_protocol(self, key):
        s, o = self.settings, self.settings.options
        return uplift.UpliftProtocol(s.voice, speed=o.get("speed"),
                                     phrase_replacement_config_id=o.get("phrase_replacement_config_id"),
                                     requests_per_minute=self.requests_per_minute)

    def turn_format(self, output: MediaFormat) -> tuple[str, None]:
        return uplift.choose_format(output.encoding, output.sample_rate), None

    nothing_to_cancel = (None, "cancelled")

    def has_room(self, proto):
        return (len(proto.live_turns) <= CONTEXTS_PER_CALL * self.spec.share_limit - 2
                and not proto.budget_low())

    def reusable(self, proto):
        return proto.is_clean() and not proto.budget_low()

    def must_replace(self, proto):
        # the minute's request budget is (nearly) spent on this socket, or it failed
        return proto.failed or proto.budget_low()
