"""The warm connection pool against the faithful Inworld fake on loopback: prewarming,
leasing, clean return, dirty close-and-replace, idle refresh, backoff on a refusing
endpoint, sharing within the context limit, and ``max`` under 50 concurrent calls."""

from __future__ import annotations

import asyncio
import itertools
from contextlib import aclosing

import pytest
from aiohttp import web

from gateway.carriers.events import MediaFormat
from gateway.http.loopback import serve_on_loopback
from gateway.metrics import Metrics
from gateway.tts.providers.inworld import fake as fake_inworld
from gateway.tts.base import TtsError
from gateway.tts.providers.driver import RemoteSettings
from gateway.tts.remote.pool import PoolSettings
from gateway.tts.remote.session import RemoteProvider
from tests.e2e.test_twilio_call import metric_value

ULAW = MediaFormat("mulaw", 8000)


class Fake:
    def __init__(self, app: web.Application, runner: web.AppRunner, port: int):
        self.app, self.runner, self.port = app, runner, port
        self.url = f"ws://127.0.0.1:{port}{fake_inworld.PATH}"

    @property
    def stats(self):
        return self.app["stats"]


@pytest.fixture
async def fake():
    app = fake_inworld.make_app()
    runner, port = await serve_on_loopback(app)
    try:
        yield Fake(app, runner, port)
    finally:
        await runner.cleanup()


async def started(endpoint: str, metrics: Metrics | None = None, **pool) -> RemoteProvider:
    settings = RemoteSettings(name="inworld", type="inworld", api_key="test-key",
                              voice="Ashley", endpoint=endpoint)
    provider = RemoteProvider(settings, PoolSettings(**pool))
    provider.use_metrics(metrics or Metrics())
    await provider.start()
    return provider


async def say(session, text: str) -> int:
    total = 0
    async with aclosing(session.synthesize(text)) as chunks:
        async for chunk in chunks:
            assert chunk.encoding == "mulaw" and chunk.sample_rate == 8000
            total += len(chunk.data)
    return total


async def eventually(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_prewarms_min_idle_before_ready_and_leases_a_warm_connection(fake):
    metrics = Metrics()
    provider = await started(fake.url, metrics, min_idle=3, max=10)
    try:
        assert not provider.ready or provider.pool.idle_count >= 3
        assert await provider.pool.wait_ready(5)
        assert provider.pool.idle_count == 3 and fake.stats.connections == 3
        warm = list(provider.pool.connections)
        session = await provider.open_session(ULAW)
        assert session.connection in warm  # a hit: no handshake in the call's path
        text = metrics.exposition().decode()
        assert metric_value(text, "tts_gateway_pool_hits_total", provider="inworld") == 1
        assert metric_value(text, "tts_gateway_pool_misses_total", provider="inworld") == 0
        assert metric_value(text, "tts_gateway_pool_connections", provider="inworld",
                            state="leased") == 1
        # the pool tops the idle connections up again behind the lease
        await eventually(lambda: provider.pool.idle_count == 3)
        assert fake.stats.connections == 4
        await session.release()
    finally:
        await provider.close()


async def test_every_utterance_of_a_call_uses_its_leased_connection_then_it_goes_back(fake):
    provider = await started(fake.url, min_idle=1, max=4)
    try:
        await provider.pool.wait_ready(5)
        session = await provider.open_session(ULAW)
        conn = session.connection
        for text in ("First sentence of the call.", "A second one.", "And a third."):
            assert await say(session, text) > 4000
        assert session.connection is conn and session.connections_used == 1
        assert [e["text"].strip() for e in fake.app["log"]] == [
            "First sentence of the call.", "A second one.", "And a third."]
        assert conn.proto.is_clean()  # every context closed
        await session.release()
        assert conn in provider.pool.connections and not conn.closed and conn.leases == 0
        again = await provider.open_session(ULAW)
        assert again.connection in provider.pool.connections
        await again.release()
    finally:
        await provider.close()


async def test_a_dirty_connection_is_closed_on_release_and_replaced(fake):
    metrics = Metrics()
    provider = await started(fake.url, metrics, min_idle=1, max=4)
    try:
        await provider.pool.wait_ready(5)
        session = await provider.open_session(ULAW)
        conn = session.connection
        text = "A long sentence that will be cut off " * 5
        async with aclosing(session.synthesize(text)) as chunks:
            async for _ in chunks:
                break  # barge-in after the first chunk: close_context sent, audio still due
        assert not conn.proto.is_clean()
        await session.release()
        assert conn not in provider.pool.connections
        await eventually(lambda: conn.closed and provider.pool.idle_count == 1)
        text = metrics.exposition().decode()
        assert metric_value(text, "tts_gateway_pool_reconnects_total", provider="inworld",
                            reason="dirty") == 1
    finally:
        await provider.close()


async def test_idle_connections_are_refreshed_before_the_provider_drops_them():
    app = fake_inworld.make_app(idle_timeout_s=2.0)
    runner, port = await serve_on_loopback(app)
    metrics = Metrics()
    provider = await started(f"ws://127.0.0.1:{port}{fake_inworld.PATH}", metrics,
                             min_idle=2, max=4, idle_timeout_s=2.0)
    try:
        await provider.pool.wait_ready(5)
        # the objects, not their id()s: a replacement may reuse a freed connection's id
        first = list(provider.pool.connections)
        # refreshed at 80 % of the limit (1.6 s), 0.4 s before the fake would drop them
        await eventually(lambda: provider.pool.idle_count == 2
                         and not any(c in first for c in provider.pool.connections),
                         timeout=10)
        text = metrics.exposition().decode()
        assert metric_value(text, "tts_gateway_pool_reconnects_total", provider="inworld",
                            reason="idle_refresh") >= 2
        # refreshed before the idle limit: the fake never had to drop a session
        assert metric_value(text, "tts_gateway_pool_reconnects_total", provider="inworld",
                            reason="server_close") == 0
        session = await provider.open_session(ULAW)
        assert await say(session, "Still fresh.") > 0
        await session.release()
    finally:
        await provider.close()
        await runner.cleanup()


async def test_a_refusing_endpoint_is_retried_with_exponential_backoff_and_jitter():
    attempts: list[float] = []

    async def refuse(request: web.Request) -> web.Response:
        attempts.append(asyncio.get_running_loop().time())
        return web.Response(status=503, text="down for maintenance")

    app = web.Application()
    app.router.add_get(fake_inworld.PATH, refuse)
    runner, port = await serve_on_loopback(app)
    metrics = Metrics()
    provider = await started(f"ws://127.0.0.1:{port}{fake_inworld.PATH}", metrics,
                             min_idle=2, max=4, backoff_base_s=0.05, backoff_max_s=0.4)
    try:
        await asyncio.sleep(2.0)
        assert not provider.ready
        # without backoff this would be hundreds of attempts; with it: 0.05, 0.1, 0.2, 0.4, 0.4...
        assert 4 <= len(attempts) <= 12, attempts
        delays = provider.pool.backoff_delays
        ceilings = [min(0.4, 0.05 * 2 ** i) for i in range(len(delays))]
        assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings)), delays
        assert len(set(delays)) == len(delays)  # jittered
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert gaps[-1] > 3 * gaps[0]
        # a call that needs a connection now gets a clear error instead of hanging
        with pytest.raises(TtsError) as err:
            await provider.open_session(ULAW)
        assert err.value.kind == "connect" and "503" in str(err.value)
        text = metrics.exposition().decode()
        assert metric_value(text, "tts_gateway_pool_failures_total", provider="inworld",
                            kind="connect") >= 4
    finally:
        await provider.close()
        await runner.cleanup()


async def test_max_is_never_exceeded_under_50_concurrent_calls(fake):
    provider = await started(fake.url, min_idle=2, max=8, acquire_timeout_s=30)
    peak_open = 0

    async def watch():
        nonlocal peak_open
        while True:
            peak_open = max(peak_open, fake.stats.open)
            await asyncio.sleep(0.002)

    async def call(n: int) -> int:
        session = await provider.open_session(ULAW)
        try:
            return await say(session, f"Caller number {n} hears this.")
        finally:
            await session.release()

    watcher = asyncio.create_task(watch())
    try:
        await provider.pool.wait_ready(5)
        heard = await asyncio.gather(*(call(n) for n in range(50)))
        assert all(h > 4000 for h in heard)
        assert len(fake.app["log"]) == 50
        assert provider.pool.peak <= 8 and peak_open <= 8
        assert peak_open == 8  # the pool did use what it was allowed
    finally:
        watcher.cancel()
        await provider.close()


async def test_calls_share_a_socket_within_the_context_limit(fake):
    provider = await started(fake.url, min_idle=1, max=4, calls_per_connection=2)
    try:
        await provider.pool.wait_ready(5)
        a = await provider.open_session(ULAW)
        b = await provider.open_session(ULAW)
        assert a.connection is b.connection
        heard = await asyncio.gather(say(a, "Hello from call A."), say(b, "Hello from call B."))
        assert all(h > 4000 for h in heard)
        c = await provider.open_session(ULAW)  # the third call gets a socket of its own
        assert c.connection is not a.connection
        conn = a.connection
        for s in (a, b, c):
            await s.release()
        assert conn.proto.is_clean() and conn in provider.pool.connections
    finally:
        await provider.close()


async def test_a_session_refused_at_handshake_is_a_pool_failure_not_a_ready_pool():
    """Together answers a voice of another model with ``tts.failed`` instead of
    ``session.created`` (docs/protocols/tts-providers.md §3.3): the socket never counts as open."""
    from gateway.tts.providers.together import fake as fake_together

    app = fake_together.make_app()
    runner, port = await serve_on_loopback(app)
    metrics = Metrics()
    settings = RemoteSettings(name="together", type="together", api_key="test-key",
                              voice="tara", endpoint=f"ws://127.0.0.1:{port}{fake_together.PATH}")
    provider = RemoteProvider(settings, PoolSettings(min_idle=1, max=2, backoff_base_s=0.05,
                                                     backoff_max_s=0.2))
    provider.use_metrics(metrics)
    await provider.start()
    try:
        await asyncio.sleep(0.5)
        assert not provider.ready and provider.pool.connections == []
        with pytest.raises(TtsError) as err:
            await provider.open_session(ULAW)
        assert err.value.kind == "handshake" and "tara" in str(err.value)
        text = metrics.exposition().decode()
        assert metric_value(text, "tts_gateway_pool_failures_total", provider="together",
                            kind="handshake") >= 2
    finally:
        await provider.close()
        await runner.cleanup()


async def test_closing_right_after_a_call_is_no_provider_failure(fake, caplog):
    """The pool tops idle up behind a lease; a shutdown in the middle of that open must
    cancel it, not count it as a failed open or warn about the provider."""
    fake.app["profile"]["handshake_ms"] = 300
    metrics = Metrics()
    provider = await started(fake.url, metrics, min_idle=1, max=4)
    try:
        await provider.pool.wait_ready(5)
        session = await provider.open_session(ULAW)
        await eventually(lambda: provider.pool.opening == 1)  # the top-up is under way
        await session.release()
    finally:
        await provider.close()
    assert provider.pool.opening == 0 and not provider.pool.connections
    text = metrics.exposition().decode()
    for kind in ("connect", "handshake", "exhausted"):
        assert metric_value(text, "tts_gateway_pool_failures_total", provider="inworld",
                            kind=kind) == 0
    assert "opening a connection failed" not in caplog.text


async def test_more_than_a_hundred_calls_each_hold_their_own_socket(fake):
    """The pool's ``max`` bounds the sockets, nothing below it: aiohttp's default client
    connector stops at 100, which held call 101 and after until another call ended."""
    provider = await started(fake.url, min_idle=0, max=130, acquire_timeout_s=30)
    sessions = []
    try:
        async with asyncio.timeout(20):
            sessions = await asyncio.gather(*(provider.open_session(ULAW) for _ in range(120)))
            await eventually(lambda: fake.stats.open >= 120, timeout=20)
        assert fake.stats.open == 120 and provider.pool.peak == 120
    finally:
        for session in sessions:
            await session.release()
        await provider.close()
