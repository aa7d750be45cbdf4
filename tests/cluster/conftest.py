"""A real ``redis-server`` (Debian's package, installed by ``make cluster-tools``) per test
module: on a free loopback port, without persistence, stopped after the module."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One ``redis-server`` process; :meth:`stop` and :meth:`start` again keep its port
    (the tests stop Redis mid-call and bring it back)."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run `make cluster-tools`")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        pytest.fail("redis-server did not answer PING within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


#: the fake provider's speaking rate: audio lasts len(text) / 15 s
CHARS_PER_SECOND = 15.0


def cluster_config(port: int, redis_url: str, **cluster) -> dict:
    """An instance on ``port`` (the in-process fake provider: no network, cheap on a loaded
    machine) with a short heartbeat, so that the tests see expiry within seconds."""
    return {
        "server": {"host": "127.0.0.1", "port": port},
        "providers": {"fake": {"type": "fake", "handshake_ms": 0, "first_audio_ms": 50,
                               "chars_per_second": CHARS_PER_SECOND}},
        "carriers": ["twilio"],
        "routes": {"bot": {"provider": "fake"}},
        "default_route": "bot",
        "cluster": {"redis_url": redis_url, "instance_url": f"http://127.0.0.1:{port}",
                    "heartbeat_s": 0.25, "ttl_s": 1.5, "redis_timeout_s": 0.25, **cluster},
    }


async def start_instance(redis_url: str, *, extra: dict | None = None,
                         environ: dict | None = None, **cluster):
    """A gateway instance in this process, listening on the port its ``instance_url``
    names (chosen before start-up: the directory advertises it from the first write);
    ``extra``: top-level sections (a mapping's keys merged into the default's)."""
    from aiohttp import web

    from gateway.config import parse_config
    from gateway.http.app import create_app
    from gateway.http.guard import GuardedRunner
    from tests.conftest import RunningGateway

    port = free_port()
    data = cluster_config(port, redis_url, **cluster)
    for section, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(data.get(section), dict):
            value = {**data[section], **value}
        data[section] = value
    app = create_app(parse_config(data, environ or {}))
    runner = GuardedRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    gw = RunningGateway(app, runner, port)
    await gw.wait_ready()
    return gw


async def stop_instance(gw) -> None:
    await gw.session.close()
    await gw.runner.cleanup()


async def speak_through_control_socket(ws, call_id: str, text: str):
    """On a control socket opened for ``call_id`` (on any instance): ``control.ready`` names
    the call, and ``text`` spoken through it plays to its ``speech.done``, not interrupted.
    The socket's event reader, for more."""
    from tests.e2e.test_twilio_call import ControlSocket

    control = ControlSocket(ws)
    ready = await control.next_event("control.ready", timeout=10)
    assert ready["id"] == call_id
    await ws.send_json({"type": "speak", "text": text, "flush": True})
    started = await control.next_event("speech.started", timeout=10)
    done = await control.next_event("speech.done", timeout=15, speech_id=started["speech_id"])
    assert done["interrupted"] is False
    return control
