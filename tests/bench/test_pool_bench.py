"""Smoke test of the warm-pool benchmark (gateway/bench/pool.py).

Tiny numbers, in-process: it must run each provider warm and cold, and the pool's own
counters must show that warm calls leased warm connections and cold calls opened their
own. No timing goal is asserted here: that is the benchmark's job (``make bench-pool``).
"""

from __future__ import annotations

import json

import pytest

from gateway.bench.pool import PROVIDERS, check_mode, format_provider, run_bench
from gateway.cli import main as cli_main

CALLS = 3
RUN_KEYS = {
    "mode", "calls", "min_idle", "ready_ms", "p50_ms", "p95_ms", "max_ms", "min_ms",
    "latencies_ms", "pool_hits", "pool_misses", "pool_opens", "pool_opens_at_start",
    "pool_reconnects", "pool_reconnect_reasons", "pool_failures", "tts_errors",
    "lease_mean_ms", "fake_upgrades", "refill_wait_max_ms", "waves", "elapsed_s",
}


async def test_warm_and_cold_runs_for_every_provider():
    report = await run_bench(PROVIDERS, calls=CALLS, handshake_ms=100, first_audio_ms=50,
                             gap_ms=50)
    assert list(report["providers"]) == list(PROVIDERS)
    assert report["settings"]["calls"] == CALLS and report["settings"]["handshake_ms"] == 100
    for name, result in report["providers"].items():
        assert result["problems"] == [], (name, result["problems"])
        assert result["verdict"] in ("PASS", "FAIL")  # measured; the threshold is the bench's
        warm, cold = result["warm"], result["cold"]
        for run in (warm, cold):
            assert RUN_KEYS <= run.keys(), RUN_KEYS - run.keys()
            assert run["calls"] == CALLS and len(run["latencies_ms"]) == CALLS
            assert all(v > 0 for v in run["latencies_ms"])
            assert run["min_ms"] <= run["p50_ms"] <= run["p95_ms"] <= run["max_ms"]
            assert run["pool_failures"] == 0 and run["tts_errors"] == 0
            assert len(run["waves"]) == CALLS  # sequential: one call per wave
        # warm: every lease found a handshaken connection; the pool was warm before calls
        assert (warm["pool_hits"], warm["pool_misses"]) == (CALLS, 0)
        assert warm["min_idle"] >= 1 and warm["pool_opens_at_start"] >= warm["min_idle"]
        assert all(w == {"hits": 1, "misses": 0} for w in warm["waves"])
        # cold: every lease opened its own connection (the handshake in the call's path)
        assert (cold["pool_hits"], cold["pool_misses"]) == (0, CALLS)
        assert cold["min_idle"] == 0 and cold["pool_opens_at_start"] == 0
        assert cold["pool_opens"] == CALLS and cold["fake_upgrades"] == CALLS
        assert all(w == {"hits": 0, "misses": 1} for w in cold["waves"])
        # the figures are derived from the runs
        assert result["cold_minus_warm_p50_ms"] == pytest.approx(cold["p50_ms"] - warm["p50_ms"],
                                                                 abs=0.01)
        assert result["handshake_hidden"] == pytest.approx(
            result["cold_minus_warm_p50_ms"] / 100, abs=1e-3)
        text = format_provider(result, 100)
        assert "handshake hidden" in text and result["verdict"] in text


def test_a_cold_run_that_leased_warm_connections_is_invalid():
    run = {"mode": "cold", "calls": CALLS, "pool_hits": 1, "pool_misses": CALLS - 1,
           "pool_failures": 0, "tts_errors": 0}
    assert check_mode(run, CALLS) == [f"cold: pool hits/misses rose by 1/{CALLS - 1}, "
                                      f"expected 0/{CALLS}"]
    assert check_mode({**run, "mode": "warm", "pool_hits": CALLS, "pool_misses": 0}, CALLS) == []


def test_cli_bench_pool_prints_the_figures_and_writes_json(tmp_path, capsys):
    out = tmp_path / "pool.json"
    code = cli_main(["bench", "pool", "--calls", "2", "--handshake-ms", "100",
                     "--first-audio-ms", "50", "--gap-ms", "50", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code in (0, 1), printed  # 2 would be an invalid run
    for label in ("first-audio latency p50", "first-audio latency p95",
                  "first-audio latency max", "cold - warm (p50)", "handshake hidden",
                  "pool hits / misses"):
        assert label in printed
    report = json.loads(out.read_text())
    inworld = report["providers"]["inworld"]
    assert inworld["warm"]["pool_hits"] == 2 and inworld["cold"]["pool_misses"] == 2
    assert report["verdict"] == inworld["verdict"]
