"""Framer: exact frames out, remainder kept, silence padding only on flush."""

import numpy as np
import pytest

from telcodecs.framer import Framer


def test_push_returns_exact_frames_and_keeps_the_remainder():
    framer = Framer(160, 0xFF)
    frames = framer.push(bytes(range(200)) * 2)  # 400 bytes
    assert [len(f) for f in frames] == [160, 160]
    assert frames[0] == (bytes(range(200)) * 2)[:160]
    assert framer.pending == 80
    frames = framer.push(b"\x01" * 80)
    assert frames == [(bytes(range(200)) * 2)[320:] + b"\x01" * 80]
    assert framer.pending == 0


def test_small_pushes_accumulate_without_padding():
    framer = Framer(160, 0xFF)
    for _ in range(15):
        assert framer.push(b"\x10" * 10) == []
    assert framer.push(b"\x10" * 10) == [b"\x10" * 160]


@pytest.mark.parametrize("frame_bytes", [160, 320, 640])
def test_any_chunking_gives_the_same_frames(frame_bytes):
    rng = np.random.default_rng(frame_bytes)
    stream = rng.integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    framer = Framer(frame_bytes, 0)
    frames, position = [], 0
    while position < len(stream):
        size = int(rng.integers(0, 700))
        frames += framer.push(stream[position : position + size])
        position += size
    assert all(len(frame) == frame_bytes for frame in frames)
    assert b"".join(frames) == stream[: len(frames) * frame_bytes]
    assert framer.pending == len(stream) % frame_bytes


@pytest.mark.parametrize("silence", [0xFF, 0xD5, 0x00])
def test_flush_pads_the_remainder_with_the_silence_byte(silence):
    framer = Framer(160, silence)
    framer.push(b"\x42" * 170)
    last = framer.flush()
    assert last == b"\x42" * 10 + bytes([silence]) * 150
    assert framer.pending == 0
    assert framer.flush() is None


def test_l16_padding_keeps_sample_alignment():
    framer = Framer(320, 0)
    framer.push(b"\x34\x12" * 7)
    last = framer.flush()
    assert len(last) == 320
    assert np.all(np.frombuffer(last, dtype="<i2")[7:] == 0)


def test_flush_with_nothing_pending_is_none():
    framer = Framer(160, 0xFF)
    assert framer.flush() is None
    framer.push(b"\x00" * 160)
    assert framer.flush() is None


def test_clear_drops_the_remainder():
    framer = Framer(160, 0xFF)
    framer.push(b"\x00" * 100)
    framer.clear()
    assert framer.pending == 0
    assert framer.flush() is None


@pytest.mark.parametrize("frame_bytes,silence", [(0, 0), (-1, 0), (160, 256), (160, -1)])
def test_invalid_arguments_are_rejected(frame_bytes, silence):
    with pytest.raises(ValueError):
        Framer(frame_bytes, silence)


def test_whole_samples_carries_a_partial_sample_without_padding():
    from telcodecs import whole_samples

    whole, pending = whole_samples(b"", b"\x01\x02\x03")
    assert (whole, pending) == (b"\x01\x02", b"\x03")
    whole, pending = whole_samples(pending, b"\x04\x05")
    assert (whole, pending) == (b"\x03\x04", b"\x05")
    assert whole_samples(b"", b"") == (b"", b"")
    assert whole_samples(b"\x01", b"\x02\x03\x04\x05", width=4) == (b"\x01\x02\x03\x04", b"\x05")


def _reference_push(remainder: bytearray, data, size: int) -> list[bytes]:
    """Framer.push as it was before its whole-frames fast path: everything through the
    remainder buffer."""
    remainder += data
    whole = len(remainder) - len(remainder) % size
    frames = [bytes(remainder[start:start + size]) for start in range(0, whole, size)]
    del remainder[:whole]
    return frames


def test_push_gives_the_same_frames_as_the_buffered_path_for_any_chunking():
    rng = np.random.default_rng(7)
    for size in (160, 320, 3200):
        framer, remainder = Framer(size, 0xFF), bytearray()
        sizes = [size, 5 * size, 0, 1, size - 1, size + 1, 7 * size + 3, 2 * size]
        sizes += [int(n) for n in rng.integers(0, 4 * size, 40)]
        for n in sizes:
            data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            if n % 3 == 0:
                data = bytearray(data)  # not bytes: the buffered path
            frames = framer.push(data)
            assert frames == _reference_push(remainder, data, size)
            assert all(type(frame) is bytes for frame in frames)
            assert framer.pending == len(remainder)
        assert framer.flush() == (bytes(remainder) + b"\xff" * (size - len(remainder))
                                  if remainder else None)
