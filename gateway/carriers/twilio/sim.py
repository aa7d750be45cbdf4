"""Fake Twilio (and SignalWire): the carrier side of a Media Streams call.

Like every simulated carrier, two layers on the shared base:

* :class:`TwilioPlayoutModel` (sans-I/O) is what Twilio does with what the gateway sends:
  it validates every message as strictly as Twilio (warnings 31950/31951), plays accepted
  μ-law through the shared :class:`~gateway.sim.carriers.playout.Playout` at 8000 bytes/s
  on a clock the caller passes in, echoes marks when the playout passes them, flushes on
  ``clear``, caps the buffer at 10 minutes (31931), and records what the caller hears.
* :class:`TwilioCallSim` (a :class:`~gateway.sim.carriers.call.CarrierCall`) places one
  call: it opens the WebSocket, sends ``connected`` and ``start``, streams caller audio
  every 20 ms, feeds the gateway's messages into the model and sends the mark echoes on
  time. :class:`TwilioCall` and :class:`SignalWireCall` are the same call behind
  :func:`~gateway.sim.carriers.make_call` (SignalWire's cXML ``<Connect><Stream>`` speaks
  Twilio's wire protocol, docs/protocols/carriers.md §6.1).

All times are ``time.monotonic()`` seconds. :mod:`gateway.carriers.twilio.sim` re-exports the
public names under their original import path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from typing import Any, ClassVar

from gateway.sim.carriers.auth import as_wss
from gateway.sim.carriers.call import CallClosedError, CarrierCall
from gateway.sim.carriers.formats import WireFormat
from gateway.sim.carriers.model import CarrierModel, Echo, Output, preview, to_json
from gateway.sim.carriers.result import CarrierCallResult, FrameTiming

__all__ = [
    "BYTES_PER_SECOND", "CallClosedError", "FrameTiming", "TwilioCall",
    "TwilioCallResult", "TwilioCallSim", "TwilioPlayoutModel", "twilio_signature",
]

MULAW_8000 = WireFormat("mulaw", 8000)
#: μ-law at 8 kHz: one byte per sample.
BYTES_PER_SECOND = MULAW_8000.bytes_per_second

_OUTBOUND_SHAPES = {  # event -> (inner object key, its only field)
    "media": ("media", "payload"),
    "mark": ("mark", "name"),
    "clear": (None, None),
}


def twilio_signature(auth_token: str, url: str) -> str:
    """``X-Twilio-Signature`` for a WebSocket upgrade: base64(HMAC-SHA1(token, url)).

    ``url`` is the full ``wss://`` URL as configured in the TwiML (an upgrade is a GET, so
    no POST parameters are appended).
    """
    digest = hmac.new(auth_token.encode(), url.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


class TwilioPlayoutModel(CarrierModel):
    """Twilio's handling of the gateway → Twilio direction of one stream, without I/O.

    Every entry point takes ``now`` (seconds, never decreasing; a smaller value raises
    :class:`ValueError`) and returns an :class:`Echo` for each mark Twilio echoes at that
    moment, in order. The driver must send those echoes back to the gateway.

    **Validation** (strict, per Twilio's error pages): a text frame must be a JSON object
    with exactly ``event`` and ``streamSid`` plus, for ``media``, ``media`` =
    ``{"payload": <base64>}``, for ``mark``, ``mark`` = ``{"name": <str>}``, for
    ``clear``, nothing else; ``streamSid`` must be this stream's. Anything else (non-JSON,
    unknown event, missing/extra/mistyped field, bad base64, wrong streamSid) is recorded
    in :attr:`violations` as ``("31951", detail)`` and dropped; a binary frame is recorded
    as ``("31950", detail)`` and dropped. (Real Twilio notifies each code once per stream;
    the model records every occurrence.)

    **Playout**: accepted media is appended to a FIFO that drains at 8000 bytes/s while it
    holds audio. A run of playout starts when audio arrives at an empty FIFO (at the
    arrival time) and ends when the FIFO runs dry. Bytes played are appended to
    :attr:`heard` in order; :attr:`heard_segments` holds ``(start_time, byte_count)`` per
    run. Audio that would take the buffered total beyond 10 minutes is dropped (counted in
    :attr:`dropped_bytes`; one ``("31931", detail)`` violation per overflow episode).

    **Marks**: a mark is echoed when the playout passes the point in the FIFO where it was
    queued; a mark queued while the FIFO holds no audio is echoed at once (Twilio's docs do
    not say; Telnyx's clone documents this, and it is the only reading consistent with
    "echoed when the audio sent before it has played"). :attr:`marks_echoed` records
    ``(time the playout passed it, name)``.

    **Clear**: empties the FIFO (the audio is never heard; :attr:`cleared_bytes`) and
    echoes every pending mark at once, in order.

    **Underrun** (a hole the caller hears): the FIFO ran dry at drain point ``T``, and the
    next media message arrived at ``t > T + 1 ms`` with no ``mark`` and no ``clear``
    received since the previous media message. A mark or a clear between them marks an
    utterance boundary, where silence is expected. Each underrun is recorded in
    :attr:`underrun_gaps` as ``(T, t - T)``.

    **Utterances** (for frame timing): a media message starts an utterance if it is the
    first one, or a mark or a clear was received since the previous media message; the
    indices into :attr:`arrivals` are in :attr:`utterance_starts`.

    **End of call**: :meth:`close` stops playout; audio still buffered is never heard and
    pending marks are never echoed (the socket is gone). Frames fed after ``close`` are
    ignored.
    """

    carrier = "twilio"
    max_buffered_bytes = 10 * 60 * BYTES_PER_SECOND

    def __init__(self, stream_sid: str, now: float = 0.0, *,
                 underrun_tolerance: float = 0.001) -> None:
        super().__init__(MULAW_8000, now, underrun_tolerance=underrun_tolerance,
                         join_close_runs=False)
        self.stream_sid = stream_sid
        self._overflowing = False

    @property
    def underrun_tolerance(self) -> float:
        return self.playout.underrun_tolerance

    @underrun_tolerance.setter
    def underrun_tolerance(self, seconds: float) -> None:
        self.playout.underrun_tolerance = seconds

    @property
    def buffered_seconds(self) -> float:
        return self.buffered_bytes / BYTES_PER_SECOND

    # ---- hooks -----------------------------------------------------------------

    def on_text(self, text: str, now: float, out: list[Output]) -> None:
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            return self.violate("31951", f"text frame is not JSON: {preview(text)}")
        if type(message) is not dict:
            return self.violate("31951", f"message is not a JSON object: {preview(text)}")
        event = message.get("event")
        if event not in _OUTBOUND_SHAPES:
            return self.violate("31951", f"unknown event {event!r}; Twilio accepts media, "
                                f"mark and clear: {preview(text)}")
        problem = self._shape_problem(message, event)
        if problem is not None:
            return self.violate("31951", problem)
        if event == "media":
            payload = message["media"]["payload"]
            try:
                audio = binascii.a2b_base64(payload, strict_mode=True)
            except binascii.Error as exc:
                return self.violate("31951", f"media.payload is not base64 ({exc}): "
                                    f"{preview(payload, 40)}")
            self._play_capped(audio, now)
        elif event == "mark":
            self.mark(message["mark"]["name"], now, out)
        else:
            self._overflowing = False
            self.clear(now, out)

    def on_bytes(self, data: bytes, now: float, out: list[Output]) -> None:
        self.violate("31950", f"binary frame of {len(data)} bytes; Twilio accepts only JSON "
                     "text frames")

    # ---- internals -------------------------------------------------------------

    def _play_capped(self, audio: bytes, now: float) -> None:
        dropped = self.playout.queue_audio(audio, now, limit=self.max_buffered_bytes)
        if dropped:
            self.dropped_bytes += dropped
            if not self._overflowing:
                self._overflowing = True
                self.violate("31931", f"more than 10 minutes of audio buffered; dropped "
                             f"{dropped} bytes (Twilio accepts no more until the buffer drains)")
        elif audio:
            self._overflowing = False

    def _shape_problem(self, message: dict[str, Any], event: str) -> str | None:
        inner_key, inner_field = _OUTBOUND_SHAPES[event]
        expected = {"event", "streamSid"}
        if inner_key is not None:
            expected.add(inner_key)
        if message.keys() != expected:
            return (f"{event} message has keys {sorted(message)}; Twilio accepts exactly "
                    f"{sorted(expected)}")
        if message["streamSid"] != self.stream_sid:
            return (f"{event} for streamSid {message['streamSid']!r}; this stream is "
                    f"{self.stream_sid!r}")
        if inner_key is not None:
            inner = message[inner_key]
            if type(inner) is not dict or inner.keys() != {inner_field}:
                return (f"{event}.{inner_key} must be exactly {{{inner_field!r}: <string>}}, "
                        f"got {preview(inner)}")
            if type(inner[inner_field]) is not str:
                return (f"{event}.{inner_key}.{inner_field} must be a string, "
                        f"got {preview(inner[inner_field])}")
        return None


class TwilioCallResult(CarrierCallResult):
    """The :class:`CarrierCallResult` of a Twilio (or SignalWire) call, constructed as
    ``TwilioCallResult(call_sid, stream_sid, **fields)``; ``call_sid`` and ``stream_sid``
    read ``call_id`` and ``stream_id``."""

    def __init__(self, call_sid: str, stream_sid: str, *, carrier: str = "twilio",
                 format: WireFormat = MULAW_8000, **fields: Any) -> None:
        super().__init__(carrier, call_sid, stream_sid, format, **fields)


class TwilioCallSim(CarrierCall):
    """One simulated Twilio call into a gateway's media WebSocket.

    ``async with TwilioCallSim(url) as sim`` connects (raising :class:`TimeoutError` after
    ``connect_timeout`` s, or ``aiohttp.WSServerHandshakeError`` if the gateway refuses the
    upgrade), sends ``connected`` and ``start``, then until the call ends:

    * sends one inbound ``media`` message every 20 ms on absolute deadlines from the start
      (160 bytes of ``inbound_audio``, looped, or μ-law silence; ``track`` ``inbound``;
      ``sequenceNumber``/``chunk``/``timestamp`` as incrementing strings, timestamp in ms);
    * feeds every gateway message into a :class:`TwilioPlayoutModel` and sends each mark
      echo (``{"event":"mark","sequenceNumber":…,"streamSid":…,"mark":{"name":…}}``) when
      the model's playout passes it.

    The call ends when the test calls :meth:`hangup` (``stop``, then close; also done on
    exit) or when the gateway closes the socket (recorded as ``closed_by_gateway``; no
    exception). Either way, audio still buffered is not heard. Every wait is bounded; a
    wait that can no longer succeed because the call ended raises :class:`CallClosedError`.
    :attr:`result` is a :class:`TwilioCallResult` snapshot that can be read during or
    after the call.

    ``auth_token`` adds ``X-Twilio-Signature`` computed over ``signature_url`` (default:
    ``url`` with a ``wss://`` scheme, which is what Twilio signs).
    """

    carrier: ClassVar[str] = "twilio"
    formats: ClassVar[tuple[str, ...]] = ("mulaw/8000",)
    _model: TwilioPlayoutModel

    def __init__(
        self,
        url: str,
        call_sid: str | None = None,
        stream_sid: str | None = None,
        custom_parameters: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        inbound_audio: bytes | None = None,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        signature_url: str | None = None,
        connect_timeout: float = 10.0,
        media_format: str | None = None,
        underrun_tolerance: float | None = None,
        caller_audio: tuple[bytes, int] | None = None,
        caller_audio_at: float = 0.0,
        line_echo_db: float | None = None,
    ) -> None:
        self._stream_sid = stream_sid
        self.account_sid = account_sid or "AC" + secrets.token_hex(16)
        super().__init__(
            url, call_id=call_sid, media_format=media_format, headers=headers,
            custom_parameters=custom_parameters, inbound_audio=inbound_audio,
            connect_timeout=connect_timeout,
            underrun_tolerance=0.001 if underrun_tolerance is None else underrun_tolerance,
            caller_audio=caller_audio, caller_audio_at=caller_audio_at,
            line_echo_db=line_echo_db)
        if auth_token is not None:
            signed_url = signature_url or as_wss(url)
            self.headers["X-Twilio-Signature"] = twilio_signature(auth_token, signed_url)
        self._sid_json = json.dumps(self.stream_sid)

    @property
    def call_sid(self) -> str:
        return self.call_id

    @property
    def stream_sid(self) -> str:
        return self.stream_id

    # ---- the CarrierCall hooks -------------------------------------------------

    def new_call_id(self) -> str:
        return "CA" + secrets.token_hex(16)

    def new_stream_id(self) -> str:
        return self._stream_sid or "MZ" + secrets.token_hex(16)

    def make_model(self, now: float) -> TwilioPlayoutModel:
        return TwilioPlayoutModel(self.stream_id, now, underrun_tolerance=self.underrun_tolerance)

    def make_result(self, **recorded: Any) -> TwilioCallResult:
        return TwilioCallResult(self.call_id, self.stream_id, carrier=self.carrier,
                                format=self.format, **recorded)

    def hello(self) -> list[str]:
        start = {
            "accountSid": self.account_sid, "streamSid": self.stream_sid,
            "callSid": self.call_sid, "tracks": ["inbound"],
            "customParameters": self.custom_parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        return ['{"event":"connected","protocol":"Call","version":"1.0.0"}',
                self._event("start", start=start)]

    def media_messages(self, index: int, frame: bytes) -> list[str]:
        payload = binascii.b2a_base64(frame, newline=False).decode()
        return ['{"event":"media","sequenceNumber":"%s","streamSid":%s,"media":{"track":'
                '"inbound","chunk":"%s","timestamp":"%s","payload":"%s"}}'
                % (self.next_sequence(), self._sid_json, index + 1, index * 20, payload)]

    def dtmf_messages(self, digit: str) -> list[str]:
        return ['{"event":"dtmf","sequenceNumber":"%s","streamSid":%s,'
                '"dtmf":{"track":"inbound_track","digit":"%s"}}'
                % (self.next_sequence(), self._sid_json, digit)]

    def echo_message(self, echo: Echo) -> str:
        return ('{"event":"mark","sequenceNumber":"%s","streamSid":%s,"mark":{"name":%s}}'
                % (self.next_sequence(), self._sid_json, json.dumps(echo.name)))

    def goodbye(self) -> list[str]:
        return [self._event("stop", stop={"accountSid": self.account_sid,
                                          "callSid": self.call_sid})]

    def _event(self, event: str, **fields: Any) -> str:
        return to_json({"event": event, "sequenceNumber": str(self.next_sequence()),
                        "streamSid": self.stream_sid, **fields})


class TwilioCall(TwilioCallSim):
    """:class:`TwilioCallSim` with :func:`~gateway.sim.carriers.make_call`'s ``call_id``."""

    accepted_auth: ClassVar[tuple[frozenset[str], ...]] = (frozenset({"auth_token"}),)

    @classmethod
    def signed_headers(cls, url: str, auth: dict[str, str]) -> dict[str, str]:
        if "auth_token" not in auth:
            return {}
        return {"X-Twilio-Signature": twilio_signature(auth["auth_token"], as_wss(url))}

    def __init__(self, url: str, *, call_id: str | None = None, **options: Any) -> None:
        super().__init__(url, call_sid=call_id, **options)
