"""``tts-gateway serve --workers 2`` as a real process tree on loopback (gateway/workers.py).

* both workers take calls on the one shared port (SO_REUSEPORT): /healthz names the worker
  that answered, and each worker's own port (``--worker-ports``) lists the calls it holds;
  without Redis the control API of one worker does not know the other's calls (404);
* a worker killed with SIGKILL is started again, and the port keeps answering meanwhile; the
  other worker's call goes on;
* SIGTERM drains both workers: their calls are ended cleanly at the drain limit and the
  supervisor exits 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys

import aiohttp
import yaml
import pytest

from gateway.carriers.audiosocket.sim import AudioSocketCall
from gateway.carriers.twilio.sim import TwilioCallSim
from gateway.workers import MAX_WORKERS, Supervisor, sharing_problem, worker_count
from tests.ops.test_drain import (LONG_TEXT, GatewayProcess, drain_config, free_port,
                                  wait_until)

pytestmark = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT") or os.name != "posix"
                                or not os.uname().sysname == "Linux",
                                reason="serve --workers shares the port with Linux SO_REUSEPORT")

WORKERS = 2
MAX_CALLS = 16  # calls placed, at most, until both workers hold one


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (bounded attempts)."""
    for _ in range(50):
        first = free_port()
        try:
            held = []
            for port in range(first, first + count):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise AssertionError("no run of free ports")


class Workers(GatewayProcess):
    """The supervisor and its workers; worker I also answers alone on ``worker_url(I)``."""

    def __init__(self, tmp_path, config: dict):
        self.first_worker_port = free_port_run(WORKERS)
        super().__init__(tmp_path, config, ("--workers", str(WORKERS), "--worker-ports",
                                            str(self.first_worker_port)))
        self.fresh = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))

    def worker_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.first_worker_port + index}"

    async def worker_json(self, index: int, path: str):
        async with self.session.get(self.worker_url(index) + path) as resp:
            return resp.status, await resp.json()

    async def wait_workers_ready(self, timeout: float = 60.0) -> None:
        for index in range(WORKERS):
            async def ready(index=index):
                assert self.proc.poll() is None, f"the supervisor exited:\n{self.log()}"
                try:
                    return (await self.worker_json(index, "/readyz"))[0] == 200
                except aiohttp.ClientError:
                    return False
            await wait_until(ready, timeout, f"worker {index} to be ready")

    async def shared_healthz(self) -> dict:
        """/healthz on the shared port, on a new connection (the kernel picks the worker)."""
        async with self.fresh.get(self.http_url + "/healthz") as resp:
            assert resp.status == 200
            return await resp.json()

    async def owner_of(self, call_sid: str) -> int | None:
        for index in range(WORKERS):
            _, body = await self.worker_json(index, "/v1/calls")
            if any(call["id"] == call_sid for call in body["calls"]):
                return index
        return None

    async def close(self) -> None:
        await self.fresh.close()
        await super().close()


@pytest.fixture
async def workers(tmp_path):
    started: list[Workers] = []

    async def start(**settings) -> Workers:
        gw = Workers(tmp_path, drain_config(free_port(), **settings))
        started.append(gw)
        await gw.wait_workers_ready()
        return gw

    yield start
    for gw in started:
        await gw.close()


async def call_on_each_worker(gw: Workers, stack, dial=None) -> dict:
    """Place calls on the shared port (``dial()``: a carrier simulator; default Twilio) until
    each worker holds one (at most MAX_CALLS)."""
    dial = dial or (lambda: TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/bot"))
    calls: dict = {}
    for _ in range(MAX_CALLS):
        sim = await stack.enter_async_context(dial())

        async def listed(sim=sim):
            index = await gw.owner_of(sim.call_id)
            return None if index is None else (index,)  # worker 0 is falsy

        (index,) = await wait_until(listed, 10, "the call to be listed by its worker")
        calls.setdefault(index, sim)
        if len(calls) == WORKERS:
            return calls
    raise AssertionError(f"{MAX_CALLS} calls all landed on worker(s) {sorted(calls)}")


async def test_calls_land_on_both_workers_and_a_killed_worker_is_restarted(workers):
    gw = await workers(drain_timeout_s=5)
    seen = {}
    for _ in range(40):
        body = await gw.shared_healthz()
        seen[body["worker"]] = body["pid"]
        if len(seen) == WORKERS:
            break
    assert set(seen) == {0, 1}, seen
    assert len(set(seen.values())) == WORKERS  # two processes, neither the supervisor
    assert gw.proc.pid not in seen.values()

    async with contextlib.AsyncExitStack() as stack:
        calls = await call_on_each_worker(gw, stack)

        # calls work on every worker, through the control API of the worker that holds them;
        # without cluster.redis_url the other worker does not know the call
        for index, sim in calls.items():
            status, _ = await gw.worker_json(1 - index, f"/v1/calls/{sim.call_sid}")
            assert status == 404
            async with gw.session.post(f"{gw.worker_url(index)}/v1/calls/{sim.call_sid}/speak",
                                       json={"text": "Hello there."}) as resp:
                assert resp.status == 202, await resp.text()
            await sim.wait_for_media(frames=10, timeout=10)

        _, victim = await gw.worker_json(1, "/healthz")
        os.kill(victim["pid"], signal.SIGKILL)

        # the port keeps answering while worker 1 is gone and once it is back
        for _ in range(10):
            assert (await gw.shared_healthz())["status"] == "ok"

        async def restarted():
            try:
                status, _ = await gw.worker_json(1, "/readyz")
            except aiohttp.ClientError:
                return None
            if status != 200:
                return None
            return (await gw.worker_json(1, "/healthz"))[1]["pid"] != victim["pid"]

        await wait_until(restarted, 30, "worker 1 to be started again")
        assert gw.proc.poll() is None
        # each worker counts its own restarts, on its own port: a scrape of the shared port
        # reaches one worker or the other
        async with gw.session.get(gw.worker_url(1) + "/metrics") as resp:
            assert "tts_gateway_worker_restarts_total 1.0" in await resp.text()
        async with gw.session.get(gw.worker_url(0) + "/metrics") as resp:
            assert "tts_gateway_worker_restarts_total 0.0" in await resp.text()

        async def ended():
            return calls[1].ended

        await wait_until(ended, 10, "the killed worker's call to end")
        # worker 0's call is undisturbed: it still takes speech and plays it
        survivor = calls[0]
        assert not survivor.ended
        before = len(survivor.result.frames)
        async with gw.session.post(f"{gw.worker_url(0)}/v1/calls/{survivor.call_sid}/speak",
                                   json={"text": "Still here."}) as resp:
            assert resp.status == 202
        await survivor.wait_for_media(frames=before + 10, timeout=10)
        assert survivor.result.violations == []
    log = gw.log()
    assert "worker 1" in log and "died (signal SIGKILL)" in log and "restarting it in" in log


async def test_audiosocket_calls_land_on_both_workers_through_the_shared_tcp_port(tmp_path):
    config = drain_config(free_port(), drain_timeout_s=5)
    tcp_port = free_port()
    config["carriers"] = {"twilio": {},
                          "audiosocket": {"host": "127.0.0.1", "port": tcp_port, "route": "bot"}}
    gw = Workers(tmp_path, config)
    try:
        await gw.wait_workers_ready()
        async with contextlib.AsyncExitStack() as stack:
            calls = await call_on_each_worker(
                gw, stack, lambda: AudioSocketCall(f"tcp://127.0.0.1:{tcp_port}"))
            for index, call in calls.items():
                async with gw.session.post(
                        f"{gw.worker_url(index)}/v1/calls/{call.call_id}/speak",
                        json={"text": "Hello there."}) as resp:
                    assert resp.status == 202, await resp.text()
                await call.wait_for_media(frames=10, timeout=10)
                assert call.result.violations == []
    finally:
        await gw.close()


async def test_sigterm_drains_both_workers_and_exits_0(workers):
    gw = await workers(drain_timeout_s=1.5, hangup_mark_timeout_s=1.0)
    async with contextlib.AsyncExitStack() as stack:
        calls = await call_on_each_worker(gw, stack)
        for index, sim in calls.items():
            async with gw.session.post(f"{gw.worker_url(index)}/v1/calls/{sim.call_sid}/speak",
                                       json={"text": LONG_TEXT * 3}) as resp:  # 12 s of audio
                assert resp.status == 202
            await sim.wait_for_media(frames=5, timeout=10)

        gw.sigterm()
        for index in range(WORKERS):
            async def draining(index=index):
                try:
                    status, body = await gw.worker_json(index, "/readyz")
                except aiohttp.ClientError:
                    return None
                return body.get("draining") and status == 503
            await wait_until(draining, 5, f"worker {index} to drain")

        for sim in calls.values():
            async def closed(sim=sim):
                return sim.ended
            await wait_until(closed, 15, "the drain to end the call")
            assert sim.result.closed_by_gateway
            assert sim.result.violations == []
            assert len(sim.result.frames) * 0.020 < 12.0 - 5.0  # cut at the limit
        code, after_signal = await gw.wait_exit(timeout=30)
    assert code == 0, gw.log()
    print(f"supervisor exited {after_signal:.1f} s after SIGTERM (limit 1.5 s + 1.0 s)")
    log = gw.log()
    assert log.count("limit reached") == WORKERS
    assert "exited with 0" in log and "codes [0, 0]" in log


def test_a_crash_loop_stops_the_supervisor_after_the_bound_with_exit_1(caplog):
    """Workers that die at once are restarted with a backoff, MAX restarts a minute at most;
    then the supervisor gives up (exit 1) instead of spinning."""
    dies = [sys.executable, "-c", "raise SystemExit(3)"]
    supervisor = Supervisor(lambda index, restarts: dies, 2, stop_timeout_s=5.0,
                            max_restarts_per_minute=3, first_backoff_s=0.01)
    with caplog.at_level("INFO", logger="gateway.workers"):
        assert supervisor.run() == 1
    assert supervisor.restarts_total == 3 and supervisor.gave_up
    assert "restart 3 in the last minute, 3 in all" in caplog.text
    assert "is a crash loop: stopping every worker" in caplog.text


def test_workers_option_and_port_sharing_problems():
    assert worker_count("3") == 3
    assert 1 <= worker_count("auto") <= MAX_WORKERS
    for bad in ("0", "-1", "many", str(MAX_WORKERS + 1)):
        with pytest.raises(ValueError, match="--workers"):
            worker_count(bad)
    assert "fixed port" in sharing_problem("127.0.0.1", 0, 2, None)
    with socket.socket() as taken:  # bound without SO_REUSEPORT: no worker could share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert f"cannot listen on 127.0.0.1:{port}" in sharing_problem("127.0.0.1", port, 2,
                                                                       None)
    assert sharing_problem("127.0.0.1", free_port(), 2, None) is None


async def test_workers_drain_and_exit_when_the_supervisor_is_killed(workers):
    """kill -9 of the supervisor leaves no worker serving forever: each sees its parent gone
    and drains as on SIGTERM (they run in their own session, so nothing else signals them)."""
    gw = await workers(drain_timeout_s=1.0, hangup_mark_timeout_s=0.5)
    pids = [(await gw.worker_json(index, "/healthz"))[1]["pid"] for index in range(WORKERS)]
    gw.proc.kill()
    gw.proc.wait(10)

    async def all_gone():
        gone = []
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                gone.append(pid)
        return len(gone) == len(pids)

    await wait_until(all_gone, 20, "the orphaned workers to drain and exit")
    assert "draining" in gw.log()


def test_serve_refuses_worker_ports_without_workers(tmp_path, capsys):
    from gateway.cli import main

    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(drain_config(free_port(), drain_timeout_s=1)))
    assert main(["serve", "--config", str(path), "--worker-ports", "9000"]) == 2
    assert "--worker-ports: only with --workers 2 or more" in capsys.readouterr().err
    assert main(["serve", "--config", str(path), "--workers", "many"]) == 2
    assert "neither a number nor 'auto'" in capsys.readouterr().err


class ClusterWorkers(Workers):
    """Workers with ``cluster.redis_url``: every worker lists every call, each named with
    the instance URL its owner registered."""

    async def owner_of(self, call_sid: str) -> int | None:
        _, body = await self.worker_json(0, "/v1/calls")
        for call in body["calls"]:
            if call["id"] == call_sid:
                return call["instance"] == self.worker_url(1)  # bool: an index
        return None


async def test_with_redis_each_worker_advertises_its_own_port_so_the_shared_port_reaches_every_call(
        tmp_path, redis_server):
    """Every worker shares the public port, so a request forwarded to it could land on any
    worker: each registers its calls under its own ``--worker-ports`` port instead, and a
    control request sent to the shared port reaches a call whichever worker answers it."""
    port = free_port()
    config = drain_config(port, drain_timeout_s=5)
    config["cluster"] = {"redis_url": redis_server.url, "instance_url": f"http://127.0.0.1:{port}",
                         "heartbeat_s": 0.25, "ttl_s": 1.5, "redis_timeout_s": 0.25}
    gw = ClusterWorkers(tmp_path, config)
    try:
        await gw.wait_workers_ready()

        async def registered():
            _, body = await gw.worker_json(0, "/v1/cluster")
            return {i["url"] for i in body["instances"]} == {gw.worker_url(0), gw.worker_url(1)}

        await wait_until(registered, 10, "both workers in the instance registry")
        async with contextlib.AsyncExitStack() as stack:
            calls = await call_on_each_worker(gw, stack)
            answered = {0: 0, 1: 0}  # which worker answered on the shared port
            for index, sim in calls.items():
                async with gw.session.post(f"{gw.worker_url(1 - index)}/v1/calls/"
                                           f"{sim.call_sid}/speak", json={"text": "Hi."}) as resp:
                    assert resp.status == 202, await resp.text()  # forwarded to its owner
                for _ in range(8):  # new connections: the kernel picks the worker each time
                    async with gw.fresh.get(f"{gw.http_url}/v1/calls/{sim.call_sid}") as resp:
                        assert resp.status == 200, await resp.text()
                        assert (await resp.json())["id"] == sim.call_sid
                    answered[(await gw.shared_healthz())["worker"]] += 1
                async with gw.fresh.post(f"{gw.http_url}/v1/calls/{sim.call_sid}/speak",
                                         json={"text": "Hello there."}) as resp:
                    assert resp.status == 202, await resp.text()
                await sim.wait_for_media(frames=10, timeout=10)
                assert sim.result.violations == []
            print(f"shared port answered by worker 0: {answered[0]}, worker 1: {answered[1]}")
    finally:
        await gw.close()


def test_workers_with_redis_need_worker_ports(tmp_path, capsys):
    from gateway.cli import main
    from gateway.workers import with_port

    config = drain_config(free_port(), drain_timeout_s=1)
    config["cluster"] = {"redis_url": "redis://127.0.0.1:1/0",
                         "instance_url": "http://10.0.0.5:8080"}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["serve", "--config", str(path), "--workers", "2"]) == 2
    assert "--workers with cluster.redis_url needs --worker-ports FIRST" in capsys.readouterr().err
    assert with_port("http://10.0.0.5:8080", 9101) == "http://10.0.0.5:9101"
    assert with_port("https://[fd00::5]:8080/", 9100) == "https://[fd00::5]:9100"
    assert with_port("http://gw-0.gw", 9100) == "http://gw-0.gw:9100"
