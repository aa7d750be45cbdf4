"""The sans-I/O half of a simulated carrier: what it does with what the gateway sends.

A carrier model validates every gateway message as strictly as the carrier (a deviation is
recorded in :attr:`CarrierModel.violations` as ``(code, detail)``), plays accepted audio
through a :class:`~gateway.sim.carriers.playout.Playout`, and tells its driver what to send
back. Every entry point takes ``now`` (seconds, never decreasing) and returns a list of
outputs, in order:

* :class:`Echo` — a mark was reached: send the carrier's echo (mark, playedStream, notify,
  MEDIA_MARK_PROCESSED);
* :class:`Notice` — any other carrier message (an ack of a clear, an error frame, XOFF/XON);
* :class:`EndCall` — the carrier ends the call and closes the connection.

After :meth:`CarrierModel.close` every input is ignored.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from gateway.sim.carriers.formats import WireFormat
from gateway.sim.carriers.playout import Playout


@dataclass(frozen=True, slots=True)
class Echo:
    name: str
    data: Any = None


@dataclass(frozen=True, slots=True)
class Notice:
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EndCall:
    """The carrier closes the call with WebSocket close ``code``; ``by_gateway`` when the
    gateway asked for it (Asterisk HANGUP, AudioSocket kind 0x00)."""

    code: int
    reason: str
    by_gateway: bool = False


Output = Echo | Notice | EndCall

# Recordings that live on the playout and read naturally as the model's own.
_PLAYOUT_FIELDS = frozenset({
    "heard", "heard_segments", "arrivals", "utterance_starts", "marks_received",
    "marks_echoed", "marks_dropped", "clears", "underrun_gaps", "underruns", "cleared_bytes",
    "discarded_at_close_bytes", "closed_at", "playing", "buffered_bytes", "pending_marks",
})


class CarrierModel:
    """Base of every carrier model; subclasses override the ``on_*`` hooks.

    Attributes of the playout (``heard``, ``arrivals``, ``marks_echoed``, ``clears``,
    ``underrun_gaps``, ``playing``...) are readable on the model itself.
    """

    carrier = ""

    def __init__(self, fmt: WireFormat, now: float = 0.0, *, marks_on_clear: str = "echo",
                 underrun_tolerance: float = 0.001, join_close_runs: bool = True) -> None:
        self.format = fmt
        self.playout = Playout(fmt.bytes_per_second, now, marks_on_clear=marks_on_clear,
                               underrun_tolerance=underrun_tolerance,
                               join_close_runs=join_close_runs)
        self.violations: list[tuple[str, str]] = []
        #: audio bytes of accepted messages that were not queued (buffer full, leftovers)
        self.dropped_bytes = 0
        #: ``(arrival time, seconds early)`` of frames sent faster than real time where the
        #: carrier has no buffer to absorb them (AudioSocket)
        self.bursts: list[tuple[float, float]] = []
        #: DTMF the gateway asked the carrier to play (Plivo ``sendDTMF``)
        self.gateway_dtmf: list[tuple[float, str]] = []

    def __getattr__(self, name: str) -> Any:
        if name in _PLAYOUT_FIELDS:
            return getattr(self.playout, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ---- entry points ----------------------------------------------------------

    def advance(self, now: float) -> list[Output]:
        """Play out up to ``now``."""
        return self._advance(now)

    def receive_text(self, text: str, now: float) -> list[Output]:
        return self._receive(self.on_text, text, now)

    def receive_bytes(self, data: bytes, now: float) -> list[Output]:
        return self._receive(self.on_bytes, data, now)

    def receive_ping(self, data: bytes, now: float) -> list[Output]:
        """A WebSocket PING from the gateway (only reported where the transport shows it)."""
        return self._receive(self.on_ping, data, now)

    def receive_fragmented(self, now: float) -> list[Output]:
        """The message just received came in several WebSocket frames."""
        return self._receive(lambda _, now, out: self.on_fragmented(now, out), None, now)

    def next_deadline(self) -> float | None:
        """When :meth:`advance` next has something to do (a mark, the FIFO running dry)."""
        return self.playout.next_deadline()

    def close(self, now: float) -> None:
        self.playout.end(now)

    # ---- hooks -----------------------------------------------------------------

    def on_text(self, text: str, now: float, out: list[Output]) -> None:
        self.violate("text_frame", f"{self.carrier} expects no text frames: {preview(text)}")

    def on_bytes(self, data: bytes, now: float, out: list[Output]) -> None:
        self.violate("binary_frame", f"binary frame of {len(data)} bytes; {self.carrier} "
                                     "accepts only JSON text frames")

    def on_ping(self, data: bytes, now: float, out: list[Output]) -> None:
        pass

    def on_fragmented(self, now: float, out: list[Output]) -> None:
        pass

    def after_playout(self, now: float, out: list[Output]) -> None:
        pass

    # ---- helpers for subclasses --------------------------------------------------

    def violate(self, code: str, detail: str) -> None:
        self.violations.append((code, detail))

    def play(self, audio: bytes, now: float, wire: bytes | None = None) -> None:
        self.playout.queue_audio(audio, now, wire)

    def mark(self, name: str, now: float, out: list[Output], data: Any = None) -> None:
        out.extend(Echo(m.name, m.data) for m in self.playout.queue_mark(name, now, data))

    def clear(self, now: float, out: list[Output]) -> None:
        out.extend(Echo(m.name, m.data) for m in self.playout.clear_queue(now))

    def _advance(self, now: float) -> list[Output]:
        out: list[Output] = [Echo(m.name, m.data) for m in self.playout.play_until(now)]
        self.after_playout(now, out)
        return out

    def _receive(self, handler, data, now: float) -> list[Output]:
        if self.playout.closed_at is not None:
            return []
        out = self._advance(now)
        handler(data, now, out)
        return out


# ---- parsing helpers shared by the JSON carriers -----------------------------------


def preview(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text if len(text) <= limit else text[:limit] + "…")


def to_json(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in ``text``, or None if it is not one."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return message if type(message) is dict else None


def b64decode(value: Any) -> bytes | None:
    """Strict base64 (no whitespace, correct padding) -> bytes, or None."""
    if type(value) is not str:
        return None
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except binascii.Error:
        return None


def inner_field(message: dict[str, Any], key: str, name: str, kind: type = str) -> Any:
    """``message[key][name]`` if it is a ``kind`` (``kind`` exactly; ``bool`` is no int)."""
    inner = message.get(key)
    value = inner.get(name) if type(inner) is dict else None
    return value if type(value) is kind else None
