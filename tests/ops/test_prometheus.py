"""The Grafana dashboard and the alert rules, proven against a real Prometheus.

A real Prometheus server (Debian's ``prometheus`` package; ``make test`` installs it)
runs on 127.0.0.1 with the shipped deploy/prometheus/prometheus.yml, changed only where a
test must: its target is a real gateway started here on an ephemeral loopback port, it
scrapes and evaluates every second, and it loads deploy/prometheus/alerts.yml. The gateway
carries a few rounds of simulated Twilio calls that touch every metric the dashboard
shows: greetings (cached after the first), a barge-in, DTMF, a malformed frame, a provider
error frame, a provider that streams slower than real time (underruns) and answers slowly,
a pool exhausted by a second call, a provider restart (reconnect), a Telnyx error report,
a refused route token, an unknown call on the control API. Then:

* every dashboard panel's every query (Grafana's variables substituted) is valid and
  returns data with a finite value, and so do the dashboard's variable queries;
* every metric name a query or rule uses is one the gateway exposes;
* every alert rule's expression is valid, Prometheus evaluates every rule without error,
  and the alerts the calls provoked (slow first audio, pool exhausted, underruns, failed
  speech) have data; once the gateway is stopped, ``TtsGatewayDown``'s expression has too;
* ``promtool check config``, ``promtool check rules`` and the rules' unit tests pass.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from gateway.http.loopback import serve_on_loopback
from gateway.tts.providers.together import fake as together
from gateway.tts.providers.fakes import close_all
from gateway.carriers.twilio.sim import TwilioCallSim
from tests.conftest import RunningGateway, start_gateway
from tests.e2e.test_twilio_call import open_control

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "tts-gateway.json"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
JOB = "tts-gateway"

# What Grafana would put in for its variables (the dashboard's "All" is allValue ".*").
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "${job}": ".*", "$job": ".*",
    "${instance}": ".*", "$instance": ".*",
}
# Alerts the calls below provoke: their expressions must have data, not only be valid.
PROVOKED_ALERTS = ("TtsProviderSlowFirstAudio", "TtsGatewayPoolExhausted",
                   "TtsGatewayUnderruns", "TtsGatewaySpeechFailures")
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def tool(name: str) -> str:
    """The path of a Prometheus binary; a missing one fails the test (never a skip)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `make ops-tools` installs Debian's prometheus "
                    f"package (prometheus and promtool); `make test` runs it first")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def substitute(expr: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    assert "$" not in expr, f"a Grafana variable the test does not know: {expr}"
    return expr


def dashboard_targets() -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every query of every panel, rows included."""
    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    found = []
    for panel in panels(json.loads(DASHBOARD.read_text())["panels"]):
        for target in panel.get("targets", []):
            found.append((panel["title"], target["refId"], target["expr"]))
    return found


def alert_rules() -> list[tuple[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


def finite(sample: dict) -> bool:
    values = [sample["value"]] if "value" in sample else sample.get("values", [])
    return any(math.isfinite(float(v[1])) for v in values)


class Prometheus:
    """A Prometheus server on 127.0.0.1 scraping one gateway; killed by ``stop``."""

    def __init__(self, workdir: Path, gateway_port: int):
        config = yaml.safe_load(PROMETHEUS_YML.read_text())
        config["global"]["scrape_interval"] = "1s"
        config["global"]["evaluation_interval"] = "1s"
        config["rule_files"] = [str(ALERTS)]
        (job,) = [c for c in config["scrape_configs"] if c["job_name"] == JOB]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{gateway_port}"]}]
        job["scrape_timeout"] = "1s"
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [tool("prometheus"), f"--config.file={self.config_path}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT)
        self.http = aiohttp.ClientSession()

    def log(self) -> str:
        return self.log_path.read_text()[-3000:]

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log()}"
            try:
                async with self.http.get(f"{self.url}/-/ready") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"prometheus was not ready within {timeout} s:\n{self.log()}")

    async def query(self, expr: str) -> dict:
        async with self.http.get(f"{self.url}/api/v1/query", params={"query": expr}) as resp:
            return await resp.json()

    async def api(self, path: str, **params) -> dict:
        async with self.http.get(f"{self.url}/api/v1/{path}", params=params) as resp:
            return await resp.json()

    async def scraped_since(self, since: float, scrapes: int, timeout: float = 15.0) -> None:
        """Wait until ``scrapes`` scrapes of the gateway have happened after ``since``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = await self.query(f'timestamp(up{{job="{JOB}"}})')
            result = body["data"]["result"]
            if result and float(result[0]["value"][1]) >= since + scrapes - 0.5:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"prometheus did not scrape the gateway {scrapes} times within "
                             f"{timeout} s:\n{self.log()}")

    async def stop(self) -> None:
        await self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def gateway_config(together_port: int) -> dict:
    fast = {"type": "fake", "handshake_ms": 0, "first_audio_ms": 40, "burst_factor": 4.0}
    # streams at half real time (the caller hears gaps: underruns) and answers slowly
    slow = {"type": "fake", "handshake_ms": 0, "first_audio_ms": 700, "burst_factor": 0.5}
    return {
        "server": {"host": "127.0.0.1", "port": 0},
        "providers": {
            "fast": fast,
            "slow": slow,
            "together": {"type": "together", "api_key_env": "FAKE_TTS_KEY", "voice": "af_alloy",
                         "endpoint": f"ws://127.0.0.1:{together_port}{together.PATH}",
                         "pool": {"min_idle": 1, "max": 1, "acquire_timeout_s": 0.3}},
        },
        "carriers": ["twilio", "telnyx"],
        "routes": {
            "demo": {"provider": "fast", "greeting": "Hello there."},
            "bot": {"provider": "together"},
            "slow": {"provider": "slow", "greeting": "Slow words.", "cache_greeting": False},
            "secure": {"provider": "fast", "token_env": "ROUTE_TOKEN"},
        },
        "default_route": "demo",
        "logging": {"level": "WARNING"},
    }


async def speak(gw: RunningGateway, call_sid: str, text: str) -> str:
    status, body = await gw.post_json(f"/v1/calls/{call_sid}/speak", {"text": text})
    assert status == 202, body
    return body["speech_id"]


async def demo_call(gw: RunningGateway) -> None:
    """Greeting (cache miss, then hits), DTMF, a malformed frame, speech cut by a barge-in."""
    async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/demo") as sim:
        control = await open_control(gw, sim.call_sid)
        await control.next_event("speech.done", timeout=10)
        await sim.send_dtmf("5")
        await sim.send_raw_text("this is not json")
        speech_id = await speak(gw, sim.call_sid, "This sentence is long enough to be cut short.")
        await control.next_event("speech.first_audio", speech_id=speech_id, timeout=10)
        await asyncio.sleep(0.3)
        status, body = await gw.post_json(f"/v1/calls/{sim.call_sid}/interrupt")
        assert status == 200 and body["interrupted"] == 1
        await control.next_event("speech.done", speech_id=speech_id, timeout=5)
        await sim.hangup()


async def bot_calls(gw: RunningGateway, fake: web.Application) -> None:
    """A provider error frame, a played utterance, a second call that finds the pool
    exhausted, and a provider restart under the first."""
    async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/bot") as sim:
        control = await open_control(gw, sim.call_sid)
        speech_id = await speak(gw, sim.call_sid, "Please FAILME now.")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=10)
        assert "error" in done
        speech_id = await speak(gw, sim.call_sid, "All good.")
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=10)
        assert "error" not in done
        async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/bot") as second:
            await asyncio.sleep(0.5)  # its lease waits 0.3 s for the only connection
            await second.hangup()
        assert await close_all(fake) >= 1
        await sim.hangup()


async def slow_call(gw: RunningGateway) -> None:
    async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/slow") as sim:
        control = await open_control(gw, sim.call_sid)
        await control.next_event("speech.done", timeout=10)
        await sim.hangup()


async def refused_and_faulty(gw: RunningGateway) -> None:
    # Telnyx reports an error about what we sent
    async with gw.session.ws_connect(f"{gw.ws_url}/v1/media/telnyx") as ws:
        await ws.send_str(json.dumps({"event": "error", "payload": {
            "code": 100003, "title": "malformed_frame", "detail": "test"}}))
        await ws.close()
    # a wrong route token: refused before the upgrade
    async with gw.session.get(f"{gw.http_url}/v1/media/twilio/secure/wrong",
                              headers=UPGRADE) as resp:
        assert resp.status == 403
    status, _ = await gw.get_json("/v1/calls/CAnope")
    assert status == 404


async def place_calls(gw: RunningGateway, fake: web.Application) -> None:
    async with asyncio.timeout(30):
        await asyncio.gather(demo_call(gw), bot_calls(gw, fake), slow_call(gw),
                             refused_and_faulty(gw))


def exposed_metric_names(exposition: str) -> set[str]:
    return set(re.findall(r"^# HELP (\S+)", exposition, re.M))


def used_metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b((?:tts_gateway|process)_[a-z0-9_]+)", expr))
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in names}


async def test_dashboard_and_alerts_against_a_real_prometheus(tmp_path):
    tool("prometheus")
    fake = together.make_app(fail_on="FAILME")
    fake_runner, fake_port = await serve_on_loopback(fake)
    gw = await start_gateway(gateway_config(fake_port),
                             environ={"FAKE_TTS_KEY": "test-key", "ROUTE_TOKEN": "s3cret"})
    prometheus = Prometheus(tmp_path, gw.port)
    gateway_stopped = False
    try:
        # A labelled series appears at its first event, and rate() needs it to grow
        # between two scrapes: one round of calls while Prometheus starts (its first
        # scrape comes some seconds after start), two more a scrape apart after it.
        await place_calls(gw, fake)
        await prometheus.wait_ready()
        await prometheus.scraped_since(0, scrapes=1)
        await place_calls(gw, fake)
        await asyncio.sleep(1.5)  # at least one scrape in between
        await place_calls(gw, fake)
        await prometheus.scraped_since(time.time(), scrapes=2)

        problems = []
        for title, ref, expr in dashboard_targets():
            body = await prometheus.query(substitute(expr))
            if body.get("status") != "success":
                problems.append(f"{title} [{ref}]: invalid: {body.get('error')}\n  {expr}")
            elif not body["data"]["result"]:
                problems.append(f"{title} [{ref}]: no data\n  {expr}")
            elif not any(finite(s) for s in body["data"]["result"]):
                result = body["data"]["result"]
                problems.append(f"{title} [{ref}]: only NaN/Inf: {result}\n  {expr}")
        assert not problems, "dashboard queries:\n" + "\n".join(problems)

        # the dashboard's variables: label_values(metric{...}, label)
        variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
        for variable in variables:
            if variable["type"] != "query":
                continue
            query = variable["query"]["query"] if isinstance(variable["query"], dict) \
                else variable["query"]
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert match, f"variable {variable['name']}: {query}"
            body = await prometheus.api(f"label/{match.group(2)}/values",
                                        **{"match[]": substitute(match.group(1))})
            assert body["status"] == "success" and body["data"], (variable["name"], body)
        values = (await prometheus.api("label/job/values"))["data"]
        assert JOB in values

        exposed = exposed_metric_names(await gw.metrics_text())
        used = set().union(*(used_metric_names(e) for _, _, e in dashboard_targets()),
                           *(used_metric_names(e) for _, e in alert_rules()))
        assert used - exposed == set(), "queries name metrics the gateway does not expose"
        assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= exposed

        problems = []
        for name, expr in alert_rules():
            body = await prometheus.query(expr)
            if body.get("status") != "success":
                problems.append(f"{name}: invalid: {body.get('error')}")
            elif name in PROVOKED_ALERTS and not body["data"]["result"]:
                problems.append(f"{name}: the calls provoked it, yet its expression has no data")
        assert not problems, "alert rules:\n" + "\n".join(problems)

        rules = (await prometheus.api("rules"))["data"]["groups"]
        loaded = {r["name"]: r for g in rules for r in g["rules"]}
        assert set(loaded) == {name for name, _ in alert_rules()}
        assert all(r["health"] == "ok" for r in loaded.values()), loaded

        # the gateway goes away: the next scrape fails and TtsGatewayDown's expression fires
        await gw.session.close()
        await gw.runner.cleanup()
        gateway_stopped = True
        (down_expr,) = [e for name, e in alert_rules() if name == "TtsGatewayDown"]
        async with asyncio.timeout(10):
            while not (await prometheus.query(down_expr))["data"]["result"]:
                await asyncio.sleep(0.2)
    finally:
        await prometheus.stop()
        if not gateway_stopped:
            await gw.session.close()
            await gw.runner.cleanup()
        await fake_runner.cleanup()


def test_promtool_checks_the_config_and_the_rules():
    promtool = tool("promtool")
    for args in (["check", "config", str(PROMETHEUS_YML)],
                 ["check", "rules", str(ALERTS)]):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_alert_thresholds_hold_in_promtool_unit_tests():
    """deploy/prometheus/alerts.test.yml: each alert fires above its threshold after its
    ``for``, and not below (synthetic series)."""
    done = subprocess.run([tool("promtool"), "test", "rules", str(ALERT_TESTS)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_rejects_a_broken_rule(tmp_path):
    """The check can fail: a rule with a PromQL syntax error does not pass."""
    rules = yaml.safe_load(ALERTS.read_text())
    rules["groups"][0]["rules"][0]["expr"] = "up{job=\"tts-gateway\" == 0"
    broken = tmp_path / "alerts.yml"
    broken.write_text(yaml.safe_dump(rules))
    done = subprocess.run([tool("promtool"), "check", "rules", str(broken)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
