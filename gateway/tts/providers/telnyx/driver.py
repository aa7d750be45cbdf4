"""The telnyx driver: how the pool and the session run a turn on its protocol."""

from __future__ import annotations

from collections.abc import Hashable

from gateway.carriers.events import MediaFormat
from gateway.tts.providers.telnyx import protocol as telnyx
from gateway.tts.providers.spec import ProviderSpec
from gateway.tts.providers.driver import Driver, RemoteSettings


class TelnyxDriver(Driver[telnyx.TelnyxProtocol]):
    """docs/protocols/tts-providers.md §5: one utterance per socket. The handshake frame goes out
    when the socket opens; a turn is a text frame (``flush: true``) per segment, then ``{"text":
    ""}``; the final frame ends it and the server closes the socket; barge-in is ``{"force":
    true}``. Voice and audio format are fixed per socket by the URL."""

    tracks_segments = True  # the segment's text follows (or comes with) its last audio
    splits_whole_text = True
    single_use = True
    voice_in_url = True
    default_idle_timeout_s = float(telnyx.DEFAULT_INACTIVITY_S)  # older docs [C §5.1]

    def __init__(self, settings: RemoteSettings, spec: ProviderSpec):
        super().__init__(settings, spec)
        if settings.model:
            raise ValueError("telnyx has no model setting: the voice names it "
                             "(Provider.Model.VoiceId, e.g. Telnyx.NaturalHD.astra)")
        o = settings.options
        telnyx.engine_of(settings.voice)
        if "voice_settings" in o and type(o["voice_settings"]) is not dict:
            raise ValueError("telnyx voice_settings must be a mapping, e.g. {voice_speed: 1.1}")
        for name, kind in (("disable_cache", bool), ("strip_markdown", bool),
                           ("language", str), ("text_type", str), ("audio_format", str),
                           ("sample_rate", int), ("inactivity_timeout_s", int)):
            if name in o and type(o[name]) is not kind:
                raise ValueError(f"telnyx {name} must be {kind.__name__}, got {o[name]!r}")
        if o.get("audio_format", "linear16") not in telnyx.LIVE_FORMATS:
            raise ValueError(f"telnyx audio_format {o['audio_format']!r}: linear16, mulaw or "
                             "alaw (never mp3 on the live path)")
        if "inactivity_timeout_s" in o:
            self.default_idle_timeout_s = float(o["inactivity_timeout_s"])

    def pool_key(self, output: MediaFormat) -> Hashable:
        chosen = telnyx.choose_format(self.settings.voice, output.encoding, output.sample_rate)
        return self.configured_format(chosen)

    def connect(self, key):
        s, o = self.settings, self.settings.options
        audio_format, rate = key
        return telnyx.connect_params(
            s.api_key, endpoint=s.endpoint, voice=s.voice, audio_format=audio_format,
            sample_rate=rate, language=o.get("language"), text_type=o.get("text_type"),
            disable_cache=o.get("disable_cache"),
            inactivity_timeout_s=o.get("inactivity_timeout_s"))

    def new_protocol(self, key):
        s, o = self.settings, self.settings.options
        audio_format, rate = key
        return telnyx.TelnyxProtocol(audio_format=audio_format, sample_rate=rate,
                                         voice_settings=o.get("voice_settings"),
                                         markdown=o.get("strip_markdown", True), voice=s.voice)

    def handshake(self, proto):
        return [proto.handshake()]

    nothing_to_cancel = ()  # a cancel always goes out (``{"force": true}``)

    def has_room(self, proto):
        return False  # one turn per socket: never shared

    def must_replace(self, proto):
        return proto.spent

    def closes_by_design(self, proto):
        return proto.closes_by_design
