"""WAV header stripping (one-shot and streaming) and mono s16le file helpers."""

import struct
import wave

import numpy as np
import pytest

from telcodecs.wav import (
    WavFormat,
    WavHeaderStripper,
    read_wav,
    strip_wav_header,
    wav_bytes,
    write_wav,
)

PCM = np.arange(-500, 500, 7, dtype="<i2").tobytes()


def _chunk(chunk_id: bytes, body: bytes) -> bytes:
    padding = b"\x00" if len(body) % 2 else b""
    return struct.pack("<4sI", chunk_id, len(body)) + body + padding


def _header(sample_rate: int = 24000, extra_chunks: bytes = b"", data_size: int = 0xFFFFFFFF):
    """A streaming-style header: optional chunks between fmt and data, bogus sizes."""
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, 2 * sample_rate, 2, 16)
    body = b"WAVE" + _chunk(b"fmt ", fmt) + extra_chunks
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + body + struct.pack("<4sI", b"data", data_size)


LIST_CHUNK = _chunk(b"LIST", b"INFOISFT\x0e\x00\x00\x00Lavf60.16.100\x00")
ODD_CHUNK = _chunk(b"fact", b"\x01\x02\x03")  # odd size: followed by a pad byte


def test_strips_the_standard_44_byte_header():
    file_bytes = wav_bytes(PCM, 8000)
    assert len(file_bytes) == 44 + len(PCM)
    assert strip_wav_header(file_bytes) == PCM


@pytest.mark.parametrize("extra", [b"", LIST_CHUNK, ODD_CHUNK + LIST_CHUNK])
def test_strips_longer_headers_by_walking_the_chunks(extra):
    header = _header(extra_chunks=extra)
    assert len(header) == 44 + len(extra)
    assert strip_wav_header(header + PCM) == PCM


def test_non_wav_chunks_are_returned_unchanged():
    assert strip_wav_header(PCM) == PCM
    assert strip_wav_header(b"RIFF") == b"RIFF"  # too short to be sure
    assert strip_wav_header(b"RIFF\x00\x00\x00\x00AVI LIST") == b"RIFF\x00\x00\x00\x00AVI LIST"
    assert strip_wav_header(b"") == b""


def test_header_without_data_chunk_yet_is_all_header():
    header = _header(extra_chunks=LIST_CHUNK)
    assert strip_wav_header(header[:30]) == b""


def test_stripper_handles_a_header_split_at_every_position():
    stream = _header(extra_chunks=ODD_CHUNK + LIST_CHUNK) + PCM
    for split in range(1, len(stream)):
        stripper = WavHeaderStripper()
        out = stripper.feed(stream[:split]) + stripper.feed(stream[split:]) + stripper.flush()
        assert out == PCM, f"split at {split}"


def test_stripper_byte_by_byte():
    stream = _header(extra_chunks=LIST_CHUNK) + PCM
    stripper = WavHeaderStripper()
    out = b"".join(stripper.feed(stream[i : i + 1]) for i in range(len(stream)))
    assert out == PCM
    assert stripper.format == WavFormat(1, 1, 24000, 16)


def test_stripper_removes_a_header_in_front_of_every_chunk():
    stripper = WavHeaderStripper()
    pieces = [PCM[:200], PCM[200:1000], PCM[1000:]]
    out = b"".join(stripper.feed(_header(16000) + piece) for piece in pieces)
    assert out == PCM
    assert stripper.headers_stripped == 3
    assert stripper.format.sample_rate == 16000


def test_stripper_passes_headerless_audio_through_untouched():
    stripper = WavHeaderStripper()
    chunks = [PCM[:333], PCM[333:334], PCM[334:]]
    assert b"".join(stripper.feed(c) for c in chunks) + stripper.flush() == PCM
    assert stripper.headers_stripped == 0


def test_stripper_only_looks_at_chunk_starts():
    riff_inside = PCM[:100] + wav_bytes(PCM[:10], 8000) + PCM[100:]
    stripper = WavHeaderStripper()
    assert stripper.feed(riff_inside) == riff_inside


def test_bytes_that_only_looked_like_a_header_start_are_released():
    stripper = WavHeaderStripper()
    assert stripper.feed(b"RI") == b""  # might be the start of "RIFF"
    assert stripper.pending == 2
    assert stripper.feed(b"xy" + PCM) == b"RIxy" + PCM


def test_flush_releases_a_short_non_header_but_drops_a_truncated_header():
    stripper = WavHeaderStripper()
    stripper.feed(b"RIF")
    assert stripper.flush() == b"RIF"
    stripper.feed(_header()[:20])
    assert stripper.flush() == b""
    assert stripper.pending == 0


def test_stripper_gives_up_on_absurdly_long_headers():
    huge = _chunk(b"junk", bytes(200))
    stream = _header(extra_chunks=huge) + PCM
    stripper = WavHeaderStripper(max_header_bytes=64)
    out = stripper.feed(stream[:40]) + stripper.feed(stream[40:100])
    assert out == stream[:100]  # released as-is once it cannot be a sane header


def test_write_then_read_round_trip(tmp_path):
    path = tmp_path / "tone.wav"
    write_wav(path, PCM, 22050)
    assert read_wav(path) == (PCM, 22050)
    assert strip_wav_header(path.read_bytes()) == PCM


def test_read_wav_rejects_stereo(tmp_path):
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(PCM)
    with pytest.raises(ValueError, match="mono 16-bit"):
        read_wav(path)
