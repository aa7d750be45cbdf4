"""Shared by the console's tests: a gateway with a control token, a Twilio call placed
with the simulator, and waiting for a call to be listed."""

from __future__ import annotations

import asyncio
import os

from tests.conftest import base_config

TOKEN = "s3cret/token+with=odd chars"
TOKEN_ENV = "TTS_GATEWAY_TEST_CONTROL_TOKEN"


def token_config() -> tuple[dict, dict]:
    """A gateway config whose control API needs :data:`TOKEN`, and its environment."""
    data = base_config()
    data["auth"] = {"control_token_env": TOKEN_ENV}
    return data, {TOKEN_ENV: TOKEN}


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def wait_listed(gw, call_id: str, headers: dict | None = None, timeout: float = 10.0
                      ) -> dict:
    """The call's summary once ``GET /v1/calls/{id}`` has it."""
    async with asyncio.timeout(timeout):
        while True:
            status, body = await gw.get_json(f"/v1/calls/{call_id}", headers=headers or {})
            if status == 200:
                return body
            await asyncio.sleep(0.05)


async def screenshot(target, name: str) -> None:
    """A page's or an element's screenshot into ``$TTS_GATEWAY_SCREENSHOTS`` (``make
    screenshots``: the README's pictures); nothing without it."""
    if folder := os.environ.get("TTS_GATEWAY_SCREENSHOTS"):
        os.makedirs(folder, exist_ok=True)
        await target.screenshot(path=os.path.join(folder, name))
