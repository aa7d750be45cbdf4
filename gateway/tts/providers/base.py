"""The one vocabulary every provider protocol speaks, so one driver base runs them all.

A *turn* is what one utterance is on the wire: a context of a multiplexed socket, a set of
requests, a request per segment, a stretch of a one-stream socket, or a single-use
socket's one utterance. How a turn begins and how its text goes out differ too much to
share a signature; they stay in each driver.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from gateway.tts.providers.events import ProviderEvent


@runtime_checkable
class ProviderProtocol(Protocol):
    """What the driver base (:class:`gateway.tts.providers.driver.Driver`) asks of a
    protocol. Every method builds messages or reads state; none does I/O."""

    #: The socket is of no more use (a fatal error): a call on it moves to a fresh one.
    failed: bool

    def state(self, turn_id: str) -> str | None:
        """The turn's state in the provider's own words; None once it is over (or for an
        id never begun), except where a provider remembers how it ended."""

    def segments_done(self, turn_id: str) -> int | None:
        """Segments (send calls, in order) of the turn whose audio is all out, from the
        provider's own per-segment signal; None when unknown or the turn is over."""

    def is_cancelled(self, turn_id: str) -> bool:
        """The turn was cut: audio still arriving for it is dropped."""

    def finish(self, turn_id: str) -> list[str]:
        """Messages that end the turn's text (the rest of its audio still comes)."""

    def cancel(self, turn_id: str) -> list[str]:
        """Messages that cut the turn (barge-in); empty where the provider has no verb."""

    def keepalive(self, turn_id: str) -> list[str]:
        """Messages that keep an open turn waiting for more text alive (empty: none)."""

    def receive(self, text: str) -> list[ProviderEvent]:
        """The events of one text frame from the provider."""

    def connection_lost(self) -> list[ProviderEvent]:
        """Events for the turns the closed socket leaves unfinished."""

    def is_clean(self) -> bool:
        """No turn open or draining: no audio can still arrive."""

    def reusable(self) -> bool:
        """Clean, and nothing forbids another turn on the socket."""


class ProtocolDefaults:
    """What most protocols answer alike; a protocol overrides what it does differently."""

    failed: bool = False

    def segments_done(self, turn_id: str) -> int | None:
        return None  # no per-segment signal

    def keepalive(self, turn_id: str) -> list[str]:
        return []

    def connection_lost(self) -> list[ProviderEvent]:
        return []

    def reusable(self) -> bool:
        return self.is_clean()

    def is_clean(self) -> bool:
        raise NotImplementedError
