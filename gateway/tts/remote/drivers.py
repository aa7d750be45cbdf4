"""What differs between providers, in one place: how a turn is opened, fed, ended and
cancelled on each sans-I/O protocol, and each provider's connection rules.

A *turn* is one context (Inworld, Together) or one request (Smallest) on a connection.
Drivers build messages and read protocol state; they never do I/O. The pool and the
session (:mod:`gateway.tts.remote.pool`, :mod:`gateway.tts.remote.session`) are the same
for every provider.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from gateway.carriers.events import MediaFormat
from gateway.tts.providers import inworld, smallest, together
from gateway.tts.providers import telnyx_tts, uplift
from gateway.tts.providers import cartesia, deepgram, elevenlabs
from gateway.tts.providers.events import ProviderEvent, ProviderReady


@dataclass(frozen=True)
class RemoteSettings:
    """A remote provider's settings from ``gateway.yaml`` (secrets already resolved)."""

    name: str
    type: str
    api_key: str
    voice: str
    endpoint: str
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


ANY_OPTION: frozenset[str] = frozenset({"*"})


class Driver:
    """Base: one connection serves one turn at a time per call; no handshake message."""

    type = ""
    #: Each text segment is its own turn, run one after the other (one request at a time).
    turn_per_segment = False
    #: Wait for a :class:`ProviderReady` frame before the connection counts as open.
    await_ready = False
    #: Contexts one socket may hold at once; the pool shares a socket between calls only
    #: within it (a call may hold two briefly: a cancelled turn draining, a new one).
    max_contexts = 1
    #: Send :meth:`keepalive` for an open turn that waits this long for more text.
    keepalive_s: float | None = None
    #: The server closes a socket idle this long (the pool refreshes idle ones before).
    default_idle_timeout_s: float | None = None
    #: What carries the messages: ``websocket`` (text frames) or ``socketio`` (Socket.IO
    #: events named by each message's ``type``; see ``connection.SocketIOWebSocket``).
    transport = "websocket"
    #: A connection serves one turn, then is retired (Telnyx closes the socket after its
    #: final frame). The session leases one per turn instead of one per call, and the pool
    #: keeps ``min_idle`` handshaken ones warm so no handshake is in a turn's path.
    single_use = False
    #: The provider tells, within a turn, when the audio of each text segment is out
    #: (:meth:`segments_done`). Without that, a session asked to account for segments runs
    #: each segment as a turn of its own (failover, :meth:`RemoteSession.stream`).
    tracks_segments = False
    #: A whole text may go to it sentence by sentence within one turn (a flush each) at no
    #: cost, so that the call learns where each sentence's audio ends (what a caller heard
    #: out). Not where a sentence costs a request or a flush of a small budget.
    splits_whole_text = False

    #: ``options`` keys this provider understands (anything else is a config error).
    option_keys: frozenset[str] = frozenset()

    def __init__(self, settings: RemoteSettings):
        unknown = set(settings.options) - self.option_keys
        if unknown and self.option_keys is not ANY_OPTION:
            raise ValueError(f"unknown {self.type} options {sorted(unknown)} (known: "
                             f"{', '.join(sorted(self.option_keys)) or 'none'})")
        self.settings = settings

    def pool_key(self, output: MediaFormat) -> Hashable:
        """Connections are interchangeable between calls with the same key."""
        return None

    def connect(self, key: Hashable) -> tuple[str, dict[str, str]]:
        raise NotImplementedError

    def new_protocol(self, key: Hashable):
        raise NotImplementedError

    def connection_made(self, proto) -> list[ProviderEvent]:
        return [] if self.await_ready else [ProviderReady()]

    def connection_lost(self, proto) -> list[ProviderEvent]:
        return []

    def begin(self, proto, cid: str, voice: str | None, output: MediaFormat) -> list[str]:
        return []

    def send(self, proto, cid: str, text: str, voice: str | None = None) -> list[str]:
        raise NotImplementedError

    def end(self, proto, cid: str) -> list[str]:
        return []

    def cancel(self, proto, cid: str) -> list[str]:
        return []

    def keepalive(self, proto, cid: str) -> list[str]:
        return []

    def is_done(self, proto, cid: str) -> bool:
        """The turn ended without a done frame still to come."""
        return False

    def segments_done(self, proto, cid: str) -> int | None:
        """How many of the turn's segments (:meth:`send` calls, in order) have all their
        audio received, from the provider's own per-segment signal; None when unknown (the
        turn is over, or the provider has no such signal)."""
        return None

    def has_room(self, proto) -> bool:
        return True

    def can_begin(self, proto) -> bool:
        """A new turn of the call that holds this socket fits on it (else the call moves to
        a fresh socket; e.g. every context is taken by cut turns still draining)."""
        return True

    def reusable(self, proto) -> bool:
        """Clean: no open turn, no pending audio, nothing that forbids reuse."""
        return proto.is_clean()

    def must_replace(self, proto) -> bool:
        """The socket cannot serve another turn (e.g. audio of a cancelled request is
        still coming and the provider has no cancel): the call needs a fresh one."""
        return False

    def is_cancelled(self, proto, cid: str) -> bool:
        return proto.is_cancelled(cid)

    def handshake(self, proto) -> list[str]:
        """Messages sent once, right after the socket opens and before it counts as open
        (Telnyx's init frame)."""
        return []

    def closes_by_design(self, proto) -> bool:
        """The provider closes the socket now as its protocol says it does (Telnyx, after
        the final frame): the pool does not count that close as a reconnect."""
        return False


def _configured_format(options: dict[str, Any], chosen: tuple[str, int], *, pcm: str,
                       g711_rate: int = 8000) -> tuple[str, int]:
    """The provider's audio format: ``chosen`` for the call's carrier, unless the options
    name one (``audio_format`` in the provider's own words, ``sample_rate`` for its ``pcm``
    format): the operator knows better what a voice streams, and the benchmark asks for
    24 kHz PCM on a μ-law carrier to measure the resampled path."""
    fmt, rate = chosen
    if "audio_format" in options:
        fmt = options["audio_format"]
        rate = options.get("sample_rate", g711_rate if fmt != pcm else rate)
    elif "sample_rate" in options and fmt == pcm:
        rate = options["sample_rate"]
    return fmt, rate


def _one_voice(driver: Driver, voice: str | None) -> None:
    """Providers whose voice is part of the socket URL cannot change it per turn."""
    if voice and voice != driver.settings.voice:
        raise ValueError(f"{driver.type} takes the voice in the socket URL: voice {voice!r} "
                         f"differs from the provider's {driver.settings.voice!r}; configure "
                         "a provider per voice")


class ProtocolTurns:
    """Mixin for drivers whose protocol keeps each turn itself: ``finish(cid)`` ends it,
    ``cancel(cid)`` cuts it, and its state (:meth:`_turn_state`) is None once the turn is
    over (or was never begun)."""

    #: States in which a cancel has nothing to stop upstream (empty: always cancel).
    nothing_to_cancel: tuple[str | None, ...] = (None,)

    def _turn_state(self, proto, cid: str) -> str | None:
        return proto.state(cid)

    def end(self, proto, cid):
        return proto.finish(cid)

    def cancel(self, proto, cid):
        if self._turn_state(proto, cid) in self.nothing_to_cancel:
            return []
        return proto.cancel(cid)

    def is_done(self, proto, cid):
        return self._turn_state(proto, cid) is None


class ProtocolHealth:
    """Mixin for drivers whose protocol tells whether its socket may serve another turn
    (``reusable()``) or is of no more use (``failed``)."""

    def reusable(self, proto):
        return proto.reusable()

    def must_replace(self, proto):
        return proto.failed


class InworldDriver(Driver):
    """§1: contexts (≤5 per socket); create, send_text (+flush per segment), close."""

    type = "inworld"
    tracks_segments = True  # flushCompleted answers the flush after each segment
    splits_whole_text = True
    option_keys = ANY_OPTION  # extra ``create`` fields (temperature, autoMode, ...) [§1.2]
    max_contexts = inworld.MAX_CONTEXTS
    # Contexts expire after ~60 s without text (§1.4 [O]); an empty send_text keeps a
    # context that waits for streamed text alive (pipecat sends one every 60 s).
    keepalive_s = 30.0
    default_idle_timeout_s = 600.0  # session closed after 10 min idle [C]

    def pool_key(self, output: MediaFormat) -> Hashable:
        return None  # the audio format is chosen per context (create)

    #: options that are the gateway's, not fields of Inworld's ``create``
    own_options = frozenset({"word_timestamps", "audio_format", "sample_rate"})

    def _format(self, output: MediaFormat) -> tuple[str, int]:
        chosen = inworld.choose_audio_format(output.encoding, output.sample_rate)
        return _configured_format(self.settings.options, chosen, pcm="PCM")

    def connect(self, key):
        s = self.settings
        # the format a μ-law call asks for, validated before a socket is opened
        encoding, rate = self._format(MediaFormat("mulaw", 8000))
        return inworld.connect_params(s.api_key, endpoint=s.endpoint,
                                      model=s.model or inworld.DEFAULT_MODEL, voice=s.voice,
                                      encoding=encoding, sample_rate=rate)

    def new_protocol(self, key):
        s = self.settings
        options = {k: v for k, v in s.options.items() if k not in self.own_options}
        return inworld.InworldProtocol(voice=s.voice, model=s.model or inworld.DEFAULT_MODEL,
                                       create_options=options,
                                       # what the caller heard, to the word (speech.done)
                                       word_timestamps=s.options.get("word_timestamps",
                                                                     True) is True)

    def begin(self, proto, cid, voice, output):
        encoding, rate = self._format(output)
        return [proto.create_message(cid, voice=voice, encoding=encoding, sample_rate=rate)[1]]

    def send(self, proto, cid, text, voice=None):
        pieces = inworld.split_text(text)
        return [proto.send_text_message(cid, piece, flush=i == len(pieces) - 1)
                for i, piece in enumerate(pieces)]

    def end(self, proto, cid):
        return [proto.close_message(cid)]

    def cancel(self, proto, cid):
        if proto.context_state(cid) is None and not proto.is_cancelled(cid):
            return []  # already done (or never created): nothing to stop upstream
        message = proto.cancel_message(cid)
        return [message] if message else []

    def keepalive(self, proto, cid):
        if proto.context_state(cid) in ("open", "flushed"):
            return [json.dumps({"send_text": {"text": ""}, "contextId": cid})]
        return []

    def is_done(self, proto, cid):
        return proto.context_state(cid) is None

    def segments_done(self, proto, cid):
        return proto.flushes_completed(cid)

    def has_room(self, proto):
        return proto.open_contexts <= self.max_contexts - 2


class SmallestDriver(Driver):
    """§2: one request per synthesis, one at a time, no cancel (replace the socket)."""

    type = "smallest"
    option_keys = frozenset({"timeout_s", "language", "speed", "complete_backoff_ms",
                             "max_buffer_flush_ms", "word_timestamps"})
    turn_per_segment = True
    replace_after_cancel = True

    def __init__(self, settings: RemoteSettings):
        super().__init__(settings)
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
        extra = {k: v for k, v in s.options.items() if k not in ("timeout_s", "word_timestamps")}
        return smallest.SmallestProtocol(s.voice, model=s.model or "lightning_v3.1",
                                         output_format=output_format, sample_rate=rate,
                                         # what the caller heard, to the word (speech.done)
                                         word_timestamps=s.options.get("word_timestamps",
                                                                       True) is True, **extra)

    def send(self, proto, cid, text, voice=None):
        return proto.speak(cid, text, voice=voice)

    def cancel(self, proto, cid):
        proto.cancel(cid)
        return []

    def is_done(self, proto, cid):
        return proto.state(cid) == "done"

    def connection_lost(self, proto):
        return proto.connection_lost()

    def reusable(self, proto):
        return proto.reusable()

    def must_replace(self, proto):
        return proto.needs_replacement  # after a barge-in (no cancel verb) or a fatal error


class TogetherDriver(ProtocolTurns, Driver):
    """§3: realtime-style events, contexts (≤100), 24 kHz PCM, ``session.created`` first."""

    type = "together"
    tracks_segments = True  # a segment's commits (a sentence each) are done item by item
    splits_whole_text = True
    option_keys = frozenset({"sample_rate", "speed", "language", "word_timestamps"})
    await_ready = True
    max_contexts = together.MAX_CONTEXTS
    default_idle_timeout_s = 60.0  # undocumented; the fake's default [I]

    def pool_key(self, output: MediaFormat) -> Hashable:
        return int(self.settings.options.get("sample_rate", together.DEFAULT_SAMPLE_RATE))

    @property
    def _word_timestamps(self) -> bool:  # what the caller heard, to the word (speech.done)
        return self.settings.options.get("word_timestamps", True) is True

    def connect(self, key):
        s = self.settings
        extra = {k: v for k, v in s.options.items() if k not in ("sample_rate", "word_timestamps")}
        return together.connect_params(s.api_key, endpoint=s.endpoint,
                                       model=s.model or together.DEFAULT_MODEL, voice=s.voice,
                                       sample_rate=key,
                                       alignment="word" if self._word_timestamps else None,
                                       **extra)

    def new_protocol(self, key):
        return together.TogetherProtocol(sample_rate=key, word_timestamps=self._word_timestamps)

    def begin(self, proto, cid, voice, output):
        proto.open_context(cid)
        if voice and voice != self.settings.voice:
            return [proto.update_session(cid, voice=voice)]
        return []

    def send(self, proto, cid, text, voice=None):
        return proto.send_segment(cid, text)

    nothing_to_cancel = (None, "done", "cancelled")

    def is_done(self, proto, cid):
        return proto.state(cid) in ("done", "cancelled")

    def segments_done(self, proto, cid):
        return proto.segments_completed(cid)

    def has_room(self, proto):
        return proto.contexts_left > 1 and len(proto.live_contexts) <= self.max_contexts - 2

    def reusable(self, proto):
        return proto.is_clean() and proto.contexts_left > 0


DRIVERS: dict[str, type[Driver]] = {
    d.type: d for d in (InworldDriver, SmallestDriver, TogetherDriver)
}
DEFAULT_ENDPOINTS = {
    "inworld": inworld.DEFAULT_ENDPOINT,
    "smallest": smallest.DEFAULT_ENDPOINT,
    "together": together.DEFAULT_ENDPOINT,
}


# ---- Uplift AI and Telnyx TTS (tts-providers.md §4-5) -------------------------------------


class UpliftDriver(ProtocolTurns, Driver):
    """§4: Socket.IO multi-stream. A turn is one or more one-shot requests (one per text
    segment, pipelined); their interleaved chunks are demultiplexed by request id and
    played in submission order; barge-in cancels each request in flight. The audio format
    is chosen per request, so one socket serves every carrier format."""

    type = "uplift"
    tracks_segments = True  # a request per segment; audio_end ends each
    transport = "socketio"
    option_keys = frozenset({"speed", "phrase_replacement_config_id", "requests_per_minute"})
    await_ready = True  # the server's "ready" message [C]
    # Requests of several turns run concurrently on one socket [T]; the per-connection
    # limit is the 60 requests a minute, so sockets are shared by a few calls only [I].
    max_contexts = 8
    default_idle_timeout_s = None  # undocumented; Socket.IO pings keep the socket alive

    def __init__(self, settings: RemoteSettings):
        super().__init__(settings)
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

    def begin(self, proto, cid, voice, output):
        proto.open_turn(cid, uplift.choose_format(output.encoding, output.sample_rate), voice)
        return []

    def send(self, proto, cid, text, voice=None):
        return proto.synthesize(cid, text)

    nothing_to_cancel = (None, "cancelled")

    def _turn_state(self, proto, cid):
        return proto.turn_state(cid)

    def segments_done(self, proto, cid):
        return proto.segments_completed(cid)

    def connection_lost(self, proto):
        return proto.connection_lost()

    def has_room(self, proto):
        return len(proto.live_turns) <= self.max_contexts - 2 and not proto.budget_low()

    def reusable(self, proto):
        return proto.is_clean() and not proto.budget_low()

    def must_replace(self, proto):
        # the minute's request budget is (nearly) spent on this socket, or it failed
        return proto.failed or proto.budget_low()


class TelnyxDriver(ProtocolTurns, Driver):
    """§5: one utterance per socket. The handshake frame goes out when the socket opens;
    a turn is a text frame (``flush: true``) per segment, then ``{"text": ""}``; the final
    frame ends it and the server closes the socket; barge-in is ``{"force": true}``. Voice
    and audio format are fixed per socket by the URL."""

    type = "telnyx"
    tracks_segments = True  # the segment's text follows (or comes with) its last audio
    splits_whole_text = True
    option_keys = frozenset({"voice_settings", "language", "text_type", "disable_cache",
                             "inactivity_timeout_s", "audio_format", "sample_rate",
                             "strip_markdown"})
    single_use = True
    default_idle_timeout_s = float(telnyx_tts.DEFAULT_INACTIVITY_S)  # older docs [C §5.1]

    def __init__(self, settings: RemoteSettings):
        super().__init__(settings)
        if settings.model:
            raise ValueError("telnyx has no model setting: the voice names it "
                             "(Provider.Model.VoiceId, e.g. Telnyx.NaturalHD.astra)")
        o = settings.options
        telnyx_tts.engine_of(settings.voice)
        if "voice_settings" in o and type(o["voice_settings"]) is not dict:
            raise ValueError("telnyx voice_settings must be a mapping, e.g. {voice_speed: 1.1}")
        for name, kind in (("disable_cache", bool), ("strip_markdown", bool),
                           ("language", str), ("text_type", str), ("audio_format", str),
                           ("sample_rate", int), ("inactivity_timeout_s", int)):
            if name in o and type(o[name]) is not kind:
                raise ValueError(f"telnyx {name} must be {kind.__name__}, got {o[name]!r}")
        if o.get("audio_format", "linear16") not in telnyx_tts.LIVE_FORMATS:
            raise ValueError(f"telnyx audio_format {o['audio_format']!r}: linear16, mulaw or "
                             "alaw (never mp3 on the live path)")
        if "inactivity_timeout_s" in o:
            self.default_idle_timeout_s = float(o["inactivity_timeout_s"])

    def pool_key(self, output: MediaFormat) -> Hashable:
        chosen = telnyx_tts.choose_format(self.settings.voice, output.encoding,
                                          output.sample_rate)
        return _configured_format(self.settings.options, chosen, pcm="linear16")

    def connect(self, key):
        s, o = self.settings, self.settings.options
        audio_format, rate = key
        return telnyx_tts.connect_params(
            s.api_key, endpoint=s.endpoint, voice=s.voice, audio_format=audio_format,
            sample_rate=rate, language=o.get("language"), text_type=o.get("text_type"),
            disable_cache=o.get("disable_cache"),
            inactivity_timeout_s=o.get("inactivity_timeout_s"))

    def new_protocol(self, key):
        s, o = self.settings, self.settings.options
        audio_format, rate = key
        return telnyx_tts.TelnyxProtocol(audio_format=audio_format, sample_rate=rate,
                                         voice_settings=o.get("voice_settings"),
                                         markdown=o.get("strip_markdown", True), voice=s.voice)

    def handshake(self, proto):
        return [proto.handshake()]

    def begin(self, proto, cid, voice, output):
        _one_voice(self, voice)
        proto.start(cid)
        return []

    def send(self, proto, cid, text, voice=None):
        return proto.send_text(cid, text)

    nothing_to_cancel = ()  # a cancel always goes out (``{"force": true}``)

    def _turn_state(self, proto, cid):
        return proto.turn_state(cid)

    def segments_done(self, proto, cid):
        return proto.segments_done if proto.turn == cid and proto.turn_state(cid) else None

    def connection_lost(self, proto):
        return proto.connection_lost()

    def has_room(self, proto):
        return False  # one turn per socket: never shared

    def must_replace(self, proto):
        return proto.spent

    def closes_by_design(self, proto):
        return proto.closes_by_design


DRIVERS.update({d.type: d for d in (UpliftDriver, TelnyxDriver)})
DEFAULT_ENDPOINTS.update({
    "uplift": uplift.DEFAULT_ENDPOINT,
    "telnyx": telnyx_tts.DEFAULT_ENDPOINT,
})


# ---- ElevenLabs, Cartesia, Deepgram Aura (tts-providers.md §6-8) ---------------------------


class ElevenLabsDriver(ProtocolHealth, Driver):
    """§6: multi-context stream-input. A context per turn (≤5 per socket): init, text
    flushed per sentence, ``close_context``; ``isFinal`` ends it. Voice, model and audio
    format are fixed per socket by the URL."""

    type = "elevenlabs"
    _VOICE_SETTINGS = frozenset({"stability", "similarity_boost", "style", "use_speaker_boost",
                                 "speed"})
    _QUERY = frozenset({"auto_mode", "language_code", "apply_text_normalization",
                        "enable_logging"})
    option_keys = _VOICE_SETTINGS | _QUERY | {"inactivity_timeout", "chunk_length_schedule",
                                              "word_timestamps"}
    max_contexts = elevenlabs.MAX_CONTEXTS

    def __init__(self, settings: RemoteSettings):
        super().__init__(settings)
        timeout = settings.options.get("inactivity_timeout", elevenlabs.MAX_INACTIVITY_TIMEOUT)
        if type(timeout) is not int:
            raise ValueError(f"elevenlabs inactivity_timeout must be whole seconds, got "
                             f"{timeout!r}")
        self.inactivity_timeout = timeout
        # The server closes a socket that got no input for inactivity_timeout (§6 [C]);
        # an open turn waiting for streamed text sends KeepContextAlive well before.
        self.default_idle_timeout_s = float(timeout)
        self.keepalive_s = timeout / 3
        # what the caller heard, to the word (speech.done): the chunks' character alignment
        self.word_timestamps = settings.options.get("word_timestamps", True) is True

    def pool_key(self, output: MediaFormat) -> Hashable:
        return elevenlabs.choose_output_format(output.encoding, output.sample_rate)

    def connect(self, key):
        s, o = self.settings, self.settings.options
        return elevenlabs.connect_params(
            s.api_key, s.voice, endpoint=s.endpoint, model=s.model or elevenlabs.DEFAULT_MODEL,
            output_format=key, inactivity_timeout=self.inactivity_timeout,
            sync_alignment=True if self.word_timestamps else None,
            **{k: o[k] for k in self._QUERY if k in o})

    def new_protocol(self, key):
        o = self.settings.options
        generation = ({"chunk_length_schedule": o["chunk_length_schedule"]}
                      if "chunk_length_schedule" in o else None)
        return elevenlabs.ElevenLabsProtocol(
            output_format=key, voice_settings={k: o[k] for k in self._VOICE_SETTINGS if k in o},
            generation_config=generation, word_timestamps=self.word_timestamps)

    def begin(self, proto, cid, voice, output):
        _one_voice(self, voice)
        return [proto.init_message(cid)[1]]

    def send(self, proto, cid, text, voice=None):
        return proto.text_messages(cid, text, flush=True)

    def end(self, proto, cid):
        return [proto.close_message(cid)]

    def cancel(self, proto, cid):
        if proto.context_state(cid) is None:
            return []  # over, never opened, or already cut: nothing to stop upstream
        message = proto.cancel_message(cid)
        return [message] if message else []

    def keepalive(self, proto, cid):
        message = proto.keepalive_message(cid)
        return [message] if message else []

    def is_done(self, proto, cid):
        return proto.context_state(cid) is None

    def has_room(self, proto):
        return proto.open_contexts <= self.max_contexts - 2

    def can_begin(self, proto):
        # Cut turns hold their context until isFinal; rapid barge-ins would hit the cap of
        # 5, and a 6th context closes the socket with 1008 (§6 [O] livekit-js #1985).
        return proto.can_open()


class CartesiaDriver(ProtocolTurns, ProtocolHealth, Driver):
    """§7: a context per turn; a sentence is an input (``continue: true``) plus a manual
    flush, the end is ``continue: false`` (then ``done``), barge-in is ``cancel``. The
    audio format travels in every input, so one socket serves every carrier format."""

    type = "cartesia"
    tracks_segments = True  # flush_done answers the manual flush after each segment
    splits_whole_text = True
    _GENERATION = frozenset({"speed", "volume", "emotion"})  # generation_config [T pipecat]
    option_keys = _GENERATION | {"language", "version", "max_buffer_delay_ms",
                                 "pronunciation_dict_id", "word_timestamps"}
    # Concurrency is counted per account in active contexts; a socket takes "dozens of
    # concurrent generations" (WebSocket reference [C]). 50 per socket is [I].
    max_contexts = 50
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
        generation = {k: o[k] for k in self._GENERATION if k in o}
        if generation:
            extra["generation_config"] = generation
        if "pronunciation_dict_id" in o:
            extra["pronunciation_dict_id"] = o["pronunciation_dict_id"]
        return cartesia.CartesiaProtocol(
            voice=s.voice, model=s.model or cartesia.DEFAULT_MODEL,
            language=o.get("language", "en"),
            max_buffer_delay_ms=o.get("max_buffer_delay_ms", 0), extra=extra,
            # what the caller heard, to the word, for speech.done after a barge-in
            word_timestamps=o.get("word_timestamps", True) is True)

    def begin(self, proto, cid, voice, output):
        encoding, rate = cartesia.choose_output_format(output.encoding, output.sample_rate)
        proto.begin(cid, voice=voice, encoding=encoding, sample_rate=rate)
        return []

    def send(self, proto, cid, text, voice=None):
        return proto.send_text(cid, text)


    def segments_done(self, proto, cid):
        return proto.flushes_completed(cid)

    def has_room(self, proto):
        return len(proto.live_turns) <= self.max_contexts - 2


class DeepgramDriver(ProtocolTurns, ProtocolHealth, Driver):
    """§8: the socket is one stream (one turn at a time, no ids; binary audio). A turn is
    Speak (+Flush) per sentence and a final Flush; ``Flushed`` ends it; barge-in is
    ``Clear``. The voice is the model, in the URL with the audio format."""

    type = "deepgram"
    tracks_segments = True  # Flushed answers the Flush after each sentence (budget allowing)
    option_keys = frozenset({"speed", "mip_opt_out", "audio_format", "sample_rate"})
    # A Clear empties the whole socket's buffers: calls never share one.
    max_contexts = 1
    # No idle limit is documented (§8, §10); set pool.idle_timeout_s if one shows up.
    default_idle_timeout_s = None

    def __init__(self, settings: RemoteSettings):
        super().__init__(settings)
        if settings.model and settings.model != settings.voice:
            raise ValueError("deepgram: the Aura voice is the model (e.g. voice: "
                             "aura-2-thalia-en); leave model unset")

    def pool_key(self, output: MediaFormat) -> Hashable:
        chosen = deepgram.choose_format(output.encoding, output.sample_rate)
        return _configured_format(self.settings.options, chosen, pcm="linear16")

    def connect(self, key):
        s, o = self.settings, self.settings.options
        encoding, rate = key
        return deepgram.connect_params(s.api_key, endpoint=s.endpoint, model=s.voice,
                                       encoding=encoding, sample_rate=rate, speed=o.get("speed"),
                                       mip_opt_out=o.get("mip_opt_out"))

    def new_protocol(self, key):
        encoding, rate = key
        return deepgram.DeepgramProtocol(encoding=encoding, sample_rate=rate)

    def begin(self, proto, cid, voice, output):
        _one_voice(self, voice)
        proto.begin(cid)
        return []

    def send(self, proto, cid, text, voice=None):
        return proto.speak(cid, text)


    def segments_done(self, proto, cid):
        return proto.segments_completed(cid)

    def connection_lost(self, proto):
        return proto.connection_lost()

    def has_room(self, proto):
        return False


DRIVERS.update({d.type: d for d in (ElevenLabsDriver, CartesiaDriver, DeepgramDriver)})
DEFAULT_ENDPOINTS.update({
    "elevenlabs": elevenlabs.DEFAULT_ENDPOINT,
    "cartesia": cartesia.DEFAULT_ENDPOINT,
    "deepgram": deepgram.DEFAULT_ENDPOINT,
})
