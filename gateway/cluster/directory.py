"""The call directory and instance registry on Redis.

Each live call is a key ``tts-gateway:call:{id}`` holding its owner's ``instance_url``;
each instance a key ``tts-gateway:instance:{url}`` with its capacity, active calls, whether
it drains and its ``public_url``, and its URL in the set ``tts-gateway:instances``. The keys
carry a TTL of ``cluster.ttl_s``: an instance that dies stops refreshing them and they
expire (and its URL leaves the set when a reader finds its record gone).

Each heartbeat also reads every instance's record into :attr:`CallDirectory.registry`, a
snapshot the answer endpoints consult (:meth:`CallDirectory.redirect_target`) without
waiting on Redis.

The media path never waits on Redis. Calls only flag a change (:meth:`CallDirectory.changed`);
one background task writes in one pipeline: the calls that started or ended, at once after
a change, and the whole set of live calls every ``heartbeat_s``. A write after a failure is
a whole one, so once Redis is back (or after it lost its data) the directory is rebuilt
from the live calls within a heartbeat. While it fails, the task retries with backoff and
calls go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.cluster import ClusterUnavailable
from gateway.config import ClusterConfig
from gateway.logs import RateLimitedLog
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

PREFIX = "tts-gateway"
_SCAN_LIMIT = 100_000  # the most call keys one cluster listing reads
_BACKOFF_MAX_S = 10.0
INSTANCES = f"{PREFIX}:instances"  # the set of instance URLs
_MAX_INSTANCES = 1000  # the most instance records one heartbeat reads


def connect(config: ClusterConfig) -> aioredis.Redis:
    """A client (its connections opened on first use) whose every round trip is bounded
    by ``redis_timeout_s``."""
    assert config.redis_url
    return aioredis.Redis.from_url(
        config.redis_url, password=config.redis_password, socket_timeout=config.redis_timeout_s,
        socket_connect_timeout=config.redis_timeout_s, retry_on_timeout=False)


def call_key(call_id: str) -> str:
    return f"{PREFIX}:call:{call_id}"


def instance_key(url: str) -> str:
    return f"{PREFIX}:instance:{url}"


class CallDirectory:
    """This instance's view of the cluster: writes its own calls, reads everyone's."""

    def __init__(self, config: ClusterConfig, calls: Mapping[str, object], metrics: Metrics, *,
                 capacity: int, draining: Callable[[], bool] = lambda: False):
        assert config.redis_url and config.instance_url
        self.config = config
        self.instance_url = config.instance_url.rstrip("/")
        self.calls = calls
        self.metrics = metrics
        self.capacity = capacity
        self.draining = draining
        self.redis = connect(config)
        self.up = False  # the last write reached Redis
        self.writes = 0  # pipelines that reached Redis (figures for the tests and bench)
        # every instance's record as the last heartbeat read it, and when (monotonic)
        self.registry: list[dict] = []
        self.registry_at = 0.0
        self._registered: set[str] = set()
        self._next_full = 0.0  # monotonic time of the next full write
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._warn = RateLimitedLog(log, burst=1, interval=30.0)

    # -- the writer ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cluster-sync")

    def changed(self) -> None:
        """A call started or ended: write the directory soon (never waits)."""
        self._wake.set()

    async def stop(self, *, deregister: bool = True) -> None:
        """Stop the heartbeat; with ``deregister``, remove this instance and its calls at
        once (best effort) instead of letting them expire. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            # Python 3.11's wait_for loses a cancel that comes as its operation completes:
            # the flag ends the loop then
            self._stopping = True
            self._wake.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if deregister:
                keys = [call_key(c) for c in self._registered] + [instance_key(self.instance_url)]
                with contextlib.suppress(RedisError, OSError, ClusterUnavailable):
                    await self._bounded(self.redis.delete(*keys))
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            self._wake.clear()
            try:
                await self.write()
                failures = 0
            except (RedisError, OSError, ClusterUnavailable) as exc:
                failures += 1
                self.metrics.cluster_redis_errors.labels("heartbeat").inc()
                self._warn.warning("heartbeat", "cluster directory not written (Redis: %s); "
                                   "calls go on, retrying", type(exc).__name__)
            except Exception:  # a bug here must not end the heartbeat for good
                failures += 1
                log.exception("cluster directory write failed")
            if failures and not self._stopping:
                # while Redis is down a call's start or end does not hurry the retry
                await asyncio.sleep(min(self.config.heartbeat_s * 2 ** (failures - 1),
                                        _BACKOFF_MAX_S, self.config.ttl_s / 2))
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(),
                                       max(0.0, self._next_full - time.monotonic()))

    async def write(self) -> None:
        """One pipeline. Every ``heartbeat_s`` (and after a failure) a full write: every live
        call with a fresh TTL, this instance's record, and the registry read back. Between
        them, a call's start or end writes only that call (and the record), so a start costs
        O(1) however many calls the instance holds."""
        live = set(self.calls)
        ended = self._registered - live
        full = not self.up or time.monotonic() >= self._next_full
        ttl_ms = int(self.config.ttl_s * 1000)
        owner = json.dumps({"owner": self.instance_url})
        pipe = self.redis.pipeline(transaction=False)
        for call_id in live if full else live - self._registered:
            pipe.set(call_key(call_id), owner, px=ttl_ms)
        if ended:
            pipe.delete(*(call_key(c) for c in ended))
        pipe.set(instance_key(self.instance_url), json.dumps(self.record()), px=ttl_ms)
        if full:
            pipe.sadd(INSTANCES, self.instance_url)
            pipe.pexpire(INSTANCES, ttl_ms)
            pipe.srandmember(INSTANCES, _MAX_INSTANCES)
        try:
            replies = await self._bounded(pipe.execute())
        except BaseException:
            self.registry = []  # Redis is not answering: no instance is known to have room
            raise
        self._registered = live
        if full:
            self._next_full = time.monotonic() + self.config.heartbeat_s
            await self._read_registry(replies[-1])
        self.writes += 1
        if not self.up:
            log.info("cluster directory written: %d calls of %s", len(live), self.instance_url)
        self.up = True
        self.metrics.cluster_redis_up.set(1)

    def record(self) -> dict:
        return {"url": self.instance_url, "capacity": self.capacity,
                "active_calls": len(self.calls), "draining": self.draining(),
                "public_url": self.config.public_url, "updated_at": round(time.time(), 3)}

    async def _read_registry(self, members: list[bytes]) -> None:
        urls = [m.decode(errors="replace") for m in members]
        raws = await self._bounded(self.redis.mget([instance_key(u) for u in urls])) if urls \
            else []
        gone = [url for url, raw in zip(urls, raws) if raw is None]
        if gone:  # expired records: their instances stopped
            await self._bounded(self.redis.srem(INSTANCES, *gone))
        self.registry = [r for r in map(_record_of, raws) if r is not None]
        self.registry_at = time.monotonic()

    # -- the answer endpoints' choice -------------------------------------------------------

    def redirect_target(self) -> tuple[str, str] | None:
        """``(reason, public_url)`` of the live, non-draining instance with the most room,
        when this one drains or is full (reason ``draining``/``full``); None: take the call
        here. Reads only the snapshot (never waits); a snapshot older than ``ttl_s``, or
        none since Redis failed, chooses nobody."""
        if self.draining():
            reason = "draining"
        elif len(self.calls) >= self.capacity * self.config.redirect_at:
            reason = "full"
        else:
            return None
        if not self.registry or time.monotonic() - self.registry_at > self.config.ttl_s:
            return None
        best, best_room = None, 0
        for record in self.registry:
            if record["url"] == self.instance_url or record["draining"] \
                    or not record["public_url"]:
                continue
            room = int(record["capacity"] * self.config.redirect_at) - record["active_calls"]
            if room > best_room or (room == best_room and best is not None
                                    and record["url"] < best["url"]):
                best, best_room = record, room
        if best is None:
            return None
        best["active_calls"] += 1  # until the next heartbeat: spread a burst of calls
        return reason, best["public_url"]

    async def _bounded(self, operation):
        try:
            return await asyncio.wait_for(operation, self.config.redis_timeout_s * 2)
        except TimeoutError as exc:
            self.up = False
            self.metrics.cluster_redis_up.set(0)
            raise ClusterUnavailable("Redis did not answer in time") from exc
        except (RedisError, OSError):
            self.up = False
            self.metrics.cluster_redis_up.set(0)
            raise

    # -- the readers ------------------------------------------------------------------------

    async def owner(self, call_id: str) -> str | None:
        """The instance URL that holds ``call_id``, or None; ClusterUnavailable when Redis
        cannot say."""
        raw = await self._read("lookup", self.redis.get(call_key(call_id)))
        return _owner_of(raw)

    async def owners(self) -> dict[str, str]:
        """Every call in the directory -> its owner (at most ``_SCAN_LIMIT``)."""
        async def scan() -> dict[str, str]:
            keys = []
            async for key in self.redis.scan_iter(match=call_key("*"), count=1000):
                keys.append(key)
                if len(keys) >= _SCAN_LIMIT:
                    break
            values = await self.redis.mget(keys) if keys else []
            start = len(call_key(""))
            found = {}
            for key, raw in zip(keys, values):
                owner = _owner_of(raw)
                if owner is not None:
                    found[key.decode(errors="replace")[start:]] = owner
            return found
        return await self._read("list", scan(), rounds=4)

    async def instances(self) -> list[dict]:
        async def scan() -> list[dict]:
            keys = [k async for k in self.redis.scan_iter(match=instance_key("*"), count=1000)]
            found = []
            for raw in await self.redis.mget(keys) if keys else []:
                with contextlib.suppress(ValueError, TypeError):
                    if raw is not None:
                        found.append(json.loads(raw))
            return sorted(found, key=lambda r: str(r.get("url")))
        return await self._read("list", scan(), rounds=4)

    async def _read(self, op: str, operation, rounds: int = 1):
        try:
            return await asyncio.wait_for(operation, self.config.redis_timeout_s * 2 * rounds)
        except (TimeoutError, RedisError, OSError) as exc:
            self.metrics.cluster_redis_errors.labels(op).inc()
            raise ClusterUnavailable(f"Redis unreachable ({type(exc).__name__})") from exc


def _record_of(raw: bytes | None) -> dict | None:
    """An instance's record, its fields checked (None: not one)."""
    try:
        record = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    url, public_url = record.get("url"), record.get("public_url")
    capacity, active = record.get("capacity"), record.get("active_calls")
    if not isinstance(url, str) or not (public_url is None or isinstance(public_url, str)) \
            or type(capacity) is not int or type(active) is not int:
        return None
    return {"url": url, "public_url": public_url, "capacity": capacity,
            "active_calls": active, "draining": record.get("draining") is not False}


def _owner_of(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    try:
        owner = json.loads(raw).get("owner")
    except (ValueError, AttributeError):
        return None
    return owner if isinstance(owner, str) else None
