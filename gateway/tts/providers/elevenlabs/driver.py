"""The elevenlabs driver: how the pool and the session run a turn on its protocol."""

from __future__ import annotations

from collections.abc import Hashable

from gateway.carriers.events import MediaFormat
from gateway.tts.providers.elevenlabs import protocol as elevenlabs
from gateway.tts.providers.spec import ProviderSpec
from gateway.tts.providers.driver import Driver, RemoteSettings


class ElevenLabsDriver(Driver[elevenlabs.ElevenLabsProtocol]):
    """docs/protocols/tts-providers.md §6: multi-context stream-input. A context per turn (≤5 per
    socket): init, text flushed per sentence, ``close_context``; ``isFinal`` ends it. Voice, model
    and audio format are fixed per socket by the URL."""

    VOICE_SETTINGS = frozenset({"stability", "similarity_boost", "style", "use_speaker_boost",
                                 "speed"})
    QUERY = frozenset({"auto_mode", "language_code", "apply_text_normalization",
                        "enable_logging"})
    voice_in_url = True

    def __init__(self, settings: RemoteSettings, spec: ProviderSpec):
        super().__init__(settings, spec)
        timeout = settings.options.get("inactivity_timeout", elevenlabs.MAX_INACTIVITY_TIMEOUT)
        if type(timeout) is not int:
            raise ValueError(f"elevenlabs inactivity_timeout must be whole seconds, got "
                             f"{timeout!r}")
        self.inactivity_timeout = timeout
        # The server closes a socket that got no input for inactivity_timeout (§6 [C]);
        # an open turn waiting for streamed text sends KeepContextAlive well before.
        self.default_idle_timeout_s = float(timeout)
        self.keepalive_s = timeout / 3

    def pool_key(self, output: MediaFormat) -> Hashable:
        return elevenlabs.choose_output_format(output.encoding, output.sample_rate)

    def connect(self, key):
        s, o = self.settings, self.settings.options
        return elevenlabs.connect_params(
            s.api_key, s.voice, endpoint=s.endpoint, model=s.model or elevenlabs.DEFAULT_MODEL,
            output_format=key, inactivity_timeout=self.inactivity_timeout,
            sync_alignment=True if self.word_timestamps else None,
            **{k: o[k] for k in self.QUERY if k in o})

    def new_protocol(self, key):
        o = self.settings.options
        generation = ({"chunk_length_schedule": o["chunk_length_schedule"]}
                      if "chunk_length_schedule" in o else None)
        return elevenlabs.ElevenLabsProtocol(
            output_format=key, voice_settings={k: o[k] for k in self.VOICE_SETTINGS if k in o},
            generation_config=generation, word_timestamps=self.word_timestamps)

    def has_room(self, proto):
        return proto.open_contexts <= elevenlabs.MAX_CONTEXTS - 2

    def can_begin(self, proto):
        # Cut turns hold their context until isFinal; rapid barge-ins would hit the cap of
        # 5, and a 6th context closes the socket with 1008 (§6 [O] livekit-js #1985).
        return proto.can_open()
