"""StreamResampler: anti-aliasing, passband flatness, delay, latency, exact streaming.

Figures are printed (run pytest with ``-s``) as well as asserted. scipy is only used
here as an independent reference, never by the package.
"""

import functools
import math
import timeit

import numpy as np
import pytest

from telcodecs.resample import StreamResampler

DOWN_TO_8K = [(22050, 8000), (24000, 8000), (44100, 8000), (48000, 8000), (16000, 8000)]
DOWN_TO_16K = [(22050, 16000), (24000, 16000), (44100, 16000), (48000, 16000)]
UP_TO_16K = [(8000, 16000)]
RESAMPLING_PAIRS = DOWN_TO_8K + DOWN_TO_16K + UP_TO_16K
ALL_PAIRS = [*RESAMPLING_PAIRS, (8000, 8000), (16000, 16000)]

TONE_AMPLITUDE = 30000.0  # about -0.8 dBFS
SETTLE_SECONDS = 0.02  # skipped at the start of outputs: the filter's start transient


def _telephone_band(out_rate: int, in_rate: int) -> tuple[float, float]:
    return (300.0, 3400.0) if min(in_rate, out_rate) == 8000 else (300.0, 7000.0)


def _sine(freq_hz: float, rate: int, seconds: float, amplitude: float = TONE_AMPLITUDE):
    t = np.arange(round(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq_hz * t)


def _pcm(signal: np.ndarray) -> bytes:
    return np.clip(np.rint(signal), -32768, 32767).astype("<i2").tobytes()


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(float)


def _resample_once(in_rate: int, out_rate: int, pcm: bytes, flush: bool = False) -> bytes:
    resampler = StreamResampler(in_rate, out_rate)
    return resampler.process(pcm) + (resampler.flush() if flush else b"")


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def _tone_amplitude(x: np.ndarray, freq_hz: float, rate: int) -> float:
    """Amplitude of the ``freq_hz`` component of ``x`` (least-squares sine fit)."""
    t = np.arange(len(x)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq_hz * t), np.cos(2 * np.pi * freq_hz * t)], 1)
    coeffs, *_ = np.linalg.lstsq(basis, x, rcond=None)
    return float(np.hypot(*coeffs))


def _resampled_tone(in_rate: int, out_rate: int, freq_hz: float, seconds: float) -> np.ndarray:
    """The resampler's steady-state output for a sine at ``freq_hz``."""
    out = _resample_once(in_rate, out_rate, _pcm(_sine(freq_hz, in_rate, seconds)))
    return _samples(out)[int(SETTLE_SECONDS * out_rate) :]


def _rejection_db(in_rate: int, out_rate: int, freq_hz: float, in_band_hz: float = 1000.0):
    """Output RMS for a tone at ``freq_hz`` relative to an in-band tone of equal level."""
    leak = _rms(_resampled_tone(in_rate, out_rate, freq_hz, 0.3))
    reference = _rms(_resampled_tone(in_rate, out_rate, in_band_hz, 0.3))
    return 20 * math.log10(leak / reference) if leak else -math.inf


def _image_rejection_db(in_rate: int, out_rate: int, freq_hz: float) -> float:
    """Upsampling: level of the image at ``in_rate - freq_hz`` relative to the tone."""
    out = _resampled_tone(in_rate, out_rate, freq_hz, 0.3)
    image = _tone_amplitude(out, in_rate - freq_hz, out_rate)
    wanted = _tone_amplitude(out, freq_hz, out_rate)
    return 20 * math.log10(image / wanted) if image else -math.inf


def _passband_gains_db(in_rate: int, out_rate: int) -> np.ndarray:
    low, high = _telephone_band(out_rate, in_rate)
    gains = []
    for freq in np.arange(low, high + 1, 100.0):
        out = _resampled_tone(in_rate, out_rate, freq, 0.1)
        gains.append(20 * math.log10(_tone_amplitude(out, freq, out_rate) / TONE_AMPLITUDE))
    return np.array(gains)


def _chirp(rate: int, seconds: float, top_hz: float, delay: float = 0.0) -> np.ndarray:
    """Hann-windowed linear chirp 200 Hz -> ``top_hz``, evaluated at times ``t - delay``."""
    t = np.arange(int(rate * seconds)) / rate - delay
    inside = (t >= 0) & (t <= seconds)
    envelope = np.where(inside, np.sin(np.pi * np.clip(t, 0, seconds) / seconds) ** 2, 0.0)
    sweep = (top_hz - 200.0) / seconds
    return 20000.0 * envelope * np.sin(2 * np.pi * (200.0 * t + 0.5 * sweep * t * t))


def _measured_delay_seconds(in_rate: int, out_rate: int) -> float:
    """Cross-correlate the resampled chirp with the ideal chirp at the output rate."""
    seconds = 0.4
    top = 3000.0 if min(in_rate, out_rate) == 8000 else 6500.0
    out = _samples(
        _resample_once(in_rate, out_rate, _pcm(_chirp(in_rate, seconds, top)), flush=True)
    )
    ideal = _chirp(out_rate, seconds, top)
    corr = np.correlate(out, ideal, "full")
    peak = int(np.argmax(corr))
    before, at, after = corr[peak - 1 : peak + 2]
    fraction = 0.5 * (before - after) / (before - 2 * at + after)  # parabolic peak
    return (peak - (len(ideal) - 1) + fraction) / out_rate


def test_figures_table():
    """Print and check rejection, ripple and delay for every supported rate pair.

    Rejection is measured after int16 rounding, so about -90..-100 dB is the floor;
    ``-inf`` means the output was all zeros.
    """
    lines = [
        "",
        f"{'pair':>13} | {'stopband / image rejection':<50} | {'ripple min..max dB':>18}"
        f" | {'delay ms (meas/spec)':>20}",
    ]
    for in_rate, out_rate in RESAMPLING_PAIRS:
        if in_rate < out_rate:
            probes = {
                f"image of {f:.0f}": _image_rejection_db(in_rate, out_rate, f)
                for f in (1000.0, 3000.0)
            }
        else:
            stop_tones = (5000.0, 7000.0) if out_rate == 8000 else (9000.0, 11000.0)
            probes = {f"{f:.0f} Hz": _rejection_db(in_rate, out_rate, f) for f in stop_tones}
        gains = _passband_gains_db(in_rate, out_rate)
        measured = _measured_delay_seconds(in_rate, out_rate)
        spec = StreamResampler(in_rate, out_rate).delay_seconds
        rejections = ", ".join(f"{name}: {db:6.1f} dB" for name, db in probes.items())
        lines.append(
            f"{in_rate:>6}->{out_rate:<6} | {rejections:<50}"
            f" | {gains.min():+8.4f}..{gains.max():+8.4f}"
            f" | {measured * 1e3:9.4f}/{spec * 1e3:.4f}"
        )
        assert all(db <= -80.0 for db in probes.values()), probes
        assert np.all(np.abs(gains) <= 0.5), gains
        assert spec <= 0.005
        assert abs(measured - spec) < 2e-5, (measured, spec)
    print("\n".join(lines))


@pytest.mark.parametrize("in_rate,out_rate", ALL_PAIRS)
def test_declared_delay_is_at_most_5_ms(in_rate, out_rate):
    delay = StreamResampler(in_rate, out_rate).delay_seconds
    assert 0.0 <= delay <= 0.005
    assert (delay == 0.0) == (in_rate == out_rate)


@pytest.mark.parametrize("in_rate,out_rate", ALL_PAIRS)
def test_chunk_latency(in_rate, out_rate):
    """The first 20 ms chunk yields at least (20 ms - delay) of output at once."""
    resampler = StreamResampler(in_rate, out_rate)
    chunk = _pcm(_sine(1000.0, in_rate, 0.02))
    out = resampler.process(chunk)
    needed = (0.02 - resampler.delay_seconds) * out_rate
    print(f"\n{in_rate}->{out_rate}: first 20 ms -> {len(out) // 2} samples (need {needed:.1f})")
    assert len(out) // 2 >= needed
    # And the chunk's content is already there: a 1 kHz tone past the start transient.
    settled = _samples(out)[int((resampler.delay_seconds + 0.005) * out_rate) :]
    assert _rms(settled) > 0.5 * TONE_AMPLITUDE / math.sqrt(2)


@pytest.mark.parametrize("in_rate,out_rate", ALL_PAIRS)
def test_every_input_sample_is_answered_immediately(in_rate, out_rate):
    """After n input samples exactly ceil(n * out / in) outputs exist, for any chunking."""
    rng = np.random.default_rng(in_rate + out_rate)
    pcm = _pcm(rng.normal(0, 3000, int(in_rate * 0.05)))
    resampler = StreamResampler(in_rate, out_rate)
    fed = emitted = position = 0
    while position < len(pcm):
        size = int(rng.choice([1, 2, 3, 5, 7, 64, 441, 960]))
        chunk = pcm[position : position + size]
        position += len(chunk)
        fed += len(chunk)
        emitted += len(resampler.process(chunk)) // 2
        assert emitted == math.ceil((fed // 2) * out_rate / in_rate)


@pytest.mark.parametrize("in_rate,out_rate", ALL_PAIRS)
def test_chunked_equals_one_shot_bit_exactly(in_rate, out_rate):
    rng = np.random.default_rng(7 * in_rate + out_rate)
    pcm = _pcm(rng.normal(0, 6000, int(in_rate * 0.5)))
    one_shot = _resample_once(in_rate, out_rate, pcm, flush=True)
    for max_chunk in (4, 97, 2000, 20000):
        resampler = StreamResampler(in_rate, out_rate)
        pieces, position = [], 0
        while position < len(pcm):
            size = int(rng.integers(1, max_chunk))  # odd byte counts included
            pieces.append(resampler.process(pcm[position : position + size]))
            position += size
        pieces.append(resampler.flush())
        assert b"".join(pieces) == one_shot, f"max_chunk={max_chunk}"


@pytest.mark.parametrize(
    "in_rate,out_rate", [(22050, 8000), (24000, 8000), (8000, 16000), (16000, 16000)]
)
def test_one_odd_chunk_does_not_shift_later_samples(in_rate, out_rate):
    """An odd-length chunk's last byte is carried over, never zero-padded (Pipecat #4952)."""
    pcm = _pcm(_sine(440.0, in_rate, 0.2, 12345.0))
    reference = _resample_once(in_rate, out_rate, pcm)
    resampler = StreamResampler(in_rate, out_rate)
    split = 2 * 101 + 1  # the first chunk ends in the middle of sample 101
    first = resampler.process(pcm[:split])
    assert len(first) % 2 == 0
    rest = resampler.process(pcm[split:])
    assert first + rest == reference


def test_flush_drops_a_dangling_byte_and_resets():
    pcm = _pcm(_sine(700.0, 24000, 0.1))
    resampler = StreamResampler(24000, 8000)
    first = resampler.process(pcm + b"\x7f") + resampler.flush()
    assert first == _resample_once(24000, 8000, pcm, flush=True)
    second = resampler.process(pcm) + resampler.flush()
    assert second == first


@pytest.mark.parametrize("in_rate,out_rate", RESAMPLING_PAIRS)
def test_flush_emits_the_delayed_tail(in_rate, out_rate):
    resampler = StreamResampler(in_rate, out_rate)
    pcm = _pcm(_sine(1000.0, in_rate, 0.1))
    body = resampler.process(pcm)
    tail = resampler.flush()
    n_in = len(pcm) // 2
    assert len(body) // 2 == math.ceil(n_in * out_rate / in_rate)
    total = (len(body) + len(tail)) // 2
    expected = n_in * out_rate / in_rate + resampler.delay_seconds * out_rate
    assert abs(total - expected) <= 2
    # The tail carries the end of the tone (it is not just zeros).
    assert _rms(_samples(tail)) > 1000.0


def test_equal_rates_pass_through_exactly():
    pcm = _pcm(np.random.default_rng(3).normal(0, 8000, 1601))
    resampler = StreamResampler(16000, 16000)
    assert resampler.delay_seconds == 0.0
    assert resampler.process(pcm[:5]) + resampler.process(pcm[5:]) + resampler.flush() == pcm


def test_matches_an_independent_polyphase_reference():
    """Same result as scipy's upfirdn with the prototype rebuilt from its spec."""
    signal = pytest.importorskip("scipy.signal")
    in_rate, out_rate = 22050, 8000
    up, down = 160, 441
    x = _samples(_pcm(np.random.default_rng(5).normal(0, 5000, 4410)))
    # Kaiser design, 90 dB, pass 3400 / stop 4600, at the upsampled rate.
    fs = in_rate * up
    order = math.ceil((90 - 7.95) / (2.285 * 2 * math.pi * 1200 / fs))
    order += order % 2
    beta = 0.1102 * (90 - 8.7)
    taps = signal.firwin(order + 1, 4000.0, window=("kaiser", beta), fs=fs, scale=False)
    taps *= up / taps.sum()
    reference = np.clip(np.rint(signal.upfirdn(taps, x, up, down)), -32768, 32767)
    ours = _samples(_resample_once(in_rate, out_rate, _pcm(x)))
    assert np.max(np.abs(ours - reference[: len(ours)])) <= 1


def test_full_scale_overshoot_is_clipped_not_wrapped():
    in_rate, out_rate = 24000, 8000
    square = np.where(_sine(250.0, in_rate, 0.2) >= 0, 32767.0, -32768.0)
    out = _samples(_resample_once(in_rate, out_rate, _pcm(square)))
    ideal = np.where(_sine(250.0, out_rate, 0.2, 1.0)[: len(out)] >= 0, 1.0, -1.0)
    delay = round(StreamResampler(in_rate, out_rate).delay_seconds * out_rate)
    aligned = out[delay + 40 :]
    expected_sign = ideal[40 : len(ideal) - delay]
    # Away from edges the output sits at the rails with the right sign; wrapped overshoot
    # would show up as full-scale samples of the wrong sign.
    plateau = np.abs(_sine(250.0, out_rate, 0.2, 1.0)[40 : len(ideal) - delay]) > 0.7
    assert np.all(np.sign(aligned[plateau]) == expected_sign[plateau])
    assert out.max() == 32767 and out.min() == -32768


@pytest.mark.parametrize("in_rate,out_rate", RESAMPLING_PAIRS)
def test_prototype_filter_response_before_rounding(in_rate, out_rate):
    """The designed low-pass itself, with its taps as applied (exact-sum steps): ~90 dB
    stopband, flat passband (no int16 floor)."""
    bank = StreamResampler(in_rate, out_rate)._bank
    phases = bank.phase_filters[:, ::-1]
    prototype = phases.T.reshape(-1) / bank.up
    fs = in_rate * bank.up
    spectrum = np.abs(np.fft.rfft(prototype, 1 << 22))
    freqs = np.fft.rfftfreq(1 << 22, 1 / fs)
    band = min(in_rate, out_rate)
    pass_hz, stop_hz = (3400.0, 4600.0) if band == 8000 else (7000.0, 8600.0)
    stopband_db = 20 * np.log10(spectrum[freqs >= stop_hz].max())
    passband_db = 20 * np.log10(spectrum[(freqs >= 300) & (freqs <= pass_hz)])
    print(
        f"\n{in_rate}->{out_rate}: {len(prototype)} taps at {fs} Hz, stopband {stopband_db:.1f} dB,"
        f" passband {passband_db.min():+.5f}..{passband_db.max():+.5f} dB"
    )
    assert stopband_db <= -88.0
    assert np.all(np.abs(passband_db) <= 0.01)


@pytest.mark.parametrize("in_rate,out_rate", [(22050, 8000), (24000, 8000)])
def test_filter_tables_are_shared_between_instances(in_rate, out_rate):
    a, b = StreamResampler(in_rate, out_rate), StreamResampler(in_rate, out_rate)
    assert a._bank is b._bank
    tables = [a._bank.phase_filters, a._bank.row_filters, a._bank.cycle_filters]
    assert all(not table.flags.writeable for table in tables if table is not None)


@pytest.mark.parametrize("in_rate,out_rate", [(11025, 8000), (24000, 12000), (8000, 44100)])
def test_unsupported_rate_pairs_are_rejected(in_rate, out_rate):
    with pytest.raises(ValueError):
        StreamResampler(in_rate, out_rate)


def test_cost_per_20ms_chunk():
    lines = ["", "CPU per 20 ms chunk (best of 5 x 200 calls):"]
    for in_rate, out_rate in RESAMPLING_PAIRS:
        resampler = StreamResampler(in_rate, out_rate)
        chunk = _pcm(np.random.default_rng(1).normal(0, 5000, in_rate // 50))
        call = functools.partial(resampler.process, chunk)
        seconds = min(timeit.repeat(call, number=200, repeat=5)) / 200
        lines.append(f"  {in_rate:>6}->{out_rate:<6} {seconds * 1e6:8.1f} µs")
        assert seconds < 0.002  # a naive per-sample Python loop would take tens of ms
    print("\n".join(lines))
