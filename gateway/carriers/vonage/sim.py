"""Fake Vonage (docs/protocols/carriers.md §4): the Voice API WebSocket endpoint.

Vonage → gateway: a text ``websocket:connected`` (``content-type`` and the NCCO headers,
flattened), then binary 16-bit little-endian PCM, one 20 ms frame per message, every
20 ms; text ``websocket:dtmf``, ``websocket:notify``, ``websocket:cleared``; the socket
just closes at the end. Gateway → Vonage: binary frames of exactly 20 ms (any other size
and Vonage closes the socket), ``{"action":"clear"}``, ``{"action":"notify","payload":{…}}``.
Vonage buffers at most 3072 frames and drops the rest.

Open question kept as a parameter: whether a clear drops pending notifies or sends them
(§4.6); ``notify_on_clear`` defaults to ``"drop"``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

from gateway.sim.carriers.call import CarrierCall
from gateway.sim.carriers.model import (CarrierModel, Echo, EndCall, Notice, Output,
                                        json_object, preview, to_json)

MAX_BUFFERED_FRAMES = 3072
#: 1006 (abnormal closure) cannot be sent in a close frame; 1011 is the nearest sendable code
WRONG_FRAME_CLOSE_CODE = 1011



def vonage_jwt(signature_secret: str, *, application_id: str | None = None,
               now: float | None = None, ttl: int = 300) -> str:
    """The HS256 JWT Vonage sends as ``Authorization: Bearer`` for an NCCO websocket endpoint
    with ``authorization: {"type": "vonage"}`` (claims iat, exp, jti, application_id)."""
    issued = int(time.time() if now is None else now)
    claims = {"iat": issued, "exp": issued + ttl, "jti": str(uuid.uuid4()),
              "application_id": application_id or str(uuid.uuid4())}
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = f"{_b64url_json(header)}.{_b64url_json(claims)}"
    signature = hmac.new(signature_secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_json(value: dict) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())

class VonageModel(CarrierModel):
    """Vonage's handling of gateway messages. A binary frame that is not exactly 20 ms is
    recorded as ``frame_size`` and ends the call (close 1011); frames beyond the 3072-frame
    buffer are dropped (``buffer_full``, once per overflow). Text that is not a JSON object
    with a known action is recorded as ``invalid_message`` and ignored."""

    carrier = "vonage"

    def __init__(self, fmt, now: float = 0.0, *, notify_on_clear: str = "drop", **options) -> None:
        super().__init__(fmt, now, marks_on_clear="echo" if notify_on_clear == "echo" else "drop",
                         **options)
        self._overflowing = False

    def on_bytes(self, data: bytes, now: float, out: list[Output]) -> None:
        size = self.format.frame_bytes
        if len(data) != size:
            detail = (f"unexpected frame size {len(data)}, when required {size} "
                      f"({self.format.name}, 20 ms)")
            self.violate("frame_size", detail)
            out.append(EndCall(WRONG_FRAME_CLOSE_CODE, detail))
            return
        if self.buffered_bytes >= MAX_BUFFERED_FRAMES * size:
            self.dropped_bytes += len(data)
            if not self._overflowing:
                self._overflowing = True
                self.violate("buffer_full", f"more than {MAX_BUFFERED_FRAMES} frames buffered; "
                             "Vonage drops what comes beyond")
            self.play(b"", now, wire=data)
            return
        self._overflowing = False
        self.play(data, now)

    def on_text(self, text: str, now: float, out: list[Output]) -> None:
        parsed = json_object(text)
        message = parsed if parsed is not None else {}
        action = message.get("action")
        if action == "clear":
            self.clear(now, out)
            out.append(Notice("websocket:cleared"))
        elif action == "notify" and type(message.get("payload")) is dict:
            payload = message["payload"]
            name = payload.get("name")
            self.mark(name if type(name) is str else json.dumps(payload, sort_keys=True), now,
                      out, data=payload)
        else:
            self.violate("invalid_message", "Vonage takes binary audio frames and the actions "
                         f"clear and notify (with a payload object): {preview(text)}")


class VonageCall(CarrierCall):
    carrier = "vonage"
    formats = ("l16/16000", "l16/8000", "l16/24000")
    accepted_auth = (frozenset({"signature_secret"}),
                     frozenset({"signature_secret", "application_id"}), frozenset({"custom"}))

    @classmethod
    def signed_headers(cls, url: str, auth: dict[str, str]) -> dict[str, str]:
        if "signature_secret" not in auth:
            return {}
        token = vonage_jwt(auth["signature_secret"], application_id=auth.get("application_id"))
        return {"Authorization": f"Bearer {token}"}

    def __init__(self, url: str, *, notify_on_clear: str = "drop", **options) -> None:
        if notify_on_clear not in ("drop", "echo"):
            raise ValueError("notify_on_clear must be 'drop' or 'echo'")
        self.notify_on_clear = notify_on_clear
        super().__init__(url, **options)

    def new_call_id(self) -> str:
        return str(uuid.uuid4())

    def make_model(self, now: float) -> VonageModel:
        return VonageModel(self.format, now, notify_on_clear=self.notify_on_clear,
                           underrun_tolerance=self.underrun_tolerance)

    def hello(self) -> list[str]:
        """``websocket:connected``; the NCCO headers carry the call id as ``call_uuid``
        (Vonage has no call id of its own on the socket; the answer NCCO puts it there)."""
        headers = {"call_uuid": self.call_id, **self.custom_parameters}
        return [to_json({"event": "websocket:connected",
                         "content-type": f"audio/l16;rate={self.format.sample_rate}", **headers})]

    def media_messages(self, index: int, frame: bytes) -> list[bytes]:
        return [frame]

    def dtmf_messages(self, digit: str) -> list[str]:
        return [to_json({"event": "websocket:dtmf", "digit": digit, "duration": 260})]

    def echo_message(self, echo: Echo) -> str:
        payload = echo.data if echo.data is not None else {"name": echo.name}
        return to_json({"event": "websocket:notify", "payload": payload})

    def notice_message(self, notice: Notice) -> str:
        return to_json({"event": notice.kind})
