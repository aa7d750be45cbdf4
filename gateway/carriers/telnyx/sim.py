"""Fake Telnyx (docs/protocols/carriers.md §2): bidirectional RTP-mode media streaming.

Telnyx → gateway: ``connected``, ``start`` (``stream_id`` top level), ``media`` every
20 ms, ``dtmf``, ``mark`` echoes, ``error``, ``stop``. Gateway → Telnyx: ``media`` (20 ms
to 30 s of headerless codec payload), ``mark``, ``clear``. Marks are echoed when the audio
before them has played, at once when nothing is queued, and all at once on a clear.

Open question kept as a parameter: the byte order of L16 payloads is undocumented
(§2.5); ``telnyx_l16_byteorder`` defaults to big-endian, RFC 3551's network order for RTP
L16, in both directions.
"""

from __future__ import annotations

import binascii
import secrets
import uuid
from datetime import datetime, UTC

from gateway.sim.carriers.call import CarrierCall
from gateway.sim.carriers.formats import parse_format
from gateway.sim.carriers.model import (CarrierModel, Echo, Notice, Output, b64decode,
                                        inner_field, json_object, preview, to_json)

MIN_CHUNK_SECONDS = 0.020
MAX_CHUNK_SECONDS = 30.0
_ERROR_TITLES = {100002: "unknown_error", 100003: "malformed_frame", 100004: "invalid_media",
                 100005: "rate_limit_reached"}
_ENCODINGS = {"mulaw": "PCMU", "alaw": "PCMA", "l16": "L16"}


class TelnyxModel(CarrierModel):
    """Telnyx's handling of gateway messages. A message Telnyx cannot parse is answered with
    an ``error`` frame (100003 malformed, 100004 payload not base64) and recorded as a
    violation with that code; a media chunk outside 20 ms–30 s (or a partial L16 sample)
    is recorded as ``chunk_size`` and dropped (Telnyx documents the range, not what it does
    outside it)."""

    carrier = "telnyx"

    def on_text(self, text: str, now: float, out: list[Output]) -> None:
        parsed = json_object(text)
        message = parsed if parsed is not None else {}
        event = message.get("event")
        if event == "media":
            payload = inner_field(message, "media", "payload")
            if payload is None:
                return self._error(100003, "media without a media.payload string: "
                                   f"{preview(text)}", out)
            audio = b64decode(payload)
            if audio is None:
                return self._error(100004, "media.payload is not base64: "
                                   f"{preview(payload, 40)}", out)
            seconds = len(audio) / self.format.bytes_per_second
            if (len(audio) % self.format.sample_width or seconds < MIN_CHUNK_SECONDS - 1e-9
                    or seconds > MAX_CHUNK_SECONDS):
                return self.violate("chunk_size", f"media chunk of {len(audio)} bytes "
                                    f"({seconds * 1000:.1f} ms of {self.format.name}); Telnyx "
                                    "takes whole samples, 20 ms to 30 s per message")
            self.play(audio, now)
        elif event == "mark":
            name = inner_field(message, "mark", "name")
            if name is None:
                return self._error(100003, f"mark without a mark.name string: {preview(text)}", out)
            self.mark(name, now, out)
        elif event == "clear":
            self.clear(now, out)
        else:
            what = "not a JSON object" if parsed is None else f"unknown event {event!r}"
            self._error(100003, f"{what}; Telnyx accepts media, mark and clear: "
                        f"{preview(text)}", out)

    def on_bytes(self, data: bytes, now: float, out: list[Output]) -> None:
        self._error(100003, f"binary frame of {len(data)} bytes; Telnyx takes JSON text "
                    "frames", out)

    def _error(self, code: int, detail: str, out: list[Output]) -> None:
        self.violate(str(code), detail)
        out.append(Notice("error", {"code": code, "title": _ERROR_TITLES[code], "detail": detail}))


class TelnyxCall(CarrierCall):
    carrier = "telnyx"
    formats = ("mulaw/8000", "alaw/8000", "l16/8000", "l16/16000", "l16/24000")

    def __init__(self, url: str, *, reorder_every: int | None = None,
                 telnyx_l16_byteorder: str = "big", stream_format: str | None = None,
                 **options) -> None:
        """``media_format`` is what Telnyx plays of the gateway's audio (the
        bidirectional codec); ``stream_format`` what it streams to the gateway and announces
        in ``start``, by default the same. They differ on a real call when the answer asks
        for L16 both ways but the call is PCMU: Telnyx transcodes the inbound stream only
        between PCMU and PCMA. ``reorder_every=N`` swaps inbound frames N-2 and N-1 of
        every N (Telnyx does not guarantee order)."""
        if reorder_every is not None and reorder_every < 2:
            raise ValueError("reorder_every must be at least 2")
        self.reorder_every = reorder_every
        self.user_id = str(uuid.uuid4())
        self.call_session_id = str(uuid.uuid4())
        self._held: str | None = None
        self.l16_byteorder = telnyx_l16_byteorder
        super().__init__(url, **options)
        if stream_format is not None:
            self.inbound_format = parse_format(stream_format, self.formats,
                                               l16_byteorder=self.l16_byteorder,
                                               carrier=self.carrier)
            self.inbound_frame_bytes = round(self.inbound_format.bytes_per_second
                                             * self.frame_seconds)

    def new_call_id(self) -> str:
        return "v3:" + secrets.token_urlsafe(32)

    def new_stream_id(self) -> str:
        return str(uuid.uuid4())

    def make_model(self, now: float) -> TelnyxModel:
        return TelnyxModel(self.format, now, underrun_tolerance=self.underrun_tolerance)

    def hello(self) -> list[str]:
        start = {"user_id": self.user_id, "call_control_id": self.call_id,
                 "call_session_id": self.call_session_id, "from": "+13122010094",
                 "to": "+13122123456",
                 "media_format": {"encoding": _ENCODINGS[self.inbound_format.encoding],
                                  "sample_rate": self.inbound_format.sample_rate,
                                  "channels": 1}}
        if self.custom_parameters:  # where Telnyx puts them is undocumented (§2.3)
            start["custom_parameters"] = dict(self.custom_parameters)
        return ['{"event":"connected","version":"1.0.0"}',
                self._event("start", start=start)]

    def media_messages(self, index: int, frame: bytes) -> list[str]:
        payload = binascii.b2a_base64(frame, newline=False).decode()
        media = {"track": "inbound", "chunk": str(index + 1), "timestamp": str(index * 20),
                 "payload": payload}
        message = self._event("media", media=media)
        every = self.reorder_every
        if every and index % every == every - 2:
            self._held = message
            return []
        if self._held is not None:
            held, self._held = self._held, None
            return [message, held]
        return [message]

    def dtmf_messages(self, digit: str) -> list[str]:
        occurred = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return [self._event("dtmf", occurred_at=occurred, dtmf={"digit": digit})]

    def echo_message(self, echo: Echo) -> str:
        return self._event("mark", mark={"name": echo.name})

    def notice_message(self, notice: Notice) -> str:
        return to_json({"event": "error", "stream_id": self.stream_id, "payload": notice.detail})

    def goodbye(self) -> list[str]:
        return [self._event("stop", stop={"user_id": self.user_id,
                                          "call_control_id": self.call_id})]

    def _event(self, event: str, **fields) -> str:
        message = {"event": event, "sequence_number": str(self.next_sequence()),
                   "stream_id": self.stream_id, **fields}
        return to_json(message)
