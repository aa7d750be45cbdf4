"""Serve an aiohttp application on an ephemeral loopback port (tests, benchmarks, fakes)."""

from __future__ import annotations

from aiohttp import web

from gateway.http.guard import GuardedRunner


async def serve_on_loopback(app: web.Application, **runner_options) -> tuple[web.AppRunner, int]:
    """Start ``app`` on 127.0.0.1 with a port the kernel picks; return the runner and the port.

    The caller owns the runner: ``await runner.cleanup()`` stops the server. The gateway's
    application gets its connection limits, as under ``tts-gateway serve``.
    """
    runner = GuardedRunner(app, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]
