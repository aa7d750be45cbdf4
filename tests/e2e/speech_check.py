"""Is this audio speech? Checks that a wrong codec, rate or byte order would fail.

Speech at 8 kHz has most of its energy between 100 and 3400 Hz, a peaky (not flat)
spectrum, and pauses between words. Noise from a wrong encoding or byte order has a flat
spectrum and no pauses; silence has no energy.
"""

from __future__ import annotations

import numpy as np


def speech_stats(pcm16le: bytes, rate: int = 8000) -> dict:
    x = np.frombuffer(pcm16le, dtype="<i2").astype(np.float64) / 32768.0
    frame = rate // 50
    n = len(x) // frame
    frames = x[: n * frame].reshape(n, frame)
    level_db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    active = level_db > -45
    window = np.hanning(frame)
    spectra = np.abs(np.fft.rfft(frames[active] * window, axis=1)) ** 2 + 1e-18
    flatness = np.exp(np.mean(np.log(spectra), axis=1)) / np.mean(spectra, axis=1)
    freqs = np.fft.rfftfreq(frame, 1 / rate)
    band = (freqs >= 100) & (freqs <= 3400)
    total = spectra.sum()
    return {
        "seconds": len(x) / rate,
        "rms_db": float(10 * np.log10(np.mean(x ** 2) + 1e-12)),
        "active_fraction": float(active.mean()) if n else 0.0,
        "median_flatness": float(np.median(flatness)) if len(flatness) else 1.0,
        "band_fraction": float(spectra[:, band].sum() / total) if len(flatness) else 0.0,
    }


def assert_speech(pcm16le: bytes, rate: int = 8000) -> dict:
    stats = speech_stats(pcm16le, rate)
    assert stats["seconds"] > 0.5, stats
    assert stats["rms_db"] > -40, f"too quiet to be speech: {stats}"
    assert 0.3 < stats["active_fraction"] < 0.99, f"no pauses or no activity: {stats}"
    assert stats["median_flatness"] < 0.25, f"spectrum flat like noise: {stats}"
    assert stats["band_fraction"] > 0.85, f"energy outside the voice band: {stats}"
    return stats
