"""Smoke test of the audio-quality benchmark (gateway/bench/quality.py).

The full benchmark (all rates, ~30 s of speech) is run by hand; here one rate of the
resampler table, and PESQ of one short utterance through the live path.
"""

from __future__ import annotations

import math

import pytest

from gateway.bench.quality import GOALS, resampler_table, run_pesq

ROW_KEYS = {
    "in_rate", "out_rate", "method", "label", "rejection_5k_db", "rejection_7k_db",
    "passband_min_db", "passband_max_db", "delay_ms", "first_chunk_output_ms",
    "first_output_after_ms", "max_held_back_ms", "latency_ms", "cpu_us_per_20ms", "fails",
}


def test_resampler_table_for_one_rate():
    rows = resampler_table(rates=(22050,), cpu_calls=20)
    assert [r["method"] for r in rows] == ["ours", "ratecv", "soxr"]
    for row in rows:
        assert ROW_KEYS <= row.keys(), ROW_KEYS - row.keys()
        assert (row["in_rate"], row["out_rate"]) == (22050, 8000)
        assert row["cpu_us_per_20ms"] > 0
        assert math.isclose(row["latency_ms"], row["delay_ms"] + row["max_held_back_ms"],
                            abs_tol=1e-2)
    ours, ratecv, soxr = rows
    # ours meets every goal
    assert ours["fails"] == []
    assert min(ours["rejection_5k_db"], ours["rejection_7k_db"]) >= GOALS["rejection_db"]
    assert ours["latency_ms"] <= GOALS["latency_ms"]
    assert abs(ours["delay_ms"] - ours["declared_delay_ms"]) < 0.02
    assert ours["max_held_back_ms"] == 0.0 and ours["first_chunk_output_ms"] == 20.0
    assert max(abs(ours["passband_min_db"]), abs(ours["passband_max_db"])) <= GOALS["ripple_db"]
    # ratecv has no anti-alias filter: a 5 kHz tone comes out nearly as loud as 1 kHz
    assert "rejection" in ratecv["fails"]
    assert ratecv["rejection_5k_db"] < 20
    # soxr filters well but holds input back far beyond 5 ms when fed 20 ms chunks
    assert "rejection" not in soxr["fails"]
    assert soxr["first_chunk_output_ms"] == 0.0
    assert "latency" in soxr["fails"]


async def test_pesq_of_the_live_path_for_one_utterance():
    report = await run_pesq(["Your order has shipped and will arrive on Tuesday morning."])
    (utt,) = report["utterances"]
    assert utt["live_equals_offline"]  # what the caller heard is our transcoder's output
    assert utt["live"]["offset_ms"] == pytest.approx(2.38, abs=0.05)
    assert utt["live"]["pesq"] >= 4.0
    assert report["underruns"] == 0 and report["violations"] == []
