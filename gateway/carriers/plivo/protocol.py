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

import json
import re
from typing import Any

from gateway.carriers.events import (
    Audio,
    CarrierEvent,
    CarrierProtocolError,
    Cleared,
    MarkPlayed,
    MediaFormat,
    Started,
)
from gateway.carriers.jsonfields import (
    decode_payload,
    format_encoding,
    inbound_track,
    object_field,
    rate_among,
    string_field,
    string_map,
)
from gateway.carriers.jsonstream import JsonStreamProtocol

__all__ = ["PlivoProtocol"]

#: Plivo's content type -> (gateway encoding, the sample rates Plivo plays back)
_CONTENT_TYPES = {"audio/x-mulaw": ("mulaw", (8000,)), "audio/x-l16": ("l16", (8000, 16000))}
_CONTENT_TYPE_OF = {encoding: type_ for type_, (encoding, _) in _CONTENT_TYPES.items()}
_DTMF_DIGITS = frozenset("0123456789*#ABCD")
_HEADER_SEPARATORS = re.compile("[;,]")


class PlivoProtocol(JsonStreamProtocol):
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
    :meth:`hangup_message` is ``None``: closing the socket ends the stream; the call itself
    is hung up over REST (``DELETE /v1/Account/{auth_id}/Call/{call_uuid}/``).
    """

    carrier = "plivo"
    display_name = "Plivo"
    #: Plivo answers a checkpoint with ``playedStream`` only if the audio before it played;
    #: ``clearAudio`` drops pending checkpoints without an echo and sends ``clearedAudio``.
    marks_cleared_on_clear = False
    frames_per_message = 1
    lead_s: float | None = None

    _EVENTS = {"start": "_on_start", "media": "_on_media", "dtmf": "_on_dtmf",
               # the protocol reference says playedStream; Plivo's support FAQ shows played
               "playedStream": "_on_played", "played": "_on_played",
               "clearedAudio": "_on_cleared"}
    _STREAM_FIELD = "streamId"
    _ORDER = ("Plivo sends start first, then media/dtmf/playedStream/clearedAudio; "
              "the socket closing ends the stream")
    _START_NEEDED = "the streamId and the audio format come with start"
    _MEDIA_EVENT, _MARK_EVENT, _CLEAR_EVENT = "playAudio", "checkpoint", "clearAudio"
    _MARK_END = b"}"

    def __init__(self) -> None:
        super().__init__(MediaFormat("mulaw", 8000))

    # ---- inbound ---------------------------------------------------------------

    def _parse_start(self, message: dict[str, Any]) -> Started:
        start = object_field(message, "start", "start")
        call_id = string_field(start, "callId", "start")
        stream_id = string_field(start, "streamId", "start")
        media_format = _media_format(start.get("mediaFormat"))
        custom_parameters = _extra_headers(message.get("extra_headers", start.get("extra_headers")))
        return Started(call_id, stream_id, media_format, custom_parameters)

    def _on_started(self) -> None:
        # Outbound, in the stream's own format:
        #   playAudio   {"event":"playAudio","media":{"contentType":…,"sampleRate":…,
        #               "payload":…}}
        #   checkpoint  {"event":"checkpoint","streamId":…,"name":…}: Plivo answers
        #               playedStream once the audio before it has played (never if cleared)
        #   clearAudio  {"event":"clearAudio","streamId":…}: Plivo drops its buffered audio
        #               and pending checkpoints and answers clearedAudio
        sid = json.dumps(self.stream_id).encode()
        content_type = _CONTENT_TYPE_OF[self.media_format.encoding]
        self._media_prefix = (
            b'{"event":"playAudio","media":{"contentType":"' + content_type.encode()
            + b'","sampleRate":' + str(self.media_format.sample_rate).encode() + b',"payload":"'
        )
        self._mark_prefix = b'{"event":"checkpoint","streamId":' + sid + b',"name":'
        self._clear_text = b'{"event":"clearAudio","streamId":' + sid + b"}"

    def _on_media(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._require_started("media")
        media = object_field(message, "media", "media")
        if not inbound_track(media, "a Plivo stream carries 'inbound'"):
            return None
        return Audio(decode_payload(media, "media", self.media_format.encoding))

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

    # ---- outbound --------------------------------------------------------------

    def dtmf_message(self, digits: str) -> bytes:
        """``{"event":"sendDTMF","dtmf":"…"}``: play DTMF tones into the call."""
        if self._media_prefix is None:
            raise RuntimeError(self._not_started("sendDTMF"))
        if type(digits) is not str or not digits or not _DTMF_DIGITS.issuperset(digits):
            raise ValueError(
                f"DTMF digits must be a non-empty string of 0-9, *, #, A-D: {digits!r}"
            )
        return b'{"event":"sendDTMF","dtmf":"' + digits.encode() + b'"}'


def _media_format(value: Any) -> MediaFormat:
    """``start.mediaFormat`` as the gateway's format."""
    value, (encoding, rates) = format_encoding(
        value, "start.mediaFormat", "sampleRate", _CONTENT_TYPES,
        "Plivo streams carry 'audio/x-mulaw' or 'audio/x-l16'")
    rate = rate_among(value.get("sampleRate"), rates, "start.mediaFormat.sampleRate",
                      f"Plivo plays {value['encoding']}")
    return MediaFormat(encoding, rate)


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
