"""The one vocabulary every provider protocol speaks, so one driver base runs them all.

A *turn* is what one utterance is on the wire: a context of a multiplexed socket, a set of
requests, a request per segment, a stretch of a one-stream socket, or a single-use
socket's one utterance. Every protocol opens one with :meth:`~ProviderProtocol.begin` and
sends its text segment by segment with :meth:`~ProviderProtocol.send`, whatever that takes
on its wire (a create message, a request per piece, nothing until the first text).
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

    def begin(self, turn_id: str, voice: str | None = None, *, encoding: str | None = None,
              sample_rate: int | None = None) -> list[str]:
        """Messages that open a turn (often none: the first text opens it), in ``voice``
        (None: the protocol's) and, where the format is chosen per turn, ``encoding`` and
        ``sample_rate`` in the provider's own words (None: its default). A protocol whose
        format (or voice) is fixed per socket refuses one here
        (:meth:`ProtocolDefaults.fixed_per_socket`)."""

    def send(self, turn_id: str, text: str) -> list[str]:
        """Messages for one segment of the turn's text (split within the provider's limits;
        a flush after it where the provider tells when each segment's audio is out)."""

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
    provider: str = ""

    def fixed_per_socket(self, voice: str | None = None, encoding: str | None = None,
                         sample_rate: int | None = None) -> None:
        """For :meth:`ProviderProtocol.begin` of a protocol whose socket fixes the voice or
        the audio format (in its URL): a turn that asks for its own is a bug."""
        asked = [name for name, value in (("voice", voice), ("encoding", encoding),
                                          ("sample_rate", sample_rate)) if value is not None]
        if asked:
            raise ValueError(f"{self.provider} fixes the {' and '.join(asked)} per socket: a "
                             "turn cannot ask for its own")

    def segments_done(self, turn_id: str) -> int | None:
        return None  # no per-segment signal

    def keepalive(self, turn_id: str) -> list[str]:
        return []

    def connection_lost(self) -> list[ProviderEvent]:
        return []

    def reusable(self) -> bool:
        return self.is_clean() and not self.failed

    def is_clean(self) -> bool:
        raise NotImplementedError
