"""What every carrier protocol module offers the gateway (a structural interface), and the
state every carrier class keeps (:class:`CarrierBase`).

Each carrier is one sans-I/O class in ``gateway/carriers/<carrier>.py``. The media
endpoint feeds it what arrives and writes what it returns; the call and its playout use
the outbound half. Nothing outside ``gateway/carriers`` knows a carrier's field names,
framing, chunk rules or mark/clear semantics.
"""

from __future__ import annotations

from typing import Protocol

from gateway.carriers.events import (
    CarrierCommand,
    CarrierEvent,
    Clear,
    Mark,
    MediaFormat,
    PlayAudio,
    Started,
)


class CarrierProtocol(Protocol):
    #: the name in ``/v1/media/{carrier}``, metrics and logs
    carrier: str
    #: the carrier echoes pending marks when it executes a clear (Twilio, Telnyx); where it
    #: does not (Plivo, Vonage, Asterisk), marks cut by a clear are simply never echoed
    marks_cleared_on_clear: bool

    # -- inbound: one WebSocket message in, one normalized event (or None) out; a message
    #    that breaks the protocol raises CarrierProtocolError and leaves the state as it was
    def receive_text(self, text: str) -> CarrierEvent | None: ...
    def receive_bytes(self, data: bytes) -> CarrierEvent | None: ...

    # -- outbound, valid once Started has been returned ---------------------------------
    #: the carrier's audio format for this call, both ways
    media_format: MediaFormat
    #: 20 ms frames per media message (1 for most; Exotel needs at least 3.2 KB)
    frames_per_message: int
    #: seconds of audio we may send ahead of real time; None: the configured lead; 0: the
    #: carrier cannot buffer, so every frame leaves exactly on the clock (AudioSocket, Vonage)
    lead_s: float | None

    def media_message(self, payload: bytes) -> bytes:
        """One media message for ``frames_per_message`` whole frames in ``media_format``.

        Returns the UTF-8 of a text frame, or a :class:`~gateway.carriers.events.Binary`
        for a binary frame (or raw bytes for a TCP carrier)."""

    def mark_message(self, name: str) -> bytes | None:
        """The mark to send after an utterance; ``None`` if the carrier has no marks (the
        gateway then times the end of playout on its own clock)."""

    def clear_message(self) -> bytes | None:
        """The barge-in command; ``None`` if the carrier holds no buffer to clear."""

    def hangup_message(self) -> bytes | None:
        """What to send before closing to end the call; ``None``: closing is enough."""


class CarrierBase:
    """What the carrier protocol classes share: the stream's state and :meth:`send`.

    A subclass sets :attr:`carrier` and :attr:`display_name`, passes its default
    :class:`MediaFormat` to ``__init__``, and calls :meth:`_begin` with the
    :class:`~gateway.carriers.events.Started` event once the stream's metadata has arrived
    and been validated.
    """

    carrier: str
    #: the carrier's name as error messages spell it ("Twilio", "AudioSocket")
    display_name: str

    def __init__(self, media_format: MediaFormat) -> None:
        self.stream_id: str | None = None
        self.call_id: str | None = None
        self.media_format: MediaFormat = media_format
        self.custom_parameters: dict[str, str] = {}
        self._stopped = False

    @property
    def started(self) -> bool:
        """The stream's start has been received: :attr:`stream_id` and friends are set."""
        return self.stream_id is not None

    @property
    def stopped(self) -> bool:
        """The carrier ended the stream (always ``False`` for a carrier that has no stop
        message: the socket's close is the end)."""
        return self._stopped

    def _begin(self, started: Started) -> Started:
        """Take the stream's metadata from the (validated) event that reports its start."""
        self.stream_id = started.stream_id
        self.call_id = started.call_id
        self.media_format = started.media_format
        self.custom_parameters = dict(started.custom_parameters)
        return started

    def send(self, command: CarrierCommand) -> bytes | None:
        """The message for a normalized command: what :meth:`media_message`,
        :meth:`mark_message` or :meth:`clear_message` return for it."""
        if type(command) is PlayAudio:
            return self.media_message(command.payload)
        if type(command) is Mark:
            return self.mark_message(command.name)
        if type(command) is Clear:
            return self.clear_message()
        raise TypeError(f"{self.display_name} has no message for command {command!r}")
