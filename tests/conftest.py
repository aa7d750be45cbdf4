"""Shared fixtures: a real gateway (aiohttp server on an ephemeral loopback port)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from gateway.http.loopback import serve_on_loopback
from gateway.config import parse_config
from gateway.http.app import create_app

ROOT = Path(__file__).resolve().parent.parent


def base_config() -> dict:
    data = yaml.safe_load((ROOT / "gateway.yaml").read_text())
    data["server"]["host"] = "127.0.0.1"
    data["server"]["port"] = 0
    return data


class RunningGateway:
    def __init__(self, app: web.Application, runner: web.AppRunner, port: int):
        self.app = app
        self.runner = runner
        self.port = port
        self.http_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        self.session = aiohttp.ClientSession()

    async def get_json(self, path: str, **kwargs):
        async with self.session.get(self.http_url + path, **kwargs) as resp:
            return resp.status, await resp.json()

    async def post_json(self, path: str, body=None, **kwargs):
        async with self.session.post(self.http_url + path, json=body, **kwargs) as resp:
            return resp.status, await resp.json()

    async def metrics_text(self) -> str:
        async with self.session.get(self.http_url + "/metrics") as resp:
            assert resp.status == 200
            return await resp.text()

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status, body = await self.get_json("/readyz")
            if status == 200:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"gateway not ready: {body}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_gateway(config_data: dict, environ: dict | None = None, providers=None):
    """A gateway for the ``async with`` block: started (and ready), then stopped."""
    gw = await start_gateway(config_data, environ, providers)
    try:
        yield gw
    finally:
        await gw.session.close()
        await gw.runner.cleanup()


async def start_gateway(config_data: dict, environ: dict | None = None, providers=None
                        ) -> RunningGateway:
    config = parse_config(config_data, environ or {})
    app = create_app(config, providers=providers)
    runner, port = await serve_on_loopback(app)
    gw = RunningGateway(app, runner, port)
    await gw.wait_ready()
    return gw


@pytest.fixture(autouse=True)
def _own_prompt_cache(tmp_path_factory, monkeypatch):
    """Each test's gateways keep their prompt cache (gateway/prompts/store.py) in a folder
    of their own, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def gateway_config() -> dict:
    return copy.deepcopy(base_config())


@pytest.fixture
async def gateway(gateway_config):
    async with running_gateway(gateway_config) as gw:
        yield gw
