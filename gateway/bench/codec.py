"""Microbenchmark of the transcoding path, per chunk: what one call's audio costs.

Cases (each a Transcoder and a Framer, as gateway/core/call.py ``_AudioOut`` and
gateway/bot/audio.py use them):

* ``tts24k-{20,40,100}ms``: a provider's 24 kHz s16le chunks to 8 kHz μ-law 20 ms frames
  (the bench's fake provider sends 100 ms chunks);
* ``bot16k-20ms``: a carrier's 8 kHz μ-law 20 ms frames to l16/16000 20 ms packets (the
  caller's audio to a bot).

Two measures: wall clock (``time.perf_counter`` over many chunks, best of several
rounds; noisy on a shared machine) and instructions (``valgrind --tool=callgrind``,
repeatable under load): the instructions of a run with ``2n`` chunks minus those of a run
with ``n``, divided by ``n``, so start-up and imports cancel out.

    python -m gateway.bench.codec                 # both measures
    python -m gateway.bench.codec --no-callgrind  # wall clock only
    python -m gateway.bench.codec --codecs DIR    # another telcodecs (e.g. an old checkout)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

CASES = {  # name: (src encoding, src rate, chunk ms, dst encoding, dst rate, frame ms)
    "tts24k-20ms": ("pcm_s16le", 24000, 20, "mulaw", 8000, 20),
    "tts24k-40ms": ("pcm_s16le", 24000, 40, "mulaw", 8000, 20),
    "tts24k-100ms": ("pcm_s16le", 24000, 100, "mulaw", 8000, 20),
    "bot16k-20ms": ("mulaw", 8000, 20, "l16", 16000, 20),
}
_BYTES_PER_SAMPLE = {"pcm_s16le": 2, "l16": 2, "mulaw": 1}
_SILENCE = {"pcm_s16le": 0, "l16": 0, "mulaw": 0xFF}
_CHUNKS_PER_UTTERANCE = 10  # then the transcoder is flushed, as at an utterance's end


def _chunks(case: str, count: int) -> list[bytes]:
    """``count`` distinct chunks of speech-like noise (seeded: every run feeds the same)."""
    import numpy as np

    src, rate, chunk_ms, *_ = CASES[case]
    samples = rate * chunk_ms // 1000
    rng = np.random.default_rng(13)
    pcm = np.clip(rng.normal(0, 6000, samples * 16), -32768, 32767).astype("<i2")
    data = pcm.tobytes() if src != "mulaw" else _ulaw(pcm.tobytes())
    width = _BYTES_PER_SAMPLE[src]
    pieces = [data[i * samples * width:(i + 1) * samples * width] for i in range(16)]
    return [pieces[i % 16] for i in range(count)]


def _ulaw(pcm: bytes) -> bytes:
    from telcodecs import ulaw_encode

    return ulaw_encode(pcm)


def run_chunks(case: str, count: int) -> int:
    """Feed ``count`` chunks through a Transcoder and a Framer; returns the frames made."""
    from telcodecs import Framer, Transcoder

    src, rate, _, dst, dst_rate, frame_ms = CASES[case]
    transcoder = Transcoder(src, rate, dst, dst_rate)
    framer = Framer(_BYTES_PER_SAMPLE[dst] * dst_rate * frame_ms // 1000, _SILENCE[dst])
    frames = 0
    for index, chunk in enumerate(_chunks(case, count)):
        frames += len(framer.push(transcoder.feed(chunk)))
        if index % _CHUNKS_PER_UTTERANCE == _CHUNKS_PER_UTTERANCE - 1:
            frames += len(framer.push(transcoder.flush()))
    return frames


def wall_us_per_chunk(case: str, count: int = 2000, rounds: int = 5) -> float:
    from telcodecs import Framer, Transcoder

    src, rate, _, dst, dst_rate, frame_ms = CASES[case]
    chunks = _chunks(case, count)
    best = float("inf")
    for _ in range(rounds):
        transcoder = Transcoder(src, rate, dst, dst_rate)
        framer = Framer(_BYTES_PER_SAMPLE[dst] * dst_rate * frame_ms // 1000, _SILENCE[dst])
        push, feed, flush = framer.push, transcoder.feed, transcoder.flush
        start = time.perf_counter()
        for index, chunk in enumerate(chunks):
            push(feed(chunk))
            if index % _CHUNKS_PER_UTTERANCE == _CHUNKS_PER_UTTERANCE - 1:
                push(flush())
        best = min(best, time.perf_counter() - start)
    return best / count * 1e6


def _callgrind_instructions(case: str, count: int, env: dict) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             sys.executable, "-m", "gateway.bench.codec", "--child", case, str(count)],
            env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with open(out) as f:
            summary = re.search(r"^summary:\s+(\d+)", f.read(), re.M)
    if summary is None:
        raise RuntimeError(f"callgrind wrote no summary line to {out}")
    return int(summary.group(1))


def instructions_per_chunk(case: str, env: dict, count: int = 500) -> float:
    once = _callgrind_instructions(case, count, env)
    twice = _callgrind_instructions(case, 2 * count, env)
    return (twice - once) / count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codecs", help="directory holding the telcodecs package to measure")
    parser.add_argument("--no-callgrind", action="store_true", help="wall clock only")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")  # idle BLAS threads spin: noise
    if args.codecs:
        sys.path.insert(0, os.path.abspath(args.codecs))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.abspath(args.codecs),
                                                          env.get("PYTHONPATH")]))
    if args.child:
        run_chunks(args.child[0], int(args.child[1]))
        return
    import telcodecs

    use_callgrind = not args.no_callgrind and shutil.which("valgrind")
    print(f"telcodecs from {os.path.dirname(telcodecs.__file__)}")
    print(f"{'case':<14} {'µs/chunk':>9} {'instr/chunk':>12} {'µs/s of audio':>14}")
    for case in args.cases:
        us = wall_us_per_chunk(case)
        instr = instructions_per_chunk(case, env) if use_callgrind else float("nan")
        per_second = us * 1000 / CASES[case][2]
        print(f"{case:<14} {us:>9.1f} {instr:>12,.0f} {per_second:>14.0f}", flush=True)


if __name__ == "__main__":
    main()
