"""Audio-quality benchmark: PESQ of the live path, and the resampler side by side.

Two parts, both printed by :func:`main_quality`:

* :func:`run_pesq` starts a real gateway in-process with the embedded voice, places a
  simulated Twilio call, speaks a few utterances through the control API and scores what
  the caller heard (8 kHz μ-law) with PESQ narrow-band (ITU-T P.862, the ``pesq``
  package) against an ideal band-limited reference: the very PCM Piper produced for this
  call (captured by wrapping the provider's session; Piper is not deterministic between
  runs), converted to 8 kHz by a long linear-phase filter (passband to 3.9 kHz, 120 dB
  stopband from 4 kHz), in floating point, without μ-law. The "G.711 ceiling" is that
  reference μ-law encoded and decoded: the best any 8 kHz μ-law path can score. The same
  captured PCM is also run offline through ``audioop.ratecv`` and ``soxr`` (each followed
  by μ-law) and through our resampler without μ-law, to split the loss between the
  resampler and G.711.
* :func:`resampler_table` measures, for each input rate to 8 kHz, our
  :class:`telcodecs.StreamResampler`, ``audioop.ratecv`` (stateful) and
  ``soxr.ResampleStream`` (quality ``HQ``), all fed 20 ms chunks of s16le the way the
  gateway feeds its resampler: alias rejection at 5 and 7 kHz (output level of the tone
  relative to a 1 kHz tone of the same input level), passband gain 300-3400 Hz, the delay
  added to the signal (chirp cross-correlation), how much input is held back before and
  while output appears, and CPU per 20 ms chunk.

Goals: rejection >= 80 dB, latency (signal delay plus held-back input) <= 5 ms,
passband within +-0.5 dB, and PESQ-NB of the live path >= 4.25.

Run: ``python -m gateway.bench.quality [--json PATH]``. Needs the ``local`` and ``dev``
extras (Piper, scipy, soxr, pesq).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
import timeit
import warnings
from typing import Any, Protocol
from pathlib import Path

import numpy as np

from telcodecs import StreamResampler, Transcoder, ulaw_decode, ulaw_encode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # Python < 3.13 ships it; 3.13+ gets it from audioop-lts

__all__ = ["GOALS", "RATES", "main_quality", "resampler_table", "run_pesq"]

OUT_RATE = 8000
RATES = (16000, 22050, 24000, 44100, 48000)
CHUNK_SECONDS = 0.020
TONE_AMPLITUDE = 30000.0  # about -0.8 dBFS, as in tests/codecs/test_resample.py
GOALS = {
    "rejection_db": 80.0,  # at 5 kHz and 7 kHz, relative to a 1 kHz tone
    "latency_ms": 5.0,  # signal delay + input held back
    "ripple_db": 0.5,  # passband 300-3400 Hz
    "pesq_nb": 4.25,
}

DEFAULT_SENTENCES = [
    "Thank you for calling. Your call is important to us, and an agent will be with you "
    "shortly.",
    "Your current balance is one hundred and twenty seven dollars and fifty cents. "
    "The next payment is due on the fifteenth of March.",
    "To hear these options again, press nine. To speak with a representative, press zero, "
    "or simply stay on the line.",
    "We have received your order number four five two, seven one eight. It will ship "
    "within two business days, and you will get a text message with the tracking link.",
    "Please note that our offices are closed on public holidays. Thank you for your "
    "patience, and have a wonderful day.",
]


# --------------------------------------------------------------------------------------
# Resamplers under test: s16le bytes in, s16le bytes out, fed chunk by chunk.


class _Ours:
    label = "ours"

    def __init__(self, in_rate: int, out_rate: int = OUT_RATE):
        self._r = StreamResampler(in_rate, out_rate)

    def process(self, pcm: bytes) -> bytes:
        return self._r.process(pcm)

    def flush(self) -> bytes:
        return self._r.flush()


class _Ratecv:
    """``audioop.ratecv``, stateful through its state tuple; it has no anti-alias filter."""

    label = "audioop.ratecv"

    def __init__(self, in_rate: int, out_rate: int = OUT_RATE):
        self._rates = (in_rate, out_rate)
        self._state: Any = None  # ratecv's own

    def process(self, pcm: bytes) -> bytes:
        out, self._state = audioop.ratecv(pcm, 2, 1, *self._rates, self._state)
        return out

    def flush(self) -> bytes:
        # ratecv has no flush: push 5 ms of zeros to get out what it holds.
        return self.process(bytes(2 * int(self._rates[0] * 0.005)))


class _Soxr:
    """``soxr.ResampleStream`` quality HQ on int16; it emits output in bursts."""

    label = "soxr HQ"

    def __init__(self, in_rate: int, out_rate: int = OUT_RATE):
        import soxr

        self._s = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")

    def process(self, pcm: bytes) -> bytes:
        return self._s.resample_chunk(np.frombuffer(pcm, dtype="<i2")).tobytes()

    def flush(self) -> bytes:
        return self._s.resample_chunk(np.zeros(0, dtype=np.int16), last=True).tobytes()


class Resampler(Protocol):
    def process(self, pcm: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


class ResamplerClass(Protocol):
    """One of :data:`IMPLEMENTATIONS`: made with the input rate, named by ``label``."""

    label: str

    def __call__(self, in_rate: int) -> Resampler: ...


IMPLEMENTATIONS: dict[str, ResamplerClass] = {
    "ours": _Ours,
    "ratecv": _Ratecv,
    "soxr": _Soxr,
}


# --------------------------------------------------------------------------------------
# Signal helpers (the same measurements as tests/codecs/test_resample.py, for any
# streaming resampler).


def _pcm(signal: np.ndarray) -> bytes:
    return np.clip(np.rint(signal), -32768, 32767).astype("<i2").tobytes()


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(float)


def _sine(freq_hz: float, rate: int, seconds: float, amplitude: float = TONE_AMPLITUDE):
    t = np.arange(round(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq_hz * t)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0


def _tone_amplitude(x: np.ndarray, freq_hz: float, rate: int) -> float:
    """Amplitude of the ``freq_hz`` component of ``x`` (least-squares sine fit)."""
    t = np.arange(len(x)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq_hz * t), np.cos(2 * np.pi * freq_hz * t)], 1)
    coeffs, *_ = np.linalg.lstsq(basis, x, rcond=None)
    return float(np.hypot(*coeffs))


def stream_through(factory: ResamplerClass, in_rate: int, signal: np.ndarray,
                   *, flush: bool = True) -> np.ndarray:
    """Feed ``signal`` (at ``in_rate``) to a fresh resampler in 20 ms chunks; 8 kHz out."""
    resampler = factory(in_rate)
    pcm = _pcm(signal)
    step = 2 * round(in_rate * CHUNK_SECONDS)
    out = [resampler.process(pcm[i : i + step]) for i in range(0, len(pcm), step)]
    if flush:
        out.append(resampler.flush())
    return _samples(b"".join(out))


def _steady(factory, in_rate: int, freq_hz: float, seconds: float) -> np.ndarray:
    """Output for a tone, without the first and last 50 ms (start/end transients)."""
    out = stream_through(factory, in_rate, _sine(freq_hz, in_rate, seconds))
    edge = int(0.05 * OUT_RATE)
    return out[edge : int(seconds * OUT_RATE) - edge]


def rejection_db(factory, in_rate: int, freq_hz: float, in_band_hz: float = 1000.0) -> float:
    """How far below an in-band tone a tone at ``freq_hz`` comes out (positive dB; larger
    is better). Measured after int16 rounding; ``inf`` if the output is all zeros."""
    leak = _rms(_steady(factory, in_rate, freq_hz, 0.4))
    reference = _rms(_steady(factory, in_rate, in_band_hz, 0.4))
    return -20 * math.log10(leak / reference) if leak else math.inf


def passband_gains_db(factory, in_rate: int, low: float = 300.0, high: float = 3400.0,
                      step: float = 100.0) -> np.ndarray:
    gains = []
    for freq in np.arange(low, high + 1, step):
        out = _steady(factory, in_rate, freq, 0.2)
        gains.append(20 * math.log10(_tone_amplitude(out, freq, OUT_RATE) / TONE_AMPLITUDE))
    return np.array(gains)


def _chirp(rate: int, seconds: float, top_hz: float) -> np.ndarray:
    """Hann-windowed linear chirp 200 Hz -> ``top_hz``."""
    t = np.arange(int(rate * seconds)) / rate
    envelope = np.sin(np.pi * t / seconds) ** 2
    sweep = (top_hz - 200.0) / seconds
    return 20000.0 * envelope * np.sin(2 * np.pi * (200.0 * t + 0.5 * sweep * t * t))


def _peak_lag(corr: np.ndarray, zero_index: int) -> float:
    """Lag of the correlation peak in samples, refined by a parabola through its neighbours."""
    peak = int(np.argmax(corr))
    fraction = 0.0
    if 0 < peak < len(corr) - 1:
        before, at, after = corr[peak - 1 : peak + 2]
        denominator = before - 2 * at + after
        if denominator:
            fraction = 0.5 * (before - after) / denominator
    return float(peak - zero_index + fraction)


def measured_delay_ms(factory, in_rate: int) -> float:
    """Delay the resampler adds to the signal: its streamed output of a chirp against the
    ideal chirp at 8 kHz (cross-correlation). Output held back is not counted here."""
    seconds, top = 0.4, 3000.0
    out = stream_through(factory, in_rate, _chirp(in_rate, seconds, top))
    ideal = _chirp(OUT_RATE, seconds, top)
    corr = np.correlate(out, ideal, "full")
    return _peak_lag(corr, len(ideal) - 1) / OUT_RATE * 1e3


def chunk_latency(factory, in_rate: int, seconds: float = 1.0) -> dict:
    """What streaming in 20 ms chunks looks like: output of the first chunk, input fed
    before any output appears, and the most input held back (fed but not yet out) after
    any chunk."""
    resampler = factory(in_rate)
    rng = np.random.default_rng(in_rate)
    chunk_samples = round(in_rate * CHUNK_SECONDS)
    fed = emitted = 0
    first_chunk_out: float | None = None
    first_output_after: float | None = None
    held_back = 0.0
    for _ in range(int(seconds / CHUNK_SECONDS)):
        out = resampler.process(_pcm(rng.normal(0, 3000, chunk_samples)))
        fed += chunk_samples
        emitted += len(out) // 2
        if first_chunk_out is None:
            first_chunk_out = emitted / OUT_RATE
        if first_output_after is None and emitted:
            first_output_after = fed / in_rate
        held_back = max(held_back, fed / in_rate - emitted / OUT_RATE)
    assert first_chunk_out is not None  # set by the first chunk
    return {
        "first_chunk_output_ms": round(first_chunk_out * 1e3, 3),
        "first_output_after_ms": (round(first_output_after * 1e3, 3)
                                  if first_output_after is not None else None),
        "max_held_back_ms": round(max(held_back, 0.0) * 1e3, 3),
    }


def cpu_us_per_chunk(factory, in_rate: int, calls: int = 300, repeat: int = 5) -> float:
    """Mean CPU per 20 ms chunk on a running stream (best of ``repeat`` runs); bytes in,
    bytes out, as the gateway uses it."""
    resampler = factory(in_rate)
    chunk = _pcm(np.random.default_rng(1).normal(0, 5000, round(in_rate * CHUNK_SECONDS)))
    for _ in range(10):  # warm up (filter tables, first bursts)
        resampler.process(chunk)
    best = min(timeit.repeat(lambda: resampler.process(chunk), number=calls, repeat=repeat))
    return best / calls * 1e6


def _round(value: float, digits: int = 2):
    return value if math.isinf(value) else round(value, digits) + 0.0  # no "-0.0"


def resampler_table(rates=RATES, methods=("ours", "ratecv", "soxr"), *,
                    cpu_calls: int = 300) -> list[dict]:
    """One row per (input rate, method) for input rate -> 8 kHz; see the module docstring.

    ``rejection_*_db`` are positive (dB below a 1 kHz tone); ``latency_ms`` is
    ``delay_ms + max_held_back_ms``; ``fails`` lists the goals the row misses.
    """
    rows = []
    for in_rate in rates:
        for method in methods:
            factory = IMPLEMENTATIONS[method]
            gains = passband_gains_db(factory, in_rate)
            delay = measured_delay_ms(factory, in_rate)
            latency = chunk_latency(factory, in_rate)
            row = {
                "in_rate": in_rate,
                "out_rate": OUT_RATE,
                "method": method,
                "label": factory.label,
                "rejection_5k_db": _round(rejection_db(factory, in_rate, 5000.0), 1),
                "rejection_7k_db": _round(rejection_db(factory, in_rate, 7000.0), 1),
                "passband_min_db": round(float(gains.min()), 3),
                "passband_max_db": round(float(gains.max()), 3),
                "delay_ms": _round(delay, 3),
                **latency,
                "latency_ms": _round(delay + latency["max_held_back_ms"], 3),
                "cpu_us_per_20ms": round(cpu_us_per_chunk(factory, in_rate, cpu_calls), 1),
            }
            if method == "ours":
                row["declared_delay_ms"] = round(StreamResampler(in_rate, OUT_RATE)
                                                 .delay_seconds * 1e3, 3)
            fails = []
            if min(row["rejection_5k_db"], row["rejection_7k_db"]) < GOALS["rejection_db"]:
                fails.append("rejection")
            if row["latency_ms"] > GOALS["latency_ms"]:
                fails.append("latency")
            if max(abs(row["passband_min_db"]), abs(row["passband_max_db"])) > GOALS["ripple_db"]:
                fails.append("ripple")
            row["fails"] = fails
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------
# PESQ of the live path.


def ideal_reference(pcm: bytes, in_rate: int, out_rate: int = OUT_RATE) -> np.ndarray:
    """``pcm`` (s16le) at ``out_rate`` through a long linear-phase low-pass (Kaiser,
    passband to 3.9 kHz, 120 dB from 4 kHz), zero delay, float (no rounding, no μ-law)."""
    from scipy import signal

    x = _samples(pcm)
    common = math.gcd(in_rate, out_rate)
    up, down = out_rate // common, in_rate // common
    fs = in_rate * up
    pass_hz, stop_hz, attenuation = out_rate / 2 - 100.0, out_rate / 2, 120.0
    order = math.ceil((attenuation - 7.95) / (2.285 * 2 * math.pi * (stop_hz - pass_hz) / fs))
    order += order % 2
    beta = 0.1102 * (attenuation - 8.7)
    taps = signal.firwin(order + 1, (pass_hz + stop_hz) / 2, window=("kaiser", beta), fs=fs)
    taps /= taps.sum()
    # resample_poly takes an array window as the filter itself (it applies the gain ``up``)
    # and removes its delay.
    return signal.resample_poly(x, up, down, window=taps)


def _fractional_delay(x: np.ndarray, delay: float, length: int) -> np.ndarray:
    """``x`` delayed by ``delay`` samples (band-limited, via the FFT), ``length`` long."""
    n = 1 << math.ceil(math.log2(max(length, len(x)) + abs(delay) + 1024))
    spectrum = np.fft.rfft(x, n) * np.exp(-2j * np.pi * np.fft.rfftfreq(n) * delay)
    return np.fft.irfft(spectrum, n)[:length]


def align(reference: np.ndarray, degraded: np.ndarray, max_lag: int = 800
          ) -> tuple[np.ndarray, float]:
    """Delay ``reference`` to line up with ``degraded`` (cross-correlation peak, parabolic
    refinement); returns (aligned reference as long as ``degraded``, offset in samples)."""
    n = 1 << math.ceil(math.log2(len(reference) + len(degraded)))
    corr = np.fft.irfft(np.fft.rfft(degraded, n) * np.conj(np.fft.rfft(reference, n)), n)
    window = np.concatenate((corr[-max_lag:], corr[: max_lag + 1]))  # lags -max..+max
    offset = _peak_lag(window, max_lag)
    return _fractional_delay(reference, offset, len(degraded)), offset


def _ulaw_roundtrip(x: np.ndarray) -> np.ndarray:
    return _samples(ulaw_decode(ulaw_encode(_pcm(x))))


def _offline(factory, in_rate: int, pcm: bytes, mulaw: bool = True) -> np.ndarray:
    resampler = factory(in_rate)
    out = resampler.process(pcm) + resampler.flush()
    return _ulaw_roundtrip(_samples(out)) if mulaw else _samples(out)


def _pesq(reference: np.ndarray, degraded: np.ndarray) -> float:
    from pesq import pesq

    return float(pesq(OUT_RATE, reference.astype(np.float32), degraded.astype(np.float32), "nb"))


def _score(reference: np.ndarray, degraded: np.ndarray) -> tuple[dict, np.ndarray]:
    """PESQ of ``degraded`` against ``reference`` delayed to line up with it."""
    aligned, offset = align(reference, degraded)
    return ({"pesq": round(_pesq(aligned, degraded), 4), "offset_samples": round(offset, 3),
             "offset_ms": round(offset / OUT_RATE * 1e3, 3)}, aligned)


def _repo_config() -> dict:
    import yaml

    path = Path(__file__).resolve().parents[2] / "gateway.yaml"
    data = yaml.safe_load(path.read_text())
    data["server"]["host"] = "127.0.0.1"
    data["server"]["port"] = 0
    provider = data["routes"][data["default_route"]]["provider"]
    data["routes"]["bench"] = {"provider": provider}  # no greeting
    data.setdefault("logging", {})["level"] = "WARNING"
    return data


async def _speak_live(sentences: list[str]) -> dict:
    """One call through a real in-process gateway; returns per utterance the PCM the
    provider produced and the μ-law the caller heard."""
    import aiohttp

    from gateway.config import parse_config
    from gateway.http.app import create_app
    from gateway.http.keys import PROVIDERS
    from gateway.http.loopback import serve_on_loopback
    from gateway.carriers.twilio.sim import TwilioCallSim

    config = parse_config(_repo_config(), {})
    app = create_app(config)
    provider = app[PROVIDERS][config.routes["bench"].provider]
    capture: dict = {"chunks": None, "formats": set()}
    original = provider.open_session

    async def recording_session(fmt: Any) -> Any:
        session = await original(fmt)
        synthesize = session.synthesize

        async def recorded(text, voice=None):
            async for chunk in synthesize(text, voice):
                capture["formats"].add((chunk.encoding, chunk.sample_rate))
                capture["chunks"].append(chunk.data)
                yield chunk

        instrumented: Any = session  # this session's method, wrapped in place
        instrumented.synthesize = recorded
        return session

    patched: Any = provider  # the same for the provider, undone at the end
    patched.open_session = recording_session
    runner, port = await serve_on_loopback(app)
    utterances = []
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(60):
                while True:
                    async with http.get(f"{base}/readyz") as resp:
                        if resp.status == 200:
                            break
                    await asyncio.sleep(0.05)
            async with TwilioCallSim(f"ws://127.0.0.1:{port}/v1/media/twilio/bench") as sim:
                async with asyncio.timeout(10):
                    while True:
                        async with http.get(f"{base}/v1/calls/{sim.call_sid}") as resp:
                            if resp.status == 200:
                                break
                        await asyncio.sleep(0.02)
                for text in sentences:
                    chunks: list[bytes] = []
                    capture["chunks"] = chunks
                    start = len(sim.result.heard)
                    async with http.post(f"{base}/v1/calls/{sim.call_sid}/speak",
                                         json={"text": text}) as resp:
                        body = await resp.json()
                        if resp.status != 202:
                            raise RuntimeError(f"speak refused: {resp.status} {body}")
                    await sim.wait_for_mark(body["speech_id"], timeout=120)
                    heard = sim.result.heard
                    utterances.append({"text": text, "speech_id": body["speech_id"],
                                       "pcm": b"".join(chunks), "heard": heard[start:]})
                await sim.hangup()
            result = sim.result
    finally:
        patched.open_session = original
        await runner.cleanup()
    if len(capture["formats"]) != 1 or next(iter(capture["formats"]))[0] != "pcm_s16le":
        raise RuntimeError(f"expected one s16le provider format, got {capture['formats']}")
    return {"utterances": utterances, "provider_rate": next(iter(capture["formats"]))[1],
            "underruns": result.underruns, "violations": result.violations}


async def run_pesq(sentences: list[str] | None = None) -> dict:
    """PESQ-NB of the live path for ``sentences`` (one utterance each); see the module
    docstring. Per utterance and overall (all utterances concatenated), with the G.711
    ceiling and offline comparisons (ratecv, soxr, ours without μ-law)."""
    sentences = list(sentences or DEFAULT_SENTENCES)
    started = time.perf_counter()
    live = await _speak_live(sentences)
    call_seconds = time.perf_counter() - started
    rate = live["provider_rate"]
    variants = ("live", "g711_ceiling", "ours_no_ulaw", "ratecv_ulaw", "soxr_ulaw")
    rows: list[dict] = []
    pairs: dict[str, list] = {name: [] for name in variants}
    gap = np.zeros(int(0.3 * OUT_RATE))
    for utt in live["utterances"]:
        reference = ideal_reference(utt["pcm"], rate)
        degraded = _samples(ulaw_decode(utt["heard"]))
        # The live path must equal the offline transcoder on the captured PCM, bit for bit.
        transcoder = Transcoder("pcm_s16le", rate, "mulaw", OUT_RATE)
        offline = transcoder.feed(utt["pcm"]) + transcoder.flush()
        offline += b"\xff" * (-len(offline) % 160)  # the framer pads the last frame
        candidates = {
            "live": degraded,
            "g711_ceiling": _ulaw_roundtrip(reference),
            "ours_no_ulaw": _offline(_Ours, rate, utt["pcm"], mulaw=False),
            "ratecv_ulaw": _offline(_Ratecv, rate, utt["pcm"]),
            "soxr_ulaw": _offline(_Soxr, rate, utt["pcm"]),
        }
        pcm = _samples(utt["pcm"])
        row = {"text": utt["text"], "seconds": round(len(utt["pcm"]) / 2 / rate, 2),
               "rms_dbfs": round(20 * math.log10(max(_rms(pcm), 1e-9) / 32768), 1),
               "peak_dbfs": round(20 * math.log10(max(np.abs(pcm).max(), 1) / 32768), 1),
               "heard_seconds": round(len(utt["heard"]) / OUT_RATE, 2),
               "live_equals_offline": offline == utt["heard"]}
        for name, deg in candidates.items():
            row[name], aligned = _score(reference, deg)
            pairs[name].append((aligned, deg))
        # PESQ's own alignment without ours: reference not delayed at all.
        row["live_unaligned_pesq"] = round(_pesq(np.concatenate(
            (reference, np.zeros(max(0, len(degraded) - len(reference)))))[: len(degraded)],
            degraded), 4)
        rows.append(row)
    overall, mean = {}, {}
    for name in variants:
        ref_all = np.concatenate([np.concatenate((r, gap)) for r, _ in pairs[name]])
        deg_all = np.concatenate([np.concatenate((d, gap)) for _, d in pairs[name]])
        overall[name] = round(_pesq(ref_all, deg_all), 4)
        mean[name] = round(float(np.mean([row[name]["pesq"] for row in rows])), 4)
    return {
        "provider_rate": rate,
        "speech_seconds": round(sum(r["seconds"] for r in rows), 2),
        "call_seconds": round(call_seconds, 1),
        "underruns": live["underruns"],
        "violations": [f"{c}: {d}" for c, d in live["violations"]],
        "reference": "provider PCM -> 8 kHz, Kaiser FIR pass 3.9 kHz / stop 4.0 kHz / 120 dB, "
                     "zero phase, float",
        "utterances": rows,
        "mean": mean,
        "overall": overall,
        "goal": GOALS["pesq_nb"],
        "meets_goal": bool(mean["live"] >= GOALS["pesq_nb"]),
    }


# --------------------------------------------------------------------------------------
# Report.


def _fmt_db(value: float) -> str:
    return "  >int16" if math.isinf(value) else f"{value:8.1f}"


def format_resampler_table(rows: list[dict]) -> str:
    header = (f"{'in->8k':>7} {'method':<15} {'rej 5k':>8} {'rej 7k':>8} {'passband dB':>16}"
              f" {'delay':>7} {'1st chunk':>9} {'1st out':>8} {'held':>7} {'latency':>8}"
              f" {'CPU µs':>8}  fails")
    units = (f"{'Hz':>7} {'':<15} {'dB':>8} {'dB':>8} {'300-3400 Hz':>16} {'ms':>7}"
             f" {'out ms':>9} {'after ms':>8} {'ms':>7} {'ms':>8} {'/20 ms':>8}")
    lines = [header, units]
    for r in rows:
        first_out = r["first_output_after_ms"]
        lines.append(
            f"{r['in_rate']:>7} {r['label']:<15} {_fmt_db(r['rejection_5k_db'])}"
            f" {_fmt_db(r['rejection_7k_db'])}"
            f" {r['passband_min_db']:+7.3f}..{r['passband_max_db']:+7.3f}"
            f" {r['delay_ms']:7.3f} {r['first_chunk_output_ms']:9.2f}"
            f" {first_out if first_out is not None else float('nan'):8.1f}"
            f" {r['max_held_back_ms']:7.2f} {r['latency_ms']:8.2f} {r['cpu_us_per_20ms']:8.1f}"
            f"  {', '.join(r['fails']) or '-'}")
    return "\n".join(lines)


def format_pesq(report: dict) -> str:
    names = [("live", "live"), ("g711_ceiling", "ceiling"), ("ours_no_ulaw", "ours,noμ"),
             ("ratecv_ulaw", "ratecv+μ"), ("soxr_ulaw", "soxr+μ")]
    lines = [f"{'#':>2} {'secs':>5} {'rms/peak dBFS':>13} {'offset ms':>9} "
             + " ".join(f"{label:>9}" for _, label in names) + f" {'unalgn':>7} {'bitexact':>8}"]
    for i, r in enumerate(report["utterances"], 1):
        lines.append(f"{i:>2} {r['seconds']:5.1f} {r['rms_dbfs']:6.1f}/{r['peak_dbfs']:6.1f}"
                     f" {r['live']['offset_ms']:9.3f} "
                     + " ".join(f"{r[n]['pesq']:9.3f}" for n, _ in names)
                     + f" {r['live_unaligned_pesq']:7.3f} {r['live_equals_offline']!s:>8}")
    lines.append(f"{'mean':>8} {'':>23} " + " ".join(f"{report['mean'][n]:9.3f}" for n, _ in names))
    lines.append(f"{'overall':>8} {'':>23} "
                 + " ".join(f"{report['overall'][n]:9.3f}" for n, _ in names))
    return "\n".join(lines)


def verdicts(table: list[dict], pesq_report: dict | None) -> list[tuple[str, bool, str]]:
    ours = [r for r in table if r["method"] == "ours"]
    out = []
    worst_rej = min(min(r["rejection_5k_db"], r["rejection_7k_db"]) for r in ours)
    out.append(("alias rejection >= 80 dB", bool(worst_rej >= GOALS["rejection_db"]),
                f"ours: worst {worst_rej:.1f} dB over {len(ours)} rates"))
    worst_lat = max(r["latency_ms"] for r in ours)
    out.append(("added latency <= 5 ms", bool(worst_lat <= GOALS["latency_ms"]),
                f"ours: worst {worst_lat:.2f} ms (signal delay + held back)"))
    worst_rip = max(max(abs(r["passband_min_db"]), abs(r["passband_max_db"])) for r in ours)
    out.append(("passband within ±0.5 dB", bool(worst_rip <= GOALS["ripple_db"]),
                f"ours: worst |gain| {worst_rip:.3f} dB, 300-3400 Hz"))
    if pesq_report is not None:
        m = pesq_report["mean"]
        out.append(("PESQ-NB >= 4.25", pesq_report["meets_goal"],
                     f"live mean {m['live']:.3f} (overall {pesq_report['overall']['live']:.3f}),"
                     f" G.711 ceiling {m['g711_ceiling']:.3f},"
                     f" gap {m['g711_ceiling'] - m['live']:.3f}"))
    return out


def _json_safe(value):
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def main_quality(argv=None) -> int:
    """Print the resampler table, the PESQ table and a verdict per goal; 0 if ours meets
    every goal, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="gateway.bench.quality", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write everything as JSON here")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    pesq_report = asyncio.run(run_pesq())
    table = resampler_table()
    print(f"Resampler, input rate -> 8 kHz, fed 20 ms s16le chunks (goals: rejection >= "
          f"{GOALS['rejection_db']:.0f} dB, latency <= {GOALS['latency_ms']:.0f} ms, "
          f"passband ±{GOALS['ripple_db']} dB)")
    print("  rejection: tone level below a 1 kHz tone; delay: added to the signal; 1st chunk "
          "out: output of the first 20 ms chunk;\n  1st out after: input fed before any "
          "output; held: most input fed but not yet out; latency = delay + held")
    print(format_resampler_table(table))
    print()
    print(f"PESQ-NB (P.862 MOS-LQO) of the live path, {len(pesq_report['utterances'])} "
          f"utterances, {pesq_report['speech_seconds']:.1f} s of speech at "
          f"{pesq_report['provider_rate']} Hz (call underruns: {pesq_report['underruns']})")
    print(f"  reference: {pesq_report['reference']}; offset = measured delay of the live "
          f"audio, compensated before scoring")
    print("  live: what the caller heard; ceiling: reference through μ-law only; ours,noμ / "
          "ratecv+μ / soxr+μ: the captured PCM offline;\n  unalgn: live scored without our "
          "alignment (PESQ's own); bitexact: live == offline Transcoder")
    print(format_pesq(pesq_report))
    print()
    results = verdicts(table, pesq_report)
    for goal, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {goal}: {detail}")
    elapsed = time.perf_counter() - started
    print(f"(benchmark took {elapsed:.1f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(_json_safe({
            "goals": GOALS,
            "resampler": table,
            "pesq": pesq_report,
            "verdicts": [{"goal": g, "pass": bool(ok), "detail": d} for g, ok, d in results],
            "seconds": round(elapsed, 1),
        }), indent=2))
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main_quality())
