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
from gateway.tts.providers.events import ProviderEvent, ProviderReady
from gateway.tts.providers.spec import ANY_OPTION, ProviderSpec


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


class Driver:
    """Base: one connection serves one turn at a time per call; no handshake message."""

    #: Each text segment is its own turn, run one after the other (one request at a time).
    turn_per_segment = False
    #: Wait for a :class:`ProviderReady` frame before the connection counts as open.
    await_ready = False
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

    def __init__(self, settings: RemoteSettings, spec: ProviderSpec):
        self.spec = spec
        self.type = spec.type
        unknown = set(settings.options) - spec.options
        if unknown and spec.options is not ANY_OPTION:
            raise ValueError(f"unknown {self.type} options {sorted(unknown)} (known: "
                             f"{', '.join(sorted(spec.options)) or 'none'})")
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


def one_voice(driver: Driver, voice: str | None) -> None:
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
