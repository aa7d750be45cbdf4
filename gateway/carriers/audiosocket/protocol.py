"""Asterisk AudioSocket (plain TCP, not WebSocket), server side, as a sans-I/O protocol.

Asterisk's ``AudioSocket()`` application or ``Dial(AudioSocket/...)`` connects to the
gateway over TCP. Every message both ways is ``kind (1 byte) | length (2 bytes, big
endian) | payload`` (docs/protocols/carriers.md §6.4; asterisk ``res/res_audiosocket.c``)::

    Asterisk -> gateway   UUID (first), then audio, DTMF, error; hangup or TCP close
    gateway -> Asterisk   audio, hangup

Kinds, from ``enum ast_audiosocket_msg_kind`` and docs.asterisk.org "AudioSocket":
0x00 hangup, 0x01 UUID (16 binary bytes), 0x03 DTMF (one ASCII byte), 0x10 audio slin
8 kHz, 0x11..0x18 audio slin12/16/24/32/44/48/96/192 (asterisk PR #1492, Oct 2025: 0x11 is
12 kHz, not 16 kHz as in that PR's first draft), 0xFF error. Audio is 16-bit signed
little-endian mono PCM.

There is no buffer on Asterisk's side: each frame we send is written to the channel as it
arrives, so the gateway sends one 20 ms frame per message exactly on its clock. There are
no marks and nothing to clear.

The rate is not announced: it shows only in the kind of the audio messages. The protocol
is therefore built for one rate (``sample_rate=``, 8000 by default, what the dialplan
application always uses) and rejects audio of another kind with an error that says which
rate to configure. Rates above 8 kHz need an Asterisk with PR #1492; older builds label
every audio message 0x10 whatever its rate (CyCoreSystems/audiosocket PR #28 discussion).
Asterisk usually ends a call by closing the TCP connection; a hangup message from it is
accepted too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from itertools import combinations

from gateway.carriers.base import CarrierBase
from gateway.carriers.events import (
    Audio,
    CarrierEvent,
    CarrierFault,
    CarrierProtocolError,
    Dtmf,
    MediaFormat,
    Started,
    Stopped,
)

__all__ = [
    "AUDIO_KIND_RATES",
    "KIND_AUDIO",
    "KIND_DTMF",
    "KIND_ERROR",
    "KIND_HANGUP",
    "KIND_UUID",
    "AudioSocketProtocol",
    "MessageDecoder",
    "audio_kind",
    "encode_message",
]

KIND_HANGUP = 0x00
KIND_UUID = 0x01
KIND_DTMF = 0x03
KIND_AUDIO = 0x10
KIND_ERROR = 0xFF
#: audio kind -> sample rate (slin, slin12 .. slin192; slin44 is 44.1 kHz)
AUDIO_KIND_RATES = {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000,
                    0x15: 44100, 0x16: 48000, 0x17: 96000, 0x18: 192000}
_RATE_KINDS = {rate: kind for kind, rate in AUDIO_KIND_RATES.items()}
_KIND_NAMES = {KIND_HANGUP: "hangup", KIND_UUID: "UUID", KIND_DTMF: "DTMF", KIND_ERROR: "error",
               **{kind: f"audio ({rate} Hz)" for kind, rate in AUDIO_KIND_RATES.items()}}
HEADER_BYTES = 3
MAX_PAYLOAD = 0xFFFF
# Bounds that catch a peer that is not AudioSocket early, from the header alone: Asterisk
# sends ptime-sized audio (20 ms), a one-byte error code, an empty hangup.
_MAX_AUDIO_SECONDS = 0.2
_MAX_CONTROL_PAYLOAD = 256
# Asterisk's error codes are bit-packed (CyCoreSystems/audiosocket README)
_ERROR_BITS = {0x01: "caller_hangup", 0x02: "frame_forwarding", 0x04: "memory"}
#: ``CarrierFault.code``: the error bits' names, alone or together, or "unspecified"
FAULT_CODES = frozenset({"unspecified", *("+".join(bits) for n in (1, 2, 3)
                                          for bits in combinations(_ERROR_BITS.values(), n))})


def encode_message(kind: int, payload: bytes = b"") -> bytes:
    """One AudioSocket message: ``kind | length (big endian) | payload``."""
    if not 0 <= kind <= 0xFF:
        raise ValueError(f"AudioSocket kind must be one byte, got {kind!r}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"AudioSocket payload is at most {MAX_PAYLOAD} bytes, got {len(payload)}")
    return bytes((kind,)) + len(payload).to_bytes(2, "big") + payload


def audio_kind(sample_rate: int) -> int:
    """The audio kind for ``sample_rate`` (0x10 for 8000 ... 0x18 for 192000)."""
    kind = _RATE_KINDS.get(sample_rate)
    if kind is None:
        raise ValueError(
            f"AudioSocket has no audio kind for {sample_rate} Hz; rates: "
            f"{', '.join(str(r) for r in _RATE_KINDS)}"
        )
    return kind


class MessageDecoder:
    """Incremental AudioSocket framing: feed bytes as they are read, get whole messages.

    ``check(kind, length)`` (optional) runs as soon as a header is complete, before its
    payload has arrived, and may raise :class:`CarrierProtocolError`. After an error the
    decoder is unusable: a byte stream has no way to find the next message boundary.
    """

    def __init__(self, check: Callable[[int, int], None] | None = None) -> None:
        self._buffer = bytearray()
        self._check = check
        self._head_checked = False
        self.error: CarrierProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held of a message not yet complete."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The ``(kind, payload)`` messages completed by ``data``, in order."""
        if self.error is not None:
            raise CarrierProtocolError(
                self.error.kind, f"AudioSocket stream already broken ({self.error}); close it"
            )
        buffer = self._buffer
        buffer += data
        messages = []
        pos, end = 0, len(buffer)
        try:
            while end - pos >= HEADER_BYTES:
                kind = buffer[pos]
                length = buffer[pos + 1] << 8 | buffer[pos + 2]
                if self._check is not None and not self._head_checked:
                    self._check(kind, length)
                    self._head_checked = True
                stop = pos + HEADER_BYTES + length
                if stop > end:
                    break
                messages.append((kind, bytes(buffer[pos + HEADER_BYTES:stop])))
                self._head_checked = False
                pos = stop
        except CarrierProtocolError as exc:
            self.error = exc
            raise
        finally:
            del buffer[:pos]
        return messages


class AudioSocketProtocol(CarrierBase):
    """One AudioSocket connection, seen from the gateway (the TCP server).

    Inbound: :meth:`feed` with whatever each TCP read returned; it buffers partial
    messages and returns the events of the whole ones. Unlike the WebSocket carriers, a
    :class:`~gateway.carriers.events.CarrierProtocolError` (unknown kind, impossible
    length, a message out of order, audio of another rate) leaves the stream unusable:
    there is no frame boundary to resync on, so every later call raises too and the caller
    should close the connection. Events of messages decoded from the same chunk before the
    bad one are dropped with it. :meth:`receive_bytes` takes exactly one whole message.

    Outbound: plain bytes for the TCP stream. :meth:`media_message` takes exactly one 20 ms
    frame and raises :class:`RuntimeError` before the UUID message; :meth:`hangup_message`
    works at any time (also to turn a connection away); :meth:`send` gives ``None`` for
    marks and clears.

    State: :attr:`started` once the UUID message is in, :attr:`stopped` once Asterisk sent
    a hangup message.
    """

    carrier = "audiosocket"
    display_name = "AudioSocket"
    #: no marks at all: the gateway times the end of playout on its own clock
    marks_cleared_on_clear = False
    frames_per_message = 1
    #: no buffer on Asterisk's side: every frame leaves exactly on the clock
    lead_s: float | None = 0.0

    def __init__(self, sample_rate: int = 8000) -> None:
        self._audio_kind = audio_kind(sample_rate)
        super().__init__(MediaFormat("l16", sample_rate))
        self._frame_bytes = self.media_format.bytes_per_20ms
        self._media_header = bytes((self._audio_kind,)) + self._frame_bytes.to_bytes(2, "big")
        self._decoder = MessageDecoder(self._check_header)
        self._error: CarrierProtocolError | None = None

    # ---- inbound ---------------------------------------------------------------

    def feed(self, data: bytes) -> list[CarrierEvent]:
        """The events of the messages that ``data`` completes (possibly none)."""
        if self._error is not None:
            raise CarrierProtocolError(
                self._error.kind,
                f"AudioSocket stream already failed ({self._error}); a TCP stream cannot "
                "resync: close the connection",
            )
        try:
            events = []
            for kind, payload in self._decoder.feed(data):
                event = self._on_message(kind, payload)
                if event is not None:
                    events.append(event)
            return events
        except CarrierProtocolError as exc:
            self._error = exc
            raise

    def receive_bytes(self, data: bytes) -> CarrierEvent | None:
        """Exactly one whole message (as :func:`encode_message` builds it) -> its event.

        For callers that already hold message boundaries; a TCP reader uses :meth:`feed`."""
        length = int.from_bytes(data[1:3], "big") if len(data) >= HEADER_BYTES else None
        if self._decoder.buffered or length is None or len(data) != HEADER_BYTES + length:
            raise CarrierProtocolError(
                "bad_frame_size",
                f"receive_bytes takes exactly one whole AudioSocket message, got {len(data)} "
                "bytes (" + ("no whole 3-byte header" if length is None else
                             f"header says a {length}-byte payload")
                + f", {self._decoder.buffered} bytes already buffered by feed); use feed() "
                "for a byte stream",
            )
        events = self.feed(data)
        return events[0] if events else None

    def receive_text(self, text: str) -> CarrierEvent | None:
        """AudioSocket is a TCP byte stream: there are no text frames."""
        raise TypeError("AudioSocket runs over plain TCP and has no text frames; use feed()")

    def _check_header(self, kind: int, length: int) -> None:
        if kind in AUDIO_KIND_RATES:
            limit = min(MAX_PAYLOAD, int(AUDIO_KIND_RATES[kind] * 2 * _MAX_AUDIO_SECONDS))
            if not length or length % 2 or length > limit:
                raise CarrierProtocolError(
                    "bad_frame_size",
                    f"AudioSocket audio message (kind 0x{kind:02x}) of {length} bytes: expected "
                    f"an even length from 2 to {limit} (16-bit PCM, at most "
                    f"{_MAX_AUDIO_SECONDS * 1000:.0f} ms)",
                )
        elif kind == KIND_UUID and length != 16:
            raise CarrierProtocolError(
                "bad_payload", f"AudioSocket UUID message of {length} bytes: a UUID is 16 bytes"
            )
        elif kind == KIND_DTMF and length != 1:
            raise CarrierProtocolError(
                "bad_payload",
                f"AudioSocket DTMF message of {length} bytes: the digit is one ASCII byte",
            )
        elif kind in (KIND_HANGUP, KIND_ERROR):
            if length > _MAX_CONTROL_PAYLOAD:
                raise CarrierProtocolError(
                    "bad_frame_size",
                    f"AudioSocket {_KIND_NAMES[kind]} message of {length} bytes: expected at "
                    f"most {_MAX_CONTROL_PAYLOAD} (is the peer speaking AudioSocket?)",
                )
        elif kind not in _KIND_NAMES:
            raise CarrierProtocolError(
                "unknown_event",
                f"unknown AudioSocket message kind 0x{kind:02x} (length {length}); expected "
                "0x00 hangup, 0x01 UUID, 0x03 DTMF, 0x10..0x18 audio or 0xff error "
                "(is the peer speaking AudioSocket?)",
            )

    def _on_message(self, kind: int, payload: bytes) -> CarrierEvent | None:
        if self._stopped:
            raise CarrierProtocolError(
                "out_of_order", f"AudioSocket {_KIND_NAMES[kind]} message after hangup"
            )
        if kind == KIND_UUID:
            if self.started:
                raise CarrierProtocolError(
                    "out_of_order", f"a second AudioSocket UUID message on call {self.call_id}"
                )
            call_id = str(uuid.UUID(bytes=payload))
            return self._begin(Started(call_id, call_id, self.media_format, {}))
        if kind == KIND_HANGUP:
            self._stopped = True
            return Stopped()
        if kind == KIND_ERROR:
            return _fault(payload)
        if not self.started:
            raise CarrierProtocolError(
                "out_of_order",
                f"AudioSocket {_KIND_NAMES[kind]} message before the UUID message, which "
                "Asterisk sends first",
            )
        if kind == KIND_DTMF:
            if not 0x21 <= payload[0] <= 0x7E:
                raise CarrierProtocolError(
                    "bad_payload", f"AudioSocket DTMF byte 0x{payload[0]:02x} is not an ASCII digit"
                )
            return Dtmf(chr(payload[0]))
        if kind != self._audio_kind:
            rate = AUDIO_KIND_RATES[kind]
            raise CarrierProtocolError(
                "bad_payload",
                f"AudioSocket audio kind 0x{kind:02x} ({rate} Hz) on a stream set up for "
                f"{self.media_format.sample_rate} Hz (kind 0x{self._audio_kind:02x}); "
                f"construct AudioSocketProtocol(sample_rate={rate}) for this Asterisk channel",
            )
        return Audio(payload)

    # ---- outbound --------------------------------------------------------------

    def media_message(self, payload: bytes) -> bytes:
        """One audio message carrying exactly one 20 ms frame at :attr:`media_format`."""
        if len(payload) != self._frame_bytes or self.call_id is None:
            if self.call_id is None:
                raise RuntimeError("cannot send media before AudioSocket's UUID message")
            raise ValueError(
                f"AudioSocket media must be exactly one 20 ms frame: {self._frame_bytes} bytes "
                f"at {self.media_format.sample_rate} Hz, got {len(payload)} (Asterisk plays "
                "each message as it arrives)"
            )
        return self._media_header + payload

    def mark_message(self, name: str) -> None:
        """None: AudioSocket has no marks (the gateway times playout on its own clock)."""
        return None

    def clear_message(self) -> None:
        """None: Asterisk holds no buffer to clear."""
        return None

    def hangup_message(self) -> bytes:
        """The hangup message ``00 00 00``: Asterisk hangs up the channel."""
        return b"\x00\x00\x00"


def _fault(payload: bytes) -> CarrierFault:
    if not payload:
        return CarrierFault("unspecified", "AudioSocket error without an error code")
    code = payload[0]
    names = [name for bit, name in _ERROR_BITS.items() if code & bit]
    known = len(payload) == 1 and code and not code & ~0x07
    return CarrierFault(
        "+".join(names) if known else "other",
        f"AudioSocket error code {payload.hex()}" + (f" ({', '.join(names)})" if names else ""),
    )
