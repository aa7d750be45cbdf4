"""Transcoder: pass-through, encode-only and resampling paths, odd-byte carry, helpers."""

import math

import numpy as np
import pytest

from telcodecs import g711
from telcodecs.resample import StreamResampler
from telcodecs.transcode import Transcoder, bytes_per_second, silence_byte


def _tone_pcm(rate: int, seconds: float = 0.2, freq_hz: float = 440.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(12000 * np.sin(2 * np.pi * freq_hz * t)).astype("<i2").tobytes()


def _feed_in_chunks(transcoder: Transcoder, data: bytes, sizes) -> bytes:
    out, position = [], 0
    for size in sizes:
        out.append(transcoder.feed(data[position : position + size]))
        position += size
    out.append(transcoder.feed(data[position:]))
    out.append(transcoder.flush())
    return b"".join(out)


@pytest.mark.parametrize(
    "encoding,rate", [("mulaw", 8000), ("alaw", 8000), ("pcm_s16le", 16000), ("l16", 8000)]
)
def test_identical_formats_pass_through_unchanged(encoding, rate):
    transcoder = Transcoder(encoding, rate, encoding, rate)
    data = bytes(range(256)) + b"\x01"  # odd length too: nothing is held
    assert transcoder.passthrough
    assert transcoder.feed(data) == data
    assert transcoder.flush() == b""


def test_l16_is_an_alias_of_pcm_s16le():
    assert Transcoder("l16", 8000, "pcm_s16le", 8000).passthrough
    pcm = _tone_pcm(24000)
    assert Transcoder("l16", 24000, "mulaw", 8000).feed(pcm) == Transcoder(
        "pcm_s16le", 24000, "mulaw", 8000
    ).feed(pcm)


@pytest.mark.parametrize(
    "encoding,encode", [("mulaw", g711.ulaw_encode), ("alaw", g711.alaw_encode)]
)
def test_pcm_at_the_same_rate_is_only_encoded(encoding, encode):
    pcm = _tone_pcm(8000)
    transcoder = Transcoder("pcm_s16le", 8000, encoding, 8000)
    assert transcoder.delay_seconds == 0.0
    assert transcoder.feed(pcm) == encode(pcm)
    assert transcoder.flush() == b""


def test_odd_pcm_bytes_are_carried_not_padded():
    pcm = _tone_pcm(8000)
    transcoder = Transcoder("pcm_s16le", 8000, "mulaw", 8000)
    out = _feed_in_chunks(transcoder, pcm, [1, 160, 3, 321, 1])
    assert out == g711.ulaw_encode(pcm)


def test_resampling_path_equals_resampler_then_encoder():
    pcm = _tone_pcm(24000)
    resampler = StreamResampler(24000, 8000)
    expected = g711.ulaw_encode(resampler.process(pcm) + resampler.flush())
    transcoder = Transcoder("pcm_s16le", 24000, "mulaw", 8000)
    assert transcoder.delay_seconds == resampler.delay_seconds
    rng = np.random.default_rng(0)
    sizes = [int(s) for s in rng.integers(1, 1500, 20)]  # odd sizes included
    assert _feed_in_chunks(transcoder, pcm, sizes) == expected


def test_mulaw_8k_to_pcm_16k_decodes_then_upsamples():
    ulaw = g711.ulaw_encode(_tone_pcm(8000))
    resampler = StreamResampler(8000, 16000)
    pcm = g711.ulaw_decode(ulaw)
    expected = resampler.process(pcm) + resampler.flush()
    transcoder = Transcoder("mulaw", 8000, "pcm_s16le", 16000)
    assert _feed_in_chunks(transcoder, ulaw, [7, 160, 1]) == expected


def test_mulaw_to_alaw_at_the_same_rate():
    ulaw = g711.ulaw_encode(_tone_pcm(8000))
    transcoder = Transcoder("mulaw", 8000, "alaw", 8000)
    assert transcoder.feed(ulaw) == g711.alaw_encode(g711.ulaw_decode(ulaw))


def test_tone_survives_24k_pcm_to_8k_mulaw():
    """End to end: the decoded carrier audio is the input tone, delayed, at > 30 dB SNR."""
    transcoder = Transcoder("pcm_s16le", 24000, "mulaw", 8000)
    out = transcoder.feed(_tone_pcm(24000, 0.3, 1000.0)) + transcoder.flush()
    decoded = np.frombuffer(g711.ulaw_decode(out), dtype="<i2").astype(float)
    t = np.arange(len(decoded)) / 8000 - transcoder.delay_seconds
    ideal = 12000 * np.sin(2 * np.pi * 1000.0 * t)
    steady = slice(160, int(0.28 * 8000))
    noise = decoded[steady] - ideal[steady]
    snr = 10 * math.log10(np.sum(ideal[steady] ** 2) / np.sum(noise**2))
    assert snr > 30.0


def test_flush_resets_for_the_next_utterance():
    pcm = _tone_pcm(22050)
    transcoder = Transcoder("pcm_s16le", 22050, "alaw", 8000)
    first = transcoder.feed(pcm + b"\x05") + transcoder.flush()
    second = transcoder.feed(pcm) + transcoder.flush()
    assert first == second


def test_reset_discards_state_without_output():
    pcm = _tone_pcm(24000)
    transcoder = Transcoder("pcm_s16le", 24000, "mulaw", 8000)
    fresh = transcoder.feed(pcm)
    transcoder.feed(b"\x01\x02\x03")
    transcoder.reset()
    assert transcoder.feed(pcm) == fresh


def test_silence_bytes():
    assert silence_byte("mulaw") == g711.ULAW_SILENCE
    assert silence_byte("alaw") == g711.ALAW_SILENCE
    assert silence_byte("pcm_s16le") == silence_byte("l16") == 0
    for encoding in ("mulaw", "alaw"):
        assert (
            Transcoder("pcm_s16le", 8000, encoding, 8000).feed(bytes(4))
            == bytes([silence_byte(encoding)]) * 2
        )


@pytest.mark.parametrize(
    "encoding,rate,expected",
    [
        ("mulaw", 8000, 8000),
        ("alaw", 8000, 8000),
        ("l16", 16000, 32000),
        ("pcm_s16le", 24000, 48000),
    ],
)
def test_bytes_per_second(encoding, rate, expected):
    assert bytes_per_second(encoding, rate) == expected


def test_unknown_encodings_are_rejected():
    with pytest.raises(ValueError, match="opus"):
        Transcoder("opus", 48000, "mulaw", 8000)
    with pytest.raises(ValueError):
        silence_byte("g729")
