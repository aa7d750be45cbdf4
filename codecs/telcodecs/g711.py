"""G.711 μ-law and A-law companding between 16-bit little-endian PCM and 8-bit codes.

Contract: encoders take s16le PCM of even length (one code byte out per sample);
decoders take code bytes and return s16le PCM (two bytes out per code byte).
An odd-length PCM buffer is a caller error (``ValueError``); carrying a dangling
byte across chunks is the job of :class:`telcodecs.transcode.Transcoder`.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # Python 3.11/3.12 ship audioop with a DeprecationWarning; 3.13+ gets the same
    # module from the audioop-lts package.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "ALAW_SILENCE",
    "ULAW_SILENCE",
    "alaw_decode",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]

#: μ-law code of digital silence (PCM 0).
ULAW_SILENCE = 0xFF
#: A-law code of digital silence (PCM 0, with the even-bit inversion applied).
ALAW_SILENCE = 0xD5

_SAMPLE_WIDTH = 2


def _require_whole_samples(pcm16le: bytes) -> None:
    if len(pcm16le) % _SAMPLE_WIDTH:
        raise ValueError(f"s16le PCM must have an even byte count, got {len(pcm16le)}")


def ulaw_encode(pcm16le: bytes) -> bytes:
    """Encode s16le PCM to μ-law, one byte per sample."""
    _require_whole_samples(pcm16le)
    return audioop.lin2ulaw(pcm16le, _SAMPLE_WIDTH)


def ulaw_decode(ulaw: bytes) -> bytes:
    """Decode μ-law bytes to s16le PCM, two bytes per code."""
    return audioop.ulaw2lin(ulaw, _SAMPLE_WIDTH)


def alaw_encode(pcm16le: bytes) -> bytes:
    """Encode s16le PCM to A-law, one byte per sample."""
    _require_whole_samples(pcm16le)
    return audioop.lin2alaw(pcm16le, _SAMPLE_WIDTH)


def alaw_decode(alaw: bytes) -> bytes:
    """Decode A-law bytes to s16le PCM, two bytes per code."""
    return audioop.alaw2lin(alaw, _SAMPLE_WIDTH)
