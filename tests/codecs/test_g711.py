"""G.711 companding: silence codes, spec anchor points, error bounds, tone SNR."""

import numpy as np
import pytest

from telcodecs import g711

ALL_INT16 = np.arange(-32768, 32768, dtype="<i2")


def _tone(freq_hz: float, amplitude: float, rate: int = 8000, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq_hz * t)).astype("<i2")


def _snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    reference = reference.astype(float)
    noise = decoded.astype(float) - reference
    return 10 * np.log10(np.sum(reference**2) / np.sum(noise**2))


def _round_trip(encode, decode, samples: np.ndarray) -> np.ndarray:
    return np.frombuffer(decode(encode(samples.tobytes())), dtype="<i2")


def test_silence_constants_are_the_codes_of_zero():
    zeros = bytes(320)
    assert g711.ulaw_encode(zeros) == bytes([g711.ULAW_SILENCE]) * 160
    assert g711.alaw_encode(zeros) == bytes([g711.ALAW_SILENCE]) * 160
    assert g711.ULAW_SILENCE == 0xFF and g711.ALAW_SILENCE == 0xD5


def test_silence_codes_decode_to_near_zero():
    ulaw = np.frombuffer(g711.ulaw_decode(bytes([g711.ULAW_SILENCE]) * 8), dtype="<i2")
    alaw = np.frombuffer(g711.alaw_decode(bytes([g711.ALAW_SILENCE]) * 8), dtype="<i2")
    assert np.all(ulaw == 0)
    assert np.all(np.abs(alaw) <= 8)  # A-law has no exact zero; smallest level is 8/32768


def test_full_scale_codes_match_g711_tables():
    extremes = np.array([32767, -32768], dtype="<i2").tobytes()
    assert g711.ulaw_encode(extremes) == bytes([0x80, 0x00])
    assert g711.alaw_encode(extremes) == bytes([0xAA, 0x2A])


def test_ulaw_round_trip_error_is_within_half_a_quantization_step():
    decoded = _round_trip(g711.ulaw_encode, g711.ulaw_decode, ALL_INT16)
    error = np.abs(decoded.astype(int) - ALL_INT16.astype(int))
    # μ-law step at 16-bit magnitude m is at most (m + 132) / 16 (bias 33 in 14-bit units).
    bound = (np.abs(ALL_INT16.astype(int)) + 132) / 32 + 4
    worst = int(np.argmax(error - bound))
    assert np.all(error <= bound), f"x={ALL_INT16[worst]} error={error[worst]}"


def test_alaw_round_trip_error_is_within_half_a_quantization_step():
    decoded = _round_trip(g711.alaw_encode, g711.alaw_decode, ALL_INT16)
    error = np.abs(decoded.astype(int) - ALL_INT16.astype(int))
    # A-law: step 16 below 16-bit magnitude 1024, above that at most m / 16.
    bound = np.maximum(8, np.abs(ALL_INT16.astype(int)) / 32) + 1
    worst = int(np.argmax(error - bound))
    assert np.all(error <= bound), f"x={ALL_INT16[worst]} error={error[worst]}"


@pytest.mark.parametrize("codec", ["ulaw", "alaw"])
def test_encode_then_decode_is_idempotent_on_codes(codec):
    encode = getattr(g711, f"{codec}_encode")
    decode = getattr(g711, f"{codec}_decode")
    codes = bytes(range(256))
    # Every code decodes to a level that encodes back to the same code (except μ-law's
    # duplicate zero 0x7F, which is "negative zero" and re-encodes as 0xFF).
    recoded = encode(decode(codes))
    mismatches = [code for code, again in zip(codes, recoded, strict=True) if code != again]
    assert mismatches == ([0x7F] if codec == "ulaw" else [])


@pytest.mark.parametrize("codec", ["ulaw", "alaw"])
@pytest.mark.parametrize("level_dbfs", [-3.0, -20.0, -35.0])
def test_tone_snr_above_30_db_over_a_wide_level_range(codec, level_dbfs):
    encode = getattr(g711, f"{codec}_encode")
    decode = getattr(g711, f"{codec}_decode")
    tone = _tone(1004.0, 32767 * 10 ** (level_dbfs / 20))
    snr = _snr_db(tone, _round_trip(encode, decode, tone))
    print(f"\n{codec} 1004 Hz at {level_dbfs:+.0f} dBFS: SNR {snr:.1f} dB")
    assert snr > 30.0


def test_sizes_one_code_per_sample():
    pcm = _tone(440.0, 8000).tobytes()
    assert len(g711.ulaw_encode(pcm)) == len(pcm) // 2
    assert len(g711.alaw_decode(g711.alaw_encode(pcm))) == len(pcm)


@pytest.mark.parametrize("encode", [g711.ulaw_encode, g711.alaw_encode])
def test_odd_length_pcm_is_rejected(encode):
    with pytest.raises(ValueError):
        encode(b"\x00\x01\x02")
