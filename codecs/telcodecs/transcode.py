"""Convert a stream between the TTS provider's audio format and the carrier's.

Encodings: ``"pcm_s16le"``, ``"l16"`` (taken as s16 little-endian here, identical to
``pcm_s16le``; convert byte order at the wire if a carrier sends network-order L16),
``"mulaw"`` and ``"alaw"``. The pipeline is decode to s16le, resample with
:class:`telcodecs.resample.StreamResampler` if the rates differ, encode.

Contract of :class:`Transcoder`:

* identical formats (same encoding after aliasing, same rate) pass through: ``feed``
  returns its input unchanged;
* PCM to a G.711 encoding at the same rate is only encoded, with no filtering;
* an odd trailing byte of PCM input is carried to the next ``feed``, never padded;
* WAV headers are not stripped here (see :mod:`telcodecs.wav`);
* ``flush`` returns the resampler's tail (empty without resampling) and resets the
  stream, so one instance can serve consecutive utterances.
"""

from __future__ import annotations

from collections.abc import Callable

from . import g711
from .framer import whole_samples
from .resample import StreamResampler

__all__ = ["ENCODINGS", "Transcoder", "bytes_per_second", "silence_byte"]

ENCODINGS = frozenset({"pcm_s16le", "l16", "mulaw", "alaw"})

_ALIASES = {"l16": "pcm_s16le"}
_BYTES_PER_SAMPLE = {"pcm_s16le": 2, "mulaw": 1, "alaw": 1}
_SILENCE_BYTE = {"pcm_s16le": 0x00, "mulaw": g711.ULAW_SILENCE, "alaw": g711.ALAW_SILENCE}
_DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "mulaw": g711.ulaw_decode,
    "alaw": g711.alaw_decode,
}
_ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "mulaw": g711.ulaw_encode,
    "alaw": g711.alaw_encode,
}


def _canonical(encoding: str) -> str:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; expected one of {sorted(ENCODINGS)}")
    return _ALIASES.get(encoding, encoding)


def silence_byte(encoding: str) -> int:
    """The byte value whose repetition is digital silence in ``encoding``."""
    return _SILENCE_BYTE[_canonical(encoding)]


def bytes_per_second(encoding: str, rate: int) -> int:
    """Byte rate of mono ``encoding`` audio at ``rate`` samples per second."""
    return _BYTES_PER_SAMPLE[_canonical(encoding)] * rate


class Transcoder:
    """Stateful stream converter from (src_encoding, src_rate) to (dst_encoding, dst_rate)."""

    def __init__(self, src_encoding: str, src_rate: int, dst_encoding: str, dst_rate: int):
        self.src_encoding = _canonical(src_encoding)
        self.dst_encoding = _canonical(dst_encoding)
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self.passthrough = self.src_encoding == self.dst_encoding and src_rate == dst_rate
        self._resampler = StreamResampler(src_rate, dst_rate) if src_rate != dst_rate else None
        self._decode = _DECODERS.get(self.src_encoding)
        self._encode = _ENCODERS.get(self.dst_encoding)
        self._odd_byte = b""

    @property
    def delay_seconds(self) -> float:
        """Group delay added by resampling (0.0 without it)."""
        return self._resampler.delay_seconds if self._resampler else 0.0

    def feed(self, data: bytes) -> bytes:
        """Convert one chunk; returns all destination bytes it completes."""
        if self.passthrough:
            return data
        if self._decode is not None:
            pcm = self._decode(data)
        elif self._resampler is not None:
            pcm = data  # the resampler carries an odd byte itself
        else:
            pcm, self._odd_byte = whole_samples(self._odd_byte, data)
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        return self._encode(pcm) if self._encode else pcm

    def flush(self) -> bytes:
        """End of stream: return the resampler's tail and reset for the next stream."""
        self._odd_byte = b""
        if self._resampler is None:
            return b""
        tail = self._resampler.flush()
        return self._encode(tail) if self._encode else tail

    def reset(self) -> None:
        """Drop all stream state without emitting anything (e.g. on barge-in)."""
        self._odd_byte = b""
        if self._resampler is not None:
            self._resampler.reset()
