"""The benchmark's TTS provider on a real socket: a faithful fake in a process of its own.

``python -m gateway.bench.provider --kind inworld|deepgram --port P [--cpu 1]`` serves the
fake (``gateway/tts/providers/<type>/fake.py``) on loopback with the timing of the in-process fake
(:mod:`gateway.tts.fake`: handshake 250 ms, first audio 200 ms, 100 ms chunks 4x faster
than real time until 3 s ahead, then at real time) and precomputed audio, so hundreds of
streams cost little more than their frames: Inworld's JSON with base64 audio, Deepgram's
binary frames. The gateway reads them as it would the real providers, so the benchmark's
figure includes what reading a provider's socket costs.

``GET /bench/stats`` tells whether the process kept up: its event loop's lag (how late a
10 ms timer fires: a late timer is a late audio chunk), the sockets and the requests served.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.cli import _fast_loop_factory
from gateway.tts.providers.registry import PROVIDERS

#: The in-process fake's timing model (gateway/tts/fake.py), for the socket fakes.
PROFILE = {"handshake_ms": 250.0, "first_audio_ms": 200.0, "chunk_ms": 100.0,
           "burst_factor": 4.0, "chars_per_second": 15.0, "max_ahead_s": 3.0,
           "precomputed_audio": True, "idle_timeout_s": 3600.0}
#: ``kind`` (a provider type: JSON with base64 audio, binary) -> what its fake needs here
#: beyond the profile: every context a socket may hold, a flush budget no call exhausts
KINDS: dict[str, dict[str, Any]] = {"inworld": {"max_contexts": 5},
                                   "deepgram": {"flush_window_s": 60.0}}
API_KEY = "bench-key"
KEY_ENV = "TTS_BENCH_PROVIDER_KEY"
LAG_TICK_S = 0.01
STATS_PATH = "/bench/stats"


def provider_config(kind: str, port: int, audio: dict) -> dict:
    """The gateway's config for provider ``kind`` served on ``port``, asking for ``audio``
    (``encoding``, ``sample_rate``, as in the bench's AUDIO_FORMATS)."""
    spec = PROVIDERS[kind]
    options = {}
    if audio["encoding"] != "mulaw":  # a μ-law carrier gets μ-law unless told otherwise
        options = {"audio_format": spec.pcm_format, "sample_rate": audio["sample_rate"]}
    share = min(4, spec.share_limit)  # calls per socket, as a deployment would set it
    return {"type": kind, "voice": spec.fake.voice, "api_key_env": KEY_ENV,
            "endpoint": f"ws://127.0.0.1:{port}{spec.path}",
            "options": options,
            "pool": {"min_idle": 2, "max": 5000, "calls_per_connection": share,
                     "acquire_timeout_s": 30.0, "connect_timeout_s": 30.0}}


class ProviderProcess:
    """The provider's process, seen from the bench: start, readiness, CPU, stats."""

    def __init__(self, kind: str, port: int, workdir: Path, preexec_fn=None):
        self.kind = kind
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.bench.provider", "--kind", kind,
             "--port", str(self.port)], preexec_fn=preexec_fn,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
            stderr=open(workdir / f"provider-{kind}-{self.port}.log", "w"))
        self.env = {KEY_ENV: API_KEY}  # for the gateway's process

    async def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {self.kind} provider exited with {self.proc.returncode}")
            try:
                await self.stats()
                return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        raise TimeoutError(f"the {self.kind} provider did not become ready")

    async def stats(self, *, reset: bool = False) -> dict:
        async with aiohttp.ClientSession() as http:
            async with http.get(self.url + STATS_PATH, params={"reset": "1" if reset else "0"}
                                ) as resp:
                return await resp.json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class LoadCore:
    """What the load core (core 1) spent over the measured window: the load generator's
    CPU and, when the provider runs as a process of its own, the provider's, with its
    event loop's lag (``load.load_side`` judges whether the load side kept up)."""

    def __init__(self, load: subprocess.Popen, remote: ProviderProcess | None,
                 cpu_seconds: Callable[[int], float]):
        self.procs = {"generator": load, **({"provider": remote.proc} if remote else {})}
        self.remote = remote
        self.cpu_seconds = cpu_seconds
        self.cpu: dict[str, float] = {}
        self.began = self.seconds = 0.0
        self.stats: dict = {}

    def _cpu(self) -> dict[str, float]:
        out = {}
        for name, proc in self.procs.items():
            try:
                out[name] = self.cpu_seconds(proc.pid)
            except (OSError, IndexError, ValueError):  # it ended early: /proc is gone
                out[name] = float("nan")
        return out

    async def begin(self) -> None:
        if self.remote is not None:
            await self.remote.stats(reset=True)
        self.cpu, self.began = self._cpu(), time.monotonic()

    async def end(self) -> None:
        spent, self.seconds = self._cpu(), time.monotonic() - self.began
        self.cpu = {name: spent[name] - self.cpu[name] for name in spent}
        if self.remote is not None:
            self.stats = await self.remote.stats()

    def report(self) -> dict:
        percent = {name: round(100 * cpu / self.seconds, 1) if self.seconds else None
                   for name, cpu in self.cpu.items()}
        total = sum(p for p in percent.values() if p is not None and p == p)
        return {
            "load_core_cpu_percent": round(total, 1),
            "generator_cpu_percent_of_core": percent.get("generator"),
            "provider_cpu_percent_of_core": percent.get("provider"),
            "provider_lag_p50_ms": self.stats.get("lag_p50_ms"),
            "provider_lag_p99_ms": self.stats.get("lag_p99_ms"),
            "provider_lag_max_ms": self.stats.get("lag_max_ms"),
            "provider_requests": self.stats.get("requests"),
            "provider_connections": self.stats.get("connections"),
        }


def load_core_line(run: dict) -> str:
    """One line on the load core, for the bench's printed summary."""
    line = f"load core {run['load_core_cpu_percent']} % CPU"
    if run["provider"] != "inprocess":
        line += (f" (provider {run['provider_cpu_percent_of_core']} %, loop lag p99/max "
                 f"{run['provider_lag_p99_ms']}/{run['provider_lag_max_ms']} ms)")
    return line


class LagMonitor:
    """How late a ``LAG_TICK_S`` timer fires, in a bounded histogram of 0.25 ms bins."""

    BIN_MS = 0.25
    BINS = 4000  # the last bin: a second or more

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.max_ms = 0.0
        self.reset()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_TICK_S
            await asyncio.sleep(LAG_TICK_S)
            lag_ms = max(0.0, loop.time() - due) * 1000
            self.max_ms = max(self.max_ms, lag_ms)
            self.counts[min(self.BINS, int(lag_ms / self.BIN_MS))] += 1

    def reset(self) -> None:
        self.counts = [0] * (self.BINS + 1)
        self.max_ms = 0.0

    def quantile_ms(self, q: float) -> float | None:
        """The upper bound of the bin holding quantile ``q`` (never above the maximum)."""
        total = sum(self.counts)
        if not total:
            return None
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= q * total:
                bound = self.max_ms if i == self.BINS else (i + 1) * self.BIN_MS
                return round(min(bound, self.max_ms), 2)
        return round(self.max_ms, 2)


def make_app(kind: str) -> web.Application:
    fake = PROVIDERS[kind].load_fake()
    app = fake.make_app(**{**PROFILE, **KINDS[kind], "api_key": API_KEY})
    monitor = LagMonitor()

    async def stats(request: web.Request) -> web.Response:
        if request.query.get("reset") == "1":  # the start of the measured window
            monitor.reset()
        return web.json_response({
            "kind": kind, "pid": os.getpid(),
            "connections": app["stats"].connections, "open": app["stats"].open,
            "requests": len(app["log"]),
            "lag_p50_ms": monitor.quantile_ms(0.5), "lag_p99_ms": monitor.quantile_ms(0.99),
            "lag_max_ms": round(monitor.max_ms, 2)})

    async def start_monitor(app: web.Application) -> None:
        task = asyncio.get_running_loop().create_task(monitor.run())
        app.on_cleanup.append(lambda _: _cancel(task))

    app.router.add_get(STATS_PATH, stats)
    app.on_startup.append(start_monitor)
    return app


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.bench.provider",
                                     description="A fake TTS provider for the benchmark.")
    parser.add_argument("--kind", choices=sorted(KINDS), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpu", type=int, help="pin this process to this CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    factory = _fast_loop_factory()  # uvloop, like the gateway and the load generator
    web.run_app(make_app(args.kind), host="127.0.0.1", port=args.port, print=None,
                access_log=None, loop=factory() if factory else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
