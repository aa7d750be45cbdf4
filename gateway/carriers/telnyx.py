"""Telnyx media streaming (bidirectional RTP mode), server side, as a sans-I/O protocol.

Telnyx opens a WebSocket to the gateway for each stream (``stream_url`` on dial/answer/
``streaming_start``, or TeXML ``<Stream>``) and speaks JSON in text frames only::

    Telnyx -> gateway   connected, start (once), then media / dtmf / mark / error ..., stop
    gateway -> Telnyx   media {payload}, mark {name}, clear        (no stream_id needed)

Bidirectional audio needs ``stream_bidirectional_mode: "rtp"`` (the default, ``mp3``,
silently drops what we send). The gateway plays in the format ``start.media_format``
announces, so set ``stream_bidirectional_codec``/``…_sampling_rate`` to match
``stream_codec``: Telnyx does not tell us the bidirectional codec.

Audio is the headerless RTP payload: μ-law or A-law bytes as they are, L16 converted here
between Telnyx's big-endian wire and the gateway's little-endian ``l16`` (see
:func:`_swap_l16`).
"""

from __future__ import annotations

import binascii
import json
from array import array
from collections.abc import Callable
from typing import Any

from gateway.carriers.events import (
    Audio,
    CarrierCommand,
    CarrierEvent,
    CarrierFault,
    CarrierProtocolError,
    Clear,
    Connected,
    Dtmf,
    Mark,
    MarkPlayed,
    MediaFormat,
    PlayAudio,
    Started,
    Stopped,
)
from gateway.carriers.jsonfields import (
    binary_frame_error,
    decode_payload,
    load_message,
    object_field,
    string_field,
    string_map,
)

__all__ = ["TelnyxProtocol"]

_ENCODINGS = {"PCMU": "mulaw", "PCMA": "alaw", "L16": "l16"}
_ORDER = "Telnyx sends connected, then start, then media/dtmf/mark/error, then stop"

_MEDIA_PREFIX = b'{"event":"media","media":{"payload":"'
_MARK_PREFIX = b'{"event":"mark","mark":{"name":'
_CLEAR_TEXT = b'{"event":"clear"}'


def _swap_l16(data: bytes) -> bytes:
    """Swap the bytes of every 16-bit sample (its own inverse: wire <-> gateway ``l16``).

    Telnyx does not document L16's byte order. Its payload is "a base64-encoded RTP payload
    (no headers)", and RTP L16 is network byte order, big-endian (RFC 3551 §4.5.11); the
    public clients that play L16 into Telnyx agree: pipecat ``serializers/telnyx.py``
    byteswaps little->big before sending and reads ``>i2``, GetStream Vision-Agents
    ``plugins/telnyx/.../audio.py`` reads and writes ``>i2``. Not yet verified on a call.
    """
    if len(data) % 2:
        raise ValueError(f"L16 audio must be whole 16-bit samples, got {len(data)} bytes")
    samples = array("H", data)
    samples.byteswap()
    return samples.tobytes()


class TelnyxProtocol:
    """One Telnyx media stream, seen from the gateway (the WebSocket server).

    Inbound: :meth:`receive_text` for each text frame, :meth:`receive_bytes` for each
    binary frame. Each returns one normalized event, or ``None`` for a frame that carries
    nothing for the gateway (outbound-track media with ``both_tracks``). A frame that breaks
    the protocol raises :class:`~gateway.carriers.events.CarrierProtocolError` and leaves
    the state unchanged. Telnyx does not guarantee media order; sequence numbers are not
    checked, frames are passed on as they come.

    State: ``connected`` is optional (once, before ``start``); ``start`` comes once, before
    any ``media``/``dtmf``/``mark``; ``error`` (a complaint about what we sent, returned as
    :class:`~gateway.carriers.events.CarrierFault`) and ``stop`` may come at any time;
    every frame after ``stop`` is ``out_of_order``.

    Outbound: :meth:`media_message`, :meth:`mark_message`, :meth:`clear_message` and
    :meth:`send` return the UTF-8 JSON of one text frame; they raise :class:`RuntimeError`
    before ``start`` (the media format is not known yet).
    """

    carrier = "telnyx"
    #: Telnyx echoes every queued mark when it executes a ``clear`` (and a mark sent with
    #: nothing queued at once).
    marks_cleared_on_clear = True
    #: Telnyx takes 20 ms to 30 s of audio per message.
    frames_per_message = 1
    lead_s: float | None = None

    def __init__(self) -> None:
        self.stream_id: str | None = None
        self.call_id: str | None = None
        self.media_format: MediaFormat = MediaFormat("mulaw", 8000)
        self.custom_parameters: dict[str, str] = {}
        self._connected = False
        self._stopped = False
        self._l16 = False

    @property
    def started(self) -> bool:
        """``start`` has been received: :attr:`stream_id` and friends are set."""
        return self.stream_id is not None

    @property
    def stopped(self) -> bool:
        """``stop`` has been received: the stream is over."""
        return self._stopped

    # ---- inbound ---------------------------------------------------------------

    def receive_text(self, text: str) -> CarrierEvent | None:
        """Parse one text frame from Telnyx into an event (``None``: nothing to report)."""
        event, message = load_message(text, "Telnyx", self._HANDLERS)
        if self._stopped:
            raise CarrierProtocolError(
                "out_of_order", f"{event} after stop: stop ends the stream ({_ORDER})"
            )
        if self.started and "stream_id" in message and message["stream_id"] != self.stream_id:
            raise CarrierProtocolError(
                "missing_field",
                f"{event} for stream_id {message['stream_id']!r}, but this socket carries "
                f"stream {self.stream_id!r}: one socket is one stream",
            )
        return self._HANDLERS[event](self, message)

    def receive_bytes(self, data: bytes) -> CarrierEvent | None:
        """Telnyx never sends binary frames; any binary frame is a protocol error."""
        raise binary_frame_error("Telnyx", data)

    def _on_connected(self, message: dict[str, Any]) -> CarrierEvent | None:
        if self._connected or self.started:
            where = "a second connected" if self._connected else "connected after start"
            raise CarrierProtocolError("out_of_order", f"{where}: {_ORDER}")
        self._connected = True
        return Connected()

    def _on_start(self, message: dict[str, Any]) -> CarrierEvent | None:
        if self.started:
            raise CarrierProtocolError(
                "out_of_order", f"a second start on stream {self.stream_id!r}: {_ORDER}"
            )
        start = object_field(message, "start", "start")
        stream_id = message.get("stream_id")
        if type(stream_id) is not str or not stream_id:
            raise CarrierProtocolError(
                "missing_field",
                f"start has no top-level stream_id string (got {stream_id!r}); Telnyx puts "
                "it beside \"event\", not inside start",
            )
        call_id = string_field(start, "call_control_id", "start")
        media_format = _media_format(start.get("media_format"))
        custom_parameters = _custom_parameters(start)

        self.stream_id = stream_id
        self.call_id = call_id
        self.media_format = media_format
        self.custom_parameters = custom_parameters
        self._l16 = media_format.encoding == "l16"
        return Started(
            call_id=call_id,
            stream_id=stream_id,
            media_format=media_format,
            custom_parameters=dict(custom_parameters),
        )

    def _on_media(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._require_started("media")
        media = object_field(message, "media", "media")
        track = media.get("track", "inbound")
        if track == "outbound":
            return None
        if track != "inbound":
            raise CarrierProtocolError(
                "missing_field",
                f"media.track is {track!r}; a Telnyx stream carries 'inbound' "
                "(or 'outbound' with both_tracks)",
            )
        audio = decode_payload(media, "media", "RTP payload")
        if self._l16:
            try:
                audio = _swap_l16(audio)
            except ValueError as exc:
                raise CarrierProtocolError("bad_payload", f"media.payload: {exc}") from None
        return Audio(audio)

    def _on_dtmf(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._require_started("dtmf")
        dtmf = object_field(message, "dtmf", "dtmf")
        return Dtmf(string_field(dtmf, "digit", "dtmf"))

    def _on_mark(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._require_started("mark")
        name = object_field(message, "mark", "mark").get("name")
        if type(name) is not str:
            raise CarrierProtocolError("missing_field", "mark has no mark.name string")
        return MarkPlayed(name)

    def _on_error(self, message: dict[str, Any]) -> CarrierEvent | None:
        payload = object_field(message, "payload", "error")
        code, title, detail = payload.get("code"), payload.get("title"), payload.get("detail")
        title = title if type(title) is str and title else None
        detail = detail if type(detail) is str and detail else None
        if (type(code) is int or type(code) is str) and code != "":
            code = str(code)
        elif title is not None:
            code = title
        else:
            raise CarrierProtocolError(
                "missing_field",
                f"error.payload has neither a code (e.g. 100003) nor a title "
                f"(e.g. 'malformed_frame'): {payload!r}",
            )
        if title is not None and detail is not None and title != code:
            detail = f"{title}: {detail}"
        return CarrierFault(code, detail or title or "")

    def _on_stop(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._stopped = True
        return Stopped()

    def _require_started(self, event: str) -> None:
        if not self.started:
            raise CarrierProtocolError("out_of_order", f"{event} before start: {_ORDER}")

    _HANDLERS: dict[str, Callable[[TelnyxProtocol, dict[str, Any]], CarrierEvent | None]] = {
        "connected": _on_connected,
        "start": _on_start,
        "media": _on_media,
        "dtmf": _on_dtmf,
        "mark": _on_mark,
        "error": _on_error,
        "stop": _on_stop,
    }

    # ---- outbound --------------------------------------------------------------

    def media_message(self, payload: bytes) -> bytes:
        """``{"event":"media","media":{"payload":<base64>}}`` for audio in
        :attr:`media_format` (``l16`` little-endian; it goes out big-endian)."""
        if not self.started:
            raise RuntimeError(self._not_started("media"))
        if self._l16:
            payload = _swap_l16(payload)
        return _MEDIA_PREFIX + binascii.b2a_base64(payload, newline=False) + b'"}}'

    def mark_message(self, name: str) -> bytes:
        """``{"event":"mark","mark":{"name":…}}``; Telnyx echoes it when the media before it
        has played, at once if nothing is queued, or on ``clear``."""
        if not self.started:
            raise RuntimeError(self._not_started("mark"))
        if type(name) is not str:
            raise TypeError(f"mark name must be a str, not {type(name).__name__}")
        return _MARK_PREFIX + json.dumps(name).encode() + b"}}"

    def clear_message(self) -> bytes:
        """``{"event":"clear"}``: Telnyx stops playing, empties its queue and echoes every
        queued mark."""
        if not self.started:
            raise RuntimeError(self._not_started("clear"))
        return _CLEAR_TEXT

    def hangup_message(self) -> bytes | None:
        """``None``: closing the socket ends the stream; the call itself is hung up over
        REST (``POST /v2/calls/{call_control_id}/actions/hangup``)."""
        return None

    def send(self, command: CarrierCommand) -> bytes:
        """The text frame for a normalized command."""
        if type(command) is PlayAudio:
            return self.media_message(command.payload)
        if type(command) is Mark:
            return self.mark_message(command.name)
        if type(command) is Clear:
            return self.clear_message()
        raise TypeError(f"Telnyx has no message for command {command!r}")

    @staticmethod
    def _not_started(what: str) -> str:
        return (
            f"cannot send {what} before Telnyx's start message: the audio format comes "
            "with start"
        )


def _media_format(value: Any) -> MediaFormat:
    if type(value) is not dict:
        raise CarrierProtocolError(
            "missing_field",
            f"start.media_format must be an object with encoding and sample_rate, got {value!r}",
        )
    name = value.get("encoding")
    encoding = _ENCODINGS.get(name) if type(name) is str else None
    if encoding is None:
        raise CarrierProtocolError(
            "missing_field",
            f"start.media_format.encoding is {name!r}; the gateway plays "
            "PCMU, PCMA or L16 (set stream_codec and stream_bidirectional_codec to one)",
        )
    rate = value.get("sample_rate")
    if type(rate) is not int or rate <= 0:
        raise CarrierProtocolError(
            "missing_field",
            f"start.media_format.sample_rate must be a positive integer, got {rate!r}",
        )
    if encoding != "l16" and rate != 8000:
        raise CarrierProtocolError(
            "missing_field",
            f"start.media_format is {name} at {rate} Hz; G.711 is 8000 Hz",
        )
    return MediaFormat(encoding, rate)


def _custom_parameters(start: dict[str, Any]) -> dict[str, str]:
    """``start.custom_parameters`` (an object, or the ``[{name, value}]`` list the dial
    command takes), plus ``start.client_state`` (base64, as sent) as ``client_state``."""
    value = start.get("custom_parameters")
    if type(value) is list:
        if not all(type(item) is dict and type(item.get("name")) is str
                   and type(item.get("value")) is str for item in value):
            raise CarrierProtocolError(
                "missing_field",
                f"start.custom_parameters must be an object of strings or a list of "
                f"{{name, value}} strings, got {value!r}",
            )
        parameters = {item["name"]: item["value"] for item in value}
    else:
        parameters = string_map(value, "start.custom_parameters")
    client_state = start.get("client_state")
    if client_state is not None:
        if type(client_state) is not str:
            raise CarrierProtocolError(
                "missing_field",
                f"start.client_state must be a (base64) string, got {client_state!r}",
            )
        parameters["client_state"] = client_state
    return parameters
