"""STAND-IN for helper P's gateway/bot/channel.py (issue 13), written by helper T so the
dialer's tests run; the lead replaces this file with P's when merging. Only the signature
of :func:`serve_bot_socket` is the contract; nothing else here is meant to survive.

It sends the call's events (``call.started`` first, missed ones replayed after a
reconnect), the caller's audio as binary packets (bounded queue, drops counted), and takes
``speak`` (with ``flush``), ``interrupt`` and ``hangup``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import WSMsgType
from telcodecs import Framer, Transcoder, silence_byte

from gateway.core.call import CallEnded
from gateway.core.speech import SpeechRefused

AUDIO_QUEUE_PACKETS = 50


async def serve_bot_socket(call, ws, *, audio: str | None, packet_ms: int = 20,
                           since_seq: int | None = None) -> int:
    """Speak the bot protocol on ``ws`` until it closes or the call ends; return the seq
    of the last event sent."""
    last = since_seq or 0
    events = call.events.subscribe()
    packets: asyncio.Queue[bytes] = asyncio.Queue(AUDIO_QUEUE_PACKETS)
    unsubscribe = _listen(call, audio, packet_ms, packets) if audio else None
    tasks = []

    async def send_events() -> None:
        nonlocal last
        for event in [e for e in call.events.recent if e["seq"] > last]:
            await ws.send_str(json.dumps(event))
            last = event["seq"]
        while (event := await events.get()) is not None:
            if event["seq"] > last:
                await ws.send_str(json.dumps(event))
                last = event["seq"]
        await ws.close()

    async def send_audio() -> None:
        while True:
            await ws.send_bytes(await packets.get())

    try:
        tasks = [asyncio.ensure_future(send_events()), asyncio.ensure_future(send_audio())]
        receiving = asyncio.ensure_future(_receive(call, ws))
        await asyncio.wait([tasks[0], receiving], return_when=asyncio.FIRST_COMPLETED)
        tasks.append(receiving)
    finally:
        call.events.unsubscribe(events)
        if unsubscribe:
            unsubscribe()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return last


def _listen(call, audio: str, packet_ms: int, packets: asyncio.Queue) -> Any:
    encoding, rate = audio.split("/")
    rate = int(rate)
    inbound = call.caller_audio.format
    transcoder = Transcoder(inbound.encoding, inbound.sample_rate, encoding, rate)
    width = 1 if encoding == "mulaw" else 2
    framer = Framer(rate * width * packet_ms // 1000, silence_byte(encoding))

    def on_audio(payload: bytes) -> None:
        for packet in framer.push(transcoder.feed(payload)):
            if not packets.full():
                packets.put_nowait(packet)

    return call.caller_audio.subscribe(on_audio)


async def _receive(call, ws) -> None:
    async for msg in ws:
        if msg.type is not WSMsgType.TEXT:
            break
        try:
            body = json.loads(msg.data)
            kind = body.get("type")
            if kind == "speak":
                utt = call.stream_text(body.get("text", ""), flush=bool(body.get("flush")))
                reply = {"type": "speak.accepted", "speech_id": utt and utt.id,
                         "flushed": bool(body.get("flush"))}
            elif kind == "interrupt":
                reply = {"type": "interrupt.done", "interrupted": await call.interrupt()}
            elif kind == "hangup":
                call.request_hangup()
                reply = {"type": "hangup.accepted"}
            else:
                reply = {"type": "error", "kind": "bad_request", "message": "unknown type"}
        except (ValueError, AttributeError, CallEnded, SpeechRefused) as exc:
            reply = {"type": "error", "kind": "bad_request", "message": str(exc)[:200]}
        await ws.send_str(json.dumps(reply))
