"""The redis-server fixture: a real server the asyncio client talks to."""

from __future__ import annotations

import redis.asyncio as aioredis


async def test_a_real_redis_server_answers(redis_server):
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.set("k", "v", ex=5)
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()
