"""What every carrier protocol offers the gateway (:class:`CarrierProtocol`, a structural
interface), and the state every carrier class keeps (:class:`CarrierBase`).

Each carrier is one sans-I/O class in ``gateway/carriers/<carrier>/protocol.py``. The media
endpoint feeds it what arrives and writes what it returns; the call and its playout use
the outbound half. Nothing outside ``gateway/carriers`` knows a carrier's field names,
framing, chunk rules or mark/clear semantics.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol, Self, cast

from telcodecs import SUPPORTED_OUTPUT_RATES

from gateway.carriers.events import (
    CarrierCommand,
    CarrierEvent,
    Clear,
    Mark,
    MediaFormat,
    PlayAudio,
    Started,
    StartRefused,
)

#: What the gateway can synthesize into, by encoding: G.711 is 8 kHz by definition, L16 at
#: the rates telcodecs resamples to. A start asking for anything else is refused.
PLAYABLE_RATES: dict[str, frozenset[int]] = {
    "mulaw": frozenset({8000}),
    "alaw": frozenset({8000}),
    "l16": frozenset(SUPPORTED_OUTPUT_RATES),
}
#: A call id is a key in ``/v1/calls/{id}``, in logs and events: it must fit a URL path
#: segment unescaped. Carriers' ids do (CallSid, UUIDs, Telnyx ``v3:…``, Asterisk's
#: ``1712345678.42``); one that does not is mapped, one that cannot be a real id refused.
MAX_CALL_ID = 128
MAX_STREAM_ID = 256
_SAFE_CALL_ID = re.compile(r"[A-Za-z0-9._:@+=~-]+")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._:@+=~-]+")


class CarrierProtocol(Protocol):
    """What the gateway holds of one carrier stream: the media endpoint feeds it what
    arrives, the call and its playout use the outbound half. Every carrier's class
    (a :class:`CarrierBase`) is one; ``gateway/carriers/<carrier>/protocol.py``."""

    #: the name in ``/v1/media/{carrier}``, metrics and logs
    carrier: str
    #: the carrier's name as error messages spell it ("Twilio", "AudioSocket")
    display_name: str
    #: the carrier echoes pending marks when it executes a clear (Twilio, Telnyx); where it
    #: does not (Plivo, Vonage, Asterisk), marks cut by a clear are simply never echoed
    marks_cleared_on_clear: bool

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> CarrierProtocol:
        """A protocol for one stream, set up from the carrier's ``carriers:`` settings."""

    # -- inbound: one WebSocket message in, one normalized event (or None) out; a message
    #    that breaks the protocol raises CarrierProtocolError and leaves the state as it was
    def receive_text(self, text: str) -> CarrierEvent | None: ...
    def receive_bytes(self, data: bytes) -> CarrierEvent | None: ...

    # -- the stream's metadata, set once Started has been returned -----------------------
    @property
    def started(self) -> bool: ...
    @property
    def stopped(self) -> bool: ...
    stream_id: str | None
    call_id: str | None
    caller: str | None
    called: str | None
    custom_parameters: dict[str, str]

    # -- outbound, valid once Started has been returned ---------------------------------
    #: the format the carrier plays what we send in, which the gateway synthesizes into
    #: (the start's format, or the one the gateway's own answer document asked for)
    media_format: MediaFormat
    #: the format the carrier streams to us, as its start announced it
    inbound_format: MediaFormat
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

    def send(self, command: CarrierCommand) -> bytes | None: ...


class ByteStreamCarrierProtocol(CarrierProtocol, Protocol):
    """A carrier on a plain TCP connection (AudioSocket): what arrives is a byte stream,
    not messages."""

    def feed(self, data: bytes) -> list[CarrierEvent]:
        """Every event the bytes complete (a partial message waits for the rest); a
        broken message raises CarrierProtocolError, after which the stream cannot resync."""


class CarrierBase:
    """What the carrier protocol classes share: the stream's state and :meth:`send`.

    A subclass sets :attr:`carrier` and :attr:`display_name`, passes its default
    :class:`MediaFormat` to ``__init__``, and calls :meth:`_begin` with the
    :class:`~gateway.carriers.events.Started` event once the stream's metadata has arrived
    and been validated; :meth:`_begin` refuses a start the gateway cannot serve.

    Where the carrier plays what we send in a format set apart from what it streams to us
    (Telnyx: ``bidirectionalCodec``), the subclass sets :attr:`played_format` from the
    answer document's settings (:meth:`from_options`); it is then the outbound format.
    """

    carrier: str
    #: the carrier's name as error messages spell it ("Twilio", "AudioSocket")
    display_name: str

    def __init__(self, media_format: MediaFormat) -> None:
        self.stream_id: str | None = None
        self.call_id: str | None = None
        self.media_format: MediaFormat = media_format
        self.inbound_format: MediaFormat = media_format
        self.played_format: MediaFormat | None = None
        self.custom_parameters: dict[str, str] = {}
        self.caller: str | None = None  # from the start, where the carrier gives them
        self.called: str | None = None
        self._stopped = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Self:
        """A protocol for one stream, set up from the carrier's ``carriers:`` settings."""
        # every carrier's class is made without arguments (it passes its default format up)
        return cast(Callable[[], Self], cls)()

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
        """Take the stream's metadata from the (validated) event that reports its start.

        Raises :class:`~gateway.carriers.events.StartRefused`, leaving the state as it was,
        for a format the gateway cannot produce or an id that cannot be a key; returns the
        event with the call id it gets (see :func:`call_key`)."""
        played = self.played_format or started.media_format
        if played.sample_rate not in PLAYABLE_RATES.get(played.encoding, ()):
            raise _unplayable(self.display_name, played)
        started = _keyed(started, self.display_name)
        self.stream_id = started.stream_id
        self.call_id = started.call_id
        self.inbound_format = started.media_format
        self.media_format = played
        self.custom_parameters = dict(started.custom_parameters)
        self.caller, self.called = started.caller, started.called
        return started

    # the outbound half each carrier's class writes (see CarrierProtocol)
    def media_message(self, payload: bytes) -> bytes:
        raise NotImplementedError

    def mark_message(self, name: str) -> bytes | None:
        raise NotImplementedError

    def clear_message(self) -> bytes | None:
        raise NotImplementedError

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


def _unplayable(carrier: str, fmt: MediaFormat) -> StartRefused:
    rates = PLAYABLE_RATES.get(fmt.encoding)
    can = (f"{fmt.encoding} only at {' or '.join(map(str, sorted(rates)))} Hz" if rates
           else f"no {fmt.encoding!r}")
    return StartRefused(
        "unsupported_format",
        f"{carrier} start asks for {fmt.encoding} at {fmt.sample_rate} Hz, which the gateway "
        f"cannot produce (it plays {can}); configure the carrier's stream for one it can",
    )


def call_key(call_id: str) -> str | None:
    """The id a call gets from its carrier's ``call_id``: the id itself when it fits a URL
    path segment unescaped, else with each run of other characters replaced by ``-``
    (Asterisk's ``WebSocket/<connection>/0x…`` becomes ``WebSocket-<connection>-0x…``);
    ``None`` for one that cannot be a carrier's id (too long, control characters)."""
    if len(call_id) > MAX_CALL_ID or not call_id.isprintable():
        return None
    if _SAFE_CALL_ID.fullmatch(call_id):
        return call_id
    return _UNSAFE_RUN.sub("-", call_id).strip("-") or None


def _keyed(started: Started, carrier: str) -> Started:
    key = call_key(started.call_id)
    if key is None:
        raise StartRefused(
            "bad_call_id",
            f"{carrier} start has a call id of {len(started.call_id)} characters that cannot "
            f"be a carrier's: at most {MAX_CALL_ID}, printable, no line breaks",
        )
    if len(started.stream_id) > MAX_STREAM_ID:
        raise StartRefused(
            "bad_call_id",
            f"{carrier} start has a stream id of {len(started.stream_id)} characters; at most "
            f"{MAX_STREAM_ID}",
        )
    if key == started.call_id:
        return started
    details = dict(started.details)
    if started.call_id not in details.values():
        details["carrier_call_id"] = started.call_id
    return replace(started, call_id=key, details=details)
