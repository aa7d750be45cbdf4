"""Fake Asterisk chan_websocket (docs/protocols/carriers.md §6.3; asterisk
``channels/chan_websocket.c``).

Asterisk dials the gateway (it is the WebSocket client). Asterisk → gateway: a TEXT
``MEDIA_START`` first, then binary media (ulaw/alaw/slinNN) every ``ptime`` = 20 ms, TEXT
events ``DTMF_END``, ``MEDIA_XOFF``/``MEDIA_XON``, ``MEDIA_MARK_PROCESSED``, ``STATUS``,
``QUEUE_DRAINED``, ``ERROR``; the socket closes when the channel hangs up. Control messages
are plain text (``EVENT key:value ...``, the default) or JSON (``control_message_format=json``),
chosen with ``control_format``.

Gateway → Asterisk: binary media in multiples of ``optimal_frame_size`` (leftover bytes are
dropped), at most 65 500 bytes per message (more: Asterisk closes the socket and hangs up);
a 1000-frame queue that refuses whole messages once full, with MEDIA_XOFF at 900 queued
frames and MEDIA_XON below 800; TEXT commands of at most 128 bytes (longer ones are
ignored): ``MARK_MEDIA [id]`` (answered when the queue reaches it), ``FLUSH_MEDIA`` (drops
queued audio and marks, no report), ``HANGUP``, ``ANSWER``, ``GET_STATUS``,
``REPORT_QUEUE_DRAINED``. The buffering, pause and direction commands are not simulated
(recorded as ``not_simulated``).

Builds before 2026 hang up on a WebSocket PING (PR #1722) and on a message split into
CONTINUATION frames (PR #1942): both are recorded as violations; ``legacy_hangups=True``
also hangs up like those builds.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from gateway.sim.carriers.call import CarrierCall
from gateway.sim.carriers.model import (CarrierModel, Echo, EndCall, Notice, Output, json_object,
                                        to_json)
from gateway.sim.carriers.rawws import RawWebSocket
from gateway.sim.carriers.transport import Transport

MAX_MESSAGE_BYTES = 65_500
MAX_TEXT_BYTES = 128
QUEUE_LENGTH_MAX = 1000
XOFF_LEVEL = 900
XON_LEVEL = 800
FORMAT_NAMES = {"mulaw/8000": "ulaw", "alaw/8000": "alaw", "l16/8000": "slin",
                "l16/16000": "slin16", "l16/24000": "slin24"}
_NOT_SIMULATED = {"START_MEDIA_BUFFERING", "STOP_MEDIA_BUFFERING", "PAUSE_MEDIA",
                  "CONTINUE_MEDIA", "SET_MEDIA_DIRECTION"}


class AsteriskModel(CarrierModel):
    """chan_websocket's handling of what the gateway sends. Violation codes:
    ``message_too_big`` (ends the call, close 1009), ``leftover_bytes``, ``queue_full``
    (once per overflow), ``text_too_long``, ``invalid_json`` (JSON form; Asterisk answers
    ERROR), ``unknown_command``, ``not_simulated``, ``ping``, ``fragmented``."""

    carrier = "asterisk"

    def __init__(self, fmt, now: float = 0.0, *, control_format: str = "plain-text",
                 legacy_hangups: bool = False, **options) -> None:
        if control_format not in ("plain-text", "json"):
            raise ValueError(f"control_format must be 'plain-text' or 'json', "
                             f"not {control_format!r}")
        super().__init__(fmt, now, marks_on_clear="drop", **options)
        self.control_format = control_format
        self.legacy_hangups = legacy_hangups
        self.frame_size = fmt.frame_bytes  # optimal_frame_size: one ptime (20 ms)
        self.flow_paused = False  # MEDIA_XOFF sent, MEDIA_XON not yet
        self._report_drained = False
        self._overflowing = False

    @property
    def queue_length(self) -> int:
        """Frames queued and not yet handed to the core (chan_websocket's frame_queue_length)."""
        return self.buffered_bytes // self.frame_size

    def next_deadline(self) -> float | None:
        deadlines = [self.playout.next_deadline()]
        if self.flow_paused:
            deadlines.append(self.playout.when_buffered_at_most(XON_LEVEL * self.frame_size - 1))
        return min((d for d in deadlines if d is not None), default=None)

    def on_bytes(self, data: bytes, now: float, out: list[Output]) -> None:
        if len(data) > MAX_MESSAGE_BYTES:
            detail = f"binary message of {len(data)} bytes; Asterisk's limit is {MAX_MESSAGE_BYTES}"
            self.violate("message_too_big", detail)
            out.append(EndCall(1009, detail))
            return
        if self.queue_length >= QUEUE_LENGTH_MAX:
            self.dropped_bytes += len(data)
            if not self._overflowing:
                self._overflowing = True
                self.violate("queue_full", f"{self.queue_length} frames queued; Asterisk ignores "
                             f"binary messages until the queue is below {QUEUE_LENGTH_MAX}")
            self.play(b"", now, wire=data)
            return
        self._overflowing = False
        whole = len(data) // self.frame_size * self.frame_size
        if whole != len(data):
            self.dropped_bytes += len(data) - whole
            self.violate("leftover_bytes", f"binary message of {len(data)} bytes is not a multiple "
                         f"of optimal_frame_size {self.frame_size}; the last "
                         f"{len(data) - whole} bytes are dropped")
        self.play(data[:whole], now, wire=data)
        if not self.flow_paused and self.queue_length >= XOFF_LEVEL:
            self.flow_paused = True
            out.append(Notice("MEDIA_XOFF"))

    def on_text(self, text: str, now: float, out: list[Output]) -> None:
        size = len(text.encode())
        if size > MAX_TEXT_BYTES:
            return self.violate("text_too_long", f"TEXT message of {size} bytes; Asterisk ignores "
                                f"commands longer than {MAX_TEXT_BYTES}: {text[:60]!r}…")
        command, correlation_id = self._parse_command(text.strip(), out)
        if command is None:
            return
        if command == "MARK_MEDIA":
            self.mark(correlation_id or "", now, out)
        elif command == "FLUSH_MEDIA":
            self.clear(now, out)
        elif command == "HANGUP":
            out.append(EndCall(1000, "HANGUP", by_gateway=True))
        elif command == "GET_STATUS":
            out.append(Notice("STATUS", {
                "queue_length": self.queue_length, "xon_level": XON_LEVEL,
                "xoff_level": XOFF_LEVEL, "queue_full": self.flow_paused, "bulk_media": False,
                "media_paused": False}))
        elif command == "REPORT_QUEUE_DRAINED":
            self._report_drained = True
        elif command in _NOT_SIMULATED:
            self.violate("not_simulated",
                         f"{command} is valid but this simulator does not model it")
        elif command != "ANSWER":
            self.violate("unknown_command", f"unknown command {command!r} (Asterisk logs and "
                         f"ignores it); message {text!r}")

    def on_ping(self, data: bytes, now: float, out: list[Output]) -> None:
        self._legacy_fault("ping", "WebSocket PING; chan_websocket before PR #1722 hangs up", out)

    def on_fragmented(self, now: float, out: list[Output]) -> None:
        self._legacy_fault("fragmented", "message split into CONTINUATION frames; chan_websocket "
                           "before PR #1942 hangs up", out)

    def after_playout(self, now: float, out: list[Output]) -> None:
        if self.flow_paused and self.queue_length < XON_LEVEL:
            self.flow_paused = False
            out.append(Notice("MEDIA_XON"))
        if self._report_drained and not self.playing:
            self._report_drained = False
            out.append(Notice("QUEUE_DRAINED"))

    def _parse_command(self, text: str, out: list[Output]) -> tuple[str | None, str | None]:
        if self.control_format == "plain-text":
            command, _, data = text.partition(" ")
            return command, data or None
        message = json_object(text)
        if message is None:
            self.violate("invalid_json", f"control_message_format is json; got {text!r}")
            out.append(Notice("ERROR", {"error_text": "Unable to parse JSON command"}))
            return None, None
        name, correlation_id = message.get("command"), message.get("correlation_id")
        return (name if type(name) is str else repr(name),
                correlation_id if type(correlation_id) is str else None)

    def _legacy_fault(self, code: str, detail: str, out: list[Output]) -> None:
        self.violate(code, detail)
        if self.legacy_hangups:
            out.append(EndCall(1011, detail))


class AsteriskCall(CarrierCall):
    carrier = "asterisk"
    accepted_auth = (frozenset({"username", "password"}),)
    formats = ("mulaw/8000", "alaw/8000", "l16/8000", "l16/16000", "l16/24000")
    dtmf_digits = "0123456789*#ABCD"

    def __init__(self, url: str, *, control_format: str = "plain-text",
                 legacy_hangups: bool = False, connection_id: str = "tts-gateway",
                 protocols: tuple[str, ...] = (), media_before_start: int = 0,
                 send_channel_id: bool = True, **options) -> None:
        """``protocols``: the Sec-WebSocket-Protocol values (websocket_client.conf
        ``protocols``, none by default); ``media_before_start=N`` sends N media frames
        before MEDIA_START (asterisk #1712); ``send_channel_id=False`` leaves channel_id
        out of MEDIA_START, as the plain-text example in Asterisk's documentation does
        (the gateway then names the call after the channel)."""
        self.control_format = control_format
        self.legacy_hangups = legacy_hangups
        self.connection_id = connection_id
        self.protocols = tuple(protocols)
        self.media_before_start = media_before_start
        self.send_channel_id = send_channel_id
        super().__init__(url, **options)
        self.channel = f"WebSocket/{connection_id}/0x{secrets.token_hex(6)}"

    def new_call_id(self) -> str:
        """A channel uniqueid, like ``1733312345.42``."""
        return f"{int(time.time())}.{secrets.randbelow(100_000)}"

    def make_model(self, now: float) -> AsteriskModel:
        return AsteriskModel(self.format, now, control_format=self.control_format,
                             legacy_hangups=self.legacy_hangups,
                             underrun_tolerance=self.underrun_tolerance)

    async def open_transport(self) -> Transport:
        return await RawWebSocket.open(self.url, self.headers, protocols=self.protocols)

    def hello(self) -> list[str | bytes]:
        fields = {"connection_id": self.connection_id, "channel": self.channel,
                  "channel_id": self.call_id, "format": FORMAT_NAMES[self.format.name],
                  "optimal_frame_size": self.format.frame_bytes, "ptime": 20}
        if not self.send_channel_id:
            del fields["channel_id"]
        early = [self.format.silence(self.inbound_frame_bytes)] * self.media_before_start
        if self.control_format == "json":
            start = to_json({"event": "MEDIA_START", **fields,
                             "channel_variables": dict(self.custom_parameters)})
        else:
            start = "MEDIA_START " + " ".join(f"{k}:{v}" for k, v in fields.items())
        return [*early, start]

    def media_messages(self, index: int, frame: bytes) -> list[bytes]:
        return [frame]

    def dtmf_messages(self, digit: str) -> list[str]:
        if self.control_format == "json":
            return [self._event("DTMF_END", {"digit": digit})]
        return [f"DTMF_END digit:{digit} channel_id:{self.call_id}"]

    def echo_message(self, echo: Echo) -> str:
        if self.control_format == "json":
            return self._event("MEDIA_MARK_PROCESSED", {"correlation_id": echo.name})
        return f"MEDIA_MARK_PROCESSED {echo.name}".rstrip()

    def notice_message(self, notice: Notice) -> str:
        if self.control_format == "json":
            return self._event(notice.kind, notice.detail)
        if not notice.detail:
            return notice.kind
        values = " ".join(f"{k}:{_plain(v)}" for k, v in notice.detail.items())
        return f"{notice.kind} channel_id:{self.call_id} {values}"

    def _event(self, event: str, fields: dict[str, Any]) -> str:
        return to_json({"event": event, "channel_id": self.call_id, **fields})


def _plain(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)
