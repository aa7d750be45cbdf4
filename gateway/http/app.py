"""The aiohttp application factory: probes, metrics, media streams, control API."""

from __future__ import annotations

import asyncio
import gc
import logging
import os

import aiohttp
from aiohttp import web

from gateway.carriers.registry import CARRIERS
from gateway.cluster import CallTable
from gateway.config import ConfigError, GatewayConfig
from gateway.console import routes as console_routes
from gateway.core.call import CallServices
from gateway.core.playout import MediaClock
from gateway.http import control, overview, prompts
from gateway.http.answer import answer
from gateway.http.control_access import control_auth
from gateway.http.drain import Drain
from gateway.http.errors import json_errors, quiet_client_errors
from gateway.http.guard import CONNECTIONS, ConnectionGuard
from gateway.http.keys import (CALLS, CLOCK, CLUSTER, CONFIG, DRAIN, HTTP, METRICS,
                               PROMPTS_READY, PROVIDERS, SERVICES, TCP_LISTENERS, WORKER)
from gateway.http.media import media_stream, start_tcp_carrier
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.prompts.store import Prompts, PromptStore
from gateway.tts.base import TtsProvider

log = logging.getLogger(__name__)


def build_providers(config: GatewayConfig) -> dict[str, TtsProvider]:
    """Instantiate the configured providers; a missing optional extra is a ConfigError."""
    providers: dict[str, TtsProvider] = {}
    problems = []
    for name, pc in config.providers.items():
        if pc.type == "piper":
            try:
                from gateway.tts.piper import PiperProvider

                providers[name] = PiperProvider(name, pc.voice, threads=pc.options["threads"])
            except (ImportError, ValueError) as exc:
                problems.append(f"providers.{name}: {exc}")
        elif pc.type == "fake":
            from gateway.tts.fake import FakeProvider

            providers[name] = FakeProvider(name, **pc.options)
        else:
            from gateway.tts.remote.session import build_remote

            providers[name] = build_remote(pc, config.limits)
    if problems:
        raise ConfigError(problems)
    return providers


def create_app(config: GatewayConfig, *, providers: dict[str, TtsProvider] | None = None
               ) -> web.Application:
    quiet_client_errors()
    app = web.Application(middlewares=[json_errors, control_auth])
    metrics = Metrics()
    app[CONFIG] = config
    app[METRICS] = metrics
    app[CLOCK] = clock = MediaClock(metrics)
    app[PROVIDERS] = providers if providers is not None else build_providers(config)
    for provider in app[PROVIDERS].values():
        provider.use_metrics(metrics)
    app[CALLS] = CallTable()
    app[CONNECTIONS] = ConnectionGuard(config.limits, metrics)
    cache = config.prompt_cache
    local = PromptStore(cache.dir, cache.max_bytes, metrics, memory_bytes=cache.memory_bytes)
    store: Prompts = local
    if config.cluster.redis_url:
        from gateway.cluster.prompts import SharedPrompts

        store = SharedPrompts(local, config.cluster, metrics)
    app[SERVICES] = CallServices(config=config, metrics=metrics, clock=clock,
                                 providers=app[PROVIDERS], prompts=store)
    app[PROMPTS_READY] = asyncio.Event()
    app.cleanup_ctx.append(_lifecycle)
    if config.cluster.redis_url:
        app.cleanup_ctx.append(_cluster)  # after _lifecycle: stops first, before calls end
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/v1/media/{carrier}", media_stream)
    app.router.add_get("/v1/media/{carrier}/{route}", media_stream)
    app.router.add_get("/v1/media/{carrier}/{route}/{token}", media_stream)
    for path in ("/v1/answer/{carrier}/{route}", "/v1/answer/{carrier}/{route}/{token}"):
        app.router.add_get(path, answer)
        app.router.add_post(path, answer)
    app.router.add_routes(control.routes)
    app.router.add_routes(prompts.routes)
    app.router.add_routes(overview.routes)
    app.router.add_routes(console_routes)
    return app


async def _lifecycle(app: web.Application):
    config = app[CONFIG]
    app[DRAIN] = Drain(app[CALLS], config.server.drain_timeout_s,
                       config.playout.hangup_mark_timeout_s)
    app[CLOCK].start()
    # A socket a call dials to its route's bot holds its connection for the whole call, and
    # aiohttp's default (100 in all) would stall the 101st bot's upgrade: room for a bot
    # socket and a webhook request per call the gateway takes.
    app[HTTP] = http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
        limit=2 * config.limits.max_calls + 16))
    app[SERVICES].http = http
    starts = [asyncio.get_running_loop().create_task(_start_provider(app, p))
              for p in app[PROVIDERS].values()]
    starts.append(asyncio.get_running_loop().create_task(_prepare_prompts(app)))
    app[TCP_LISTENERS] = listeners = {}
    for carrier in config.carriers:
        if CARRIERS[carrier].transport == "tcp":
            listeners[carrier] = await start_tcp_carrier(app, carrier)
    try:
        yield
    finally:
        for listener in listeners.values():
            listener.close()  # no new calls; the ones in progress end below
        for task in starts:
            task.cancel()
        for call in list(app[CALLS].values()):
            await call.end("shutdown")
        await app[CLOCK].stop()
        await app[SERVICES].prompts.close()
        for provider in app[PROVIDERS].values():
            await provider.close()
        await http.close()


async def _cluster(app: web.Application):
    """The call directory's heartbeat, for ``cluster.redis_url`` (gateway/cluster/)."""
    from gateway.cluster.directory import CallDirectory

    config = app[CONFIG]
    drain = app[DRAIN]
    calls = app[CALLS]
    app[CLUSTER] = directory = CallDirectory(
        config.cluster, calls, app[METRICS], capacity=config.limits.max_calls,
        draining=lambda: drain.draining)
    if isinstance(calls, CallTable):
        calls.on_change = directory.changed
    directory.start()
    try:
        yield
    finally:
        if isinstance(calls, CallTable):
            calls.on_change = None
        await directory.stop()


async def _start_provider(app: web.Application, provider: TtsProvider) -> None:
    try:
        await provider.start()
        gc.freeze()  # what exists once a provider is loaded lives forever: never rescan it
    except Exception as exc:  # readiness stays false; the reason is in the log and metrics
        app[METRICS].tts_errors.labels(provider.name, "start").inc()
        log.error("provider %s failed to start: %s", provider.name, exc)


async def _prepare_prompts(app: web.Application) -> None:
    """Index the prompt cache; with ``prompt_cache.warm_on_start``, synthesize what is not
    cached once the providers are ready. Readiness waits for it."""
    store = app[SERVICES].prompts
    try:
        await store.load()
    except OSError as exc:  # calls still work: every prompt is a miss until it can write
        log.error("prompt cache %s cannot be used: %s", store.dir, exc)
    if app[CONFIG].prompt_cache.warm_on_start:
        while not all(p.ready for p in app[PROVIDERS].values()):
            await asyncio.sleep(0.05)
        from gateway.prompts.warm import warm

        counts = await warm(app[CONFIG], app[PROVIDERS], store)
        log.info("prompt cache warmed: %s", counts)
    app[PROMPTS_READY].set()


async def healthz(request: web.Request) -> web.Response:
    worker = request.app.get(WORKER)
    if worker is None:
        return web.json_response({"status": "ok"})
    # which of ``serve --workers N`` answered: a scrape or a probe reaches one of them
    return web.json_response({"status": "ok", "worker": worker, "pid": os.getpid()})


async def readyz(request: web.Request) -> web.Response:
    # A pooled provider is ready once its pool is warm (min_idle connections handshaken).
    # A draining gateway is not ready whatever its providers: it takes no new calls.
    providers = {name: p.ready for name, p in request.app[PROVIDERS].items()}
    drain = request.app[DRAIN]
    prompts = request.app[PROMPTS_READY].is_set()
    ready = all(providers.values()) and prompts and not drain.draining
    status = ("ready" if ready else "draining" if drain.draining
              else "providers_not_ready" if not all(providers.values()) else "prompts_warming")
    return web.json_response({"ready": ready, "status": status, "providers": providers,
                              **drain.status()},
                             status=200 if ready else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    resp = web.Response(body=body)
    resp.content_type = CONTENT_TYPE.split(";")[0]
    resp.charset = "utf-8"
    return resp
