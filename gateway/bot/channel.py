"""The bot protocol on an open WebSocket: events and the caller's audio out, the bot's
messages in. Used by the control socket (gateway/http/control.py, the bot connects) and
by the dialer (gateway/bot/dialer.py, the gateway connects); the socket is aiohttp's
server ``WebSocketResponse`` or client ``ClientWebSocketResponse``.

Three tasks share the socket: the reader (the bot's messages, answered in order), the
event forwarder, and the audio sender. None of them holds the call up: events wait in the
EventHub's bounded queue, audio in the feed's (gateway/bot/audio.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType

from gateway.bot import protocol
from gateway.bot.audio import CallerAudioFeed
from gateway.bot.protocol import (BargeIn, Hangup, Interrupt, Listen, MessageLimits,
                                  Play, ProtocolError, Speak)
from gateway.core.call import Call, CallEnded
from gateway.core.speech import SpeechRefused
from gateway.http.wsframe import DirectFrames
from gateway.metrics import bounded
from gateway.prompts.recorded import PromptError

log = logging.getLogger(__name__)


#: what a bot's socket holds in the kernel and in asyncio's buffer: a bot that stops reading
#: starts losing audio (counted) after a few seconds, not after the megabytes a socket takes
SEND_BUFFER_BYTES = 16384


async def serve_bot_socket(call: Call, ws: Any, *, audio: str | None, packet_ms: int = 20,
                           since_seq: int | None = None) -> int:
    """Speak the bot protocol on ``ws`` until the socket closes or the call ends (then the
    socket is closed); returns the ``seq`` of the last event sent.

    ``since_seq`` None: a new bot; ``call.started`` goes first, then the events since.
    Otherwise the bot is back: the events after ``since_seq`` that are still kept (the
    last 200) go first, without ``call.started``. ``audio`` (one of ``BOT_AUDIO_FORMATS``,
    or None for none until the bot sends ``listen``) in packets of ``packet_ms``.
    """
    # a ValueError (ProtocolError) for a format or packet size the protocol does not have
    listen = protocol.parse_listen({"audio": audio, "packet_ms": packet_ms})
    return await _BotSocket(call, ws).serve(listen, since_seq)


class _BotSocket:
    def __init__(self, call: Call, ws: Any):
        self.call = call
        self.ws = ws
        _bound_send_buffers(ws)
        self.limits = MessageLimits.from_config(call.services.config)
        self.metrics = call.services.metrics
        self.last_seq = 0
        self._stop_feed: Callable[[], None] | None = None
        self._sender: asyncio.Task | None = None

    async def serve(self, listen: Listen, since_seq: int | None) -> int:
        call = self.call
        self.last_seq = since_seq or 0
        # taken together, with no await between: no event is missed or sent twice
        backlog = call.events.replay(self.last_seq)
        events = call.events.subscribe()
        forwarder = None
        try:
            refusal = feed = None
            try:
                feed = self._new_feed(listen)
            except ProtocolError as exc:  # a carrier format telcodecs cannot convert
                refusal = self._refused(exc)
            head = []
            started = call.events.started
            if since_seq is None and started is not None:
                backlog = [event for event in backlog if event is not started]
                head.append(protocol.started_frame(started, listen if feed else None))
            if refusal is not None:
                head.append(refusal)
            for event in head + backlog:
                if not await self._send_event(event):
                    return self.last_seq
            self._use_feed(feed, listen)  # the audio follows call.started
            forwarder = asyncio.get_running_loop().create_task(self._forward(events))
            await self._read()
        finally:
            call.events.unsubscribe(events)
            if forwarder is not None:
                forwarder.cancel()
            self._set_listen(None)
        return self.last_seq

    # ---- gateway -> bot -------------------------------------------------------------------

    async def _forward(self, events: asyncio.Queue) -> None:
        while True:
            event = await events.get()
            if event is None:  # the call is over
                await self.ws.close()
                return
            if not await self._send_event(event):
                return

    async def _send_event(self, event: dict) -> bool:
        sent = await self._send(event)
        if sent and "seq" in event:
            self.last_seq = max(self.last_seq, event["seq"])
        return sent

    async def _send(self, message: dict) -> bool:
        """Send unless the socket is gone; False when it is (a bot that went away is no
        error)."""
        if self.ws.closed:
            return False
        try:
            await self.ws.send_str(json.dumps(message))
        except ConnectionError:  # closed while we wrote: aiohttp's ClientConnectionResetError
            return False
        return True

    async def _send_audio(self, feed: CallerAudioFeed) -> None:
        ws = self.ws
        delay = self.metrics.caller_audio_delay.labels(self.call.carrier)
        monotonic = time.monotonic
        while True:
            packet = await feed.next_packet()
            if ws.closed:
                return
            try:
                await ws.send_bytes(packet)
            except ConnectionError:
                return
            # handed to the socket: the gateway's delay since its newest carrier frame came
            delay.observe(monotonic() - feed.packet_arrived_at)

    def _direct_sender(self):
        """Packets written on the media path while the socket keeps up (see DirectFrames),
        with the delay the gateway added observed as for the sender's."""
        frames = DirectFrames.of(self.ws, max_backlog=SEND_BUFFER_BYTES)
        if frames is None:
            return None
        delay = self.metrics.caller_audio_delay.labels(self.call.carrier)
        monotonic, ws = time.monotonic, self.ws

        def send(packet: bytes, arrived: float) -> bool:
            if ws.closed or not frames.send(packet):
                return False
            delay.observe(monotonic() - arrived)
            return True

        return send

    def _set_listen(self, listen: Listen | None) -> None:
        """Start, change or stop this socket's audio (raises ProtocolError, leaving the audio
        as it was, for a carrier format telcodecs cannot convert)."""
        self._use_feed(self._new_feed(listen), listen)

    def _new_feed(self, listen: Listen | None) -> CallerAudioFeed | None:
        if listen is None or listen.audio is None:
            return None
        caller_audio = self.call.caller_audio
        source = caller_audio.format
        try:
            return CallerAudioFeed(source, listen.audio, listen.packet_ms, on_drop=self._dropped,
                                   arrived_at=lambda: caller_audio.arrived_at)
        except ValueError as exc:
            raise ProtocolError("bad_request", f"audio: the carrier streams {source.encoding}/"
                                f"{source.sample_rate}, which cannot be converted to "
                                f"{listen.audio} ({exc})") from None

    def _use_feed(self, feed: CallerAudioFeed | None, listen: Listen | None) -> None:
        if self._stop_feed is not None:
            self._stop_feed()
            if self._sender is not None:  # started with the feed
                self._sender.cancel()
            self._stop_feed = self._sender = None
        if feed is not None:
            feed.direct = self._direct_sender()
            self._stop_feed = self.call.caller_audio.subscribe(feed)
            self._sender = asyncio.get_running_loop().create_task(self._send_audio(feed))

    def _dropped(self, seconds: float) -> None:
        self.metrics.bot_audio_dropped.labels("slow_reader").inc(seconds)

    # ---- bot -> gateway -------------------------------------------------------------------

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is WSMsgType.TEXT:
                reply = await self._answer(msg.data)
            elif msg.type is WSMsgType.BINARY:
                reply = self._refused(ProtocolError("bad_request", "send JSON text frames"))
            else:  # the socket failed (a bad frame, a missed heartbeat): it is closing
                return
            if reply is not None and not await self._send(reply):
                return

    async def _answer(self, data: str) -> dict | None:
        call = self.call
        try:
            command = protocol.parse_message(data, self.limits)
            if type(command) is Speak:
                return await self._speak(command)
            if type(command) is Play:
                return await self._play(command)
            if type(command) is Interrupt:
                return protocol.interrupt_done(await call.interrupt())
            if type(command) is Hangup:
                call.request_hangup()
                return protocol.hangup_accepted()
            if type(command) is Listen:
                self._set_listen(command)
                return protocol.listen_accepted(command)
            if type(command) is BargeIn:
                try:
                    now = call.set_barge_in(**command.changes())
                except ValueError as exc:
                    raise ProtocolError("bad_request", str(exc)) from None
                return protocol.barge_in_accepted(now.mode, now.min_speech_ms,
                                                  now.min_silence_ms)
        except ProtocolError as exc:
            return self._refused(exc)
        except SpeechRefused as exc:
            return self._refused(ProtocolError(exc.kind, str(exc)))
        except CallEnded as exc:
            return protocol.error("call_ended", str(exc))
        except PromptError as exc:  # unknown_prompt; a URL is checked by the parser
            return self._refused(ProtocolError(bounded(exc.kind, protocol.ERROR_KINDS,
                                                       "bad_request"), str(exc)))
        return None

    async def _play(self, command: Play) -> dict:
        if command.interrupt:
            await self.call.interrupt()
        utt = self.call.play(prompt=command.prompt, url=command.url,
                             interruptible=command.interruptible)
        return protocol.play_accepted(utt.id, command.prompt)

    async def _speak(self, command: Speak) -> dict | None:
        call = self.call
        if command.interrupt:
            await call.interrupt()
        utt = call.stream_text(command.text, flush=command.flush, voice=command.voice,
                               provider=command.provider, interruptible=command.interruptible)
        if utt is None:
            return None
        return protocol.speak_accepted(utt.id, command.flush)

    def _refused(self, exc: ProtocolError) -> dict:
        self.metrics.control_errors.labels(exc.kind).inc()
        return protocol.error(exc.kind, str(exc))


def _bound_send_buffers(ws: Any) -> None:
    """Keep what waits for a slow bot small (see SEND_BUFFER_BYTES). aiohttp's server and
    client sockets both write through ``_writer.transport``; without one, nothing to do."""
    transport = getattr(getattr(ws, "_writer", None), "transport", None)
    if transport is None:
        return
    transport.set_write_buffer_limits(high=SEND_BUFFER_BYTES)
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except OSError as exc:  # not a TCP socket (a test's pipe): the asyncio limit holds
            log.debug("could not bound a bot socket's send buffer: %s", exc)
