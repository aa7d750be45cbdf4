"""Fake Plivo (docs/protocols/carriers.md §3): bidirectional Audio Streams.

Plivo → gateway: ``start`` first (no ``connected``; numbers as JSON numbers), ``media``
every 20 ms, ``dtmf``, ``playedStream``, ``clearedAudio``; the socket just closes at the
end (no ``stop``). Gateway → Plivo: ``playAudio``, ``checkpoint``, ``clearAudio``,
``sendDTMF``. A checkpoint is answered with ``playedStream`` only once the audio before it
has played: ``clearAudio`` drops pending checkpoints without an echo, then Plivo sends
``clearedAudio``. L16 is little-endian.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import uuid

from yarl import URL

from gateway.sim.carriers.auth import as_wss
from gateway.sim.carriers.call import CarrierCall
from gateway.sim.carriers.model import (CarrierModel, Echo, Notice, Output, b64decode,
                                        json_object, preview, to_json)

#: playAudio contentType -> sample rates Plivo accepts with it
CONTENT_TYPES = {"audio/x-mulaw": (8000,), "audio/x-l16": (8000, 16000)}
_CONTENT_TYPE = {"mulaw": "audio/x-mulaw", "l16": "audio/x-l16"}



def plivo_signature_v3(auth_token: str, url: str, nonce: str) -> str:
    """``X-Plivo-Signature-V3``: base64(HMAC-SHA256(auth_token, f"{url}.{nonce}")); ``url``
    is the full URL with its query sorted (a GET has no body parameters)."""
    target = URL(url)
    if target.query:
        target = target.with_query(sorted(target.query.items()))
    digest = hmac.new(auth_token.encode(), f"{target}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def plivo_headers(auth_token: str, url: str, nonce: str | None = None) -> dict[str, str]:
    nonce = nonce or str(secrets.randbelow(10**20))
    return {"X-Plivo-Signature-V3": plivo_signature_v3(auth_token, as_wss(url), nonce),
            "X-Plivo-Signature-V3-Nonce": nonce}

class PlivoModel(CarrierModel):
    """Plivo's handling of gateway messages; deviations are recorded, the message dropped:
    ``invalid_message`` (not JSON, unknown event, missing or mistyped field),
    ``content_type`` (a contentType/sampleRate pair Plivo does not offer, or a sampleRate
    that is not a number), ``format_mismatch`` (valid, but not this stream's format),
    ``stream_id`` (a wrong streamId; checkpoint and clearAudio must carry it), and
    ``binary_frame``."""

    carrier = "plivo"

    def __init__(self, fmt, now: float = 0.0, *, stream_id: str, **options) -> None:
        super().__init__(fmt, now, marks_on_clear="drop", **options)
        self.stream_id = stream_id

    def on_text(self, text: str, now: float, out: list[Output]) -> None:
        parsed = json_object(text)
        message = parsed if parsed is not None else {}
        event = message.get("event")
        handler = {"playAudio": self._play_audio, "checkpoint": self._checkpoint,
                   "clearAudio": self._clear_audio, "sendDTMF": self._send_dtmf
                   }.get(event) if type(event) is str else None
        if handler is None:
            what = "not a JSON object" if parsed is None else f"unknown event {event!r}"
            return self.violate("invalid_message", f"{what}; Plivo accepts playAudio, "
                                f"checkpoint, clearAudio and sendDTMF: {preview(text)}")
        if event in ("checkpoint", "clearAudio") and "streamId" not in message:
            return self.violate("stream_id", f"{event} without streamId: {preview(text)}")
        if "streamId" in message and message["streamId"] != self.stream_id:
            return self.violate("stream_id", f"{event} for streamId {message['streamId']!r}; "
                                f"this stream is {self.stream_id!r}")
        handler(message, now, out)

    def _play_audio(self, message: dict, now: float, out: list[Output]) -> None:
        media = message.get("media")
        if type(media) is not dict or type(media.get("contentType")) is not str:
            return self.violate("invalid_message", "playAudio needs media.contentType: "
                                f"{preview(json.dumps(message))}")
        content_type, rate = media["contentType"], media.get("sampleRate")
        if type(rate) is not int or rate not in CONTENT_TYPES.get(content_type, ()):
            return self.violate("content_type", f"playAudio with contentType {content_type!r} "
                                f"and sampleRate {rate!r}; Plivo takes audio/x-mulaw at 8000, "
                                "audio/x-l16 at 8000 or 16000 (sampleRate a number)")
        if (content_type, rate) != (_CONTENT_TYPE[self.format.encoding], self.format.sample_rate):
            return self.violate("format_mismatch", f"playAudio as {content_type} at {rate} Hz on "
                                f"a {self.format.name} stream")
        audio = b64decode(media.get("payload"))
        if audio is None:
            return self.violate("invalid_message", "playAudio media.payload is not base64: "
                                f"{preview(media.get('payload'), 40)}")
        if len(audio) % self.format.sample_width:
            self.violate("invalid_message", f"playAudio of {len(audio)} bytes: not whole samples")
            audio = audio[: len(audio) // 2 * 2]
        self.play(audio, now)

    def _checkpoint(self, message: dict, now: float, out: list[Output]) -> None:
        name = message.get("name")
        if type(name) is not str:
            return self.violate("invalid_message", f"checkpoint without a name string: "
                                f"{preview(json.dumps(message))}")
        self.mark(name, now, out)

    def _clear_audio(self, message: dict, now: float, out: list[Output]) -> None:
        self.clear(now, out)
        out.append(Notice("clearedAudio"))

    def _send_dtmf(self, message: dict, now: float, out: list[Output]) -> None:
        digits = message.get("dtmf")
        if type(digits) is not str or not digits:
            return self.violate("invalid_message", f"sendDTMF needs a dtmf string: "
                                f"{preview(json.dumps(message))}")
        self.gateway_dtmf.append((now, digits))


class PlivoCall(CarrierCall):
    carrier = "plivo"
    formats = ("mulaw/8000", "l16/8000", "l16/16000")
    accepted_auth = (frozenset({"auth_token"}), frozenset({"auth_token", "nonce"}))

    @classmethod
    def signed_headers(cls, url: str, auth: dict[str, str]) -> dict[str, str]:
        return plivo_headers(auth["auth_token"], url, auth.get("nonce"))

    def __init__(self, url: str, **options) -> None:
        self.account_id = "MA" + uuid.uuid4().hex[:18].upper()
        super().__init__(url, **options)

    def new_call_id(self) -> str:
        return str(uuid.uuid4())

    def new_stream_id(self) -> str:
        return str(uuid.uuid4())

    def make_model(self, now: float) -> PlivoModel:
        return PlivoModel(self.format, now, stream_id=self.stream_id,
                          underrun_tolerance=self.underrun_tolerance)

    @property
    def extra_headers(self) -> str:
        """``extraHeaders`` as Plivo echoes them (``k=v;k2=v2``; ``{}`` when none)."""
        return ";".join(f"{k}={v}" for k, v in self.custom_parameters.items()) or "{}"

    def hello(self) -> list[str]:
        media_format = {"encoding": _CONTENT_TYPE[self.format.encoding],
                        "sampleRate": self.format.sample_rate}
        start = {"callId": self.call_id, "streamId": self.stream_id, "accountId": self.account_id,
                 "tracks": ["inbound"], "mediaFormat": media_format}
        return [to_json({"event": "start", "sequenceNumber": self.next_sequence(), "start": start,
                       "extra_headers": self.extra_headers})]

    def media_messages(self, index: int, frame: bytes) -> list[str]:
        media = {"track": "inbound", "timestamp": str(int(time.time() * 1000)),
                 "chunk": index + 1, "payload": binascii.b2a_base64(frame, newline=False).decode()}
        return [to_json({"event": "media", "sequenceNumber": self.next_sequence(),
                       "streamId": self.stream_id, "media": media,
                       "extra_headers": self.extra_headers})]

    def dtmf_messages(self, digit: str) -> list[str]:
        return [to_json({"event": "dtmf", "streamId": self.stream_id, "dtmf": {"digit": digit}})]

    def echo_message(self, echo: Echo) -> str:
        return to_json({"event": "playedStream", "streamId": self.stream_id, "name": echo.name})

    def notice_message(self, notice: Notice) -> str:
        return to_json({"sequenceNumber": 0, "event": "clearedAudio", "streamId": self.stream_id})

