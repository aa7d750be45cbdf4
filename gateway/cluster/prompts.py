"""The prompt cache shared through Redis, with the local disk cache in front of it.

A prompt is looked up on the local disk (and its memory) first: a local hit never touches
Redis. A local miss asks Redis for ``tts-gateway:prompt:<key>``, which holds the very bytes
of a cache file (gateway/prompts/store.py ``encode``), so the same version, key and checksum
checks apply; a hit there is written to the local disk, and the next call finds it there.
A prompt synthesized here goes to the local disk and, in the background, to Redis, so the
call never waits for that write.

Bounds: an entry larger than ``cluster.prompt_max_bytes`` is neither written nor read (a
read transfers at most that many bytes); each entry expires ``cluster.prompt_ttl_s`` after
it was written, so the prompts of a route that is gone leave a Redis shared with other uses
without relying on its maxmemory policy (Redis' default, ``noeviction``, would fail the
directory's heartbeat once memory is full). Every Redis operation is bounded by
``cluster.redis_timeout_s``; a failure or a timeout is a miss (the call synthesizes, as
without Redis), counted in ``tts_gateway_cluster_redis_errors_total{op="prompt_get"|
"prompt_put"}``, logged rate-limited, and Redis is left alone for a few seconds, so that
while it is down a miss does not wait for the timeout again and again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from gateway.cluster.directory import PREFIX, connect
from gateway.config import ClusterConfig
from gateway.logs import RateLimitedLog
from gateway.metrics import Metrics
from gateway.prompts.store import CorruptEntry, PromptStore, RecordedPrompt, decode, encode

log = logging.getLogger(__name__)

#: after a failed Redis operation, look-ups skip Redis (a miss at once) for this long
PAUSE_AFTER_ERROR_S = 5.0
#: background writes to Redis at most in flight; more are dropped (the next synthesis of
#: the prompt, or a warm-up, writes it again)
MAX_PENDING_WRITES = 32


def prompt_redis_key(key: str) -> str:
    return f"{PREFIX}:prompt:{key}"


class SharedPrompts:
    """:class:`gateway.prompts.store.Prompts` on a local :class:`PromptStore` and Redis."""

    def __init__(self, local: PromptStore, config: ClusterConfig, metrics: Metrics | None):
        self.local = local
        self.config = config
        self.metrics = metrics
        self.redis = connect(config)
        self._paused_until = 0.0
        self._writes: set[asyncio.Task] = set()
        self._closed = False
        self._warn = RateLimitedLog(log, burst=1, interval=30.0)

    # -- what the local store answers ---------------------------------------------------

    @property
    def max_bytes(self) -> int:
        return self.local.max_bytes

    @property
    def dir(self) -> Path:
        return self.local.dir

    @property
    def bytes(self) -> int:
        return self.local.bytes

    def __len__(self) -> int:
        return len(self.local)

    async def load(self) -> None:
        await self.local.load()

    def entries(self) -> list[dict[str, Any]]:
        return self.local.entries()

    def has(self, key: str) -> bool:
        return self.local.has(key)

    def tag(self, key: str, route: str) -> None:
        self.local.tag(key, route)

    async def purge(self, route: str | None = None) -> dict[str, int]:
        """Empties the local cache only: the other instances' copies stay, and so do
        Redis' (they expire; ``redis-cli --scan --pattern 'tts-gateway:prompt:*'`` lists
        them). A prompt's key changes with anything that changes its audio, so a stale
        entry is never played for a changed prompt."""
        return await self.local.purge(route)

    # -- the shared part ----------------------------------------------------------------

    async def get(self, key: str, *, route: str | None = None) -> RecordedPrompt | None:
        prompt = await self.local.get(key, route=route)
        if prompt is not None:
            return prompt
        return await self.fetch(key, route=route)

    async def fetch(self, key: str, *, route: str | None = None) -> RecordedPrompt | None:
        """The prompt from Redis (then on the local disk too), or None: not there, not
        usable, or Redis did not answer within ``redis_timeout_s``."""
        if self._closed or time.monotonic() < self._paused_until:
            return None
        limit = self.config.prompt_max_bytes
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.strlen(prompt_redis_key(key))
            pipe.getrange(prompt_redis_key(key), 0, limit - 1)  # never more than the bound
            size, data = await asyncio.wait_for(pipe.execute(), self.config.redis_timeout_s)
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed("prompt_get", exc)
            return None
        if not size:
            self._count("miss")
            return None
        if size > limit:
            self._count("rejected")
            self._warn.warning("too_large", "shared prompt %s not used: %d bytes in Redis, "
                               "more than cluster.prompt_max_bytes", key[:16], size)
            return None
        try:
            prompt, _ = await asyncio.to_thread(decode, key, data)
        except CorruptEntry as exc:
            self._count("rejected")
            self._warn.warning("corrupt", "shared prompt %s not used: %s", key[:16], exc)
            return None
        self._count("hit")
        await self.local.put(key, prompt, route=route)
        return prompt

    async def put(self, key: str, prompt: RecordedPrompt, *, route: str | None = None) -> bool:
        stored = await self.local.put(key, prompt, route=route)
        if prompt.frames:
            self.share(key, prompt)
        return stored

    def share(self, key: str, prompt: RecordedPrompt | None = None) -> None:
        """Write the entry to Redis in the background (never waits), unless it is there
        already; ``prompt`` None: the local one (a warm-up found it on disk)."""
        if self._closed or time.monotonic() < self._paused_until:
            return
        if len(self._writes) >= MAX_PENDING_WRITES:
            self._failed("prompt_put", None)
            return
        task = asyncio.get_running_loop().create_task(self._write(key, prompt),
                                                      name="prompt-share")
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, key: str, prompt: RecordedPrompt | None) -> None:
        name = prompt_redis_key(key)
        try:
            if prompt is None:  # the file's bytes as they are (its routes are not read)
                if await asyncio.wait_for(self.redis.exists(name), self.config.redis_timeout_s):
                    return
                data = await asyncio.to_thread(self.local.entry_bytes, key)
                if data is None:
                    return
            else:
                data = await asyncio.to_thread(encode, key, prompt)
            if len(data) > self.config.prompt_max_bytes:
                return
            await asyncio.wait_for(
                # over whatever is there: a corrupt entry is replaced by the next synthesis
                self.redis.set(name, data, px=int(self.config.prompt_ttl_s * 1000)),
                self.config.redis_timeout_s)
            self._count("stored")
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed("prompt_put", exc)

    async def close(self) -> None:
        """Stop the background writes and close the Redis connections. Idempotent."""
        self._closed = True
        for task in list(self._writes):
            task.cancel()
        for task in list(self._writes):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()

    def _failed(self, op: str, exc: BaseException | None) -> None:
        if exc is not None:
            self._paused_until = time.monotonic() + PAUSE_AFTER_ERROR_S
        if self.metrics is not None:
            self.metrics.cluster_redis_errors.labels(op).inc()
        reason = type(exc).__name__ if exc is not None else "too many writes pending"
        self._warn.warning(op, "shared prompt cache: Redis %s failed (%s); prompts are "
                           "synthesized here meanwhile", op, reason)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.prompt_cache_shared.labels(result).inc()
