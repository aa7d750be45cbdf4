"""The drivers' base: how the pool and the session run a turn on a provider's sans-I/O
protocol, through the one vocabulary of :class:`~gateway.tts.providers.base.ProviderProtocol`.

Each provider's ``driver.py`` (in its folder) adds what differs: the connection's
parameters, the protocol's construction, a turn's audio format where it is chosen per turn,
and the provider's connection rules.
Drivers build messages and read protocol state; they never do I/O. The pool and the
session (:mod:`gateway.tts.remote.pool`, :mod:`gateway.tts.remote.session`) are the same
for every provider.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from gateway.carriers.events import MediaFormat
from gateway.tts.providers.base import ProviderProtocol
from gateway.tts.providers.common import SocketIOParams, WebSocketParams
from gateway.tts.providers.events import ProviderEvent, ProviderReady
from gateway.tts.providers.spec import ANY_OPTION, ProviderSpec


P = TypeVar("P", bound=ProviderProtocol)


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


class Driver(Generic[P]):
    """Base: one connection serves one turn at a time per call; no handshake message.
    ``P`` is the provider's protocol class."""

    #: Each text segment is its own turn, run one after the other (one request at a time).
    turn_per_segment = False
    #: Wait for a :class:`ProviderReady` frame before the connection counts as open.
    await_ready = False
    #: Send :meth:`keepalive` for an open turn that waits this long for more text.
    keepalive_s: float | None = None
    #: The server closes a socket idle this long (the pool refreshes idle ones before).
    default_idle_timeout_s: float | None = None
    #: A connection serves one turn, then is retired (the server closes the socket after its
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
    #: The voice is part of the socket URL: a turn cannot change it (:func:`one_voice`).
    voice_in_url = False

    def __init__(self, settings: RemoteSettings, spec: ProviderSpec):
        self.spec = spec
        self.type = spec.type
        unknown = set(settings.options) - spec.options
        if unknown and spec.options is not ANY_OPTION:
            raise ValueError(f"unknown {self.type} options {sorted(unknown)} (known: "
                             f"{', '.join(sorted(spec.options)) or 'none'})")
        self.settings = settings

    @property
    def word_timestamps(self) -> bool:
        """Ask for word timings (on unless ``options.word_timestamps`` is false): what the
        caller heard, to the word, for ``speech.done`` after a barge-in."""
        return self.settings.options.get("word_timestamps", True) is True

    def extra_options(self, *own: str) -> dict[str, Any]:
        """The options passed on to the provider as they are: all but ``own`` (those the
        driver reads itself) and ``word_timestamps``."""
        return {k: v for k, v in self.settings.options.items()
                if k not in own and k != "word_timestamps"}

    def configured_format(self, chosen: tuple[str, int]) -> tuple[str, int]:
        """The provider's audio format: ``chosen`` for the call's carrier, unless the
        options name one, where the spec offers that (``pcm_format``): ``audio_format`` in
        the provider's own words, ``sample_rate`` for its PCM (G.711 is 8 kHz). The operator
        knows better what a voice streams, and the benchmark asks for 24 kHz PCM on a μ-law
        carrier to measure the resampled path."""
        pcm, options = self.spec.pcm_format, self.settings.options
        if pcm is None:
            return chosen
        fmt, rate = chosen
        if "audio_format" in options:
            fmt = options["audio_format"]
            rate = options.get("sample_rate", 8000 if fmt != pcm else rate)
        elif "sample_rate" in options and fmt == pcm:
            rate = options["sample_rate"]
        return fmt, rate

    def pool_key(self, output: MediaFormat) -> Hashable:
        """Connections are interchangeable between calls with the same key."""
        return None

    def connect(self, key: Hashable) -> WebSocketParams | SocketIOParams:
        """Where the socket for ``key`` opens, and what carries the messages: a WebSocket
        (text frames), or for :class:`SocketIOParams` Socket.IO (events named by each
        message's ``type``; see ``connection.SocketIOWebSocket``)."""
        raise NotImplementedError

    def new_protocol(self, key: Hashable) -> P:
        raise NotImplementedError

    def connection_made(self, proto: P) -> list[ProviderEvent]:
        return [] if self.await_ready else [ProviderReady()]

    def connection_lost(self, proto: P) -> list[ProviderEvent]:
        return proto.connection_lost()

    def turn_format(self, output: MediaFormat) -> tuple[str | None, int | None]:
        """The audio format of a turn for a call that plays ``output``, in the provider's
        own words, where it is chosen per turn; ``(None, None)``: the socket's."""
        return None, None

    def begin(self, proto: P, cid: str, voice: str | None, output: MediaFormat) -> list[str]:
        if self.voice_in_url:
            one_voice(self, voice)
            voice = None
        encoding, rate = self.turn_format(output)
        return proto.begin(cid, voice, encoding=encoding, sample_rate=rate)

    def send(self, proto: P, cid: str, text: str) -> list[str]:
        return proto.send(cid, text)

    #: Turn states in which a cancel has nothing to stop upstream (empty: always cancel).
    nothing_to_cancel: tuple[str | None, ...] = (None,)

    def end(self, proto: P, cid: str) -> list[str]:
        return proto.finish(cid)

    def cancel(self, proto: P, cid: str) -> list[str]:
        if proto.state(cid) in self.nothing_to_cancel:
            return []
        return proto.cancel(cid)

    def keepalive(self, proto: P, cid: str) -> list[str]:
        return proto.keepalive(cid)

    def is_done(self, proto: P, cid: str) -> bool:
        """The turn ended without a done frame still to come."""
        return proto.state(cid) is None

    def segments_done(self, proto: P, cid: str) -> int | None:
        """How many of the turn's segments (:meth:`send` calls, in order) have all their
        audio received, from the provider's own per-segment signal; None when unknown (the
        turn is over, or the provider has no such signal)."""
        return proto.segments_done(cid)

    def has_room(self, proto: P) -> bool:
        return True

    def can_begin(self, proto: P) -> bool:
        """A new turn of the call that holds this socket fits on it (else the call moves to
        a fresh socket; e.g. every context is taken by cut turns still draining)."""
        return True

    def reusable(self, proto: P) -> bool:
        """Clean: no open turn, no pending audio, nothing that forbids reuse."""
        return proto.reusable()

    def must_replace(self, proto: P) -> bool:
        """The socket cannot serve another turn (e.g. audio of a cancelled request is
        still coming and the provider has no cancel): the call needs a fresh one."""
        return proto.failed

    def is_cancelled(self, proto: P, cid: str) -> bool:
        return proto.is_cancelled(cid)

    def handshake(self, proto: P) -> list[str]:
        """Messages sent once, right after the socket opens and before it counts as open
        (an init frame)."""
        return []

    def closes_by_design(self, proto: P) -> bool:
        """The provider closes the socket now as its protocol says it does (e.g. after
        the final frame): the pool does not count that close as a reconnect."""
        return False


def one_voice(driver: Driver, voice: str | None) -> None:
    """Providers whose voice is part of the socket URL cannot change it per turn."""
    if voice and voice != driver.settings.voice:
        raise ValueError(f"{driver.type} takes the voice in the socket URL: voice {voice!r} "
                         f"differs from the provider's {driver.settings.voice!r}; configure "
                         "a provider per voice")
