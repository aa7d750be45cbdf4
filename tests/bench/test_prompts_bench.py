"""``tts-gateway bench prompts`` runs end to end on a few calls (the figures: its output)."""

from __future__ import annotations

from gateway.bench.prompts import run_bench


async def test_bench_prompts_measures_uncached_disk_and_cached_runs():
    report = await run_bench(calls=3, spacing_s=0.01, first_audio_ms=150)
    uncached, disk, cached = report["runs"]
    assert [r["mode"] for r in report["runs"]] == ["uncached", "disk", "cached"]
    assert uncached["hits"] == 0 and uncached["p50_ms"] >= 150  # waited for the provider
    for run in (disk, cached):
        assert (run["hits"], run["misses"]) == (3, 0)  # every call played from the cache
        assert run["p50_ms"] < uncached["p50_ms"]
    print(report)
