"""``tts-gateway bench pool``: what the warm connection pool buys a call's first utterance.

Issue acceptance: first-audio latency of a call's first utterance with the pool warm versus
a cold connection, against a fake provider with a 250 ms handshake: the pool should hide
at least 95 % of the handshake.

For each provider (the faithful fake in its folder, ``gateway/tts/providers/<type>/fake.py``,
on loopback, with ``handshake_ms`` before the connection is usable and a fixed
``first_audio_ms``), a real gateway runs in-process twice, on a route whose greeting is
one short sentence that is never cached (every call synthesizes it):

* **warm**: ``pool.min_idle`` >= the concurrency; the run starts once ``/readyz`` is 200
  (each pool holds ``min_idle`` handshaken connections), and before each call (or wave of
  calls) it waits until the pool is topped up again (``tts_gateway_pool_connections``
  idle >= ``min_idle``; the wait beyond the gap is reported), and once more after the last
  call, so the gateway never stops while a replacement is still handshaking;
* **cold**: ``pool.min_idle: 0``, so each call's lease opens a fresh connection: the
  handshake is in the call's path.

A call is a :class:`gateway.carriers.twilio.sim.TwilioCallSim` call; its latency is the time from
the moment the simulator sent ``start`` to the first media frame it received (the first
utterance). The caller hangs up at that frame, which leaves the connection mid-turn, so
the pool closes it on release and it is never reused: a cold run stays cold. The pool's
own counters (``/metrics``) prove it: a warm run must show N hits and no miss, a cold run
N misses and no hit; otherwise the run is INVALID (exit code 2).

Figures: p50/p95/max of each run, cold - warm at p50, and
``handshake hidden = (cold_p50 - warm_p50) / handshake``, PASS at >= 95 %. Only loopback
addresses are used; every wait is bounded.

Run: ``tts-gateway bench pool [--provider <type>|all]
[--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from gateway.config import parse_config
from gateway.http.app import create_app
from gateway.http.loopback import serve_on_loopback
from gateway.carriers.twilio.sim import CallClosedError, TwilioCallSim
from gateway.tts.providers.registry import PROVIDERS as ALL_PROVIDERS

__all__ = ["GOAL_HIDDEN", "PROVIDERS", "main", "run_bench"]

#: Share of the handshake the warm pool must take out of the first-audio latency.
GOAL_HIDDEN = 0.95
#: The providers whose fake profile says ``pool_bench`` (see :class:`FakeProfile`).
PROVIDERS = tuple(name for name, spec in ALL_PROVIDERS.items() if spec.fake.pool_bench)
ROUTE = "bench"
#: One short sentence (about 3 s of speech at the fakes' 15 chars/s): the provider is
#: still streaming it when the caller hangs up at the first frame.
GREETING = "Hello, and thank you for calling. How can I help?"
API_KEY = "bench-pool-key"
API_KEY_ENV = "TTS_BENCH_POOL_KEY"
CALL_TIMEOUT_S = 10.0  # connect, first media
REFILL_TIMEOUT_S = 5.0  # a warm pool tops up within a handshake or two
END_TIMEOUT_S = 5.0  # the gateway notices a hang-up within milliseconds


class InvalidRun(AssertionError):
    """A run did not measure what it claims (e.g. a "cold" call leased a warm connection)."""


# -- figures ----------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (no interpolation: every figure is a measured call)."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def sample(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for label_text, value in re.findall(r"^" + re.escape(name) + r"(?:\{([^}]*)\})? (\S+)$",
                                        text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', label_text or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def reconnect_reasons(text: str, provider: str) -> dict[str, float]:
    """``tts_gateway_pool_reconnects_total`` of one provider, by reason."""
    out: dict[str, float] = {}
    for label_text, value in re.findall(r"^tts_gateway_pool_reconnects_total\{([^}]*)\} (\S+)$",
                                        text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if labels.get("provider") == provider:
            out[labels.get("reason", "")] = float(value)
    return out


def pool_counters(text: str, provider: str) -> dict[str, float]:
    """The pool's counters for one provider, from a /metrics exposition."""
    return {
        "hits": sample(text, "tts_gateway_pool_hits_total", provider=provider),
        "misses": sample(text, "tts_gateway_pool_misses_total", provider=provider),
        "opens": sample(text, "tts_gateway_pool_opens_total", provider=provider),
        "failures": sample(text, "tts_gateway_pool_failures_total", provider=provider),
        "reconnects": sample(text, "tts_gateway_pool_reconnects_total", provider=provider),
        "acquire_count": sample(text, "tts_gateway_pool_acquire_seconds_count", provider=provider),
        "acquire_sum": sample(text, "tts_gateway_pool_acquire_seconds_sum", provider=provider),
        "tts_errors": sample(text, "tts_gateway_tts_errors_total", provider=provider),
    }


def _ms(seconds: float | None, digits: int = 1) -> float | None:
    return None if seconds is None else round(seconds * 1000, digits)


# -- one gateway, one run ---------------------------------------------------------------------


def gateway_config(provider: str, endpoint: str, voice: str, *, min_idle: int,
                   max_connections: int) -> dict:
    return {
        "server": {"host": "127.0.0.1", "port": 0},
        "providers": {provider: {
            "type": provider, "api_key_env": API_KEY_ENV, "endpoint": endpoint, "voice": voice,
            "pool": {"min_idle": min_idle, "max": max_connections},
        }},
        "carriers": ["twilio"],
        "routes": {ROUTE: {"provider": provider, "greeting": GREETING, "cache_greeting": False}},
        "limits": {"max_calls": 1000},
        "logging": {"level": "WARNING"},
    }


class _Gateway:
    """A real gateway app on a loopback port, with an HTTP client for its probes."""

    def __init__(self, http: aiohttp.ClientSession, base: str):
        self.http = http
        self.base = base

    async def readyz(self) -> tuple[int, dict]:
        async with self.http.get(self.base + "/readyz") as resp:
            return resp.status, await resp.json()

    async def metrics(self) -> str:
        async with self.http.get(self.base + "/metrics") as resp:
            if resp.status != 200:
                raise InvalidRun(f"/metrics answered HTTP {resp.status}")
            return await resp.text()

    async def wait(self, what: str, predicate, timeout: float, poll: float = 0.01) -> float:
        """Poll ``predicate()`` (async) until true; return the seconds waited."""
        started = time.monotonic()
        deadline = started + timeout
        while not await predicate():
            if time.monotonic() > deadline:
                raise InvalidRun(f"timed out after {timeout:.1f} s waiting for {what}")
            await asyncio.sleep(poll)
        return time.monotonic() - started

    async def ready(self) -> bool:
        return (await self.readyz())[0] == 200

    async def no_calls(self) -> bool:
        return (await self.readyz())[1].get("active_calls", 1) == 0

    async def idle(self, provider: str) -> float:
        return sample(await self.metrics(), "tts_gateway_pool_connections",
                      provider=provider, state="idle")

    async def topped_up(self, provider: str, min_idle: int) -> float:
        """Wait until the pool holds ``min_idle`` idle connections; the seconds waited."""
        async def full() -> bool:
            return await self.idle(provider) >= min_idle

        return await self.wait(f"{provider}: pool idle >= {min_idle}", full, REFILL_TIMEOUT_S)


async def _one_call(url: str) -> float:
    """One Twilio call: the seconds from ``start`` to its first media frame; then hang up."""
    sim = TwilioCallSim(url, connect_timeout=CALL_TIMEOUT_S)
    async with sim:
        await sim.wait_for_media(frames=1, timeout=CALL_TIMEOUT_S)
    result = sim.result
    if result.violations:
        raise InvalidRun(f"call {result.call_sid}: carrier protocol violations "
                         f"{result.violations[:3]}")
    latency = result.first_audio_latency
    if latency is None:
        raise InvalidRun(f"call {result.call_sid}: no first media frame recorded")
    return latency


async def run_mode(provider: str, fake_app, fake_port: int, mode: str, *, calls: int,
                   concurrency: int, gap_s: float) -> dict:
    """``calls`` calls into a fresh gateway whose pool is ``warm`` or ``cold``."""
    spec = ALL_PROVIDERS[provider]
    warm = mode == "warm"
    min_idle = concurrency if warm else 0
    config = parse_config(
        gateway_config(provider, f"ws://127.0.0.1:{fake_port}{spec.path}", spec.fake.voice,
                       min_idle=min_idle, max_connections=max(4, 4 * concurrency)),
        {API_KEY_ENV: API_KEY}, source=f"bench pool ({provider}, {mode})")
    stats = fake_app["stats"]
    upgrades_before = stats.connections
    started = time.monotonic()
    app = create_app(config)
    runner, port = await serve_on_loopback(app)
    latencies: list[float] = []
    refill_waits: list[float] = []
    waves: list[dict] = []
    try:
        async with aiohttp.ClientSession() as http:
            gw = _Gateway(http, f"http://127.0.0.1:{port}")
            ready_s = await gw.wait("/readyz 200 (pool warm)", gw.ready, 30.0)
            text = await gw.metrics()
            before = pool_counters(text, provider)
            reasons_before = reconnect_reasons(text, provider)
            ws_url = f"ws://127.0.0.1:{port}/v1/media/twilio/{ROUTE}"
            done = 0
            while done < calls:
                if done:
                    await asyncio.sleep(gap_s)
                if warm:  # the pool refills behind each lease; a warm call needs it full
                    refill_waits.append(await gw.topped_up(provider, min_idle))
                n = min(concurrency, calls - done)
                wave_before = pool_counters(await gw.metrics(), provider)
                latencies += await asyncio.gather(*(_one_call(ws_url) for _ in range(n)))
                await gw.wait("the gateway to end the calls", gw.no_calls, END_TIMEOUT_S)
                wave_after = pool_counters(await gw.metrics(), provider)
                waves.append({k: int(wave_after[k] - wave_before[k]) for k in ("hits", "misses")})
                done += n
            if warm:  # let the last replacement finish before the gateway stops
                await gw.topped_up(provider, min_idle)
            text = await gw.metrics()
            after = pool_counters(text, provider)
            reasons = {k: int(v - reasons_before.get(k, 0))
                       for k, v in reconnect_reasons(text, provider).items()
                       if v - reasons_before.get(k, 0)}
    finally:
        await runner.cleanup()
    delta = {k: after[k] - before[k] for k in after}
    leases = delta["acquire_count"]
    return {
        "mode": mode,
        "calls": len(latencies),
        "min_idle": min_idle,
        "ready_ms": _ms(ready_s),
        "p50_ms": _ms(quantile(latencies, 0.50), 2),
        "p95_ms": _ms(quantile(latencies, 0.95), 2),
        "max_ms": _ms(max(latencies), 2),
        "min_ms": _ms(min(latencies), 2),
        "latencies_ms": [_ms(v, 2) for v in latencies],
        # from ready to the end of the calls (warm: and the pool topped up again)
        "pool_hits": int(delta["hits"]),
        "pool_misses": int(delta["misses"]),
        "pool_opens": int(delta["opens"]),
        "pool_opens_at_start": int(before["opens"]),
        "pool_reconnects": int(delta["reconnects"]),
        "pool_reconnect_reasons": reasons,
        "pool_failures": int(delta["failures"]),
        "tts_errors": int(delta["tts_errors"]),
        "lease_mean_ms": _ms(delta["acquire_sum"] / leases, 2) if leases else None,
        "fake_upgrades": stats.connections - upgrades_before,
        "refill_wait_max_ms": _ms(max(refill_waits), 1) if refill_waits else None,
        "waves": waves,
        "elapsed_s": round(time.monotonic() - started, 2),
    }


def check_mode(run: dict, calls: int) -> list[str]:
    """Why the run does not measure what it claims ([] if it does)."""
    problems = []
    mode = run["mode"]
    if run["calls"] != calls:
        problems.append(f"{mode}: {run['calls']} of {calls} calls measured")
    want_hits, want_misses = (calls, 0) if mode == "warm" else (0, calls)
    if (run["pool_hits"], run["pool_misses"]) != (want_hits, want_misses):
        problems.append(f"{mode}: pool hits/misses rose by {run['pool_hits']}/"
                        f"{run['pool_misses']}, expected {want_hits}/{want_misses}")
    if run["pool_failures"] or run["tts_errors"]:
        problems.append(f"{mode}: {run['pool_failures']} pool failures, "
                        f"{run['tts_errors']} TTS errors")
    return problems


async def run_provider(provider: str, *, calls: int = 20, handshake_ms: float = 250.0,
                       first_audio_ms: float = 100.0, gap_ms: float = 200.0,
                       concurrency: int = 1) -> dict:
    """Warm then cold against one fake; the figures and the verdict."""
    fake_app = ALL_PROVIDERS[provider].load_fake().make_app(
        api_key=API_KEY, handshake_ms=handshake_ms, first_audio_ms=first_audio_ms)
    fake_runner, fake_port = await serve_on_loopback(fake_app)
    runs: dict[str, dict | None] = {"warm": None, "cold": None}
    problems: list[str] = []
    try:
        for mode in runs:
            try:
                run = await run_mode(provider, fake_app, fake_port, mode, calls=calls,
                                     concurrency=concurrency, gap_s=gap_ms / 1000)
            except (InvalidRun, CallClosedError, TimeoutError, aiohttp.ClientError) as exc:
                problems.append(f"{mode}: the run broke off: {type(exc).__name__}: {exc}")
                break
            runs[mode] = run
            problems += check_mode(run, calls)
    finally:
        await fake_runner.cleanup()
    warm, cold = runs["warm"], runs["cold"]
    if warm is None or cold is None:
        return {"provider": provider, "warm": warm, "cold": cold,
                "cold_minus_warm_p50_ms": None, "cold_over_warm_p50": None,
                "handshake_hidden": None, "verdict": "INVALID", "problems": problems}
    saved = cold["p50_ms"] - warm["p50_ms"]
    hidden = saved / handshake_ms if handshake_ms else None
    verdict = ("INVALID" if problems else
               "PASS" if hidden is not None and hidden >= GOAL_HIDDEN else "FAIL")
    return {
        "provider": provider,
        "warm": warm,
        "cold": cold,
        "cold_minus_warm_p50_ms": round(saved, 2),
        "cold_over_warm_p50": round(cold["p50_ms"] / warm["p50_ms"], 2) if warm["p50_ms"] else None,
        "handshake_hidden": None if hidden is None else round(hidden, 4),
        "verdict": verdict,
        "problems": problems,
    }


async def run_bench(providers: list[str] | tuple[str, ...] = ("inworld",), *, calls: int = 20,
                    handshake_ms: float = 250.0, first_audio_ms: float = 100.0,
                    gap_ms: float = 200.0, concurrency: int = 1, echo=None) -> dict:
    """The whole benchmark; ``echo(result)`` is called after each provider (printing)."""
    if calls < 1 or concurrency < 1:
        raise ValueError("calls and concurrency must be at least 1")
    started = time.monotonic()
    report: dict[str, Any] = {
        "settings": {"calls": calls, "handshake_ms": handshake_ms,
                     "first_audio_ms": first_audio_ms, "gap_ms": gap_ms,
                     "concurrency": concurrency, "greeting": GREETING,
                     "goal_handshake_hidden": GOAL_HIDDEN},
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0]},
        "providers": {},
    }
    for provider in providers:
        result = await run_provider(provider, calls=calls, handshake_ms=handshake_ms,
                                    first_audio_ms=first_audio_ms, gap_ms=gap_ms,
                                    concurrency=concurrency)
        report["providers"][provider] = result
        if echo:
            echo(result)
    verdicts = [r["verdict"] for r in report["providers"].values()]
    report["verdict"] = ("INVALID" if "INVALID" in verdicts else
                         "FAIL" if "FAIL" in verdicts else "PASS")
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    return report


# -- output -----------------------------------------------------------------------------------


def format_provider(result: dict, handshake_ms: float) -> str:
    warm, cold = result["warm"], result["cold"]
    if warm is None or cold is None:
        return "\n".join([f"{result['provider']}: INVALID"]
                         + [f"  INVALID: {problem}" for problem in result["problems"]])

    def row(label: str, w: Any, c: Any, unit: str = "") -> str:
        return f"  {label:<40} {w!s:>10} {c!s:>10}  {unit}"

    lines = [
        f"{result['provider']}",
        row("", "warm", "cold"),
        row("pool.min_idle", warm["min_idle"], cold["min_idle"]),
        row("calls measured", warm["calls"], cold["calls"]),
        row("first-audio latency p50", warm["p50_ms"], cold["p50_ms"], "ms"),
        row("first-audio latency p95", warm["p95_ms"], cold["p95_ms"], "ms"),
        row("first-audio latency max", warm["max_ms"], cold["max_ms"], "ms"),
        row("lease time, mean (gateway)", warm["lease_mean_ms"], cold["lease_mean_ms"], "ms"),
        row("pool hits / misses", f"{warm['pool_hits']} / {warm['pool_misses']}",
            f"{cold['pool_hits']} / {cold['pool_misses']}"),
        row("pool opens (during run; before ready)",
            f"{warm['pool_opens']}; {warm['pool_opens_at_start']}",
            f"{cold['pool_opens']}; {cold['pool_opens_at_start']}"),
        row("pool failures", warm["pool_failures"], cold["pool_failures"]),
        row("pool reconnects (connections replaced)", _reasons(warm), _reasons(cold)),
        row("fake provider upgrades", warm["fake_upgrades"], cold["fake_upgrades"]),
        row("refill wait beyond the gap, max", warm["refill_wait_max_ms"], "-", "ms"),
        row("ready after", warm["ready_ms"], cold["ready_ms"], "ms"),
        f"  {'cold - warm (p50)':<40} {result['cold_minus_warm_p50_ms']:>10} ms   "
        f"(cold/warm {result['cold_over_warm_p50']}x)",
    ]
    hidden = result["handshake_hidden"]
    shown = "-" if hidden is None else f"{hidden * 100:.1f} %"
    lines.append(f"  {'handshake hidden (of ' + f'{handshake_ms:g} ms)':<40} {shown:>10}      "
                 f"goal >= {GOAL_HIDDEN * 100:.0f} %  -> {result['verdict']}")
    for problem in result["problems"]:
        lines.append(f"  INVALID: {problem}")
    return "\n".join(lines)


def _reasons(run: dict) -> str:
    reasons = run["pool_reconnect_reasons"]
    return " ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tts-gateway bench pool",
        description="First-audio latency of a call's first utterance, warm pool vs cold "
                    "connection, against local provider fakes with a handshake delay.")
    parser.add_argument("--provider", choices=[*PROVIDERS, "all"], default="inworld")
    parser.add_argument("--calls", type=int, default=20, help="calls per run (warm, cold)")
    parser.add_argument("--handshake-ms", type=float, default=250.0,
                        help="the fake's delay before its connection is usable")
    parser.add_argument("--first-audio-ms", type=float, default=100.0,
                        help="the fake's time from text to first audio")
    parser.add_argument("--gap-ms", type=float, default=200.0,
                        help="pause between calls (the warm pool refills behind each lease)")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="calls placed at once (warm pool.min_idle is this)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.concurrency < 1:
        parser.error("--calls and --concurrency must be at least 1")
    if args.handshake_ms <= 0:
        parser.error("--handshake-ms must be positive (it is what the pool hides)")
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    providers = list(PROVIDERS) if args.provider == "all" else [args.provider]
    mode = "sequential" if args.concurrency == 1 else f"{args.concurrency} at a time"
    print(f"pool bench: fake provider handshake {args.handshake_ms:g} ms, first audio "
          f"{args.first_audio_ms:g} ms; {args.calls} calls per run, {mode}, gap "
          f"{args.gap_ms:g} ms\nlatency: simulator sends 'start' -> first media frame of the "
          f"greeting (never cached)\n", flush=True)

    def echo(result: dict) -> None:
        print(format_provider(result, args.handshake_ms) + "\n", flush=True)

    report = _run(run_bench(providers, calls=args.calls, handshake_ms=args.handshake_ms,
                            first_audio_ms=args.first_audio_ms, gap_ms=args.gap_ms,
                            concurrency=args.concurrency, echo=echo))
    summary = ", ".join(
        f"{name} " + ("-" if r["handshake_hidden"] is None else
                      f"{r['handshake_hidden'] * 100:.1f} %") + f" {r['verdict']}"
        for name, r in report["providers"].items())
    print(f"handshake hidden: {summary} -> {report['verdict']} ({report['elapsed_s']} s, "
          f"{report['machine']['event_loop']})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"JSON written to {args.json}")
    return {"PASS": 0, "FAIL": 1}.get(report["verdict"], 2)


def _run(coro):
    """Run on uvloop when it is installed, like ``tts-gateway serve``."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


if __name__ == "__main__":
    sys.exit(main())
