"""The detector's cheap bookkeeping gives the answers of the plain computations it replaced:
the loudest level played (steps instead of a scan over every note), the background levels in
order (bisection instead of sorting), and the echo path's lag and gain (index arrays made
once instead of a sliding window view, bit for bit)."""

from __future__ import annotations

import random
from collections import deque

import numpy as np

from gateway.core.vad import (ECHO_PATH_MIN_CORRELATION, EchoPath, LevelHistory,
                              LoudestPlayed)


def test_loudest_played_is_the_loudest_note_that_ends_late_enough():
    rng = random.Random(13)
    for _ in range(200):
        loudest, notes, now = LoudestPlayed(), [], 0
        for _ in range(300):
            now += rng.choice((0, 20, 20, 40))
            for _ in range(rng.choice((0, 1, 1, 2, 5))):  # late, early, repeated ends
                until = now + rng.choice((-40, 0, 20, 60, 60, 80, 300))
                rms = rng.choice((0, rng.randrange(1, 200), rng.randrange(0, 20000)))
                loudest.add(until, rms)
                notes.append((until, rms))
            since = now - 500
            assert loudest.since(since) == max(
                (rms for until, rms in notes if until >= since), default=0)


def test_level_history_keeps_the_last_levels_in_order():
    rng = random.Random(7)
    history, plain = LevelHistory(150), deque(maxlen=150)
    for _ in range(3000):
        if rng.random() < 0.05:
            levels = [rng.randrange(0, 500) for _ in range(rng.randrange(1, 20))]
            history.extend(levels)
            plain.extend(levels)
        else:
            level = rng.randrange(0, 500)
            history.append(level)
            plain.append(level)
        assert len(history) == len(plain)
        assert history.ordered() == sorted(plain)


def _reference_learn(path: EchoPath, now: int) -> tuple[int | None, float, float]:
    """EchoPath.learn as first written (sliding window view): (lag, gain, correlation)."""
    span, max_lag, mask = path._span, path._max_lag, path._ring - 1
    first = now - span
    wanted = np.arange(first - max_lag - path.SPREAD, now + path.SPREAD)
    indices = wanted & mask
    played = np.where(np.frombuffer(path._played_at, np.int64)[indices] == wanted,
                      np.frombuffer(path._played)[indices], 0.0)
    spread = np.maximum(np.maximum(played[:-2], played[1:-1]), played[2:])
    line_slots = np.arange(first, now) & mask
    usable = np.frombuffer(path._usable, np.int8)[line_slots].astype(bool)
    if usable.sum() < span // 2:
        return None, 0.0, 0.0
    line = np.frombuffer(path._line)[line_slots][usable]
    log_line = np.log(line + path._eps)
    log_played = np.lib.stride_tricks.sliding_window_view(
        np.log(spread + path._eps), span)[::-1][:, usable]
    a = log_played - log_played.mean(axis=1, keepdims=True)
    b = log_line - log_line.mean()
    norm = np.sqrt((a * a).sum(axis=1) * (b * b).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.where(norm > 0, (a @ b) / norm, 0.0)
    lag = int(np.argmax(correlation))
    played_then = spread[max_lag - lag:max_lag - lag + span][usable]
    loud = played_then >= 8 * path._eps
    if float(correlation[lag]) < ECHO_PATH_MIN_CORRELATION or loud.sum() < span // 10:
        return None, 0.0, float(correlation[lag])
    ratios = line[loud] / played_then[loud]
    high = int(len(ratios) * 0.98)
    return lag, min(path._max_gain, float(np.partition(ratios, high)[high])), float(
        correlation[lag])


def test_echo_path_learns_the_same_lag_and_gain_as_the_sliding_window_view():
    learned = 0
    for seed in range(120):
        rng = np.random.default_rng(seed)
        path = EchoPath(20, 32768 * 10 ** (-55 / 20), 0.1)
        delay, gain = int(rng.integers(0, 14)), rng.uniform(0.001, 0.2)
        # the gateway's words (a smooth level) and the pauses between them
        words = np.repeat(rng.random(100) > 0.35, rng.integers(3, 12, 100))[:600]
        played = np.convolve(rng.uniform(200, 6000, 600), np.ones(4) / 4, "same") * words
        caller_share = 0.25 * (seed % 4)  # windows in the caller's turn teach nothing
        for index in range(600):
            path.played(index + 3, int(played[index]), index)
            heard = played[max(0, index - delay)] * gain + rng.integers(5, 60) * (seed % 3)
            path.heard(index, int(heard), bool(rng.random() >= caller_share))
            now = index + 1
            if now < 170 or now % 37:
                continue
            path.learn(now)
            lag, gain_then, correlation = _reference_learn(path, now)
            assert path.lag == lag
            if lag is not None:
                learned += 1
                assert (path.gain, path.correlation) == (gain_then, correlation)
    assert learned > 100  # most lines here do echo: the comparison covers learned paths
