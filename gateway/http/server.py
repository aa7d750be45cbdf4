"""The HTTP server's runner for ``tts-gateway serve``: serve until SIGTERM or SIGINT, then
drain (gateway/http/drain.py) and stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from gateway.http.accesslog import RedactingAccessLogger
from gateway.http.guard import GuardedRunner
from gateway.http.keys import DRAIN

log = logging.getLogger(__name__)

#: How long the HTTP server waits for requests still running (control sockets of calls
#: that just ended) once the calls are gone, before it cancels them.
SHUTDOWN_TIMEOUT_S = 5.0


async def serve(app: web.Application, host: str, port: int, *,
                banner: Callable[[str], None] = print,
                shutdown_timeout: float = SHUTDOWN_TIMEOUT_S, reuse_port: bool = False,
                own_port: int | None = None) -> None:
    """Serve ``app`` on ``host:port`` until SIGTERM or SIGINT, then drain and stop.

    Replaces ``web.run_app`` for ``tts-gateway serve``: the first signal starts the drain
    (see gateway/http/drain.py), a second one cuts it short. Returns once the server has stopped
    and the application's cleanup (provider pools, media clock) has run.

    A worker of ``serve --workers N`` binds ``port`` with ``reuse_port`` (the workers share it)
    and, with ``own_port``, also listens there alone: the way to reach this very worker (its
    /metrics, the control API of its calls).
    """
    loop = asyncio.get_running_loop()
    received: list[str] = []
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        received.append(name)
        drain = app.get(DRAIN)
        if len(received) == 1:
            if drain is not None:
                drain.begin(name)
            stop.set()
        elif drain is not None:
            drain.force(f"{name} again")

    handled = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            handled.append(signum)
        except NotImplementedError:  # Windows: Ctrl-C stops without a drain
            pass
    # the access log must not print route tokens (they are in the media and answer paths);
    # the guarded runner adds the connection limits (header timeout, per-address limit)
    runner = GuardedRunner(app, handle_signals=False, shutdown_timeout=shutdown_timeout,
                           access_log_class=RedactingAccessLogger)
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        await site.start()
        if own_port is not None:
            await web.TCPSite(runner, host, own_port).start()
        banner(f"======== Running on {site.name} ========\n(Press CTRL+C to quit)")
        await stop.wait()
        drain = app[DRAIN]
        drain.begin(received[0])
        if len(received) > 1:
            drain.force(f"{received[-1]} again")
        await drain.run()
    finally:
        await runner.cleanup()  # stops listening, then the app's cleanup closes the pools
        for signum in handled:
            loop.remove_signal_handler(signum)
    log.info("stopped")
