"""One WebSocket to a provider: the socket, its sans-I/O protocol, and a reader task that
routes each event to the turn it belongs to.

Audio for a turn nobody listens to any more (cancelled by a barge-in, or abandoned) is
dropped here, whatever the provider keeps sending: no late audio reaches a call.

What a provider may make the gateway hold is bounded here too. A message larger than
``max_message_bytes`` is refused by the socket (which then closes: the pool replaces it).
A turn holds at most ``max_turn_audio_s`` of audio its call has not taken yet: the reader
cannot stop reading a socket that other calls' turns share, so a provider that sends
audio faster than the call plays it (the call stops pulling while its playout is full)
has the turn that overflows cut with an error, and the rest of its audio dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Hashable

import aiohttp
from aiohttp import WebSocketError, WSCloseCode

from gateway.config import LimitsConfig
from gateway.tts.base import TtsError
from gateway.tts.providers.events import (
    ProviderAudio,
    ProviderError,
    ProviderEvent,
    ProviderProtocolError,
    ProviderReady,
)
from gateway.tts.providers.base import ProviderProtocol
from gateway.tts.providers.common import SocketIOParams, WebSocketParams
from gateway.tts.providers.driver import Driver

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = LimitsConfig.max_provider_message_bytes
MAX_TURN_AUDIO_S = LimitsConfig.max_buffered_audio_s
_SAMPLE_BYTES = {"pcm_s16le": 2, "mulaw": 1, "alaw": 1}


class ConnectionLost:
    """Turn-queue sentinel: the socket closed before the turn ended."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


class TurnOverflow:
    """Turn-queue sentinel: the provider sent more audio than the turn may hold; the turn
    is cut (its queued audio dropped)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float):
        self.seconds = seconds


def audio_seconds(event: ProviderAudio) -> float:
    return len(event.data) / (_SAMPLE_BYTES.get(event.encoding, 2) * max(1, event.sample_rate))


class TurnQueue(asyncio.Queue):
    """A turn's events, keeping count of the seconds of audio among them."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_s = 0.0
        self.overflowed = False

    def _put(self, item) -> None:
        if type(item) is ProviderAudio:
            self.audio_s += audio_seconds(item)
        super()._put(item)

    def _get(self):
        item = super()._get()
        if type(item) is ProviderAudio:
            self.audio_s -= audio_seconds(item)
        return item

    def cut(self) -> None:
        """Drop everything queued (the turn overflowed); only :class:`TurnOverflow` follows."""
        while not self.empty():
            self.get_nowait()
        self.audio_s = 0.0
        self.overflowed = True


class SegmentsDone:
    """Turn-queue marker: the audio of the turn's first ``count`` segments is all out
    (queued after that audio; only for turns registered with ``segments=True``)."""

    __slots__ = ("count",)

    def __init__(self, count: int):
        self.count = count


class ProviderConnection:
    def __init__(self, driver: Driver, key: Hashable, proto: ProviderProtocol,
                 ws: aiohttp.ClientWebSocketResponse | SocketIOWebSocket,
                 *, on_closed: Callable[[ProviderConnection], None] | None = None,
                 on_protocol_error: Callable[[str], None] | None = None,
                 max_message_bytes: int = MAX_MESSAGE_BYTES,
                 max_turn_audio_s: float = MAX_TURN_AUDIO_S):
        self.driver = driver
        self.key = key
        self.proto = proto
        self.ws = ws
        self.max_message_bytes = max_message_bytes
        self.max_turn_audio_s = max_turn_audio_s
        self.turns: dict[str, TurnQueue] = {}
        self._segments: dict[str, int] = {}  # turns that follow segment progress: done so far
        self.leases = 0
        self.opened_at = self.idle_since = time.monotonic()
        self.closed = False
        self.close_reason = ""
        self.retire = False  # no new leases; closed when the last one is released
        self.late_chunks_dropped = 0
        self._refused = False  # the socket refused an oversize message
        self._ready = asyncio.Event()
        self._handshake_error: ProviderError | None = None
        self._on_closed = on_closed
        self._on_protocol_error = on_protocol_error  # called with a tts_errors kind
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self._dispatch(driver.connection_made(proto))

    @classmethod
    async def open(cls, driver: Driver, key: Hashable, http: aiohttp.ClientSession, *,
                   timeout_s: float, max_message_bytes: int = MAX_MESSAGE_BYTES,
                   **options) -> ProviderConnection:
        """Connect and handshake; raise :class:`TtsError` (kind ``connect`` or ``handshake``)."""
        params = driver.connect(key)
        proto = driver.new_protocol(key)
        ws: aiohttp.ClientWebSocketResponse | SocketIOWebSocket
        if isinstance(params, SocketIOParams):
            ws = await SocketIOWebSocket.connect(driver.settings.name, params, http,
                                                 timeout_s=timeout_s,
                                                 max_message_bytes=max_message_bytes)
        else:
            ws = await _connect_websocket(driver.settings.name, params, http, timeout_s,
                                          max_message_bytes)
        conn = cls(driver, key, proto, ws, max_message_bytes=max_message_bytes, **options)
        hello = driver.handshake(proto)  # a provider's init frame, before the first turn
        if hello:
            await conn.send(hello)
        try:
            await asyncio.wait_for(conn._ready.wait(), timeout_s)
        except TimeoutError:
            await conn.close("handshake timeout")
            raise TtsError("handshake", f"{driver.settings.name}: no session set-up message "
                           f"within {timeout_s:.1f} s") from None
        if conn._handshake_error is not None or conn.closed:
            err = conn._handshake_error
            await conn.close("handshake failed")
            raise TtsError("handshake", f"{driver.settings.name}: "
                           + (err.message if err
                              else f"closed during set-up ({conn.close_reason})"))
        return conn

    # -- turns ------------------------------------------------------------------------------

    def register(self, cid: str, *, segments: bool = False) -> TurnQueue:
        """The queue of the turn's events; with ``segments``, also :class:`SegmentsDone`
        markers from the driver's per-segment signal (``Driver.segments_done``)."""
        queue = TurnQueue()
        self.turns[cid] = queue
        if segments:
            self._segments[cid] = 0
        return queue

    def unregister(self, cid: str) -> None:
        self.turns.pop(cid, None)
        self._segments.pop(cid, None)

    async def send(self, messages: list[str]) -> None:
        """Write the messages; a dead socket shows up as :class:`ConnectionLost` on the turn."""
        try:
            for message in messages:
                await self.ws.send_str(message)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            self._lost(f"send failed: {exc}")

    def send_soon(self, messages: list[str]) -> None:
        """Send without waiting (cancellation paths, which must not block)."""
        if messages and not self.closed:
            asyncio.get_running_loop().create_task(self.send(messages))

    @property
    def usable(self) -> bool:
        return not self.closed and not self.retire

    # -- reading ----------------------------------------------------------------------------

    async def _read(self) -> None:
        ws = self.ws
        reason = "closed by the provider"
        close_text = ""
        # Binary frames go to the protocol's ``receive_binary`` where it has one (a provider
        # sends its audio as raw binary frames, docs/protocols/tts-providers.md §8).
        receive_binary = getattr(self.proto, "receive_binary", None)
        try:
            while True:  # not ``async for``: it hides the close frame's reason
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._feed(self.proto.receive, msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    if receive_binary is None:
                        log.warning("%s: unexpected binary frame of %d bytes ignored",
                                    self.driver.settings.name, len(msg.data))
                    else:
                        self._feed(receive_binary, msg.data)
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    if (isinstance(msg.data, WebSocketError)
                            and msg.data.code == WSCloseCode.MESSAGE_TOO_BIG):
                        reason = self._refused_oversize()
                    else:
                        reason = f"socket error: {ws.exception() or msg.data}"
                    break
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                                  aiohttp.WSMsgType.CLOSED):
                    if msg.type == aiohttp.WSMsgType.CLOSE and msg.extra:
                        # the provider's reason (a close frame's text)
                        close_text = str(msg.extra)[:200]
                    if ws.close_code is not None:
                        reason = (f"closed by the provider (code {ws.close_code}"
                                  + (f": {close_text})" if close_text else ")"))
                    break
        except asyncio.CancelledError:
            reason = "closed by the gateway"
            raise
        except Exception as exc:  # never let one socket's surprise kill the process
            log.exception("%s: reader failed", self.driver.settings.name)
            reason = f"reader failed: {exc}"
        finally:
            self._lost(reason)

    def _refused_oversize(self) -> str:
        """The socket refused a message over the limit (and closes with 1009): the turns
        fail with this reason; the refusal is counted as ``oversize``."""
        limit = self.max_message_bytes
        self._refused = True
        log.warning("%s: refused a message of more than %d bytes "
                    "(limits.max_provider_message_bytes); the connection is replaced",
                    self.driver.settings.name, limit)
        if self._on_protocol_error:
            self._on_protocol_error("oversize")
        return (f"refused a message of more than {limit} bytes "
                "(limits.max_provider_message_bytes)")

    def _feed(self, parse, data) -> None:
        try:
            events = parse(data)
        except ProviderProtocolError as exc:
            log.warning("%s: unreadable provider frame (%s): %s",
                        self.driver.settings.name, exc.kind, exc)
            if self._on_protocol_error:
                self._on_protocol_error(f"frame_{exc.kind}")
            return
        self._dispatch(events)
        if self._segments:
            self._note_segments()

    def _note_segments(self) -> None:
        """After a frame's events: tell each turn that follows segment progress how many of
        its segments are now complete (the marker lands behind the audio before it)."""
        for cid, seen in self._segments.items():
            done = self.driver.segments_done(self.proto, cid)
            if done is not None and done > seen:
                self._segments[cid] = done
                self.turns[cid].put_nowait(SegmentsDone(done))

    def _dispatch(self, events: list[ProviderEvent]) -> None:
        for event in events:
            if type(event) is ProviderAudio:
                queue = self.turns.get(event.context_id)
                if (queue is None or queue.overflowed
                        or self.driver.is_cancelled(self.proto, event.context_id)):
                    self.late_chunks_dropped += 1
                    continue
                if queue.audio_s + audio_seconds(event) > self.max_turn_audio_s:
                    self._overflow(event.context_id, queue)
                    continue
                queue.put_nowait(event)
            elif type(event) is ProviderReady:
                self._ready.set()
            elif type(event) is ProviderError and (event.fatal or event.context_id is None):
                if not self._ready.is_set():
                    self._handshake_error = event
                    self._ready.set()
                self.retire = True
                for queue in self.turns.values():
                    queue.put_nowait(event)
                if event.fatal:
                    asyncio.get_running_loop().create_task(self.close(f"fatal error: {event.kind}"))
            else:
                cid = getattr(event, "context_id", None)
                queue = self.turns.get(cid) if cid is not None else None
                if queue is not None:
                    queue.put_nowait(event)

    def _overflow(self, cid: str, queue: TurnQueue) -> None:
        log.info("%s: turn %s holds %.1f s of audio its call has not taken "
                 "(limits.max_buffered_audio_s); the turn is cut",
                 self.driver.settings.name, cid, queue.audio_s)  # the call warns, and counts
        queue.cut()
        queue.put_nowait(TurnOverflow(self.max_turn_audio_s))
        self.late_chunks_dropped += 1

    def _lost(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._ready.set()
        if self._refused:  # the gateway's own refusal says more than the protocol's view
            for queue in self.turns.values():
                queue.put_nowait(ConnectionLost(reason))
        self._dispatch([e for e in self.driver.connection_lost(self.proto)
                        if not (type(e) is ProviderError and e.context_id is None)])
        for queue in self.turns.values():
            queue.put_nowait(ConnectionLost(reason))
        if self._on_closed:
            self._on_closed(self)

    async def close(self, reason: str = "closed by the gateway") -> None:
        if not self.closed:
            self._lost(reason)
        if not self.ws.closed:
            try:
                await self.ws.close()
            except Exception:
                pass
        if not self._reader.done() and self._reader is not asyncio.current_task():
            self._reader.cancel()


async def _connect_websocket(name: str, params: WebSocketParams,
                             http: aiohttp.ClientSession, timeout_s: float,
                             max_message_bytes: int) -> aiohttp.ClientWebSocketResponse:
    url, headers = params
    try:
        return await asyncio.wait_for(
            http.ws_connect(url, headers=headers, autoping=True, compress=0,
                            max_msg_size=max_message_bytes,
                            timeout=aiohttp.ClientWSTimeout(ws_close=2.0)),
            timeout_s)
    except aiohttp.WSServerHandshakeError as exc:
        raise TtsError("connect", f"{name}: the provider refused the WebSocket upgrade with "
                       f"HTTP {exc.status}"
                       + (" (check the API key)" if exc.status in (401, 403) else "")) from None
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise TtsError("connect", f"{name}: cannot connect to the provider "
                       f"({type(exc).__name__}: {exc})") from None


_SIO_CLOSED = aiohttp.WSMessage(aiohttp.WSMsgType.CLOSED, None, None)


class _ProviderFault(logging.Filter):
    """python-engineio logs a transport it gives up on ("packet queue is empty, aborting":
    the provider stopped answering pings) as an ERROR; for the gateway that is a provider
    failing, which the connection reports and counts itself: a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_ENGINEIO_LOG = logging.getLogger(__name__ + ".engineio")
_ENGINEIO_LOG.setLevel(logging.WARNING)  # its info lines stay out, as with its own default
_ENGINEIO_LOG.addFilter(_ProviderFault())


def _guarded_client_class():
    """python-socketio's AsyncClient, except that a packet it cannot decode (bad JSON, a
    wrong type) is handed to ``on_bad_packet`` instead of raising in the task
    python-socketio runs for it, which nothing awaits ("Task exception was never
    retrieved")."""
    import socketio

    class GuardedAsyncClient(socketio.AsyncClient):
        on_bad_packet: Callable[[Exception], None] | None = None

        async def _handle_eio_message(self, data):
            try:
                await super()._handle_eio_message(data)
            except Exception as exc:
                self._binary_packet = None  # a half-received binary packet goes too
                if self.on_bad_packet is not None:
                    self.on_bad_packet(exc)

    return GuardedAsyncClient


class SocketIOWebSocket:
    """A Socket.IO connection (python-socketio's maintained ``AsyncClient``, which does the
    Engine.IO framing, pings and namespaces) behind the part of aiohttp's
    ``ClientWebSocketResponse`` that :class:`ProviderConnection` uses, so the reader, the
    pool and the session stay the same for a Socket.IO provider:

    * :meth:`receive` gives each ``message`` event of the namespace as a TEXT message whose
      ``data`` is the event's payload as Socket.IO decoded it (a dict: the protocol's
      ``receive`` takes it as is); then CLOSE (code 1000, ``extra`` says why) when the
      server disconnects, or ERROR when the transport fails.
    * :meth:`send_str` takes a JSON object and emits it as the event its ``type`` names.
    * :meth:`close` disconnects.

    python-socketio runs each incoming event in a task of its own, in arrival order; the
    end of the connection is queued behind the events already received (``call_soon``).
    """

    def __init__(self, sio, namespace: str):
        self._sio = sio
        self.namespace = namespace
        self._inbox: asyncio.Queue[aiohttp.WSMessage] = asyncio.Queue()
        self.closed = False
        self.close_code: int | None = None
        self._exception: BaseException | None = None
        self.refusal: object = None  # the server's connect_error data

    @classmethod
    async def connect(cls, name: str, params: SocketIOParams, http: aiohttp.ClientSession, *,
                      timeout_s: float, max_message_bytes: int = MAX_MESSAGE_BYTES
                      ) -> SocketIOWebSocket:
        """Connect to ``params``:
        the WebSocket transport only, no polling, no automatic reconnection (the pool
        replaces lost connections); raise :class:`TtsError` (kind ``connect``)."""
        sio = _guarded_client_class()(
            reconnection=False, handle_sigint=False, logger=False,
            engineio_logger=_ENGINEIO_LOG,
            http_session=http, request_timeout=2.0,
            websocket_extra_options={"max_msg_size": max_message_bytes, "compress": 0})
        sock = cls(sio, params.namespace)
        sio.on_bad_packet = sock._on_bad_packet
        sio.on("message", sock._on_message, namespace=params.namespace)
        sio.on("disconnect", sock._on_disconnect, namespace=params.namespace)
        sio.on("connect_error", sock._on_connect_error, namespace=params.namespace)
        try:
            await asyncio.wait_for(
                sio.connect(params.url, headers=dict(params.headers), auth=params.auth,
                            transports=["websocket"], namespaces=[params.namespace],
                            socketio_path=params.socketio_path, wait_timeout=timeout_s),
                timeout_s)
        except Exception as exc:
            # raise what they meet in a malformed handshake (KeyError, TypeError, ...): all
            # of it is a provider that cannot be connected to, never a crash of the pool
            await sock._abort()
            refusal = sock.refusal
            if refusal is not None:
                detail = refusal
                if isinstance(refusal, dict):
                    data = refusal.get("data")
                    code = data.get("code") if isinstance(data, dict) else None
                    detail = str(refusal.get("message", refusal)) + (f" ({code})" if code else "")
                hint = " (check the API key)" if "auth" in str(refusal).lower() else ""
                raise TtsError("connect", f"{name}: the provider refused the Socket.IO "
                               f"connection: {detail}{hint}") from None
            what = "no connection" if isinstance(exc, asyncio.TimeoutError) else str(exc)
            raise TtsError("connect", f"{name}: cannot connect to the provider over Socket.IO "
                           f"({type(exc).__name__}: {what})") from None
        return sock

    async def _abort(self) -> None:
        self.closed = True
        try:
            await self._sio.disconnect()
        except Exception:  # a half-open client: nothing more to do
            pass

    # -- events from python-socketio (its own tasks) -----------------------------------

    async def _on_message(self, data=None) -> None:
        self._inbox.put_nowait(aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, data, None))

    def _on_bad_packet(self, exc: Exception) -> None:
        # The reader gets it as a frame that is not JSON: logged and counted like any
        # unreadable provider frame, and the turn goes on.
        self._inbox.put_nowait(aiohttp.WSMessage(
            aiohttp.WSMsgType.TEXT, f"<a Socket.IO packet python-socketio cannot decode: "
            f"{type(exc).__name__}>", None))

    async def _on_connect_error(self, data=None) -> None:
        self.refusal = data

    async def _on_disconnect(self, reason=None) -> None:
        if self.closed:
            return
        self.closed = True
        if reason == "transport error":
            ws = getattr(self._sio.eio, "ws", None)  # Engine.IO's aiohttp socket
            error: Exception
            if getattr(ws, "close_code", None) == WSCloseCode.MESSAGE_TOO_BIG:
                error = WebSocketError(WSCloseCode.MESSAGE_TOO_BIG, "message too big")
            else:
                error = self._exception = ConnectionError("Socket.IO transport error")
            msg = aiohttp.WSMessage(aiohttp.WSMsgType.ERROR, error, None)
        else:  # the server disconnected (or the client did, while we were not closing)
            self.close_code = 1000
            msg = aiohttp.WSMessage(aiohttp.WSMsgType.CLOSE, 1000,
                                    f"Socket.IO {reason or 'disconnect'}")
        asyncio.get_running_loop().call_soon(self._inbox.put_nowait, msg)

    # -- the ClientWebSocketResponse subset ----------------------------------------------

    async def receive(self) -> aiohttp.WSMessage:
        if self.closed and self._inbox.empty():
            await asyncio.sleep(0)  # let an end queued with call_soon land first
            if self._inbox.empty():
                return _SIO_CLOSED
        return await self._inbox.get()

    def exception(self) -> BaseException | None:
        return self._exception

    def __aiter__(self) -> SocketIOWebSocket:
        return self

    async def __anext__(self) -> aiohttp.WSMessage:
        msg = await self.receive()
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED):
            raise StopAsyncIteration
        return msg

    async def send_str(self, message: str) -> None:
        import socketio

        data = json.loads(message)
        if self.closed:
            raise ConnectionError("the Socket.IO connection is closed")
        try:
            await self._sio.emit(data["type"], data, namespace=self.namespace)
        except socketio.exceptions.SocketIOError as exc:
            raise ConnectionError(f"Socket.IO emit failed: {exc}") from None

    async def close(self) -> None:
        await self._abort()
