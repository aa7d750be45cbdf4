"""A small bot for tts-gateway: the gateway dials it when a call starts, it hears the
caller and answers. Start here when you write your own.

What it does on each call:
  * greets the caller when the call starts (``call.started``);
  * repeats every key the caller presses (``dtmf``);
  * counts the seconds of caller audio it receives (binary frames) and of caller speech
    (``caller.speech_started`` / ``caller.speech_stopped``), and says how much speech it
    heard each time the caller stops talking.

Run it, and point a route at it in gateway.yaml:

    BOT_SECRET=change-me python examples/bot.py --port 9000

    routes:
      demo:
        provider: local
        bot: {url: "ws://127.0.0.1:9000/bot", secret_env: BOT_SECRET}

then ``tts-gateway dial --route demo --caller-audio hello.wav`` calls it. Needs aiohttp.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from aiohttp import WSMsgType, web

from verify_signature import verify_gateway_signature

log = logging.getLogger("example-bot")

GREETING = "Hello, this is the example bot. Press a key, or say something."
KEY_NAMES = {"*": "star", "#": "pound"}
BYTES_PER_SECOND = {"l16/16000": 32000, "l16/8000": 16000, "mulaw/8000": 8000}
SECRET: web.AppKey[str | None] = web.AppKey("secret")
PUBLIC_URL: web.AppKey[str | None] = web.AppKey("public_url")
CALLS = web.AppKey("calls", dict)


class CallState:
    """What the bot knows about one call."""

    def __init__(self) -> None:
        self.last_seq = 0  # events replayed after a reconnect come again: skip those
        self.bytes_per_second = BYTES_PER_SECOND["l16/16000"]
        self.audio_bytes = 0
        self.speech_ms = 0
        self.digits: list[str] = []

    @property
    def audio_seconds(self) -> float:
        return self.audio_bytes / self.bytes_per_second


def answer(event: dict, state: CallState) -> list[dict]:
    """The bot's logic: one event from the gateway in, the messages to send back out."""
    kind = event["type"]
    if kind == "call.started":
        audio = event.get("audio") or {}
        fmt = audio.get("format")
        if fmt in BYTES_PER_SECOND:
            state.bytes_per_second = BYTES_PER_SECOND[fmt]
        return [say(GREETING)]
    if kind == "dtmf":
        digit = event["digit"]
        state.digits.append(digit)
        return [say(f"You pressed {KEY_NAMES.get(digit, digit)}.")]
    if kind == "caller.speech_stopped":
        state.speech_ms += event.get("speech_ms", 0)
        return [say(f"I heard {state.speech_ms / 1000:.1f} seconds of speech from you.")]
    return []  # speech.started, speech.done, mark, call.ended ...: nothing to say


def say(text: str) -> dict:
    # "flush" ends the utterance; without it, pieces accumulate (stream an LLM's tokens)
    return {"type": "speak", "text": text, "flush": True}


async def call_socket(request: web.Request) -> web.StreamResponse:
    secret = request.app[SECRET]
    url = request.app[PUBLIC_URL] or str(request.url.with_scheme("ws"))
    if secret and not verify_gateway_signature(request.headers, url, secret):
        return web.json_response({"error": "bad signature"}, status=401)
    call_id = request.headers.get("X-TTS-Gateway-Call-Id", "?")[:64]
    # one state per call, kept across reconnects of that call's socket
    state = request.app[CALLS].setdefault(call_id, CallState())
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=1 << 20)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.BINARY:  # the caller's audio, packet after packet
            state.audio_bytes += len(msg.data)
        elif msg.type is WSMsgType.TEXT:
            event = json.loads(msg.data)
            if event.get("seq", 0) <= state.last_seq:
                continue  # seen before the socket dropped
            state.last_seq = event.get("seq", state.last_seq)
            if event["type"] == "error":
                log.warning("call %s: the gateway says: %s", call_id, event)
            for message in answer(event, state):
                await ws.send_json(message)
            if event["type"] == "call.ended":
                log.info("call %s ended: %.1f s of audio, %.1f s of speech, keys %s",
                         call_id, state.audio_seconds, state.speech_ms / 1000,
                         "".join(state.digits))
                request.app[CALLS].pop(call_id, None)
    return ws


def make_app(secret: str | None = None, public_url: str | None = None) -> web.Application:
    """``public_url``: the bot URL exactly as gateway.yaml names it (what the gateway
    signs); by default, the URL the request came to."""
    app = web.Application()
    app[SECRET] = secret
    app[PUBLIC_URL] = public_url
    app[CALLS] = {}
    app.router.add_get("/bot", call_socket)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--public-url", help="the url in gateway.yaml, if it differs from "
                                             "ws://<host>:<port>/bot (behind a proxy)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    secret = os.environ.get("BOT_SECRET")
    if not secret:
        log.warning("BOT_SECRET is not set: accepting calls from anyone")
    web.run_app(make_app(secret, args.public_url), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
