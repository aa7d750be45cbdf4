"""The normalized carrier model: events in, commands out.

Every carrier protocol module turns its wire messages into these events and these
commands into its wire messages. Nothing outside ``gateway/carriers`` knows a carrier's
field names, framing or mark/clear semantics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: ``CarrierProtocolError.kind``: what is wrong with a carrier message (a metric label)
CarrierErrorKind = Literal["not_json", "unknown_event", "missing_field", "bad_payload",
                           "binary_frame", "out_of_order", "bad_frame_size"]
#: ``StartRefused.kind``: why a well-formed start cannot be taken (a metric label)
StartRefusalKind = Literal["unsupported_format", "bad_call_id"]


@dataclass(frozen=True, slots=True)
class MediaFormat:
    """Audio format on the carrier's wire: ``encoding`` is ``mulaw``, ``alaw`` or ``l16``."""

    encoding: str = "mulaw"
    sample_rate: int = 8000

    @property
    def bytes_per_20ms(self) -> int:
        width = 2 if self.encoding == "l16" else 1
        return self.sample_rate * width // 50


# ---- events (carrier -> gateway) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """The carrier's hello, before the stream's metadata."""


@dataclass(frozen=True, slots=True)
class Started:
    """The stream's metadata. ``media_format`` is what the carrier streams to us, as its
    start announces it; ``details`` is what the carrier says about the call besides its id
    (Asterisk's channel name; the carrier's own id when the gateway had to map it).
    ``caller`` and ``called`` are the numbers (or SIP addresses) where the start carries
    them (Telnyx, Exotel; Vonage when the NCCO's headers do), bounded; else None."""

    call_id: str
    stream_id: str
    media_format: MediaFormat = field(default_factory=MediaFormat)
    custom_parameters: dict[str, str] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    caller: str | None = None
    called: str | None = None


@dataclass(frozen=True, slots=True, init=False)
class Audio:
    """Caller audio in the carrier's wire format (already base64-decoded)."""

    payload: bytes

    def __init__(self, payload: bytes):
        # 50 per second per call: skip the frozen dataclass __init__'s object.__setattr__ dance
        object.__setattr__(self, "payload", payload)


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    """The carrier echoed a mark: everything sent before it has played (or was cleared)."""

    name: str


@dataclass(frozen=True, slots=True)
class Cleared:
    """The carrier acknowledged a clear (only carriers that send an explicit ack)."""


@dataclass(frozen=True, slots=True)
class Stopped:
    """The stream ended on the carrier's side."""


@dataclass(frozen=True, slots=True)
class FlowControl:
    """The carrier asks us to stop (``paused``) or resume sending media (Asterisk XOFF/XON)."""

    paused: bool


@dataclass(frozen=True, slots=True)
class CarrierFault:
    """The carrier reports an error about something we sent (Telnyx ``error``, Asterisk
    ``ERROR``); ``code`` is short and bounded, for the metric label."""

    code: str
    detail: str


CarrierEvent = (Connected | Started | Audio | Dtmf | MarkPlayed | Cleared | Stopped | FlowControl
                | CarrierFault)


# ---- commands (gateway -> carrier) -----------------------------------------------


class Binary(bytes):
    """An outbound message that goes as a binary WebSocket frame (Vonage and Asterisk
    audio). Plain ``bytes`` from a protocol are the UTF-8 of a text frame."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class PlayAudio:
    """Audio already in the carrier's wire format, one or more whole 20 ms frames."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Mark:
    name: str


@dataclass(frozen=True, slots=True)
class Clear:
    pass


CarrierCommand = PlayAudio | Mark | Clear


class CarrierProtocolError(ValueError):
    """A carrier message that does not follow the protocol.

    ``kind`` is a short, bounded label for metrics (:data:`CarrierErrorKind`).
    """

    def __init__(self, kind: CarrierErrorKind | StartRefusalKind, message: str):
        super().__init__(message)
        self.kind: CarrierErrorKind | StartRefusalKind = kind


class StartRefused(CarrierProtocolError):
    """A well-formed start the gateway cannot take: the stream is refused in the carrier's
    own way (WebSocket close 1008, AudioSocket hang-up), not just the message dropped.

    ``kind`` is ``unsupported_format`` (an encoding or rate the gateway cannot produce) or
    ``bad_call_id`` (an id that cannot be a key: too long, or with control characters).
    """
