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

import numpy as np

from . import g711
from .framer import whole_samples
from .resample import StreamResampler

__all__ = ["ENCODINGS", "Transcoder", "silence_byte", "bytes_per_second"]

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
        # Resampling works on arrays: G.711 is decoded and encoded by table lookup on them,
        # with no bytes in between (the same codes as audioop, see g711.ENCODE_TABLES).
        self._decode_table = g711.DECODE_TABLES.get(self.src_encoding)
        self._encode_table = g711.ENCODE_TABLES.get(self.dst_encoding)

    @property
    def delay_seconds(self) -> float:
        """Group delay added by resampling (0.0 without it)."""
        return self._resampler.delay_seconds if self._resampler else 0.0

    def feed(self, data: bytes) -> bytes:
        """Convert one chunk; returns all destination bytes it completes."""
        if self.passthrough:
            return data
        if self._resampler is not None:
            if self._decode_table is not None:
                codes = np.frombuffer(data, dtype=np.uint8)
                samples = self._resampler.process_samples(self._decode_table[codes])
            else:
                samples = self._resampler.process_to_array(data)
            return self._encoded(samples)
        if self._decode is not None:
            pcm = self._decode(data)
        else:
            pcm, self._odd_byte = whole_samples(self._odd_byte, data)
        return self._encode(pcm) if self._encode else pcm

    def flush(self) -> bytes:
        """End of stream: return the resampler's tail and reset for the next stream."""
        self._odd_byte = b""
        if self._resampler is None:
            return b""
        return self._encoded(self._resampler.flush_to_array())

    def _encoded(self, samples: np.ndarray) -> bytes:
        if self._encode_table is not None:
            return self._encode_table[samples.view(np.uint16)].tobytes()
        return samples.tobytes()

    def reset(self) -> None:
        """Drop all stream state without emitting anything (e.g. on barge-in)."""
        self._odd_byte = b""
        if self._resampler is not None:
            self._resampler.reset()
