"""Telnyx media streaming (bidirectional RTP mode), server side, as a sans-I/O protocol.

Telnyx opens a WebSocket to the gateway for each stream (``stream_url`` on dial/answer/
``streaming_start``, or TeXML ``<Stream>``) and speaks JSON in text frames only::

    Telnyx -> gateway   connected, start (once), then media / dtmf / mark / error ..., stop
    gateway -> Telnyx   media {payload}, mark {name}, clear        (no stream_id needed)

Bidirectional audio needs ``stream_bidirectional_mode: "rtp"`` (the default, ``mp3``,
silently drops what we send). What Telnyx streams to us (``start.media_format``) and what
it plays of ours (``bidirectionalCodec``/``…SamplingRate``) are set apart, and they can
differ: Telnyx transcodes the inbound stream only between PCMU and PCMA, so a PCMU call
streams PCMU even when the answer asked for L16 both ways. ``start`` never names the
bidirectional codec, so the gateway sends what its own answer document asked for
(``carriers.telnyx.codec``/``sample_rate``, :meth:`TelnyxProtocol.from_options`); a stream
started through Call Control must set ``stream_bidirectional_codec`` to match.

Audio is the headerless RTP payload: μ-law or A-law bytes as they are, L16 converted here
between Telnyx's big-endian wire and the gateway's little-endian ``l16`` (see
:func:`_swap_l16`).
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from typing import Any

from gateway.carriers.events import (
    Audio,
    CarrierEvent,
    CarrierFault,
    CarrierProtocolError,
    MediaFormat,
    Started,
)
from gateway.carriers.jsonfields import (
    decode_payload,
    format_encoding,
    inbound_track,
    object_field,
    party,
    string_field,
    string_map,
)
from gateway.carriers.jsonstream import JsonStreamProtocol

__all__ = ["TelnyxProtocol"]

_ENCODINGS = {"PCMU": "mulaw", "PCMA": "alaw", "L16": "l16"}


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


#: the media-stream error codes Telnyx documents, and their titles (an error without a code
#: is known by its title): the values ``CarrierFault.code`` counts under
FAULT_CODES = frozenset({"100002", "100003", "100004", "100005", "unknown_error",
                         "malformed_frame", "invalid_media", "rate_limit_reached"})

class TelnyxProtocol(JsonStreamProtocol):
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
    before ``start`` (the media format is not known yet). :meth:`hangup_message` is
    ``None``: closing the socket ends the stream; the call itself is hung up over REST
    (``POST /v2/calls/{call_control_id}/actions/hangup``).
    """

    carrier = "telnyx"
    display_name = "Telnyx"
    #: Telnyx echoes every queued mark when it executes a ``clear`` (and a mark sent with
    #: nothing queued at once).
    marks_cleared_on_clear = True
    #: Telnyx takes 20 ms to 30 s of audio per message.
    frames_per_message = 1
    lead_s: float | None = None

    _EVENTS = {"connected": "_on_connected", "start": "_on_start", "media": "_on_media",
               "dtmf": "_on_dtmf", "mark": "_on_mark", "error": "_on_error", "stop": "_on_stop"}
    _STREAM_FIELD = "stream_id"
    _ORDER = "Telnyx sends connected, then start, then media/dtmf/mark/error, then stop"
    _START_NEEDED = "the audio format comes with start"
    # Outbound messages carry no stream_id:
    #   media  {"event":"media","media":{"payload":<base64>}}
    #   mark   {"event":"mark","mark":{"name":…}}: echoed when the media before it has
    #          played, at once if nothing is queued, or on clear
    #   clear  {"event":"clear"}: Telnyx stops playing, empties its queue and echoes every
    #          queued mark
    _mark_prefix = b'{"event":"mark","mark":{"name":'
    _clear_text = b'{"event":"clear"}'

    def __init__(self, played_format: MediaFormat | None = None) -> None:
        """``played_format``: what Telnyx plays what we send as (the answer document's
        ``bidirectionalCodec``); ``None``: the format ``start`` announces."""
        super().__init__(MediaFormat("mulaw", 8000))
        self.played_format = played_format
        self._l16_in = False
        self._l16_out = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> TelnyxProtocol:
        """Played as ``codec`` at ``sample_rate`` (G.711 always at 8000 Hz), as
        :func:`gateway.carriers.answer.texml` asks for it."""
        encoding = _ENCODINGS.get(options.get("codec", "PCMU"), "mulaw")
        rate = options.get("sample_rate", 8000) if encoding == "l16" else 8000
        return cls(MediaFormat(encoding, rate))

    # ---- inbound ---------------------------------------------------------------

    def _parse_start(self, message: dict[str, Any]) -> Started:
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
        return Started(call_id, stream_id, media_format, _custom_parameters(start),
                       caller=party(start, "from"), called=party(start, "to"))

    def _on_started(self) -> None:
        self._l16_in = self.inbound_format.encoding == "l16"
        self._l16_out = self.media_format.encoding == "l16"
        # constant, but media cannot go before start: it must be in start's format
        self._media_prefix = b'{"event":"media","media":{"payload":"'

    def _on_media(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._require_started("media")
        media = object_field(message, "media", "media")
        if not inbound_track(media, "a Telnyx stream carries 'inbound' (or 'outbound' with "
                                    "both_tracks)"):
            return None
        audio = decode_payload(media, "media", "RTP payload")
        if self._l16_in:
            try:
                audio = _swap_l16(audio)
            except ValueError as exc:
                raise CarrierProtocolError("bad_payload", f"media.payload: {exc}") from None
        return Audio(audio)

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

    # ---- outbound --------------------------------------------------------------

    def media_message(self, payload: bytes) -> bytes:
        """``{"event":"media","media":{"payload":<base64>}}`` for audio in
        :attr:`media_format` (``l16`` little-endian; it goes out big-endian)."""
        if self._l16_out:
            payload = _swap_l16(payload)
        return JsonStreamProtocol.media_message(self, payload)


def _media_format(value: Any) -> MediaFormat:
    value, encoding = format_encoding(
        value, "start.media_format", "sample_rate", _ENCODINGS,
        "the gateway plays PCMU, PCMA or L16 (set stream_codec and stream_bidirectional_codec "
        "to one)")
    name = value["encoding"]
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
