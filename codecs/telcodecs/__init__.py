"""telcodecs: pure-Python/numpy audio DSP for telephony (G.711, resampling, framing, WAV).

Imported as ``telcodecs`` because the standard library already owns ``codecs``.
No asyncio and no I/O apart from the WAV file helpers.
"""

from .framer import Framer, whole_samples
from .g711 import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)
from .resample import SUPPORTED_INPUT_RATES, SUPPORTED_OUTPUT_RATES, StreamResampler
from .transcode import ENCODINGS, Transcoder, bytes_per_second, silence_byte
from .wav import (
    WavFormat,
    WavHeaderStripper,
    read_wav,
    strip_wav_header,
    wav_bytes,
    write_wav,
)

__all__ = [
    "ALAW_SILENCE",
    "ENCODINGS",
    "SUPPORTED_INPUT_RATES",
    "SUPPORTED_OUTPUT_RATES",
    "ULAW_SILENCE",
    "Framer",
    "StreamResampler",
    "Transcoder",
    "WavFormat",
    "WavHeaderStripper",
    "alaw_decode",
    "alaw_encode",
    "bytes_per_second",
    "read_wav",
    "silence_byte",
    "strip_wav_header",
    "ulaw_decode",
    "ulaw_encode",
    "wav_bytes",
    "whole_samples",
    "write_wav",
]
