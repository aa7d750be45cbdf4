"""Voice activity detection for barge-in: WebRTC VAD against Silero, measured.

Offline, on the detector the gateway runs (:class:`gateway.core.vad.SpeechDetector`), fed
the way a call feeds it: 8 kHz μ-law frames of 20 ms, decoded. For each classifier:

* detection delay: a caller phrase (the embedded Piper voice and ``espeak-ng``, at a random
  level from -10 to -35 dBFS) starts at a random moment while the gateway's own speech
  comes back as echo at -25 dB; delay is from the phrase's onset to the end of the frame
  on which the detector fires (what a call adds on top: one carrier frame in flight and
  the ``clear`` going out, a few ms on loopback). p50/p95 over the trials, and misses;
* false starts on ten minutes each of digital silence, -45 dBFS white noise, and the
  gateway's speech as echo at -25 dB with nobody talking;
* wherever the gateway speaks, the detector is told what it plays
  (``caller_speech.note_playback``, 60 ms ahead, as gateway/core/bargein.py does on a
  call), so the CPU figures under echo include that helper's numpy level per frame;
* CPU: microseconds per 20 ms frame (μ-law decode and detector), as the call pays it on
  the event loop: on the backgrounds, and on the trials (speech under echo, where every
  window above the floor goes to the classifier).

Silero runs through onnxruntime with the model file its wheel ships (installed
``--no-deps``: its package imports torch, which the gateway does not need); it is skipped
when not installed. Run: ``python -m gateway.bench.vad [--trials 48] [--minutes 10]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from telcodecs import ulaw_decode, ulaw_encode

from gateway.config import BargeInConfig
from gateway.core.vad import Classifier, SpeechDetector, SpeechStarted, WebRtcClassifier
from gateway.sim.carriers import caller_speech as cs

RATE = 8000
FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law
LEVELS_DBFS = (-10.0, -35.0)
ECHO_DB = 25.0
NOISE_DBFS = -45.0
GATEWAY_TEXT = (
    "Thank you for calling. Your call is important to us. Before we continue, please "
    "listen carefully, as our menu options have changed. For billing, press one. For "
    "technical support, press two. To hear these options again, stay on the line. "
    "Our opening hours are Monday to Friday, from eight in the morning to six at night.")
GOALS = {"p95_delay_ms": 250.0, "false_starts_per_10_min": 0}


class SileroClassifier:
    """Silero VAD v5 on onnxruntime: 32 ms windows at 8 kHz, probability >= ``threshold``."""

    window_ms = 32

    def __init__(self, sample_rate: int, threshold: float = 0.5):
        import onnxruntime

        spec = importlib.util.find_spec("silero_vad")  # not imported: it imports torch
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("silero-vad is not installed")
        path = os.path.join(spec.submodule_search_locations[0], "data", "silero_vad.onnx")
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = options.intra_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(path, sess_options=options,
                                                     providers=["CPUExecutionProvider"])
        self.sample_rate = sample_rate
        self._samples = sample_rate * self.window_ms // 1000  # 256 at 8 kHz, 512 at 16 kHz
        self.window_bytes = self._samples * 2
        self._context_samples = 32 if sample_rate == 8000 else 64
        self._context = np.zeros((1, self._context_samples), np.float32)
        self._state = np.zeros((2, 1, 128), np.float32)
        self._rate = np.array(sample_rate, dtype=np.int64)
        self.threshold = threshold

    def __call__(self, window: bytes) -> bool:
        frame = np.frombuffer(window, "<i2").astype(np.float32).reshape(1, -1) / 32768
        x = np.concatenate([self._context, frame], axis=1)
        out, self._state = self._session.run(None, {"input": x, "state": self._state,
                                                    "sr": self._rate})
        self._context = x[:, -self._context_samples:]
        return float(out[0, 0]) >= self.threshold


CLASSIFIERS: dict[str, Callable[[], object]] = {
    "webrtc-3": lambda: WebRtcClassifier(RATE, 3),
    "webrtc-2": lambda: WebRtcClassifier(RATE, 2),
    "silero-0.5": lambda: SileroClassifier(RATE, 0.5),
}


@dataclass
class Run:
    starts: list[int]  # ms of caller audio where each SpeechStarted was decided
    cpu_us_per_frame: float


def run_detector(make_classifier: Callable[[], Classifier], wire: bytes,
                 min_speech_ms: int = BargeInConfig.min_speech_ms,
                 min_silence_ms: int = BargeInConfig.min_silence_ms,
                 playing: bytes | None = None) -> Run:
    """Feed μ-law ``wire`` to a fresh detector 20 ms at a time, as a call does."""
    detector = SpeechDetector(RATE, min_speech_ms=min_speech_ms, min_silence_ms=min_silence_ms,
                              classifier=make_classifier())
    starts = []
    frames = len(wire) // FRAME_BYTES
    began = time.process_time()
    for index in range(frames):
        if playing is not None:  # what the gateway plays, told as bargein.py does
            cs.note_playback(detector, playing, index * FRAME_BYTES * 2, RATE)
        frame = wire[index * FRAME_BYTES:(index + 1) * FRAME_BYTES]
        for event in detector.feed(ulaw_decode(frame)):
            if isinstance(event, SpeechStarted):
                starts.append(detector.now_ms)
    cpu = time.process_time() - began
    return Run(starts, cpu / max(1, frames) * 1e6)


def looped(pcm: bytes, seconds: float) -> bytes:
    need = int(seconds * RATE) * 2
    return (pcm * (need // len(pcm) + 1))[:need]


def make_audio(trials: int, seed: int) -> dict:
    print("synthesizing phrases (Piper, espeak-ng) and the gateway's speech ...", flush=True)
    phrases = [("piper", p) for p in cs.piper_phrases(rate=RATE)]
    phrases += [("espeak", p) for p in cs.espeak_phrases(rate=RATE)]
    gateway = cs.piper_phrases((GATEWAY_TEXT,), rate=RATE)[0]
    rng = random.Random(seed)
    cases = []
    for index in range(trials):
        voice, phrase = phrases[index % len(phrases)]
        level = rng.uniform(*LEVELS_DBFS) if index >= 2 else LEVELS_DBFS[index]
        speech = cs.trimmed(cs.at_level(phrase, RATE, level), RATE)
        onset_s = rng.uniform(1.5, 4.0)
        echo_start = rng.uniform(0, len(gateway) / 2 / RATE - 6)
        caller = cs.silence(onset_s, RATE) + speech + cs.silence(1.5, RATE)
        played = looped(gateway[int(echo_start * RATE) * 2:], len(caller) / 2 / RATE)
        call = cs.mix(cs.echo_of(played, RATE, attenuation_db=ECHO_DB), caller)
        cases.append({"voice": voice, "level": level, "onset_ms": onset_s * 1000,
                      "speech_ms": len(speech) / 2 / RATE * 1000, "wire": ulaw_encode(call),
                      "played": played,
                      "quiet_wire": ulaw_encode(caller)})
    return {"cases": cases, "gateway": gateway,
            "gateway_dbfs": cs.active_level_dbfs(gateway, RATE)}


def delays(make_classifier, cases: list[dict], wire: str = "wire") -> dict:
    found, missed, early, cpu = [], 0, 0, []
    for case in cases:
        run = run_detector(make_classifier, case[wire],
                           playing=case["played"] if wire == "wire" else None)
        starts = run.starts
        cpu.append(run.cpu_us_per_frame)
        after = [s for s in starts if s >= case["onset_ms"]]
        early += len(starts) - len(after)
        if after and after[0] <= case["onset_ms"] + case["speech_ms"]:
            found.append(after[0] - case["onset_ms"])
        else:
            missed += 1
    return {"trials": len(cases), "missed": missed, "early": early,
            "cpu_us_per_frame": round(statistics.mean(cpu), 1), **_percentiles(found)}


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "max_ms": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered), 1), "p95_ms": round(p95, 1),
            "max_ms": round(ordered[-1], 1)}


def false_starts(make_classifier, minutes: float, gateway: bytes) -> dict:
    seconds = minutes * 60
    backgrounds = {
        "silence": cs.silence(seconds, RATE),
        "noise_-45dBFS": cs.white_noise(seconds, RATE, NOISE_DBFS, seed=1),
        "echo_-25dB": cs.echo_of(looped(gateway, seconds), RATE, attenuation_db=ECHO_DB),
    }
    result: dict[str, float] = {}
    cpu = []
    for name, pcm in backgrounds.items():
        playing = looped(gateway, seconds) if name.startswith("echo") else None
        run = run_detector(make_classifier, ulaw_encode(pcm), playing=playing)
        result[name] = len(run.starts)
        cpu.append(run.cpu_us_per_frame)
    result["cpu_us_per_frame"] = round(statistics.mean(cpu), 1)
    return result


def _delay_cell(d: dict) -> str:
    return f"{d['p50_ms']}/{d['p95_ms']}/{d['max_ms']} ({d['missed']}, {d['early']})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.bench.vad", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=48, help="barge-in trials (>= 40)")
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="minutes of each background for false starts")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    audio = make_audio(args.trials, args.seed)
    print(f"gateway speech level {audio['gateway_dbfs']:.1f} dBFS; its echo "
          f"{audio['gateway_dbfs'] - ECHO_DB:.1f} dBFS")
    report = {}
    for name, make in CLASSIFIERS.items():
        try:
            make()
        except ImportError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        report[name] = {"delay_quiet_line": delays(make, audio["cases"], "quiet_wire"),
                        "delay": delays(make, audio["cases"]),
                        "false_starts": false_starts(make, args.minutes, audio["gateway"])}
    print(f"\nmin_speech_ms {BargeInConfig.min_speech_ms}; {args.trials} trials; "
          f"false starts per {args.minutes:g} min")
    print("delay from the onset, ms: p50/p95/max (missed, early): on a quiet line | under "
          "the gateway's echo at -25 dB")
    print(f"{'classifier':12} {'quiet line':>24} {'under echo':>24} "
          f"{'silence':>7} {'noise':>5} {'echo':>4} {'us/frame':>8} {'(speech)':>8}")
    for name, row in report.items():
        f = row["false_starts"]
        print(f"{name:12} {_delay_cell(row['delay_quiet_line']):>24} "
              f"{_delay_cell(row['delay']):>24} {f['silence']:>7} {f['noise_-45dBFS']:>5} "
              f"{f['echo_-25dB']:>4} {f['cpu_us_per_frame']:>8} "
              f"{row['delay']['cpu_us_per_frame']:>8}")
    print(f"goals: p95 <= {GOALS['p95_delay_ms']:g} ms, 0 false starts")
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
