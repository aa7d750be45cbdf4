"""The caller's audio, handed on: every frame the carrier sends, in its own format, to
whoever listens (a bot's socket, the voice activity detector).

The carrier's frame arrives on the media path, which must never wait: a subscriber takes
the payload synchronously and either converts and queues it (bounded, dropping and
counting when its reader is slow) or drops it. Order is the carrier's; nothing is copied
for a call nobody listens to.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gateway.carriers.events import MediaFormat

log = logging.getLogger(__name__)

Subscriber = Callable[[bytes], None]
_monotonic = time.monotonic


class CallerAudio:
    """One call's inbound audio fan-out (``Call.caller_audio``)."""

    def __init__(self, media_format: MediaFormat):
        self.format = media_format  # what the carrier streams to the gateway
        self._subscribers: tuple[Subscriber, ...] = ()
        self.frames = 0
        #: when the frame being handed on arrived (monotonic): a subscriber that queues
        #: it stamps its packets with this, to measure the delay it adds
        self.arrived_at = 0.0

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Hand every later frame to ``subscriber``; returns the function that stops it."""
        self._subscribers += (subscriber,)

        def unsubscribe() -> None:
            self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)

        return unsubscribe

    @property
    def listened(self) -> bool:
        return bool(self._subscribers)

    def feed(self, payload: bytes) -> None:
        self.frames += 1
        self.arrived_at = _monotonic()
        for subscriber in self._subscribers:
            try:
                subscriber(payload)
            except Exception:  # a listener's bug must not reach the carrier's stream
                log.exception("caller audio subscriber %r failed; unsubscribed", subscriber)
                self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)
