"""``tts-gateway bench cluster``: what the control plane on Redis costs, and what
``serve --workers`` gains.

* ``latency``: two instances (``tts-gateway serve`` processes) on a real ``redis-server``, a
  call on the first; ``GET /v1/calls/{id}`` and ``speak`` (with ``interrupt``, so the queue
  never fills), N times each, sent to the instance that holds the call (direct) and to the
  other one (forwarded: a Redis GET, then a loopback HTTP hop). p50/p99 from the client, and
  the forwarding instance's own histogram (``tts_gateway_cluster_forward_seconds``).
* ``redis-ops``: Redis's ``INFO commandstats`` before and after: a quiet cluster (no call:
  operations per heartbeat per instance), then N short calls (operations per call, the
  heartbeats that ran meanwhile included), by command.
* ``machine``: calls per machine, ``serve --workers 2`` against one process, each found by
  a sweep with the load generator (gateway/bench/loadgen.py) on the same machine: the
  criterion of ``tts-gateway bench`` (p99 lateness ≤ 10 ms, no underrun, every call up).
  Nothing is pinned: the workers and the load generator share the cores, and the report
  says how much CPU each took. Heavy: run it on a quiet machine.

Needs ``redis-server`` on PATH for ``latency`` and ``redis-ops`` (``make cluster-tools``);
everything listens on loopback only, and every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from gateway.bench.load import (_quantile, bench_config, free_port, histogram_quantiles,
                                machine, passes, proc_cpu_seconds, wait_ready)

MODES = ("latency", "redis-ops", "machine")
ROUTE = "bench"


# ---- processes ---------------------------------------------------------------------------


class RedisProcess:
    """A ``redis-server`` on a free loopback port, without persistence."""

    def __init__(self, workdir: Path):
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed: run `make cluster-tools`")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"PING\r\n")
                answer = await asyncio.wait_for(reader.read(16), 1.0)
                writer.close()
                if answer.startswith(b"+PONG"):
                    return
            await asyncio.sleep(0.05)
        raise TimeoutError("redis-server did not answer PING")

    def stop(self) -> None:
        _stop(self.proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def instance_config(port: int, redis_url: str, heartbeat_s: float, greeting: str | None = None
                    ) -> dict:
    """An instance with the in-process fake provider, on the cluster of ``redis_url``."""
    route: dict[str, Any] = {"provider": "fake"}
    if greeting:
        route |= {"greeting": greeting, "cache_greeting": False}
    return {
        "server": {"host": "127.0.0.1", "port": port, "drain_timeout_s": 2},
        "providers": {"fake": {"type": "fake", "handshake_ms": 0, "first_audio_ms": 20,
                               "chars_per_second": 15.0}},
        "carriers": ["twilio"],
        "routes": {ROUTE: route},
        "default_route": ROUTE,
        "limits": {"max_connections_per_address": 100000},
        "logging": {"level": "WARNING"},
        "cluster": {"redis_url": redis_url, "instance_url": f"http://127.0.0.1:{port}",
                    "heartbeat_s": heartbeat_s, "ttl_s": max(10.0, 5 * heartbeat_s)},
    }


class Instance:
    """One ``tts-gateway serve`` process."""

    def __init__(self, workdir: Path, name: str, config: dict, args: tuple[str, ...] = ()):
        self.port = config["server"]["port"]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log = open(workdir / f"{name}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), *args],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def stop(self) -> None:
        _stop(self.proc)
        self.log.close()


@contextlib.asynccontextmanager
async def cluster(workdir: Path, count: int, heartbeat_s: float, greeting: str | None = None):
    """A redis-server and ``count`` instances on it, all ready."""
    redis = RedisProcess(workdir)
    started: list[Instance] = []
    try:
        await redis.wait_ready()
        for index in range(count):
            config = instance_config(free_port(), redis.url, heartbeat_s, greeting)
            started.append(Instance(workdir, f"instance-{index}", config))
        for instance in started:
            await wait_ready(instance.url)
        yield redis, started
    finally:
        for instance in started:
            instance.stop()
        redis.stop()


# ---- (a) control latency, direct and forwarded --------------------------------------------


async def _timed(http: aiohttp.ClientSession, method: str, url: str, body: dict | None,
                 requests: int, expect: int) -> list[float]:
    seconds = []
    for _ in range(requests):
        started = time.perf_counter()
        async with http.request(method, url, json=body) as resp:
            await resp.read()
            if resp.status != expect:
                raise RuntimeError(f"{method} {url}: HTTP {resp.status}, expected {expect}")
        seconds.append(time.perf_counter() - started)
    return seconds


def _ms_quantiles(seconds: list[float]) -> dict:
    return {"p50_ms": round(_quantile(seconds, 0.5) * 1000, 3),
            "p99_ms": round(_quantile(seconds, 0.99) * 1000, 3), "requests": len(seconds)}


async def latency(workdir: Path, requests: int, heartbeat_s: float = 2.0) -> dict:
    from gateway.carriers.twilio.sim import TwilioCallSim

    async with cluster(workdir, 2, heartbeat_s) as (_, (owner, other)), \
            aiohttp.ClientSession() as http:
        async with TwilioCallSim(f"{owner.ws_url}/v1/media/twilio/{ROUTE}") as sim:
            call = f"/v1/calls/{sim.call_sid}"
            deadline = time.monotonic() + 15
            while True:  # the call in the directory: the other instance finds it
                async with http.get(other.url + call) as resp:
                    if resp.status == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError("the call did not reach the directory")
                await asyncio.sleep(0.05)
            speak = {"text": "Hi.", "interrupt": True}
            figures: dict[str, Any] = {}
            for op, method, path, body, expect in (("get", "GET", call, None, 200),
                                                   ("speak", "POST", call + "/speak", speak, 202)):
                for route, instance in (("direct", owner), ("forwarded", other)):
                    seconds = await _timed(http, method, instance.url + path, body, requests,
                                           expect)
                    figures[f"{op}_{route}"] = _ms_quantiles(seconds)
            async with http.get(other.url + "/metrics") as resp:
                metrics = await resp.text()
            for op in ("get", "speak"):  # the forwarding instance's own view of the hop
                hop = histogram_quantiles(metrics, "tts_gateway_cluster_forward_seconds", op=op)
                figures[f"{op}_forward_histogram"] = {
                    "p50_ms": None if hop[0.5] is None else round(hop[0.5] * 1000, 3),
                    "p99_ms": None if hop[0.99] is None else round(hop[0.99] * 1000, 3),
                    "count": hop["count"]}
            await sim.hangup()
    return figures


# ---- (b) Redis operations per call and per heartbeat ---------------------------------------


async def commandstats(redis_url: str) -> dict[str, int]:
    """Calls per command so far (this reader's own connection's commands left out: the
    gateways' clients connect once and keep their connections)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {key.removeprefix("cmdstat_"): int(value["calls"]) for key, value in stats.items()
            if key not in _OWN_COMMANDS and not key.startswith("cmdstat_client")}


_OWN_COMMANDS = {"cmdstat_info", "cmdstat_hello"}


def _diff(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {cmd: after[cmd] - before.get(cmd, 0) for cmd in sorted(after)
            if after[cmd] - before.get(cmd, 0)}


async def redis_ops(workdir: Path, calls: int, quiet_s: float, heartbeat_s: float = 2.0,
                    concurrency: int = 5, instances: int = 2) -> dict:
    from gateway.carriers.twilio.sim import TwilioCallSim

    async with cluster(workdir, instances, heartbeat_s, greeting="Hi.") as (redis, started):
        await asyncio.sleep(heartbeat_s)  # past the first writes of start-up
        before = await commandstats(redis.url)
        await asyncio.sleep(quiet_s)
        quiet = _diff(before, await commandstats(redis.url))
        heartbeats = instances * quiet_s / heartbeat_s

        async def one_call(index: int) -> float:
            instance = started[index % instances]
            async with TwilioCallSim(f"{instance.ws_url}/v1/media/twilio/{ROUTE}") as sim:
                opened = time.monotonic()
                await sim.wait_for_mark(timeout=15)  # the greeting played
                await sim.hangup()
                return time.monotonic() - opened

        gate = asyncio.Semaphore(concurrency)

        async def gated(index: int) -> float:
            async with gate:
                return await one_call(index)

        before = await commandstats(redis.url)
        began = time.monotonic()
        lengths = await asyncio.gather(*(gated(i) for i in range(calls)))
        await asyncio.sleep(min(1.0, heartbeat_s))  # the last ends written
        elapsed = time.monotonic() - began
        busy = _diff(before, await commandstats(redis.url))
    return {
        "instances": instances, "heartbeat_s": heartbeat_s,
        "quiet_s": quiet_s, "quiet_ops": quiet,
        "ops_per_heartbeat_per_instance": round(sum(quiet.values()) / heartbeats, 2),
        "calls": calls, "concurrency": concurrency,
        "call_seconds_mean": round(sum(lengths) / len(lengths), 2), "calls_elapsed_s":
        round(elapsed, 2), "calls_ops": busy,
        "ops_per_call": round(sum(busy.values()) / calls, 2),
        "ops_per_call_by_command": {cmd: round(n / calls, 2) for cmd, n in busy.items()},
    }


# ---- (c) calls per machine: --workers 2 against one process -------------------------------


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and its children (a supervisor and its workers)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(entry.name) == root or int(fields[1]) == root:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _free_port_run(count: int) -> int:
    for _ in range(50):
        first = free_port()
        with contextlib.ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return first
    raise RuntimeError("no run of free ports")


async def machine_run(workdir: Path, workers: int, calls: int, duration: float,
                      ramp_per_second: float = 50.0) -> dict:
    """``calls`` full-duplex calls for ``duration`` s into ``serve --workers N`` (or one
    process), the load generator on the same cores."""
    port = free_port()
    ramp = calls / ramp_per_second
    total = ramp + duration
    config = bench_config(port, total + 30, lead_ms=100, audio="mulaw8k")
    config["server"]["drain_timeout_s"] = 2
    args: tuple[str, ...] = ()
    if workers > 1:
        args = ("--workers", str(workers), "--worker-ports", str(_free_port_run(workers)))
    gateway = Instance(workdir, f"machine-{workers}w-{calls}", config, args)
    out = workdir / f"load-{workers}w-{calls}.json"
    try:
        await wait_ready(gateway.url)
        load = subprocess.Popen(  # noqa: ASYNC220 (once, before the measurement)
            [sys.executable, "-m", "gateway.bench.loadgen", "--url", f"ws://127.0.0.1:{port}",
             "--calls", str(calls), "--route", ROUTE, "--duration", str(total),
             "--ramp", str(ramp_per_second), "--measure-from", "1.0", "--json", str(out)],
            stdout=subprocess.DEVNULL)
        await asyncio.sleep(ramp + 1.0)
        t0 = time.monotonic()
        gw0, load0 = tree_cpu_seconds(gateway.proc.pid), proc_cpu_seconds(load.pid)
        await asyncio.sleep(max(1.0, duration - 2.0))
        t1 = time.monotonic()
        gw1, load1 = tree_cpu_seconds(gateway.proc.pid), proc_cpu_seconds(load.pid)
        code = await asyncio.get_running_loop().run_in_executor(None, load.wait, total + 60)
        if code != 0:
            raise RuntimeError(f"the load generator failed with exit code {code}")
        result = json.loads(out.read_text())
    finally:
        gateway.stop()
    ms = lambda v: None if v is None else round(v * 1000, 3)  # noqa: E731
    run = {"workers": workers, "calls": calls, "duration_s": duration,
           "calls_connected": result["calls_connected"], "calls_failed": result["calls_failed"],
           "lateness_p99_ms": ms(result["lateness_p99"]),
           "lateness_max_ms": ms(result["lateness_max"]),
           "underruns_carrier_side": result["underruns"],
           "gateway_cpu_cores": round((gw1 - gw0) / (t1 - t0), 3),
           "load_generator_cpu_cores": round((load1 - load0) / (t1 - t0), 3),
           "load_tick_late_p99_ms": ms(result.get("generator_tick_late_p99"))}
    run["passes"] = passes(run)
    return run


async def machine_sweep(workdir: Path, workers: int, start: int, limit: int, duration: float,
                        deadline: float) -> dict:
    """The most calls ``workers`` carry: double N until a run fails, then bisect to 10 %."""
    runs: list[dict] = []
    good, bad, n = 0, None, start
    while n <= limit and time.monotonic() < deadline:
        run = await machine_run(workdir, workers, n, duration)
        runs.append(run)
        print(f"  workers {workers}, N={n}: lateness p99 {run['lateness_p99_ms']} ms, "
              f"underruns {run['underruns_carrier_side']}, gateway {run['gateway_cpu_cores']} "
              f"cores, load generator {run['load_generator_cpu_cores']} cores -> "
              f"{'PASS' if run['passes'] else 'FAIL'}", flush=True)
        if run["passes"]:
            good = n
            n = n * 2 if bad is None else (good + bad) // 2
        else:
            bad = n
            n = (good + bad) // 2
        if bad is not None and (bad - good <= max(10, good // 10) or n <= good):
            break
    return {"workers": workers, "max_calls": good, "first_failing": bad, "runs": runs}


def machine_model(found: dict[int, dict]) -> dict:
    """What the sweep says about a larger machine: each worker is a whole gateway on its own
    core (nothing shared but the kernel's spreading of connections), so calls per machine
    grow with the cores the workers get, once the load generator is elsewhere."""
    one, two = found.get(1), found.get(2)
    model: dict[str, Any] = {}
    if one and two and one["max_calls"]:
        model["speedup_2_workers"] = round(two["max_calls"] / one["max_calls"], 2)
    if two and two["max_calls"]:
        best = next((r for r in reversed(two["runs"]) if r["passes"]), None)
        if best:
            gw_per_call = best["gateway_cpu_cores"] / best["calls"]
            model["gateway_cores_per_call"] = round(gw_per_call, 6)
            model["load_generator_cores_per_call"] = round(
                best["load_generator_cpu_cores"] / best["calls"], 6)
            # a machine of C cores, the callers elsewhere, at 80 % of each core
            model["calls_per_machine_estimate"] = {
                cores: int(cores * 0.8 / gw_per_call) for cores in (4, 8, 16, 32)}
    model["note"] = ("the load generator ran on the same cores as the workers; on a larger "
                     "machine with the callers elsewhere, calls ≈ workers × one worker's calls "
                     "per core (tts-gateway bench --sweep), as long as each worker has a core "
                     "of its own")
    return model


# ---- the command ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tts-gateway bench cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modes", nargs="*", default=["latency", "redis-ops"],
                        help=f"any of {', '.join(MODES)} (default: latency redis-ops; "
                             "machine is heavy: run it on a quiet machine)")
    parser.add_argument("--requests", type=int, default=2000,
                        help="latency: requests per operation and route")
    parser.add_argument("--calls", type=int, default=100, help="redis-ops: calls placed")
    parser.add_argument("--concurrency", type=int, default=5,
                        help="redis-ops: calls up at once (starts and ends that fall "
                             "together share a write)")
    parser.add_argument("--quiet-s", type=float, default=10.0,
                        help="redis-ops: seconds of a quiet cluster for the heartbeat's cost")
    parser.add_argument("--heartbeat-s", type=float, default=2.0,
                        help="cluster.heartbeat_s of the instances (default: the default)")
    parser.add_argument("--workers", default="1,2", help="machine: worker counts to compare")
    parser.add_argument("--machine-calls", type=int,
                        help="machine: one run of this many calls per worker count, no sweep")
    parser.add_argument("--sweep-start", type=int, default=100)
    parser.add_argument("--sweep-limit", type=int, default=4000)
    parser.add_argument("--duration", type=float, default=12.0,
                        help="machine: seconds measured per run, after the ramp")
    parser.add_argument("--time-budget", type=float, default=600.0,
                        help="machine: no new sweep run after this many seconds")
    parser.add_argument("--json", default="bench-out/bench-cluster.json")
    args = parser.parse_args(argv)
    if set(args.modes) - set(MODES):
        parser.error(f"modes: any of {', '.join(MODES)}")
    if not (1 <= args.requests <= 100000 and 1 <= args.calls <= 10000
            and 1 <= args.concurrency <= 1000):
        parser.error("--requests: 1..100000, --calls: 1..10000, --concurrency: 1..1000")
    report: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tts-bench-cluster-") as tmp:
        workdir = Path(tmp)
        if "latency" in args.modes:
            report["latency"] = figures = asyncio.run(latency(workdir, args.requests,
                                                              args.heartbeat_s))
            print(f"control latency over {args.requests} requests each (ms, p50/p99):")
            for key, value in figures.items():
                if "histogram" not in key:
                    print(f"  {key:>18}: {value['p50_ms']} / {value['p99_ms']}")
            for op in ("get", "speak"):
                hop = figures[f"{op}_forward_histogram"]
                print(f"  {op} forward, the forwarding instance's histogram: "
                      f"{hop['p50_ms']} / {hop['p99_ms']} ({hop['count']} requests)")
        if "redis-ops" in args.modes:
            report["redis_ops"] = ops = asyncio.run(redis_ops(workdir, args.calls, args.quiet_s,
                                                              args.heartbeat_s,
                                                              args.concurrency))
            print(f"Redis operations: {ops['ops_per_heartbeat_per_instance']} per heartbeat per "
                  f"idle instance ({ops['quiet_ops']} in {ops['quiet_s']} s, "
                  f"{ops['instances']} instances); {ops['ops_per_call']} per call "
                  f"({ops['ops_per_call_by_command']}; calls of "
                  f"{ops['call_seconds_mean']} s, heartbeat {ops['heartbeat_s']} s)")
        if "machine" in args.modes:
            counts = [int(w) for w in args.workers.split(",") if w]
            found: dict[int, dict] = {}
            for i, workers in enumerate(counts):
                if args.machine_calls:
                    run = asyncio.run(machine_run(workdir, workers, args.machine_calls,
                                                  args.duration))
                    found[workers] = {"workers": workers, "runs": [run], "first_failing": None,
                                      "max_calls": run["calls"] if run["passes"] else 0}
                    print(f"  workers {workers}, N={run['calls']}: {run}")
                    continue
                budget = (started + args.time_budget - time.monotonic()) / (len(counts) - i)
                found[workers] = asyncio.run(machine_sweep(
                    workdir, workers, args.sweep_start, args.sweep_limit, args.duration,
                    time.monotonic() + budget))
                print(f"  -> {found[workers]['max_calls']} calls with {workers} worker(s)")
            report["machine_calls"] = {"by_workers": found, "model": machine_model(found),
                                       "cores": os.cpu_count(),
                                       "shared_with": "the load generator (one process)"}
            print(f"model: {report['machine_calls']['model']}")
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"JSON written to {args.json} ({report['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
