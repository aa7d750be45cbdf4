"""Fake Exotel (docs/protocols/carriers.md §5): the AgentStream / Voicebot applet, bidirectional.

Exotel → gateway: ``connected``, ``start`` (``sample_rate`` a string), ``media`` every
100 ms, ``dtmf``, ``mark`` echoes, ``stop`` with ``reason: callended``. Gateway → Exotel:
``media`` (16-bit LE PCM, at least 3200 B, a multiple of 320 B, at most 100 KB), ``mark``,
``clear``, each with this stream's ``stream_sid``. The rate is chosen with
``?sample-rate=`` on the stream URL, which the simulator always adds.

Exotel's pages say "3.2 KB (100 ms)" and "3200 bytes per 100 ms", but also that 320 B is
one 20 ms packet: at 8 kHz 16-bit, 3200 B is 200 ms. The simulator keeps the byte rules as
written and streams caller audio in real time, 100 ms per message (1600 B at 8 kHz);
``inbound_chunk_seconds=0.2`` gives 3200-byte messages instead.

Open question kept as a parameter: whether a clear echoes pending marks (§5.3, §13.5);
``marks_on_clear`` defaults to ``"echo"`` as in Twilio's protocol, which Exotel's copies.
"""

from __future__ import annotations

import binascii
import uuid

from yarl import URL

from gateway.sim.carriers.call import CarrierCall
from gateway.sim.carriers.model import (CarrierModel, Echo, Output, b64decode, inner_field,
                                        json_object, preview, to_json)

MIN_CHUNK_BYTES = 3200
CHUNK_MULTIPLE = 320
MAX_CHUNK_BYTES = 100 * 1024


class ExotelModel(CarrierModel):
    """Exotel's handling of gateway messages; deviations are recorded and the message
    dropped: ``chunk_size`` (the size rules), ``stream_sid`` (missing or wrong),
    ``invalid_message`` (not JSON, unknown event, missing field, bad base64) and
    ``binary_frame``."""

    carrier = "exotel"

    def __init__(self, fmt, now: float = 0.0, *, stream_sid: str, **options) -> None:
        super().__init__(fmt, now, **options)
        self.stream_sid = stream_sid

    def on_text(self, text: str, now: float, out: list[Output]) -> None:
        parsed = json_object(text)
        message = parsed if parsed is not None else {}
        event = message.get("event")
        if event not in ("media", "mark", "clear"):
            what = "not a JSON object" if parsed is None else f"unknown event {event!r}"
            return self.violate("invalid_message", f"{what}; Exotel accepts media, mark and "
                                f"clear: {preview(text)}")
        if message.get("stream_sid") != self.stream_sid:
            return self.violate("stream_sid", f"{event} for stream_sid "
                                f"{message.get('stream_sid')!r}; this stream is "
                                f"{self.stream_sid!r}")
        if event == "media":
            audio = b64decode(inner_field(message, "media", "payload"))
            if audio is None:
                return self.violate("invalid_message", f"media.payload missing or not base64: "
                                    f"{preview(text)}")
            if (len(audio) < MIN_CHUNK_BYTES or len(audio) % CHUNK_MULTIPLE
                    or len(audio) > MAX_CHUNK_BYTES):
                return self.violate("chunk_size", f"media of {len(audio)} bytes; Exotel takes "
                                    f"at least {MIN_CHUNK_BYTES}, a multiple of {CHUNK_MULTIPLE}, "
                                    f"at most {MAX_CHUNK_BYTES}")
            self.play(audio, now)
        elif event == "mark":
            name = inner_field(message, "mark", "name")
            if name is None:
                return self.violate("invalid_message", f"mark without mark.name: {preview(text)}")
            self.mark(name, now, out)
        else:
            self.clear(now, out)


class ExotelCall(CarrierCall):
    carrier = "exotel"
    accepted_auth = (frozenset({"username", "password"}),)
    formats = ("l16/8000", "l16/16000", "l16/24000")
    frame_seconds = 0.100

    def __init__(self, url: str, *, marks_on_clear: str = "echo",
                 inbound_chunk_seconds: float = 0.1, **options) -> None:
        self.marks_on_clear = marks_on_clear
        self.frame_seconds = inbound_chunk_seconds
        self.account_sid = uuid.uuid4().hex[:12]
        super().__init__(url, **options)
        self.url = str(URL(self.url).update_query({"sample-rate": self.format.sample_rate}))

    def new_call_id(self) -> str:
        return uuid.uuid4().hex

    def new_stream_id(self) -> str:
        return uuid.uuid4().hex

    def make_model(self, now: float) -> ExotelModel:
        return ExotelModel(self.format, now, stream_sid=self.stream_id,
                           marks_on_clear=self.marks_on_clear,
                           underrun_tolerance=self.underrun_tolerance)

    def hello(self) -> list[str]:
        start = {"stream_sid": self.stream_id, "call_sid": self.call_id,
                 "account_sid": self.account_sid, "from": "+919800000001", "to": "+918000000002",
                 "custom_parameters": dict(self.custom_parameters),
                 "media_format": {"encoding": "audio/x-raw",
                                  "sample_rate": str(self.format.sample_rate), "bit_rate": "16"}}
        return ['{"event":"connected"}', self._event("start", start=start)]

    def media_messages(self, index: int, frame: bytes) -> list[str]:
        timestamp = round(index * self.frame_seconds * 1000)
        media = {"chunk": str(index + 1), "timestamp": str(timestamp),
                 "payload": binascii.b2a_base64(frame, newline=False).decode()}
        return [self._event("media", media=media)]

    def dtmf_messages(self, digit: str) -> list[str]:
        return [self._event("dtmf", dtmf={"digit": digit, "duration": "100"})]

    def echo_message(self, echo: Echo) -> str:
        return self._event("mark", mark={"name": echo.name})

    def goodbye(self) -> list[str]:
        return [self._event("stop", stop={"call_sid": self.call_id,
                                          "account_sid": self.account_sid,
                                          "reason": "callended"})]

    def _event(self, event: str, **fields) -> str:
        return to_json({"event": event, "sequence_number": str(self.next_sequence()),
                        "stream_sid": self.stream_id, **fields})
