"""``tts-gateway bench cluster``'s plumbing, in a short smoke run (few requests, few calls,
seconds): the figures are there and sane, not fast (a loaded 2-core machine)."""

from __future__ import annotations

import json

from gateway.bench.cluster import machine_model, tree_cpu_seconds
from gateway.cli import main


def test_latency_and_redis_ops_run_and_report(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "cluster", "latency", "redis-ops", "--requests", "20", "--calls", "4",
                 "--quiet-s", "1", "--heartbeat-s", "0.25", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    latency = report["latency"]
    for key in ("get_direct", "get_forwarded", "speak_direct", "speak_forwarded"):
        assert latency[key]["requests"] == 20 and 0 < latency[key]["p50_ms"] <= \
            latency[key]["p99_ms"]
    # every forwarded request went through the other instance's forwarding (its histogram)
    assert latency["speak_forward_histogram"]["count"] == 20
    assert latency["get_forward_histogram"]["count"] >= 20
    ops = report["redis_ops"]
    # an idle instance refreshes its own record each heartbeat: a SET
    assert ops["quiet_ops"].get("set", 0) >= 1 and ops["ops_per_heartbeat_per_instance"] > 0
    # a call is set when it starts and deleted when it ends
    assert ops["ops_per_call_by_command"]["set"] >= 1
    assert ops["calls_ops"]["del"] >= 1
    assert "Redis operations:" in capsys.readouterr().out


def test_machine_runs_one_and_two_workers_with_the_load_generator(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "cluster", "machine", "--machine-calls", "4", "--duration", "2",
                 "--json", str(out)]) == 0
    found = json.loads(out.read_text())["machine_calls"]
    for workers in ("1", "2"):
        (run,) = found["by_workers"][workers]["runs"]
        assert run["calls_connected"] == 4 and run["underruns_carrier_side"] == 0, run
        assert run["gateway_cpu_cores"] > 0 and run["load_generator_cpu_cores"] > 0
    assert "load generator ran on the same cores" in found["model"]["note"]


def test_the_model_scales_a_passing_run_per_core():
    runs = {1: {"max_calls": 100, "runs": []},
            2: {"max_calls": 180, "runs": [{"passes": True, "calls": 180,
                                            "gateway_cpu_cores": 0.9,
                                            "load_generator_cpu_cores": 0.2}]}}
    model = machine_model(runs)
    assert model["speedup_2_workers"] == 1.8
    assert model["calls_per_machine_estimate"][8] == int(8 * 0.8 / (0.9 / 180))
    assert tree_cpu_seconds(1 << 30) == 0.0  # no such process: nothing counted
