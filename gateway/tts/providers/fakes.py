"""What the fake provider servers share: their app, socket bookkeeping, the serving of one
socket, idle timeouts, in-order work per context, and a forced close.

Every fake keeps a :class:`FakeStats` at ``app["stats"]`` (a plain string key, like the
fakes' other keys, so tests need not import anything) and wraps its WebSocket handler in
:func:`track_socket`, so all of them count connections the same way. :func:`close_all`
closes every live server socket of one fake: the provider dropping its sockets (a restart,
a load-balancer drain), for tests that check the client heals. What each provider answers
(frames, errors, close codes) stays in its own module.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable, Coroutine, Iterator
from functools import lru_cache
from itertools import count
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import WSMessage, web

from gateway.tts.fake import speechlike_pcm

__all__ = ["BENCH_PROFILE", "COMMON_PROFILE", "RUNAWAY_PROFILE", "STATS", "FakeStats",
           "IdleReceiver", "Pacer", "add_stats", "audio_pieces", "check_profile", "close_all",
           "fake_app", "looped_speech", "run_after", "send_json", "serve_socket", "set_keys",
           "track_socket"]

#: The app key of the :class:`FakeStats` (a plain string on purpose).
STATS = "stats"
#: The profile knobs every fake takes, with the defaults most keep: the key it accepts,
#: the delay before the upgrade completes (the handshake), the delay before each
#: generation's first audio, the audio per chunk, how much faster than real time the
#: chunks come, and the speaking rate (a text's audio lasts ``len(text) / rate`` s).
COMMON_PROFILE: dict[str, Any] = {
    "api_key": "test-key",
    "handshake_ms": 0.0,
    "first_audio_ms": 30.0,
    "chunk_ms": 100.0,
    "burst_factor": 10.0,
    "chars_per_second": 15.0,
}
#: The profile knobs of a runaway provider, for the fakes that take them
#: (:func:`audio_pieces`): text containing ``flood_on`` is answered with audio without
#: end, ``flood_factor`` times faster than real time; text containing ``oversize_on`` with
#: one message carrying ``oversize_bytes`` of audio.
RUNAWAY_PROFILE: dict[str, Any] = {
    "flood_on": None,
    "flood_factor": 20.0,
    "oversize_on": None,
    "oversize_bytes": 8 << 20,
}

#: The profile knobs of a fake serving many calls at once (the benchmark's provider, for
#: the fakes that take them): ``max_ahead_s`` caps how far a stream's audio runs ahead of
#: real time (:class:`Pacer`), ``precomputed_audio`` sends :func:`looped_speech` instead
#: of synthesizing per request and keeps no copy of what was sent. The wire protocol is
#: the same either way.
BENCH_PROFILE: dict[str, Any] = {
    "max_ahead_s": None,
    "precomputed_audio": False,
}


@dataclass(eq=False)
class FakeStats:
    """Socket bookkeeping of one fake server.

    ``connections``: WebSocket upgrades accepted so far; ``sockets``: the live server-side
    sockets; ``open``: how many there are. ``stats["connections"]`` also works.
    """

    connections: int = 0
    sockets: set[web.WebSocketResponse] = field(default_factory=set)

    @property
    def open(self) -> int:
        return len(self.sockets)

    def __getitem__(self, key: str) -> object:
        return getattr(self, key)


def add_stats(app: web.Application) -> FakeStats:
    """Put a fresh :class:`FakeStats` at ``app["stats"]`` and return it."""
    stats = FakeStats()
    with warnings.catch_warnings():  # a plain str key on purpose, like app["log"]
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app[STATS] = stats
    return stats


@contextmanager
def track_socket(app: web.Application, ws: web.WebSocketResponse) -> Iterator[FakeStats]:
    """Around a handler, once ``ws.prepare`` succeeded: count the connection and keep
    ``ws`` in ``stats.sockets`` until the handler is done with it."""
    stats: FakeStats = app[STATS]
    stats.connections += 1
    stats.sockets.add(ws)
    try:
        yield stats
    finally:
        stats.sockets.discard(ws)


async def close_all(app: web.Application, code: int = 1000,
                    message: bytes = b"server restart") -> int:
    """Close every live server socket of the fake ``app`` with a close frame ``code`` /
    ``message``, as a provider dropping its connections would; return how many.

    The handlers see the close and end their sessions; each close waits (up to aiohttp's
    close timeout) for the client's answering close frame."""
    stats: FakeStats = app[STATS]
    sockets = [ws for ws in stats.sockets if not ws.closed]
    await asyncio.gather(*(ws.close(code=code, message=message) for ws in sockets),
                         return_exceptions=True)
    return len(sockets)


def check_profile(name: str, defaults: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` overridden by ``profile``; a key the fake does not know is a TypeError."""
    unknown = set(profile) - set(defaults)
    if unknown:
        raise TypeError(f"unknown fake {name} profile keys: {sorted(unknown)}")
    return {**defaults, **profile}


def set_keys(app: web.Application, **values: Any) -> None:
    """Put ``values`` at plain string keys of ``app`` (on purpose: tests read ``app["log"]``
    without importing keys)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        for key, value in values.items():
            app[key] = value


def fake_app(name: str, defaults: dict[str, Any], profile: dict[str, Any], path: str,
             handler: Callable, /, **keys: Any) -> web.Application:
    """A fake's app: its profile at ``app["profile"]`` (:func:`check_profile`), ``keys``
    (the records the tests read: ``log=[]``, ...) at plain string keys, a
    :class:`FakeStats`, and ``handler`` for GET ``path``."""
    app = web.Application()
    set_keys(app, profile=check_profile(name, defaults, profile), **keys)
    add_stats(app)
    app.router.add_get(path, handler)
    return app


class _Session(Protocol):
    async def run(self) -> None: ...

    def stop(self) -> None: ...


async def serve_socket(request: web.Request,
                       session: Callable[[web.WebSocketResponse], _Session]
                       ) -> web.WebSocketResponse:
    """Serve one accepted client: wait the profile's ``handshake_ms``, upgrade, build the
    fake's session for the socket (``session(ws)``), run it while :func:`track_socket`
    counts the socket, and stop it however the run ends."""
    app = request.app
    handshake_ms = app["profile"]["handshake_ms"]
    if handshake_ms:
        await asyncio.sleep(handshake_ms / 1000)
    ws = web.WebSocketResponse(autoping=True)
    await ws.prepare(request)
    running = session(ws)
    with track_socket(app, ws):
        try:
            await running.run()
        finally:
            running.stop()
    return ws


async def send_json(ws: web.WebSocketResponse, lock: asyncio.Lock, message: Any) -> None:
    """Send ``message`` as a JSON text frame, one writer at a time (``lock``); nothing to a
    socket that closed, or closes meanwhile (the client left: there is no one to tell)."""
    async with lock:
        if not ws.closed:
            try:
                await ws.send_str(json.dumps(message))
            except ConnectionError:
                pass


class IdleReceiver:
    """The client's frames, polled every 50 ms, with the server's idle timeout: idle is
    no frame for ``timeout_s`` while ``busy()`` is false (a socket generating audio is not
    idle). ``tick`` runs at every empty poll, before ``busy``."""

    POLL_S = 0.05

    def __init__(self, ws: web.WebSocketResponse, timeout_s: float, busy: Callable[[], Any],
                 tick: Callable[[], None] | None = None):
        self.ws = ws
        self.timeout_s = timeout_s
        self.busy = busy
        self.tick = tick
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()

    async def receive(self) -> WSMessage | None:
        """The next frame, or None once the socket has been idle for the timeout."""
        while True:
            try:
                msg = await self.ws.receive(timeout=self.POLL_S)
            except TimeoutError:
                if self.tick is not None:
                    self.tick()
                if self.busy():
                    self.last = self.loop.time()
                elif self.loop.time() - self.last >= self.timeout_s:
                    return None
                continue
            self.last = self.loop.time()
            return msg


def run_after(tasks: set[asyncio.Task], prev: asyncio.Task | None,
              coro: Coroutine[Any, Any, None]) -> asyncio.Task:
    """Run ``coro`` once ``prev`` (the context's work scheduled before) is done, so one
    context's work runs in order; the task is kept in ``tasks`` while it runs. If ``prev``
    is cancelled, ``coro`` never starts and the new task is cancelled too."""

    async def run() -> None:
        if prev is not None:
            try:
                await prev
            except asyncio.CancelledError:
                coro.close()
                raise
        await coro

    task = asyncio.ensure_future(run())
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


def audio_pieces(profile: dict[str, Any], text: str, audio: bytes, step: int
                 ) -> Iterator[tuple[bytes, float]]:
    """The audio a fake sends for ``text``, as ``(piece, pause after it)``: ``audio`` in
    pieces of ``step`` bytes, ``burst_factor`` times faster than real time (each piece is
    the profile's ``chunk_ms`` long); or, where a :data:`RUNAWAY_PROFILE` knob matches the
    text, ``audio`` looped without end at ``flood_factor``, or a single piece of
    ``oversize_bytes``. ``step`` and ``oversize_bytes`` keep whole samples if even."""
    chunk_s = profile["chunk_ms"] / 1000
    oversize, flood = profile.get("oversize_on"), profile.get("flood_on")
    if oversize and oversize in text:
        size = profile["oversize_bytes"]
        yield (audio * (size // max(1, len(audio)) + 1))[:size], chunk_s
        return
    if flood and flood in text:
        looped = audio * 2
        for n in count():
            start = n * step % len(audio)
            yield looped[start:start + step], chunk_s / profile["flood_factor"]
    for start in range(0, len(audio), step):
        yield audio[start:start + step], chunk_s / profile["burst_factor"]


class Pacer:
    """When to send the next piece of one stream of audio: ``burst_factor`` times faster
    than real time, until the stream is ``max_ahead_s`` ahead of real time (None: no cap);
    from then on at the pace it plays, as a provider fed by a streaming LLM (and the
    in-process fake, :mod:`gateway.tts.fake`). A stream that fell behind real time (a pause
    between utterances) starts a new timeline at its next piece."""

    def __init__(self, burst_factor: float, max_ahead_s: float | None):
        self.burst_factor = burst_factor
        self.max_ahead_s = max_ahead_s
        self.loop = asyncio.get_running_loop()
        self.began = 0.0
        self.sent_s = 0.0

    def pause(self, piece_s: float) -> float:
        """Seconds to wait after sending a piece ``piece_s`` long."""
        now = self.loop.time()
        if now - self.began > self.sent_s:  # fell behind: the listener ran dry
            self.began, self.sent_s = now, 0.0
        self.sent_s += piece_s
        burst = piece_s / self.burst_factor
        if self.max_ahead_s is None:
            return burst
        ahead = self.sent_s - (now - self.began)
        return max(burst, ahead - self.max_ahead_s)


LOOP_S = 10.0


@lru_cache(maxsize=8)
def _speech_loop(rate: int) -> bytes:
    return speechlike_pcm(LOOP_S, rate)


def looped_speech(seconds: float, rate: int) -> bytes:
    """``seconds`` of :func:`speechlike_pcm` at ``rate``, cut from a loop computed once per
    rate: what a fake with ``precomputed_audio`` sends, at the cost of a copy."""
    loop = _speech_loop(rate)
    size = int(seconds * rate) * 2
    return (loop * (size // len(loop) + 1))[:size]
