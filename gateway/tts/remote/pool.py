"""A warm pool of provider connections (one pool per configured provider).

* ``min_idle`` connections of the warm key are opened and handshaken ahead of need; the
  pool is ``ready`` once it was warm (``/readyz``).
* A call leases one connection at its start and keeps it for its whole life; on release
  the connection goes back if it is clean, otherwise it is closed (and replaced).
* Idle connections are refreshed before the provider's idle timeout and rotated at
  ``max_session_s``; dead ones are dropped and replaced with exponential backoff and
  jitter while opens fail. Never more than ``max`` connections exist, opening included.
* A lease that finds nothing idle opens one (a pool miss) instead of failing; at ``max``
  it waits up to ``acquire_timeout_s`` for a release.
* Where the provider allows several contexts per socket, ``calls_per_connection`` > 1
  lets calls share one; the driver's context limits still apply.
* A ``single_use`` driver's connection (one utterance per socket) is leased per
  turn, not per call, and discarded after it: that is no reconnect, nor is the provider's
  close that its protocol announces (``Driver.closes_by_design``). ``min_idle`` handshaken
  sockets stay warm, so the next utterance's first audio has no handshake in its path.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable

from gateway.config import PoolSettings
from gateway.tts.base import TtsError
from gateway.tts.remote.connection import ProviderConnection
from gateway.tts.providers.driver import Driver

log = logging.getLogger(__name__)


class ConnectionPool:
    def __init__(self, driver: Driver, opener: Callable[[Hashable], Awaitable[ProviderConnection]],
                 settings: PoolSettings, *, warm_key: Hashable, metrics=None):
        self.driver = driver
        self.name = driver.settings.name
        self.settings = settings
        self.warm_key = warm_key
        self._opener = opener
        self._metrics = metrics
        self.connections: list[ProviderConnection] = []
        self.opening = 0
        self.ready = settings.min_idle == 0
        self.failures_in_a_row = 0
        self.backoff_delays: list[float] = []  # recent, for tests and the log
        self.peak = 0  # most connections at once, opening included
        self._next_open_at = 0.0
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()  # opens and closes the pool started
        self._closing = False
        idle_limit = settings.idle_timeout_s or driver.default_idle_timeout_s
        if driver.single_use and settings.min_idle < 1:
            log.warning("%s: %s sockets serve one utterance each; with pool.min_idle 0 every "
                        "utterance waits for a handshake", self.name, driver.type)
        # refresh idle sockets comfortably before the server drops them
        self._refresh_idle_after = idle_limit * 0.8 if idle_limit else None
        self._acquire = self._hits = self._misses = self._opens = None
        if metrics is not None:
            m = metrics
            m.pool_connections.labels(self.name, "idle").set_function(lambda: self.idle_count)
            m.pool_connections.labels(self.name, "leased").set_function(lambda: self.leased_count)
            self._acquire = m.pool_acquire.labels(self.name)
            # exported at 0 from the start, so rate() sees the first exhaustion
            m.pool_failures.labels(self.name, "exhausted")
            self._hits = m.pool_hits.labels(self.name)
            self._misses = m.pool_misses.labels(self.name)
            self._opens = m.pool_opens.labels(self.name)

    # -- counts ------------------------------------------------------------------------------

    @property
    def idle_count(self) -> int:
        return sum(1 for c in self.connections if c.leases == 0 and c.usable)

    @property
    def leased_count(self) -> int:
        return sum(1 for c in self.connections if c.leases > 0)

    @property
    def total(self) -> int:
        return len(self.connections) + self.opening

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._maintain(),
                                                            name=f"pool-{self.name}")

    async def wait_ready(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (timeout or 1e9)
        while not self.ready and time.monotonic() < deadline:
            await self._wait_change(min(0.1, deadline - time.monotonic()))
        return self.ready

    async def close(self) -> None:
        self._closing = True
        tasks = [t for t in [self._task, *self._background] if t is not None]
        for task in tasks:
            if task.get_name() != "closing":  # closes run to the end: no socket is left open
                task.cancel()
        # what the cancelled tasks raise on their way out is of no interest
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in list(self.connections):
            await conn.close("pool closed")
        self.connections.clear()

    def _in_background(self, coro, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- leasing -----------------------------------------------------------------------------

    async def lease(self, key: Hashable) -> ProviderConnection:
        """A connection for one call, for the call's whole life; see the module doc."""
        started = time.monotonic()
        deadline = started + self.settings.acquire_timeout_s
        while True:
            if self._closing:
                raise TtsError("pool_closed", f"{self.name}: the gateway is shutting down")
            conn = self._pick(key)
            if conn is not None:
                conn.leases += 1
                self._count(self._hits, started)
                self._notify()  # the maintainer tops idle connections up again
                return conn
            if self.total < self.settings.max:
                conn = await self._open(key)
                conn.leases = 1
                self._count(self._misses, started)
                return conn
            if self._evict_idle(other_than=key):
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if self._metrics is not None:
                    self._metrics.pool_failures.labels(self.name, "exhausted").inc()
                raise TtsError("pool_exhausted",
                               f"{self.name}: all {self.settings.max} connections are in use "
                               f"(waited {self.settings.acquire_timeout_s:.1f} s); raise "
                               f"providers.{self.name}.pool.max")
            await self._wait_change(remaining)

    def release(self, conn: ProviderConnection) -> None:
        """The call is over: keep the connection if it is clean, else close and replace it."""
        conn.leases = max(0, conn.leases - 1)
        if conn.leases == 0:
            now = time.monotonic()
            reason = None
            if conn.closed:
                reason = None  # already gone and accounted for
            elif conn.retire or not self.driver.reusable(conn.proto):
                reason = "dirty"
            elif now - conn.opened_at >= self.settings.max_session_s:
                reason = "rotated"
            if reason == "dirty" and self.driver.single_use:
                self._discard(conn, "spent", count=False)  # its one turn is over, by design
            elif reason:
                self._discard(conn, reason)
            conn.idle_since = now
        self._notify()

    def _pick(self, key: Hashable) -> ProviderConnection | None:
        """A shared connection with room first (fewer sockets), else an idle one."""
        cap = self.settings.calls_per_connection
        idle = None
        for conn in self.connections:
            if conn.key != key or not conn.usable:
                continue
            if 0 < conn.leases < cap and self.driver.has_room(conn.proto):
                return conn
            if conn.leases == 0 and idle is None:
                idle = conn
        return idle

    def _evict_idle(self, other_than: Hashable) -> bool:
        for conn in self.connections:
            if conn.leases == 0 and conn.key != other_than:
                self._discard(conn, "evicted")
                return True
        return False

    # -- opening and upkeep ------------------------------------------------------------------

    async def _open(self, key: Hashable) -> ProviderConnection:
        self.opening += 1
        self.peak = max(self.peak, self.total)
        try:
            conn = await self._opener(key)
        except TtsError as exc:
            self._opened(failed=exc)
            raise
        finally:
            self.opening -= 1
        self._opened()
        if self._closing:
            await conn.close("pool closed")
            raise TtsError("pool_closed", f"{self.name}: the gateway is shutting down")
        self.connections.append(conn)
        return conn

    def _opened(self, failed: TtsError | None = None) -> None:
        if self._closing:
            return  # an open cut short by shutdown is no provider failure
        if failed is None:
            self.failures_in_a_row = 0
            self._next_open_at = 0.0
            if self._opens is not None:
                self._opens.inc()
            return
        self.failures_in_a_row += 1
        s = self.settings
        ceiling = min(s.backoff_max_s, s.backoff_base_s * 2 ** (self.failures_in_a_row - 1))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # "equal jitter"
        self.backoff_delays = [*self.backoff_delays, delay][-20:]
        self._next_open_at = time.monotonic() + delay
        if self._metrics is not None:
            self._metrics.pool_failures.labels(self.name, failed.kind).inc()
        log.warning("%s: opening a connection failed (%d in a row), next try in %.2f s: %s",
                    self.name, self.failures_in_a_row, delay, failed)

    def on_connection_closed(self, conn: ProviderConnection) -> None:
        """Called by a connection whose socket closed, whoever closed it."""
        if (conn in self.connections and not self._closing
                and not conn.close_reason.startswith("closed by the gateway")
                and not self.driver.closes_by_design(conn.proto)):
            self._count_reconnect(conn.close_reason)
        self._notify()

    def _count_reconnect(self, reason: str) -> None:
        if self._metrics is None:
            return
        label = ("server_close" if reason.startswith("closed by the provider")
                 else "error" if reason.startswith(("fatal", "socket error", "send failed",
                                                    "reader failed"))
                 else reason.split(":")[0].replace(" ", "_")[:20])
        self._metrics.pool_reconnects.labels(self.name, label).inc()

    def _discard(self, conn: ProviderConnection, reason: str, *, count: bool = True) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
        if not conn.closed:
            if count:
                self._count_reconnect(reason)
            self._in_background(conn.close(f"closed by the gateway ({reason})"), "closing")

    async def _maintain(self) -> None:
        while True:
            try:
                self._upkeep()
            except Exception:  # upkeep must go on whatever one connection did
                log.exception("%s: pool upkeep failed", self.name)
            wait = 1.0
            if self._next_open_at:
                wait = min(wait, max(0.01, self._next_open_at - time.monotonic()))
            if self._refresh_idle_after:  # wake for the next refresh, even a short one
                idle = [c.idle_since for c in self.connections if c.leases == 0]
                if idle:
                    due = min(idle) + self._refresh_idle_after - time.monotonic()
                    wait = min(wait, max(0.01, due))
            await self._wait_change(wait)

    def _upkeep(self) -> None:
        now = time.monotonic()
        s = self.settings
        for conn in list(self.connections):
            if conn.closed:
                self.connections.remove(conn)
            elif conn.leases == 0:
                if not conn.usable:
                    self._discard(conn, "dirty")
                elif now - conn.opened_at >= s.max_session_s:
                    self._discard(conn, "rotated")
                elif self._refresh_idle_after and now - conn.idle_since >= self._refresh_idle_after:
                    self._discard(conn, "idle_refresh")
        warm_idle = sum(1 for c in self.connections
                        if c.leases == 0 and c.usable and c.key == self.warm_key)
        if warm_idle >= s.min_idle and not self.ready:
            self.ready = True
            log.info("%s: pool warm (%d idle connections)", self.name, warm_idle)
        if now < self._next_open_at:
            return
        deficit = min(s.min_idle - warm_idle - self.opening, s.max - self.total)
        if self.failures_in_a_row:
            deficit = min(deficit, 1)  # probe one at a time while the provider refuses
        for _ in range(max(0, deficit)):
            self._in_background(self._open_idle(), "opening")

    async def _open_idle(self) -> None:
        try:
            conn = await self._open(self.warm_key)
        except TtsError:
            pass
        else:
            conn.idle_since = time.monotonic()
        self._notify()

    def _notify(self) -> None:
        """Wake everyone waiting for a change (each waiter holds the event of its time)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self, timeout: float) -> None:
        changed = self._changed
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await changed.wait()
        except TimeoutError:
            pass

    def _count(self, counter, started: float) -> None:
        if counter is not None and self._acquire is not None:
            counter.inc()
            self._acquire.observe(time.monotonic() - started)
