"""``tts-gateway bench``: latency, calls per core and barge-in, measured end to end.

A gateway runs as its own process pinned to core 0, with a fake TTS provider of realistic
timing (handshake 250 ms, first audio 200 ms, 24 kHz audio in bursts 4x faster than real
time). A lean load generator pinned to core 1 places N full-duplex Twilio calls on
loopback (caller audio at 50 frames/s in, paced audio out, marks echoed), interrupts some
calls near the end, and measures at the carrier side. The gateway's own latencies come
from its Prometheus histograms; its CPU and memory from /proc.

With ``--bot`` every call is a full bot call: the route names a bot (the gateway dials a
loopback bot in the load generator's process, gateway/bench/botserver.py, and streams it
the caller's audio as l16/16000) and barge-in by voice, so the voice activity detector runs
on every caller frame. The callers send a quiet line's noise, which must not barge in.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from gateway.bench import provider as socket_provider

GOALS = {
    "gateway_added_p50_ms": 1.0,
    "gateway_added_p99_ms": 5.0,
    "lateness_p99_ms": 10.0,
    "barge_in_ms": 40.0,
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# What the fake provider sends: 24 kHz PCM (Together, or any provider asked for PCM) is
# resampled and encoded by the gateway; μ-law 8 kHz (Inworld, ElevenLabs, Cartesia, Deepgram,
# Uplift can send it) passes straight through.
AUDIO_FORMATS = {"pcm24k": {"encoding": "pcm_s16le", "sample_rate": 24000},
                 "mulaw8k": {"encoding": "mulaw", "sample_rate": 8000}}


#: Where the provider runs: the in-process generator (gateway/tts/fake.py), or a faithful
#: fake in a process of its own on the load core, read over a real socket like the real one.
PROVIDER_MODES = ("inprocess", *socket_provider.KINDS)


def bench_config(port: int, seconds_of_speech: float, lead_ms: int,
                 audio: str = "pcm24k", provider: str = "inprocess",
                 provider_port: int | None = None) -> dict:
    if provider == "inprocess":
        providers = {"fake": {"type": "fake", "handshake_ms": 250, "first_audio_ms": 200,
                              "burst_factor": 4.0, "chars_per_second": 15.0,
                              **AUDIO_FORMATS[audio]}}
    else:
        assert provider_port is not None, "a provider process has a port"
        providers = {provider: socket_provider.provider_config(provider, provider_port,
                                                               AUDIO_FORMATS[audio])}
    return {
        "server": {"host": "127.0.0.1", "port": port},
        "providers": providers,
        "carriers": ["twilio"],
        # one long greeting keeps every call speaking for the whole measurement
        "routes": {"bench": {
            "provider": next(iter(providers)), "cache_greeting": False,
            "greeting": "Thank you for calling. " * int(seconds_of_speech * 15 / 23 + 1)}},
        "playout": {"lead_ms": lead_ms},
        # every simulated call comes from 127.0.0.1
        "limits": {"max_calls": 100000, "max_text_chars": 1000000,
                   "max_connections_per_address": 100000},
        "logging": {"level": "WARNING"},
    }


BOT_SECRET_ENV = "TTS_BENCH_BOT_SECRET"
BOT_PATH = "/bot"
BOT_AUDIO = "l16/16000"
BOT_AUDIO_BYTES_PER_MS = 32  # l16/16000


def with_bot(config: dict, bot_port: int, packet_ms: int = 20) -> dict:
    """The bench's route as a bot call: the gateway dials the loopback bot for every call
    (signed with the secret in BOT_SECRET_ENV), sends it the caller's audio in packets of
    ``packet_ms``, and listens to the caller for barge-in."""
    route = config["routes"]["bench"]
    route["bot"] = {"url": f"ws://127.0.0.1:{bot_port}{BOT_PATH}", "audio": BOT_AUDIO,
                    "audio_packet_ms": packet_ms, "secret_env": BOT_SECRET_ENV,
                    "connect_timeout_ms": 5000}
    route["barge_in"] = {"mode": "speech"}
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def proc_rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def histogram_quantiles(metrics: str, name: str, quantiles=(0.5, 0.99), **labels) -> dict:
    """Quantiles from a Prometheus histogram, interpolated within buckets like
    histogram_quantile()."""
    want = "".join(f',{k}="{v}"' for k, v in labels.items())
    buckets = []
    for match in re.finditer(r'^' + re.escape(name) + r'_bucket\{(.*)\} (\S+)$', metrics, re.M):
        label_text, value = match.groups()
        le_match = re.search(r'le="([^"]+)"', label_text)
        if le_match is None:  # every bucket has an le label
            continue
        le = le_match.group(1)
        rest = re.sub(r',?le="[^"]+"', "", label_text)
        if want and want.lstrip(",") != rest.lstrip(","):
            continue
        buckets.append((float(le), float(value)))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return {q: None for q in quantiles} | {"count": 0}
    total = buckets[-1][1]
    out: dict[Any, float | None] = {"count": int(total)}
    for q in quantiles:
        rank = q * total
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in buckets:
            if count >= rank:
                if bound == float("inf"):
                    out[q] = lower_bound
                else:
                    fraction = ((rank - lower_count) / (count - lower_count)
                                if count > lower_count else 1)
                    out[q] = lower_bound + (bound - lower_bound) * fraction
                break
            lower_bound, lower_count = bound, count
    return out


def counter_total(metrics: str, name: str) -> float:
    return sum(float(v) for v in re.findall(r'^' + re.escape(name) + r'(?:\{[^}]*\})? (\S+)$',
                                            metrics, re.M))


def pin(cpu: int | None):
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


async def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError("the gateway did not become ready")


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/metrics") as resp:
            return await resp.text()


async def run_once(calls: int, duration: float, *, lead_ms: int = 100, pinned: bool = True,
                   audio: str = "pcm24k", provider: str = "inprocess", bot: bool = False,
                   bot_packet_ms: int = 20,
                   ramp_per_second: float = 100.0, interrupt_fraction: float = 0.1,
                   workdir: Path) -> dict:
    """One measurement: N calls for ``duration`` seconds after they are all up."""
    cpus = os.cpu_count() or 1
    pinned = pinned and cpus >= 2
    port = free_port()
    ramp = calls / ramp_per_second
    total = ramp + duration
    config_path = workdir / f"bench-{calls}.yaml"
    remote = None
    if provider != "inprocess":  # on the load core, with the load generator
        remote = socket_provider.ProviderProcess(provider, free_port(), workdir,
                                                 pin(1) if pinned else None)
        await remote.wait_ready()
    config = bench_config(port, total + 30, lead_ms, audio, provider,
                          remote.port if remote else None)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(remote.env if remote else {})}
    bot_args = []
    if bot:
        bot_port = free_port()
        config = with_bot(config, bot_port, bot_packet_ms)
        env[BOT_SECRET_ENV] = secrets.token_hex(16)
        bot_args = ["--caller-audio", "noise", "--bot-port", str(bot_port), "--bot-path",
                    BOT_PATH, "--bot-secret-env", BOT_SECRET_ENV,
                    "--bot-packet-bytes", str(BOT_AUDIO_BYTES_PER_MS * bot_packet_ms)]
    config_path.write_text(yaml.safe_dump(config))
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path)],
        preexec_fn=pin(0) if pinned else None, env=env,
        stdout=subprocess.DEVNULL, stderr=open(workdir / f"gateway-{calls}.log", "w"))
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base)
        rss_idle = proc_rss_bytes(gateway.pid)
        out = workdir / f"load-{calls}.json"
        load = subprocess.Popen(
            [sys.executable, "-m", "gateway.bench.loadgen", "--url", f"ws://127.0.0.1:{port}",
             "--calls", str(calls), "--route", "bench", "--duration", str(total),
             "--ramp", str(ramp_per_second), "--measure-from", "1.0",
             "--interrupt-after", str(max(total - 2.0, ramp + 1.0)),
             "--interrupt-fraction", str(interrupt_fraction), "--json", str(out), *bot_args],
            preexec_fn=pin(1) if pinned else None, env=env, stdout=subprocess.DEVNULL)
        # CPU and memory over the steady part: all calls up, before interrupts and hang-ups
        await asyncio.sleep(ramp + 1.5)
        cpu0, t0 = proc_cpu_seconds(gateway.pid), time.monotonic()
        load_core = socket_provider.LoadCore(load, remote, proc_cpu_seconds)
        await load_core.begin()
        await asyncio.sleep(max(1.0, duration - 4.0))
        cpu1, t1 = proc_cpu_seconds(gateway.pid), time.monotonic()
        await load_core.end()
        rss_loaded = proc_rss_bytes(gateway.pid)
        metrics_during = await scrape(base)
        rc = await asyncio.get_running_loop().run_in_executor(None, load.wait, total + 60)
        if rc != 0:
            raise RuntimeError(f"the load generator failed with exit code {rc}")
        result = json.loads(out.read_text())
        metrics = await scrape(base)
    finally:
        gateway.terminate()
        try:
            gateway.wait(10)
        except subprocess.TimeoutExpired:
            gateway.kill()
        if remote is not None:
            remote.stop()
    cpu_percent = 100 * (cpu1 - cpu0) / (t1 - t0)
    added = histogram_quantiles(metrics, "tts_gateway_gateway_added_latency_seconds",
                                carrier="twilio")
    first_frame = histogram_quantiles(metrics, "tts_gateway_first_frame_seconds", carrier="twilio")
    provider_name = "fake" if provider == "inprocess" else provider
    first_chunk = histogram_quantiles(metrics, "tts_gateway_tts_first_chunk_seconds",
                                      provider=provider_name)
    tick = histogram_quantiles(metrics_during, "tts_gateway_pacing_lateness_seconds")
    barge = sorted(result.get("barge_in", []))
    ms = lambda v: None if v is None else round(v * 1000, 3)  # noqa: E731
    bot_figures = bot_report(result, metrics, ms) if bot else {}
    run = {
        "calls": calls,
        "provider_audio": audio,
        "provider": provider,
        "provider_first_chunks": first_chunk["count"],
        **load_core.report(),
        "calls_connected": result["calls_connected"],
        "calls_failed": result["calls_failed"],
        "duration_s": duration,
        "gateway_added_p50_ms": ms(added[0.5]),
        "gateway_added_p99_ms": ms(added[0.99]),
        "gateway_added_samples": added["count"],
        "first_frame_p50_ms": ms(first_frame[0.5]),
        "first_frame_p99_ms": ms(first_frame[0.99]),
        "provider_first_chunk_p50_ms": ms(first_chunk[0.5]),
        "carrier_first_media_p50_ms": ms(_quantile(result["first_media_latency"], 0.5)),
        "carrier_first_media_p99_ms": ms(_quantile(result["first_media_latency"], 0.99)),
        "lateness_p50_ms": ms(result["lateness_p50"]),
        "lateness_p99_ms": ms(result["lateness_p99"]),
        "lateness_max_ms": ms(result["lateness_max"]),
        "clock_tick_late_p99_ms": ms(tick[0.99]),
        "underruns_carrier_side": result["underruns"],
        "underruns_gateway_side": counter_total(metrics, "tts_gateway_underruns_total"),
        "violations": result["violations"],
        "frames_received": result["frames_received"],
        "gateway_cpu_percent_of_core": round(cpu_percent, 1),
        "gateway_cpu_percent_per_call": round(cpu_percent / calls, 4),
        "gateway_rss_mb": round(rss_loaded / 2**20, 1),
        "gateway_rss_kb_per_call": round((rss_loaded - rss_idle) / 1024 / calls, 1),
        "generator_cpu_seconds": result.get("generator_cpu_seconds"),
        "barge_in_p50_ms": ms(_quantile(barge, 0.5)),
        "barge_in_max_ms": ms(barge[-1] if barge else None),
        "barge_ins_measured": len(barge),
        "pinned": pinned,
        "timeline": result.get("timeline", []),
        "first_media_latencies_ms": [round(v * 1000, 2) for v in result["first_media_latency"]],
        "load_tick_late_p99_ms": ms(result.get("generator_tick_late_p99")),
        "load_tick_late_max_ms": ms(result.get("generator_tick_late_max")),
        "bot": bot,
        **bot_figures,
    }
    run["load_side"] = load_side(run)
    return run


#: the load side (callers, bots and a provider process on core 1) kept up when its
#: tickers woke on time and it had CPU to spare over the measured part
LOAD_TICK_LATE_P99_MS = 5.0
PROVIDER_LAG_P99_MS = 10.0
LOAD_CPU_PERCENT = 90.0


def labelled_total(metrics: str, name: str, label: str, value: str) -> float:
    """A counter's total over the series whose ``label`` is ``value``."""
    pattern = (r'^' + re.escape(name) + r'\{[^}]*' + label + '="' + re.escape(value)
               + r'"[^}]*\} (\S+)$')
    return sum(float(v) for v in re.findall(pattern, metrics, re.M))


def bot_report(result: dict, metrics: str, ms) -> dict:
    """The bot figures of one run: the gateway's delay of caller audio (its histogram), the
    same seen from the load side, what the bots got, and whether the VAD saw every frame."""
    delay = histogram_quantiles(metrics, "tts_gateway_caller_audio_delay_seconds",
                                carrier="twilio")
    packets = result.get("bot_packets_per_call") or [0]
    return {
        "caller_audio_delay_p50_ms": ms(delay[0.5]),
        "caller_audio_delay_p99_ms": ms(delay[0.99]),
        "caller_audio_delay_samples": delay["count"],
        "bot_delay_load_side_p50_ms": ms(result.get("bot_delay_p50")),
        "bot_delay_load_side_p99_ms": ms(result.get("bot_delay_p99")),
        "bot_delay_load_side_max_ms": ms(result.get("bot_delay_max")),
        "bot_sockets": result.get("bot_sockets", 0),
        "bot_call_started": result.get("bot_call_started", 0),
        "bot_refused": result.get("bot_refused", {}),
        "bot_packets": result.get("bot_packets", 0),
        "bot_bad_packets": result.get("bot_bad_packets", 0),
        "bot_packets_per_call_min": min(packets),
        "bot_packets_per_call_max": max(packets),
        "bot_violations": result.get("bot_violations", []),
        "bot_events": result.get("bot_events", {}),
        "bot_audio_dropped_s": {
            reason: round(labelled_total(metrics, "tts_gateway_bot_audio_dropped_seconds_total",
                                         "reason", reason), 2)
            for reason in ("slow_reader", "disconnected")},
        "bot_connections": {
            outcome: int(labelled_total(metrics, "tts_gateway_bot_connections_total",
                                        "outcome", outcome))
            for outcome in ("connected", "reconnected", "dropped", "unreachable", "gave_up")},
        "vad_frames": int(counter_total(metrics, "tts_gateway_vad_frames_total")),
        "caller_frames_sent": result.get("caller_frames_sent", 0),
        "speech_barge_ins": int(labelled_total(metrics, "tts_gateway_barge_ins_total", "cause",
                                               "speech")),
    }


def load_side(run: dict) -> str | None:
    """How the load side (callers, bots and a provider process on core 1) fared:
    ``kept up``; ``saturated`` (it used its core up); ``starved`` (a ticker woke late with
    CPU to spare: something else ran on its core, a shared machine); None if not known."""
    tick, cpu = run.get("load_tick_late_p99_ms"), run.get("load_core_cpu_percent")
    if tick is None or cpu is None:
        return None
    if cpu > LOAD_CPU_PERCENT:
        return "saturated"
    lag = run.get("provider_lag_p99_ms")
    late = tick > LOAD_TICK_LATE_P99_MS or (lag is not None and lag > PROVIDER_LAG_P99_MS)
    return "starved" if late else "kept up"


def _quantile(values, q):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return values[min(len(values) - 1, max(0, round(q * len(values) + 0.5) - 1))]


def passes(run: dict) -> bool:
    """The capacity criterion: p99 lateness within 10 ms, no underrun, every call connected."""
    ok = (run["lateness_p99_ms"] is not None and run["lateness_p99_ms"] <= GOALS["lateness_p99_ms"]
          and run["underruns_carrier_side"] == 0 and run["calls_failed"] == 0
          and run["calls_connected"] == run["calls"])
    if run.get("bot"):  # and every call was a bot call
        ok = ok and run["bot_call_started"] == run["calls"]
    return ok


async def sweep(start: int, limit: int, duration: float, workdir: Path, *,
                deadline: float = math.inf, **kw) -> dict:
    """Grow N until a run fails, then bisect between the last pass and the first fail;
    no run starts after ``deadline`` (``time.monotonic()``)."""
    runs = []
    good, bad, n = 0, None, start
    while n <= limit and time.monotonic() < deadline:
        run = await run_once(n, duration, workdir=workdir, **kw)
        runs.append(run)
        print(_one_line(run), flush=True)
        if passes(run):
            good = n
            n = n * 2 if bad is None else (good + bad) // 2
        else:
            bad = n
            n = (good + bad) // 2
        if bad is not None and bad - good <= max(25, good // 10):
            break
        if bad is not None and n <= good:
            break
    behind = sorted((run["calls"], load_side(run)) for run in runs
                    if load_side(run) not in ("kept up", None))
    # where the load side (callers and bots on core 1) could not keep up, the gateway's
    # figure at and above it is the load's, not the gateway's
    return {"max_calls_per_core": good, "first_failing": bad,
            "load_behind_at": behind[0][0] if behind else None,
            "load_behind_why": behind[0][1] if behind else None, "runs": runs}


def _one_line(run: dict) -> str:
    return (f"  N={run['calls']:>4}: lateness p99 {run['lateness_p99_ms']} ms, max "
            f"{run['lateness_max_ms']} ms, underruns {run['underruns_carrier_side']}, "
            f"CPU {run['gateway_cpu_percent_of_core']} % of a core, "
            f"added p50/p99 {run['gateway_added_p50_ms']}/{run['gateway_added_p99_ms']} ms"
            + (f", caller audio p50/p99 {run['caller_audio_delay_p50_ms']}/"
               f"{run['caller_audio_delay_p99_ms']} ms, bots {run['bot_call_started']}"
               if run.get("bot") else "")
            + f", {socket_provider.load_core_line(run)}"
            + f" -> {'PASS' if passes(run) else 'FAIL'}"
            + ("" if load_side(run) in ("kept up", None) else f" (load side {load_side(run)})"))


def machine() -> dict:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import uvloop  # noqa: F401
        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "event_loop": loop, "platform": platform.platform()}


def print_report(run: dict) -> None:
    rows = [
        ("gateway-added first-audio latency p50", run["gateway_added_p50_ms"], "ms", "≤ 1"),
        ("gateway-added first-audio latency p99", run["gateway_added_p99_ms"], "ms", "≤ 5"),
        ("first-frame latency p50 (speak -> frame)", run["first_frame_p50_ms"], "ms", ""),
        ("first-frame latency p99", run["first_frame_p99_ms"], "ms", ""),
        ("  of which provider first chunk p50", run["provider_first_chunk_p50_ms"], "ms", ""),
        ("frame lateness at carrier p50", run["lateness_p50_ms"], "ms", ""),
        ("frame lateness at carrier p99", run["lateness_p99_ms"], "ms", "≤ 10"),
        ("frame lateness at carrier max", run["lateness_max_ms"], "ms", ""),
        ("underruns (carrier side / gateway side)",
         f"{run['underruns_carrier_side']} / {run['underruns_gateway_side']:.0f}", "", "0"),
        ("gateway CPU, % of one core", run["gateway_cpu_percent_of_core"], "%", ""),
        ("gateway CPU per call", run["gateway_cpu_percent_per_call"], "% of a core", ""),
        ("gateway RSS / per call", f"{run['gateway_rss_mb']} MB / {run['gateway_rss_kb_per_call']}",
         "KB", ""),
        ("barge-in: interrupt -> last frame p50", run["barge_in_p50_ms"], "ms", ""),
        ("barge-in: interrupt -> last frame max", run["barge_in_max_ms"], "ms", "≤ 40"),
        (socket_provider.load_core_line(run), "", "", ""),
    ]
    if run.get("bot"):
        rows += [
            ("caller audio delay p50 (frame in -> bot)", run["caller_audio_delay_p50_ms"], "ms",
             ""),
            ("caller audio delay p99", run["caller_audio_delay_p99_ms"], "ms", "≤ 2"),
            ("  load side (frame sent -> packet) p50", run["bot_delay_load_side_p50_ms"], "ms", ""),
            ("  load side p99", run["bot_delay_load_side_p99_ms"], "ms", ""),
            ("bots: call.started / sockets / calls",
             f"{run['bot_call_started']} / {run['bot_sockets']} / {run['calls']}", "", ""),
            ("bot packets per call (min / max)",
             f"{run['bot_packets_per_call_min']} / {run['bot_packets_per_call_max']}", "", ""),
            ("bot audio dropped (slow / disconnected)",
             f"{run['bot_audio_dropped_s']['slow_reader']} / "
             f"{run['bot_audio_dropped_s']['disconnected']}", "s", "0"),
            ("VAD frames / caller frames sent",
             f"{run['vad_frames']} / {run['caller_frames_sent']}", "", ""),
            ("barge-ins by the callers' noise", run["speech_barge_ins"], "", "0"),
        ]
    rows += [
        ("load side (callers, bots, provider on core 1)", load_side(run), "", ""),
        ("load side CPU, % of core 1", run["load_core_cpu_percent"], "%",
         f"≤ {LOAD_CPU_PERCENT:.0f}"),
        ("load side ticker late p99", run["load_tick_late_p99_ms"], "ms",
         f"≤ {LOAD_TICK_LATE_P99_MS:.0f}"),
    ]
    print(f"\n{run['calls']} calls ({run['calls_connected']} connected, "
          f"{run['calls_failed']} failed), {run['duration_s']} s, provider {run['provider']}, "
          f"audio {run['provider_audio']}, "
          f"gateway {'pinned to core 0' if run['pinned'] else 'not pinned'}"
          + (", every call a bot call (l16/16000 to a loopback bot, VAD on)" if run.get("bot")
             else ""))
    for label, value, unit, goal in rows:
        print(f"  {label:<44} {value!s:>12} {unit:<12} {('goal ' + goal) if goal else ''}")


def plot(run: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    timeline = run["timeline"]
    if timeline:
        t = [w["t"] for w in timeline]
        left.plot(t, [w["p99_ms"] for w in timeline], label="p99 lateness")
        left.plot(t, [w["max_ms"] for w in timeline], label="max lateness", alpha=0.6)
        left.axhline(GOALS["lateness_p99_ms"], color="red", linestyle=":", label="goal (p99)")
        left.set_xlabel("seconds")
        left.set_ylabel("ms")
        left.set_title(f"Frame lateness at the carrier, {run['calls']} calls")
        left.legend()
    latencies = sorted(run.get("first_media_latencies_ms", []))
    if latencies:
        right.plot(latencies, [(i + 1) / len(latencies) for i in range(len(latencies))])
        right.set_xlabel(
            "ms from start to first audio frame (incl. 250 ms handshake + 200 ms TTFA)")
        right.set_ylabel("fraction of calls")
        right.set_title("First-audio latency CDF")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tts-gateway bench")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds measured after all calls are up")
    parser.add_argument("--lead-ms", type=int, default=100)
    parser.add_argument("--ramp", type=float, default=25.0,
                        help="new calls per second while ramping up "
                             "(a busy call centre sees a few)")
    parser.add_argument("--audio", choices=sorted(AUDIO_FORMATS), default="pcm24k",
                        help="what the fake provider sends "
                             "(pcm24k is resampled, mulaw8k passes through)")
    parser.add_argument("--provider", default="inprocess",
                        help="where the provider runs, comma-separated to sweep several: "
                             "inprocess (a generator inside the gateway), or a fake in its own "
                             "process on the load core, read over a socket: inworld (JSON, "
                             "base64 audio) or deepgram (binary frames); the single run uses "
                             "the first")
    parser.add_argument("--sweep-audio", default="mulaw8k",
                        help="provider audio formats to sweep, comma-separated")
    parser.add_argument("--sweep", action="store_true",
                        help="find the most calls one core carries "
                             "(p99 lateness ≤ 10 ms, no underrun)")
    parser.add_argument("--sweep-start", type=int, default=125)
    parser.add_argument("--sweep-limit", type=int, default=2000)
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin gateway and generator to cores")
    parser.add_argument("--json", default="bench-out/bench.json")
    parser.add_argument("--plot", help="write a PNG (lateness over time, first-audio latency CDF)")
    parser.add_argument("--quality", action="store_true",
                        help="also run the audio-quality benchmark (PESQ, resampler comparison)")
    parser.add_argument("--bot", action="store_true",
                        help="every call a bot call: caller audio to a loopback bot, VAD on")
    parser.add_argument("--bot-packet-ms", type=int, default=20, choices=range(20, 201, 20),
                        metavar="{20,40,...,200}",
                        help="with --bot: the caller's audio to the bot in packets this long")
    parser.add_argument("--time-budget", type=float, default=200.0,
                        help="stop starting new sweep runs after this many seconds")
    args = parser.parse_args(argv)
    modes = [m for m in args.provider.split(",") if m]
    if not modes or set(modes) - set(PROVIDER_MODES):
        parser.error(f"--provider: one or more of {', '.join(PROVIDER_MODES)}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    with tempfile.TemporaryDirectory(prefix="tts-bench-") as tmp:
        workdir = Path(tmp)
        kw = {"lead_ms": args.lead_ms, "pinned": not args.no_pin, "ramp_per_second": args.ramp,
              "bot": args.bot, "bot_packet_ms": args.bot_packet_ms}
        run = asyncio.run(run_once(args.calls, args.duration, workdir=workdir, audio=args.audio,
                                   provider=modes[0], **kw))
        print_report(run)
        report["load"] = run
        if args.sweep:
            report["sweep"] = {}
            formats = [f for f in args.sweep_audio.split(",") if f]
            combos = [(mode, audio) for mode in modes for audio in formats]
            for i, (mode, audio) in enumerate(combos):
                print(f"\nsweep, provider {mode}, provider audio {audio} (calls on one core):")
                deadline = time.monotonic() + (
                    started + args.time_budget - time.monotonic()) / (len(combos) - i)
                found = asyncio.run(sweep(args.sweep_start, args.sweep_limit,
                                          min(args.duration, 12.0), workdir, deadline=deadline,
                                          audio=audio, provider=mode, **kw))
                found["provider"] = mode
                report["sweep"][audio if mode == "inprocess" else f"{mode}/{audio}"] = found
                print(f"  -> {found['max_calls_per_core']} calls per core "
                      f"(first failing: {found['first_failing']}; load side "
                      + (f"{found['load_behind_why']} at {found['load_behind_at']} calls)"
                         if found["load_behind_at"] else "kept up)"))
    if args.quality:
        from gateway.bench.quality import main_quality

        main_quality(["--json", str(Path(args.json).with_name("quality.json"))])
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    Path(args.json).write_text(json.dumps(report, indent=2))
    if args.plot:
        plot(run, args.plot)
        print(f"plot written to {args.plot}")
    print(f"\nJSON written to {args.json} ({report['elapsed_s']} s)")
    return 0
