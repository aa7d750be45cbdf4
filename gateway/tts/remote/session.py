"""A call's session with a remote provider, and the provider object the gateway holds.

The session leases one pooled connection when the call starts and sends every utterance
of the call over it. An utterance is one turn (context/request); its text may still be
streaming in, sentence by sentence, while the first audio plays. If the connection is
lost or fails before the turn's first audio, the turn is replayed once on a fresh
connection, so a socket the provider dropped while idle costs the bot nothing. After a
barge-in the turn is cancelled upstream and its late audio is dropped by the connection.
A ``single_use`` provider (one utterance per socket) gets a warm connection leased per
utterance instead, given back as soon as the utterance's turn ends. For failover, a session
can also report when each text segment's audio is all in (``stream(...,
on_segments_done=...)``): from the provider's own per-segment signal
(``Driver.segments_done``), else with a turn per segment.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import replace
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Hashable

import aiohttp

from gateway.carriers.events import MediaFormat
from gateway.config import LimitsConfig
from gateway.tts.base import AudioChunk, TtsError, TtsProvider, TtsSession, WordTiming
from gateway.tts.providers.events import (ProviderAudio, ProviderDone, ProviderWords)
from gateway.tts.remote.connection import (ConnectionLost, ProviderConnection, SegmentsDone,
                                           TurnOverflow)
from gateway.tts.providers.driver import RemoteSettings
from gateway.tts.providers.registry import PROVIDERS
from gateway.tts.remote.pool import ConnectionPool, PoolSettings

log = logging.getLogger(__name__)

#: The format most calls want (Twilio, SignalWire, Telnyx PCMU...): warm connections for it.
WARM_FORMAT = MediaFormat("mulaw", 8000)
_KEEPALIVE = object()


class _SendFailed:
    __slots__ = ("error",)

    def __init__(self, error: Exception):
        self.error = error


class _Feed:
    """An utterance's text segments, remembered so a turn can be replayed on a new socket."""

    def __init__(self, segments: AsyncIterator[str]):
        self._source = segments.__aiter__()
        self.pulled: list[str] = []
        self.ended = False
        self._next: asyncio.Future | None = None

    @classmethod
    def of(cls, texts: list[str]) -> _Feed:
        feed = cls(_empty())
        feed.pulled = list(texts)
        feed.ended = True
        return feed

    async def get(self, index: int, keepalive_s: float | None):
        """Segment ``index``; None at the end; ``_KEEPALIVE`` after ``keepalive_s`` idle."""
        if index < len(self.pulled):
            return self.pulled[index]
        if self.ended:
            return None
        if self._next is None:
            self._next = asyncio.ensure_future(_pull(self._source))
        done, _ = await asyncio.wait({self._next}, timeout=keepalive_s)
        if not done:
            return _KEEPALIVE
        segment, self._next = self._next.result(), None
        if segment is None:
            self.ended = True
            return None
        self.pulled.append(segment)
        return segment

    def close(self) -> None:
        if self._next is not None:
            self._next.cancel()


async def _pull(source: AsyncIterator[str]) -> str | None:
    try:
        return await source.__anext__()
    except StopAsyncIteration:
        return None


async def _empty():
    return
    yield


def remote_settings(pc) -> RemoteSettings:
    """RemoteSettings from a validated :class:`gateway.config.ProviderConfig`."""
    return RemoteSettings(name=pc.name, type=pc.type, api_key=pc.api_key or "", voice=pc.voice,
                          endpoint=pc.endpoint, model=pc.model, options=dict(pc.options))


def build_remote(pc, limits: LimitsConfig | None = None) -> RemoteProvider:
    return RemoteProvider(remote_settings(pc), pc.pool, limits)


class RemoteProvider(TtsProvider):
    """A streaming WebSocket provider behind a warm connection pool. ``limits`` bound what
    one of its messages and one turn's unplayed audio may be (``limits.*`` in
    ``gateway.yaml``)."""

    def __init__(self, settings: RemoteSettings, pool_settings: PoolSettings | None = None,
                 limits: LimitsConfig | None = None):
        if settings.type not in PROVIDERS:
            raise ValueError(f"unknown remote provider type {settings.type!r}")
        self.name = settings.name
        self.voice = settings.voice
        self.settings = settings
        self.driver = PROVIDERS[settings.type].new_driver(settings)
        self.pool_settings = pool_settings or PoolSettings()
        self.limits = limits or LimitsConfig()
        self.metrics = None
        self.pool: ConnectionPool | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def tracks_sentences(self) -> bool:
        # a flush per sentence in the turn, answered by the provider's per-segment signal;
        # not where that takes a turn (a request, a context) or a budgeted flush per sentence
        driver = self.driver
        return driver.splits_whole_text and driver.tracks_segments and not driver.turn_per_segment

    def use_metrics(self, metrics) -> None:
        self.metrics = metrics

    async def start(self) -> None:
        self.driver.connect(self.driver.pool_key(WARM_FORMAT))  # a bad setting fails here
        # no connector limit (aiohttp's default is 100 sockets): the pool's ``max`` bounds them
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.pool = ConnectionPool(self.driver, self._open, self.pool_settings,
                                   warm_key=self.driver.pool_key(WARM_FORMAT),
                                   metrics=self.metrics)
        await self.pool.start()

    async def _open(self, key: Hashable) -> ProviderConnection:
        if self._http is None:
            raise TtsError("not_started", f"{self.name}: the provider has not started")
        on_error = None
        if self.metrics is not None:
            errors = self.metrics.tts_errors
            on_error = lambda kind: errors.labels(self.name, kind).inc()  # noqa: E731
        return await ProviderConnection.open(
            self.driver, key, self._http, timeout_s=self.pool_settings.connect_timeout_s,
            on_closed=self._connection_closed,
            on_protocol_error=on_error,
            max_message_bytes=self.limits.max_provider_message_bytes,
            max_turn_audio_s=self.limits.max_buffered_audio_s)

    def _connection_closed(self, conn: ProviderConnection) -> None:
        if self.pool is not None:
            self.pool.on_connection_closed(conn)

    @property
    def ready(self) -> bool:
        return self.pool is not None and self.pool.ready

    async def open_session(self, output: MediaFormat) -> TtsSession:
        if self.pool is None:
            raise TtsError("not_started", f"{self.name}: the provider has not started")
        key = self.driver.pool_key(output)
        if self.driver.single_use:  # a socket per utterance, leased when it starts
            return RemoteSession(self, self.pool, output, key, None)
        return RemoteSession(self, self.pool, output, key, await self.pool.lease(key))

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        if self._http is not None:
            await self._http.close()


class RemoteSession(TtsSession):
    def __init__(self, provider: RemoteProvider, pool: ConnectionPool, output: MediaFormat,
                 key: Hashable, conn: ProviderConnection | None):
        self.provider = provider
        self.pool = pool
        self.driver = provider.driver
        self.output = output
        self.key = key
        self.connection: ProviderConnection | None = conn
        self.connections_used = 1 if conn is not None else 0
        self._tag = "c" + secrets.token_hex(4)
        self._turns = 0

    async def _connection(self) -> ProviderConnection:
        conn = self.connection
        if conn is None or not conn.usable or not self.driver.can_begin(conn.proto):
            if conn is not None:  # gone, retired, or full of draining turns (barge-ins)
                self.connection = None
                self.pool.release(conn)
            conn = self.connection = await self.pool.lease(self.key)
            self.connections_used += 1
        return conn

    async def release(self) -> None:
        if self.connection is not None:
            conn, self.connection = self.connection, None
            self.pool.release(conn)

    async def discard(self) -> None:
        """After a failure (e.g. no audio in time): the connection is closed, not pooled."""
        if self.connection is not None:
            self.connection.retire = True
        await self.release()

    async def synthesize(self, text: str, voice: str | None = None
                         ) -> AsyncGenerator[AudioChunk, None]:
        async for chunk in self.stream(_Feed.of([text]), voice):
            yield chunk

    async def stream(self, segments, voice: str | None = None, *,
                     on_segments_done: Callable[[int], None] | None = None
                     ) -> AsyncGenerator[AudioChunk, None]:
        """One turn for the utterance (one per segment where the provider takes one request
        at a time). With ``on_segments_done``, a provider that cannot tell within a turn
        when each segment's audio is out (``Driver.tracks_segments``) gets a turn per
        segment too, so that the end of each turn tells it."""
        feed = segments if isinstance(segments, _Feed) else _Feed(segments)
        driver = self.driver
        try:
            if not driver.turn_per_segment and (on_segments_done is None
                                                or driver.tracks_segments):
                async for chunk in self._turn(feed, voice, on_segments_done):
                    yield chunk
                return
            index, audio_s = 0, 0.0
            while (segment := await feed.get(index, None)) is not None:
                index += 1
                turn_s = audio_s  # a turn's word timings count from its own start
                async for chunk in self._turn(_Feed.of([segment]), voice):
                    if chunk.words and turn_s:
                        chunk = replace(chunk, words=tuple(
                            WordTiming(w.text, w.start_s + turn_s, w.end_s + turn_s)
                            for w in chunk.words))
                    audio_s += len(chunk.data) / (chunk.sample_rate
                                                  * (2 if chunk.encoding == "pcm_s16le" else 1))
                    yield chunk
                if on_segments_done is not None:
                    on_segments_done(index)
        finally:
            feed.close()

    async def _turn(self, feed: _Feed, voice: str | None,
                    on_segments_done: Callable[[int], None] | None = None
                    ) -> AsyncGenerator[AudioChunk, None]:
        for attempt in (0, 1):
            conn = await self._connection()
            self._turns += 1
            cid = f"{self._tag}-{self._turns}"
            queue = conn.register(cid, segments=on_segments_done is not None)
            sender = asyncio.get_running_loop().create_task(
                self._send(conn, cid, voice, feed, queue))
            heard = finished = False
            audio_format = ("pcm_s16le", 8000)  # words before any audio: a chunk of nothing
            try:
                while True:
                    event = await queue.get()
                    kind = type(event)
                    if kind is ProviderAudio:
                        heard = True
                        audio_format = (event.encoding, event.sample_rate)
                        yield AudioChunk(event.data, *audio_format)
                        continue
                    if kind is ProviderWords:  # no audio: the format of the audio before it
                        yield AudioChunk(b"", *audio_format, words=event.words)
                        continue
                    if kind is SegmentsDone:  # queued only where on_segments_done is given
                        if on_segments_done is not None:
                            on_segments_done(min(event.count, len(feed.pulled)))
                        continue
                    if kind is ProviderDone:
                        finished = True
                        if on_segments_done is not None:
                            on_segments_done(len(feed.pulled))
                        return
                    if kind is TurnOverflow:
                        raise TtsError("overflow", f"{self.provider.name}: sent audio too "
                                       f"far ahead of playback ({event.seconds:g} s unread "
                                       "beyond what the call holds, "
                                       "limits.max_buffered_audio_s); the utterance was cut")
                    if kind is _SendFailed:
                        raise TtsError("internal", f"{self.provider.name}: cannot send the text: "
                                       f"{event.error}") from event.error
                    if kind is ConnectionLost:
                        error = TtsError("connection_closed",
                                         f"{self.provider.name}: {event.reason}")
                        whole_socket = True
                    else:
                        error = TtsError(event.kind, event.message)
                        whole_socket = event.fatal or event.context_id is None
                    finished = whole_socket  # else close the failed turn upstream too
                    if whole_socket and not heard and attempt == 0:
                        log.info("%s: turn %s lost its connection before any audio (%s); "
                                 "replaying it on a fresh one", self.provider.name, cid, error)
                        conn.retire = True
                        break
                    raise error
            finally:
                sender.cancel()
                conn.unregister(cid)
                if not finished:  # barge-in, abandoned or failed: stop it upstream
                    conn.send_soon(self.driver.cancel(conn.proto, cid))
                if self.driver.must_replace(conn.proto):
                    conn.retire = True
                if self.driver.single_use:  # its one turn is over: back (to be discarded)
                    conn.retire = True
                    if self.connection is conn:
                        self.connection = None
                        self.pool.release(conn)

    async def _send(self, conn: ProviderConnection, cid: str, voice: str | None, feed: _Feed,
                    queue: asyncio.Queue) -> None:
        driver, proto = self.driver, conn.proto
        try:
            await conn.send(driver.begin(proto, cid, voice, self.output))
            index = 0
            while True:
                segment = await feed.get(index, driver.keepalive_s)
                if segment is _KEEPALIVE:
                    await conn.send(driver.keepalive(proto, cid))
                    continue
                if segment is None:
                    break
                index += 1
                await conn.send(driver.send(proto, cid, segment))
            await conn.send(driver.end(proto, cid))
            if driver.is_done(proto, cid):
                queue.put_nowait(ProviderDone(cid))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or bad text: fail this turn, not the call
            queue.put_nowait(_SendFailed(exc))
