"""Exotel AgentStream (Voicebot applet, bidirectional), server side, as a sans-I/O protocol.

Exotel opens a WebSocket to the gateway from the Voicebot applet and speaks JSON in text
frames only::

    Exotel -> gateway   connected, start (once), then media / dtmf / mark ..., stop
    gateway -> Exotel   media {payload}, mark {name}, clear      (each with the stream_sid)

Audio is raw 16-bit little-endian mono PCM both ways, at the rate the applet URL asks for
(``?sample-rate=16000``/``24000``, default 8000). Read it from ``start``: advertising 16 kHz
and decoding 8 kHz is a known cause of choppy calls. Outbound chunks must be at least
3200 bytes, a multiple of 320 bytes and at most 100 KB; shorter or ragged chunks make
Exotel wait or jitter, so :attr:`ExotelProtocol.frames_per_message` is set at ``start``
and :meth:`~ExotelProtocol.media_message` refuses anything else.
"""

from __future__ import annotations

from typing import Any

from gateway.carriers.events import (
    Audio,
    CarrierEvent,
    CarrierProtocolError,
    MediaFormat,
    Started,
)
from gateway.carriers.jsonfields import (
    decode_payload,
    format_encoding,
    object_field,
    party,
    start_stream_id,
    string_field,
    string_map,
)
from gateway.carriers.jsonstream import JsonStreamProtocol, media_stream_parts

__all__ = ["ExotelProtocol"]

_RATES = (8000, 16000, 24000)
_MIN_CHUNK = 3200
_CHUNK_STEP = 320
_MAX_CHUNK = 100_000


def _frames_per_message(frame_bytes: int) -> int:
    """The fewest 20 ms frames that make a legal chunk (≥ 3200 B, a multiple of 320 B)."""
    frames = 1
    while frames * frame_bytes < _MIN_CHUNK or frames * frame_bytes % _CHUNK_STEP:
        frames += 1
    return frames


class ExotelProtocol(JsonStreamProtocol):
    """One Exotel AgentStream stream, seen from the gateway (the WebSocket server).

    Inbound: :meth:`receive_text` for each text frame, :meth:`receive_bytes` for each
    binary frame. Each returns one normalized event. A frame that breaks the protocol
    raises :class:`~gateway.carriers.events.CarrierProtocolError` and leaves the state
    unchanged.

    State: ``connected`` is optional (once, before ``start``); ``start`` comes once, before
    any ``media``/``dtmf``/``mark``; ``stop`` may come at any time and ends the stream:
    every frame after it is ``out_of_order``.

    Outbound: :meth:`media_message`, :meth:`mark_message`, :meth:`clear_message` and
    :meth:`send` return the UTF-8 JSON of one text frame; they raise :class:`RuntimeError`
    before ``start`` (they carry the stream_sid). :meth:`hangup_message` is ``None``:
    closing the socket ends the stream and the call flow moves on to the applet after the
    Voicebot.
    """

    carrier = "exotel"
    display_name = "Exotel"
    #: Exotel does not document what a ``clear`` does to pending marks. ``False`` is the
    #: choice that cannot stall: the gateway writes off the marks a clear cuts instead of
    #: waiting for echoes that may never come, and an echo that does come later is a name
    #: it no longer waits for. ``True`` would wait on Exotel for nothing if it drops them.
    marks_cleared_on_clear = False
    #: set at ``start`` from the sample rate: 10 frames at 8 kHz, 5 at 16 kHz, 4 at 24 kHz
    frames_per_message = _frames_per_message(MediaFormat("l16", 8000).bytes_per_20ms)
    lead_s: float | None = None

    _EVENTS = {"connected": "_on_connected", "start": "_on_start", "media": "_on_media",
               "dtmf": "_on_dtmf", "mark": "_on_mark", "stop": "_on_stop"}
    _STREAM_FIELD = "stream_sid"
    _ORDER = "Exotel sends connected, then start, then media/dtmf/mark, then stop"
    _START_NEEDED = "every outbound message carries the stream_sid that start delivers"

    def __init__(self) -> None:
        super().__init__(MediaFormat("l16", 8000))

    # ---- inbound ---------------------------------------------------------------

    def _parse_start(self, message: dict[str, Any]) -> Started:
        start = object_field(message, "start", "start")
        call_id = string_field(start, "call_sid", "start")
        stream_id = start_stream_id(message, start, "stream_sid")
        media_format = _media_format(start.get("media_format"))
        custom_parameters = string_map(start.get("custom_parameters"), "start.custom_parameters")
        return Started(call_id, stream_id, media_format, custom_parameters,
                       caller=party(start, "from"), called=party(start, "to"))

    def _on_started(self) -> None:
        self.frames_per_message = _frames_per_message(self.media_format.bytes_per_20ms)
        # Outbound, Twilio's messages addressed with the stream_sid:
        #   media  {"event":"media","stream_sid":…,"media":{"payload":<base64 PCM>}}
        #   mark   {"event":"mark","stream_sid":…,"mark":{"name":…}}: echoed once the audio
        #          sent before it has played
        #   clear  {"event":"clear","stream_sid":…}: Exotel drops its buffered audio
        assert self.stream_id is not None  # _begin has set it
        self._media_prefix, self._mark_prefix, self._clear_text = media_stream_parts(
            "stream_sid", self.stream_id)

    def _on_media(self, message: dict[str, Any]) -> CarrierEvent | None:
        self._require_started("media")
        media = object_field(message, "media", "media")
        return Audio(decode_payload(media, "media", "16-bit little-endian PCM"))

    # ---- outbound --------------------------------------------------------------

    def media_message(self, payload: bytes) -> bytes:
        """``{"event":"media","stream_sid":…,"media":{"payload":<base64>}}``.

        ``payload`` is 16-bit little-endian PCM at :attr:`media_format`'s rate, 3200 to
        100 000 bytes and a multiple of 320 (:attr:`frames_per_message` frames; pad the
        last chunk of an utterance with silence). Anything else raises :class:`ValueError`.
        """
        size = len(payload)
        if (size < _MIN_CHUNK or size % _CHUNK_STEP or size > _MAX_CHUNK) and self.started:
            raise ValueError(
                f"Exotel media chunks must be {_MIN_CHUNK}..{_MAX_CHUNK} bytes and a multiple "
                f"of {_CHUNK_STEP}, got {size} bytes: send {self.frames_per_message} frames "
                "per message and pad the last one with silence"
            )
        return JsonStreamProtocol.media_message(self, payload)


def _media_format(value: Any) -> MediaFormat:
    value, _ = format_encoding(value, "start.media_format", "sample_rate", {"audio/x-raw": "l16"},
                               "Exotel streams carry 'audio/x-raw' (16-bit little-endian PCM)")
    rate = value.get("sample_rate")
    # Exotel sends the numbers as strings ("8000", "16"); take a number too.
    if type(rate) is str and rate.isdecimal():
        rate = int(rate)
    if type(rate) is not int or rate not in _RATES:
        raise CarrierProtocolError(
            "missing_field",
            f"start.media_format.sample_rate is {value.get('sample_rate')!r}; Exotel "
            "streams at \"8000\", \"16000\" or \"24000\"",
        )
    bits = value.get("bit_rate", "16")
    if bits not in ("16", 16):
        raise CarrierProtocolError(
            "missing_field",
            f"start.media_format.bit_rate is {bits!r}; Exotel streams 16-bit PCM",
        )
    return MediaFormat("l16", rate)
