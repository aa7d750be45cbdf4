"""Fuzz what the TTS providers send: each provider's faithful fake, with its frames mutated
on the way out, speaks into a call while a healthy call runs beside it.

The fakes are unchanged; an ``on_response_prepare`` hook wraps each server socket's
``send_str``/``send_bytes`` so that, with a probability the example draws, a frame is
mutated (a JSON value replaced or retyped, a key deleted, text cut, bytes flipped or
truncated), duplicated, dropped or sent as the other frame type. The mutation is
deterministic in a seed Hypothesis draws. Each example speaks two sentences, waits until
the call is idle (or a bound), then interrupts, which is how a bot gets a stuck utterance
back. Properties: every request is answered without 5xx, the call under attack stays up,
and the gateway ends unharmed (tests/fuzz/harness.py).
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http.loopback import serve_on_loopback
from gateway.sim.carriers import make_call
from tests.e2e.remote_setup import KEY_ENV, PROVIDERS, fake_provider_config
from tests.fuzz.harness import (FUZZ_SETTINGS, GatewayThread, fuzz_config, paths, replaced,
                                attack, run_client)

#: each fake's mutation for the current example (by the fake app's id; a started app's
#: state is not to be changed)
MUTATORS: dict[int, FrameMutator | None] = {}
EXAMPLES = max(4, FUZZ_SETTINGS.max_examples // 5)  # each example is a spoken utterance
ODD_VALUES = [None, "", "A" * 3000, -1, 0, 2**63, 1e308, [], {}, True, "\n", "💥"]


class FrameMutator:
    """Mutates a fake's outgoing frames, deterministically in ``seed``."""

    def __init__(self, seed: int, rate: float):
        self.random = random.Random(seed)
        self.rate = rate
        self.mutated = 0

    def text(self, data: str) -> list[str | bytes]:
        r = self.random
        if r.random() >= self.rate:
            return [data]
        self.mutated += 1
        op = r.choice(["value", "value", "delete", "cut", "binary", "twice", "drop"])
        if op in ("value", "delete"):
            try:
                doc = json.loads(data)
            except ValueError:
                doc = None
            if isinstance(doc, (dict, list)):
                path = r.choice([p for p in paths(doc) if p] or [()])
                return [json.dumps(replaced(doc, path, r.choice(ODD_VALUES),
                                            delete=op == "delete"))]
            op = "cut"
        if op == "cut":
            return [data[:r.randrange(len(data) + 1)]]
        if op == "binary":
            return [data.encode()]
        if op == "twice":
            return [data, data]
        return []

    def binary(self, data: bytes) -> list[str | bytes]:
        r = self.random
        if r.random() >= self.rate:
            return [data]
        self.mutated += 1
        op = r.choice(["cut", "flip", "odd", "text", "twice", "drop"])
        if op == "cut":
            return [data[:r.randrange(len(data) + 1)]]
        if op == "flip" and data:
            flipped = bytearray(data)
            flipped[r.randrange(len(data))] ^= 0xFF
            return [bytes(flipped)]
        if op == "odd":
            return [data + b"\x01"]
        if op == "text":
            return [data.decode("latin-1")]
        if op == "twice":
            return [data, data]
        return []


async def _wrap_socket(request: web.Request, response: web.StreamResponse) -> None:
    if not isinstance(response, web.WebSocketResponse):
        return
    send_str, send_bytes = response.send_str, response.send_bytes
    app = request.app

    async def send(parts: list[str | bytes]) -> None:
        for part in parts:
            if isinstance(part, str):
                await send_str(part)
            else:
                await send_bytes(part)

    async def mutated_str(data: str, compress: Any = None) -> None:
        mutator = MUTATORS.get(id(app))
        await send(mutator.text(data) if mutator else [data])

    async def mutated_bytes(data: bytes, compress: Any = None) -> None:
        mutator = MUTATORS.get(id(app))
        await send(mutator.binary(data) if mutator else [data])

    response.send_str = mutated_str
    response.send_bytes = mutated_bytes


async def _start_fakes() -> dict:
    """Every provider's fake on loopback, and a gateway config with a route for each."""
    config = fuzz_config()
    fakes, cleanups = {}, []
    for kind, p in PROVIDERS.items():
        fake = p.make_app(**p.fake_profile)
        fake.on_response_prepare.append(_wrap_socket)
        runner, port = await serve_on_loopback(fake)
        cleanups.append(runner.cleanup)
        fakes[kind] = fake
        config["providers"][kind] = fake_provider_config(kind, port)
        config["routes"][f"via_{kind}"] = {"provider": kind}
    return {"config": config, "fakes": fakes, "cleanups": cleanups}


@pytest.fixture(scope="module")
def gw():
    gateway = GatewayThread(fuzz_config(), KEY_ENV, before_start=_start_fakes).start()
    try:
        yield gateway
    finally:
        gateway.stop()


async def _speak_and_recover(http_url: str, call_id: str) -> None:
    """Two sentences, then wait for the call to go idle (at most a few seconds), then an
    interrupt; every answer must be below 500 and the call still there at the end."""
    base = f"{http_url}/v1/calls/{call_id}"
    async with aiohttp.ClientSession() as http:
        async with http.post(base + "/speak", json={
                "text": "The first sentence is short. The second one ends it."}) as resp:
            assert resp.status == 202, await resp.text()
        try:
            async with asyncio.timeout(4):
                while True:
                    await asyncio.sleep(0.1)
                    async with http.get(base) as resp:
                        assert resp.status == 200, "the call under attack is gone"
                        state = await resp.json()
                    if not state["speaking"] and not state["queued"]:
                        break
        except TimeoutError:
            pass  # a provider that went silent mid-utterance: the bot interrupts it
        async with http.post(base + "/interrupt") as resp:
            assert resp.status == 200, await resp.text()
        async with http.get(base) as resp:
            assert resp.status == 200, "the call under attack is gone"


def test_gateway_survives_mutated_provider_frames(gw):
    """Every provider at once, each with a call of its own: one example mutates all their
    frames (each from its own seed) while each call speaks."""
    calls = {kind: make_call("twilio", gw.ws_url, route=f"via_{kind}") for kind in PROVIDERS}
    for call in calls.values():
        gw.run(call.connect())
    mutated = {kind: 0 for kind in PROVIDERS}

    @settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
    @given(seed=st.integers(0, 2**32 - 1), rate=st.sampled_from([0.05, 0.2, 0.5]))
    def example(seed, rate):
        mutators = {kind: FrameMutator(seed + index, rate)
                    for index, kind in enumerate(PROVIDERS)}
        for kind, mutator in mutators.items():
            gw.run(_install(gw.extra["fakes"][kind], mutator))
        try:
            async def all_calls():
                await asyncio.gather(*(_speak_and_recover(gw.http_url, call.call_id)
                                       for call in calls.values()))
            run_client(all_calls)
        finally:
            for kind in PROVIDERS:
                gw.run(_install(gw.extra["fakes"][kind], None))
        for kind, mutator in mutators.items():
            mutated[kind] += mutator.mutated

    try:
        rss_before = attack(gw, example)
    finally:
        for call in calls.values():
            gw.run(call.hangup())
    print(f"\nframes mutated per provider: {mutated}")
    gw.assert_unharmed("fuzz providers", rss_before)


async def _install(fake: web.Application, mutator: FrameMutator | None) -> None:
    MUTATORS[id(fake)] = mutator
