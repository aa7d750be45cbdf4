"""RIFF/WAVE helpers: strip headers off streamed audio, read and write mono s16le files.

Some TTS providers stream "WAV" responses: a RIFF header (44 bytes, or longer with
LIST/fact chunks) followed by raw PCM, and a few put a fresh header in front of every
chunk. :func:`strip_wav_header` and :class:`WavHeaderStripper` remove such headers by
walking the RIFF chunks to the ``data`` chunk; the declared sizes of RIFF and ``data``
are ignored because streaming providers fill them with 0 or 0xFFFFFFFF.
"""

from __future__ import annotations

import enum
import io
import os
import struct
import wave
from typing import NamedTuple

__all__ = [
    "WavFormat",
    "WavHeaderStripper",
    "read_wav",
    "strip_wav_header",
    "wav_bytes",
    "write_wav",
]

_RIFF_ID = b"RIFF"
_WAVE_ID = b"WAVE"
_SIGNATURE_BYTES = 12  # "RIFF" <size:u32> "WAVE"
_CHUNK_HEADER = struct.Struct("<4sI")
_FMT_FIELDS = struct.Struct("<HHIIHH")


class WavFormat(NamedTuple):
    """Fields of a ``fmt `` chunk (``audio_format`` 1 is integer PCM)."""

    audio_format: int
    channels: int
    sample_rate: int
    bits_per_sample: int


class _Scan(enum.Enum):
    NOT_WAV = enum.auto()
    INCOMPLETE = enum.auto()  # could be, or is, a header whose data chunk is not in yet
    FOUND = enum.auto()


def _scan_header(buffer: bytes) -> tuple[_Scan, int, WavFormat | None]:
    """Classify ``buffer``'s start; on FOUND also return where the audio begins."""
    if len(buffer) < _SIGNATURE_BYTES:
        could_be_riff = buffer[:4] == _RIFF_ID[: len(buffer)]
        could_be_wave = buffer[8:] == _WAVE_ID[: max(0, len(buffer) - 8)]
        return (_Scan.INCOMPLETE if could_be_riff and could_be_wave else _Scan.NOT_WAV), 0, None
    if buffer[:4] != _RIFF_ID or buffer[8:12] != _WAVE_ID:
        return _Scan.NOT_WAV, 0, None

    wav_format = None
    offset = _SIGNATURE_BYTES
    while offset + _CHUNK_HEADER.size <= len(buffer):
        chunk_id, chunk_size = _CHUNK_HEADER.unpack_from(buffer, offset)
        body = offset + _CHUNK_HEADER.size
        if chunk_id == b"data":
            return _Scan.FOUND, body, wav_format
        if chunk_id == b"fmt " and body + _FMT_FIELDS.size <= len(buffer):
            audio_format, channels, rate, _, _, bits = _FMT_FIELDS.unpack_from(buffer, body)
            wav_format = WavFormat(audio_format, channels, rate, bits)
        offset = body + chunk_size + (chunk_size & 1)  # RIFF chunks are word-aligned
    return _Scan.INCOMPLETE, 0, wav_format


def strip_wav_header(chunk: bytes) -> bytes:
    """Return ``chunk`` without a leading RIFF/WAVE header.

    The header runs up to and including the ``data`` chunk's 8-byte header; everything
    after it is returned. A chunk that does not start with ``RIFF....WAVE`` is returned
    unchanged (also when it is shorter than those 12 bytes). A chunk that is all header,
    with no ``data`` chunk yet, returns ``b""``; use :class:`WavHeaderStripper` when a
    header may be split across chunks.
    """
    status, audio_start, _ = _scan_header(chunk)
    if status is _Scan.FOUND:
        return chunk[audio_start:]
    if status is _Scan.INCOMPLETE and len(chunk) >= _SIGNATURE_BYTES:
        return b""
    return chunk


class WavHeaderStripper:
    """Strip RIFF/WAVE headers found at the start of a stream or of any later chunk.

    Each :meth:`feed` call is a chunk boundary. If the chunk (joined to bytes still held
    from earlier calls) starts like a WAV header, the header is removed; if the header
    is not complete yet, its bytes are held (nothing is returned) until the ``data``
    chunk arrives. Bytes that turn out not to be a header are returned unchanged, so
    audio is never lost, only delayed while it could still be a header. A header is only
    looked for at chunk starts, never inside a chunk. ``format`` holds the last
    header's ``fmt `` fields, if any.
    """

    def __init__(self, max_header_bytes: int = 64 * 1024) -> None:
        #: Held bytes beyond this are treated as audio: no real header is that long.
        self.max_header_bytes = max_header_bytes
        self.reset()

    def reset(self) -> None:
        """Forget held bytes and the last format, as for a new stream."""
        self._held = b""
        self.format: WavFormat | None = None
        self.headers_stripped = 0

    @property
    def pending(self) -> int:
        """Bytes held because they may be an incomplete header."""
        return len(self._held)

    def feed(self, chunk: bytes) -> bytes:
        """Return the audio in ``chunk`` (plus any held bytes), minus a leading header."""
        buffer = self._held + chunk if self._held else chunk
        self._held = b""
        if not buffer:
            return b""
        status, audio_start, wav_format = _scan_header(buffer)
        if status is _Scan.FOUND:
            if wav_format is not None:
                self.format = wav_format
            self.headers_stripped += 1
            return buffer[audio_start:]
        if status is _Scan.INCOMPLETE and len(buffer) <= self.max_header_bytes:
            self._held = buffer
            return b""
        return buffer

    def flush(self) -> bytes:
        """End of stream: return held bytes unless they are a (truncated) header."""
        held, self._held = self._held, b""
        if len(held) >= _SIGNATURE_BYTES:
            return b""  # "RIFF....WAVE" seen: a header cut short, not audio
        return held


def wav_bytes(pcm16le: bytes, sample_rate: int) -> bytes:
    """A complete mono 16-bit PCM WAV file holding ``pcm16le``."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(pcm16le)
    return out.getvalue()


def write_wav(path: str | os.PathLike[str], pcm16le: bytes, sample_rate: int) -> None:
    """Write ``pcm16le`` as a mono 16-bit PCM WAV file at ``path``."""
    with open(path, "wb") as file:
        file.write(wav_bytes(pcm16le, sample_rate))


def read_wav(path: str | os.PathLike[str]) -> tuple[bytes, int]:
    """Read a mono 16-bit PCM WAV file; return ``(pcm16le, sample_rate)``.

    Raises ``ValueError`` for any other channel count or sample width.
    """
    with wave.open(os.fspath(path), "rb") as reader:
        channels, width = reader.getnchannels(), reader.getsampwidth()
        if channels != 1 or width != 2:
            raise ValueError(
                f"{path}: expected mono 16-bit PCM, got {channels} channel(s) of {8 * width} bits"
            )
        return reader.readframes(reader.getnframes()), reader.getframerate()
