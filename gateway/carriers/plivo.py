"""Plivo Audio Streams (bidirectional), server side, as a sans-I/O protocol.

Plivo opens a WebSocket to the gateway for each ``<Stream bidirectional="true">`` and
speaks JSON in text frames only::

    Plivo -> gateway   start (first, once), then media / dtmf / playedStream / clearedAudio
                       ...; no stop: the socket closing ends the stream
    gateway -> Plivo   playAudio {contentType, sampleRate, payload}, checkpoint {name},
                       clearAudio, sendDTMF                    (checkpoint/clear with streamId)

Numbers are JSON numbers (``sequenceNumber``, ``chunk``, ``sampleRate``). The gateway
answers in the format ``start.mediaFormat`` announces (Plivo degrades audio when the codec
changes between ``playAudio`` messages): μ-law 8 kHz or L16 (little-endian) 8/16 kHz.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Callable
from typing import Any

from gateway.carriers.events import (
    Audio,
    CarrierCommand,
    CarrierEvent,
    CarrierProtocolError,
    Clear,
    Cleared,
    Dtmf,
    Mark,
    MarkPlayed,
    MediaFormat,
    PlayAudio,
    Started,
)
from gateway.carriers.jsonfields import (
    binary_frame_error,
    decode_payload,
    load_message,
    object_field,
    string_field,
    string_map,
)

__all__ = ["PlivoProtocol"]

#: Plivo's content type -> (gateway encoding, the sample rates Plivo plays back)
_CONTENT_TYPES = {"audio/x-mulaw": ("mulaw", (8000,)), "audio/x-l16": ("l16", (8000, 16000))}
_ORDER = ("Plivo sends start first, then media/dtmf/playedStream/clearedAudio; "
          "the socket closing ends the stream")
_DTMF_DIGITS = frozenset("0123456789*#ABCD")
_HEADER_SEPARATORS = re.compile("[;,]")


class PlivoProtocol:
    """One Plivo audio stream, seen from the gateway (the WebSocket server).

    Inbound: :meth:`receive_text` for each text frame, :meth:`receive_bytes` for each
    binary frame. Each returns one normalized event, or ``None`` for a frame that carries
    nothing for the gateway (outbound-track media). A frame that breaks the protocol raises
    :class:`~gateway.carriers.events.CarrierProtocolError` and leaves the state unchanged.

    State: ``start`` is the first message and comes once; ``media``/``dtmf``/
    ``playedStream`` (or ``played``)/``clearedAudio`` before it are ``out_of_order``. There
    is no stop message, so :attr:`stopped` stays ``False``: the socket closing is the end.

    Outbound: :meth:`media_message`, :meth:`mark_message` (a ``checkpoint``),
    :meth:`clear_message`, :meth:`dtmf_message` and :meth:`send` return the UTF-8 JSON of
    one text frame; they raise :class:`RuntimeError` before ``start``.
    """

    carrier = "plivo"
    #: Plivo answers a checkpoint with ``playedStream`` only if the audio before it played;
    #: ``clearAudio`` drops pending checkpoints without an echo and sends ``clearedAudio``.
    marks_cleared_on_clear = False
    frames_per_message = 1
    lead_s: float | None = None

    def __init__(self) -> None:
        self.stream_id: str | None = None
        self.call_id: str | None = None
        self.media_format: MediaFormat = MediaFormat("mulaw", 8000)
        self.custom_parameters: dict[str, str] = {}
        self._media_prefix: bytes | None = None
        self._mark_prefix = b""
        self._clear_text = b""

    @property
    def started(self) -> bool:
        """``start`` has been received: :attr:`stream_id` and friends are set."""
        return self.stream_id is not None

    @property
    def stopped(self) -> bool:
        """Always ``False``: Plivo has no stop message, the socket closing ends the stream."""
        return False

    # ---- inbound ---------------------------------------------------------------

    def receive_text(self, text: str) -> CarrierEvent | None:
        """Parse one text frame from Plivo into an event (``None``: nothing to report)."""
        event, message = load_message(text, "Plivo", self._HANDLERS)
        if self.started and "streamId" in message and message["streamId"] != self.stream_id:
            raise CarrierProtocolError(
                "missing_field",
                f"{event} for streamId {message['streamId']!r}, but this socket carries "
                f"stream {self.stream_id!r}: one socket is one stream",
            )
        return self._HANDLERS[event](self, message)

    def receive_bytes(self, data: bytes) -> CarrierEvent | None:
        """Plivo never sends binary frames; any binary frame is a protocol error."""
        raise binary_frame_error("Plivo", data)

    def _on_start(self, message: dict[str, Any]) -> CarrierEvent | None:
        if self.started:
            raise CarrierProtocolError(
                "out_of_order", f"a second start on stream {self.stream_id!r}: {_ORDER}"
            )
        start = object_field(message, "start", "start")
        call_id = string_field(start, "callId", "start")
        stream_id = string_field(start, "streamId", "start")
        media_format, content_type = _media_format(start.get("mediaFormat"))
        custom_parameters = _extra_headers(message.get("extra_headers", start.get("extra_headers")))

        self.stream_id = stream_id
        self.call_id = call_id
        self.media_format = media_format
        self.custom_parameters = custom_parameters
        sid = json.dumps(stream_id).encode()
        self._media_prefix = (
            b'{"event":"playAudio","media":{"contentType":"' + content_type.encode()
            + b'","sampleRate":' + str(media_format.sample_rate).encode() + b',"payload":"'
        )
        self._mark_prefix = b'{"event":"checkpoint","streamId":' + sid + b',"name":'
        self._clear_text = b'{"event":"clearAudio","streamId":' + sid + b"}"
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
                "missing_field", f"media.track is {track!r}; a Plivo stream carries 'inbound'"
            )
        return Audio(decode_payload(media, "media", self.media_format.encoding))

    def _on_dtmf(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._require_started("dtmf")
        dtmf = object_field(message, "dtmf", "dtmf")
        return Dtmf(string_field(dtmf, "digit", "dtmf"))

    def _on_played(self, message: dict[str, Any]) -> CarrierEvent | None:
        event = message["event"]
        self._require_started(event)
        name = message.get("name")
        if type(name) is not str:
            raise CarrierProtocolError(
                "missing_field", f"{event} has no top-level \"name\" string (the checkpoint's)"
            )
        return MarkPlayed(name)

    def _on_cleared(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._require_started("clearedAudio")
        return Cleared()

    def _require_started(self, event: str) -> None:
        if not self.started:
            raise CarrierProtocolError("out_of_order", f"{event} before start: {_ORDER}")

    _HANDLERS: dict[str, Callable[[PlivoProtocol, dict[str, Any]], CarrierEvent | None]] = {
        "start": _on_start,
        "media": _on_media,
        "dtmf": _on_dtmf,
        # the protocol reference says playedStream; Plivo's support FAQ shows played
        "playedStream": _on_played,
        "played": _on_played,
        "clearedAudio": _on_cleared,
    }

    # ---- outbound --------------------------------------------------------------

    def media_message(self, payload: bytes) -> bytes:
        """``{"event":"playAudio","media":{"contentType":…,"sampleRate":…,"payload":…}}``
        in the stream's own format."""
        prefix = self._media_prefix
        if prefix is None:
            raise RuntimeError(self._not_started("playAudio"))
        return prefix + binascii.b2a_base64(payload, newline=False) + b'"}}'

    def mark_message(self, name: str) -> bytes:
        """``{"event":"checkpoint","streamId":…,"name":…}``; Plivo answers
        ``playedStream`` once the audio before it has played (never if it was cleared)."""
        if self._media_prefix is None:
            raise RuntimeError(self._not_started("checkpoint"))
        if type(name) is not str:
            raise TypeError(f"checkpoint name must be a str, not {type(name).__name__}")
        return self._mark_prefix + json.dumps(name).encode() + b"}"

    def clear_message(self) -> bytes:
        """``{"event":"clearAudio","streamId":…}``: Plivo drops its buffered audio and
        pending checkpoints and answers ``clearedAudio``."""
        if self._media_prefix is None:
            raise RuntimeError(self._not_started("clearAudio"))
        return self._clear_text

    def dtmf_message(self, digits: str) -> bytes:
        """``{"event":"sendDTMF","dtmf":"…"}``: play DTMF tones into the call."""
        if self._media_prefix is None:
            raise RuntimeError(self._not_started("sendDTMF"))
        if type(digits) is not str or not digits or not _DTMF_DIGITS.issuperset(digits):
            raise ValueError(
                f"DTMF digits must be a non-empty string of 0-9, *, #, A-D: {digits!r}"
            )
        return b'{"event":"sendDTMF","dtmf":"' + digits.encode() + b'"}'

    def hangup_message(self) -> bytes | None:
        """``None``: closing the socket ends the stream; the call itself is hung up over
        REST (``DELETE /v1/Account/{auth_id}/Call/{call_uuid}/``)."""
        return None

    def send(self, command: CarrierCommand) -> bytes:
        """The text frame for a normalized command."""
        if type(command) is PlayAudio:
            return self.media_message(command.payload)
        if type(command) is Mark:
            return self.mark_message(command.name)
        if type(command) is Clear:
            return self.clear_message()
        raise TypeError(f"Plivo has no message for command {command!r}")

    @staticmethod
    def _not_started(what: str) -> str:
        return (
            f"cannot send {what} before Plivo's start message: the streamId and the audio "
            "format come with start"
        )


def _media_format(value: Any) -> tuple[MediaFormat, str]:
    """``start.mediaFormat`` as the gateway's format and Plivo's content type for it."""
    if type(value) is not dict:
        raise CarrierProtocolError(
            "missing_field",
            f"start.mediaFormat must be an object with encoding and sampleRate, got {value!r}",
        )
    content_type = value.get("encoding")
    known = _CONTENT_TYPES.get(content_type) if type(content_type) is str else None
    if known is None:
        raise CarrierProtocolError(
            "missing_field",
            f"start.mediaFormat.encoding is {content_type!r}; Plivo streams carry "
            "'audio/x-mulaw' or 'audio/x-l16'",
        )
    encoding, rates = known
    rate = value.get("sampleRate")
    if type(rate) is not int or rate not in rates:
        raise CarrierProtocolError(
            "missing_field",
            f"start.mediaFormat.sampleRate is {rate!r}; Plivo plays {content_type} at "
            f"{' or '.join(map(str, rates))} Hz",
        )
    return MediaFormat(encoding, rate), content_type


def _extra_headers(value: Any) -> dict[str, str]:
    """``extra_headers`` (``<Stream extraHeaders="k=v,k2=v2">``, echoed as ``"k=v;k2=v2"``)
    as custom parameters."""
    if type(value) is dict:
        return string_map(value, "extra_headers")
    if value is None:
        return {}
    if type(value) is not str:
        raise CarrierProtocolError(
            "missing_field", f"extra_headers must be a \"k=v;k2=v2\" string, got {value!r}"
        )
    text = value.strip()
    if text == "{}":  # "no extraHeaders" as public Plivo integrations' start fixtures show it
        return {}
    parameters = {}
    for item in _HEADER_SEPARATORS.split(text):
        if not item.strip():
            continue
        key, equals, item_value = item.partition("=")
        if not equals or not key.strip():
            raise CarrierProtocolError(
                "missing_field",
                f"extra_headers item {item!r} is not key=value (in {value!r})",
            )
        parameters[key.strip()] = item_value.strip()
    return parameters
