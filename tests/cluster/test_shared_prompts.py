"""The prompt cache shared through a real redis-server (gateway/cluster/prompts.py): a greeting
one instance synthesized (by the Cartesia fake on loopback, which logs each synthesis) plays
on another from Redis with no synthesis, then from its own disk; a Redis entry that is
corrupt or too large is a miss; with Redis stopped, prompts are synthesized as before."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
import redis

from gateway.cluster.prompts import SharedPrompts, prompt_redis_key
from gateway.http.keys import CONFIG, PROVIDERS, SERVICES
from gateway.prompts.store import PromptStore, decode
from gateway.prompts.warm import carrier_formats, synthesize
from tests.cluster.conftest import start_instance, stop_instance
from tests.e2e.remote_setup import KEY_ENV, fake_provider_config
from tests.e2e.test_twilio_call import metric_value
from tests.prompts.test_prompt_cache import GREETING, entries, fake, greet

__all__ = ["fake"]


def sections(fake, cache_dir: Path, **prompt_cache) -> dict:
    return {"providers": {"cartesia": fake_provider_config("cartesia", fake.port)},
            "routes": {"ivr": {"provider": "cartesia", "greeting": GREETING}},
            "default_route": "ivr",
            "prompt_cache": {"dir": str(cache_dir), **prompt_cache}}


@contextlib.asynccontextmanager
async def instance(redis_url: str, fake, cache_dir: Path, *, prompt_cache=None,
                   **cluster):
    gw = await start_instance(redis_url, extra=sections(fake, cache_dir, **(prompt_cache or {})),
                              environ=KEY_ENV, **cluster)
    try:
        yield gw
    finally:
        await stop_instance(gw)


def shared_keys(server) -> list[bytes]:
    client = redis.Redis.from_url(server.url)
    try:
        return sorted(client.scan_iter(match=prompt_redis_key("*")))
    finally:
        client.close()


def flush(server) -> None:
    client = redis.Redis.from_url(server.url)
    try:
        client.flushdb()
    finally:
        client.close()


async def wait_shared(server, count: int = 1, timeout: float = 10) -> list[bytes]:
    """The prompt keys in Redis once there are ``count`` (the write is in the background)."""
    deadline = time.monotonic() + timeout
    while len(keys := shared_keys(server)) < count:
        assert time.monotonic() < deadline, f"no {count} prompt(s) in Redis after {timeout} s"
        await asyncio.sleep(0.05)
    return keys


def shared(metrics: str, result: str) -> float:
    return metric_value(metrics, "tts_gateway_prompt_cache_shared_total", result=result)


async def test_a_greeting_synthesized_on_one_instance_plays_on_another_from_redis(
        redis_server, fake, tmp_path):
    flush(redis_server)
    async with instance(redis_server.url, fake, tmp_path / "a") as a:
        heard_a = await greet(a)
        assert len(fake["log"]) == 1
        [key] = await wait_shared(redis_server)
        # an entry in the disk's format: its version and checksum checks apply to it
        [file_a] = entries(tmp_path / "a")
        key_text = key.decode().rsplit(":", 1)[1]
        client = redis.Redis.from_url(redis_server.url)
        assert decode(key_text, client.get(key))[0] == decode(key_text, file_a.read_bytes())[0]
        ttl = client.ttl(key)
        client.close()
        assert 0 < ttl <= 7 * 86400
        assert shared(await a.metrics_text(), "stored") == 1

    async with instance(redis_server.url, fake, tmp_path / "b") as b:
        heard_b = await greet(b)
        assert len(fake["log"]) == 1  # no synthesis on B
        assert heard_b == heard_a
        assert len(entries(tmp_path / "b")) == 1  # and now on B's disk
        metrics = await b.metrics_text()
        assert shared(metrics, "hit") == 1
        # the next call on B plays from its disk: Redis is not asked again
        assert await greet(b) == heard_a
        metrics = await b.metrics_text()
        assert shared(metrics, "hit") == 1 and shared(metrics, "miss") == 0
        assert metric_value(metrics, "tts_gateway_prompt_cache_total", result="hit") == 1
        assert len(fake["log"]) == 1

        # figures: a Redis hit against a synthesis of the same greeting
        config, store = b.app[CONFIG], b.app[SERVICES].prompts
        [(fmt, frame_bytes)] = carrier_formats(config)
        fresh = SharedPrompts(PromptStore(tmp_path / "c"), config.cluster, None)
        try:
            started = time.perf_counter()
            fetched = await fresh.fetch(key_text)
            redis_s = time.perf_counter() - started
        finally:
            await fresh.close()
        assert fetched is not None and fetched.size == (await store.get(key_text)).size
        started = time.perf_counter()
        await synthesize(b.app[PROVIDERS]["cartesia"], None, GREETING, fmt, frame_bytes)
        synth_s = time.perf_counter() - started
        print(f"greeting of {fetched.size} bytes: from Redis (and to a local disk) "
              f"{redis_s * 1000:.1f} ms, synthesized by the loopback Cartesia fake "
              f"{synth_s * 1000:.1f} ms")



def corrupt(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])  # one bit of audio off: the checksum fails


@pytest.mark.parametrize("damage", ["corrupt", "too_large"])
async def test_a_corrupt_or_too_large_entry_in_redis_is_a_miss(redis_server, fake, tmp_path,
                                                               damage):
    flush(redis_server)
    async with instance(redis_server.url, fake, tmp_path / "a") as a:
        heard = await greet(a)
        [key] = await wait_shared(redis_server)
    client = redis.Redis.from_url(redis_server.url)
    if damage == "corrupt":
        client.set(key, corrupt(client.get(key)))
    limit = 1024 if damage == "too_large" else 4 << 20  # the greeting's entry is ~40 kB
    async with instance(redis_server.url, fake, tmp_path / "b",
                        prompt_max_bytes=limit) as b:
        assert await greet(b) == heard  # synthesized again, the same audio
        assert len(fake["log"]) == 2
        metrics = await b.metrics_text()
        assert shared(metrics, "rejected") == 1 and shared(metrics, "hit") == 0
        assert len(entries(tmp_path / "b")) == 1
        if damage == "corrupt":  # B's synthesis replaced the corrupt entry
            deadline = time.monotonic() + 10
            while shared(await b.metrics_text(), "stored") < 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            key_text = key.decode().rsplit(":", 1)[1]
            assert decode(key_text, client.get(key))[0].frames
    client.close()


async def test_with_redis_stopped_prompts_are_synthesized_and_played(redis_server, fake,
                                                                     tmp_path):
    redis_server.stop()
    try:
        async with instance(redis_server.url, fake, tmp_path / "a") as a:
            started = time.monotonic()
            heard = await greet(a)  # no error for the call (greet asserts it)
            took = time.monotonic() - started
            assert heard and len(fake["log"]) == 1
            assert len(entries(tmp_path / "a")) == 1
            second = await greet(a)  # from the local disk
            metrics = await a.metrics_text()
        assert second == heard and len(fake["log"]) == 1
        assert metric_value(metrics, "tts_gateway_cluster_redis_errors_total",
                            op="prompt_get") >= 1
        print(f"a greeting's call with Redis stopped: {took:.2f} s (redis_timeout_s 0.25)")
    finally:
        redis_server.start()


async def test_warming_one_instance_fills_redis_for_the_others(redis_server, fake, tmp_path):
    flush(redis_server)
    async with instance(redis_server.url, fake, tmp_path / "a",
                        prompt_cache={"warm_on_start": True}):
        await wait_shared(redis_server)
    assert len(fake["log"]) == 1
    async with instance(redis_server.url, fake, tmp_path / "b",
                        prompt_cache={"warm_on_start": True}) as b:
        assert len(entries(tmp_path / "b")) == 1  # warmed from Redis, before it was ready
        assert shared(await b.metrics_text(), "hit") == 1
    assert len(fake["log"]) == 1

    # Redis lost its data (a restart without persistence): A's next warm-up, which finds
    # the greeting on its disk, offers it to Redis again
    flush(redis_server)
    async with instance(redis_server.url, fake, tmp_path / "a",
                        prompt_cache={"warm_on_start": True}):
        await wait_shared(redis_server)
    assert len(fake["log"]) == 1
