"""The control API for bots: list calls, speak, interrupt, hang up, and a control socket.

``{id}`` is the carrier's call id (Twilio's CallSid). Errors are JSON
``{"error": {"status", "message"}}``: bad body 400, unknown call 404, call ending 409, body
too large 413, a limit on the call's speech or its sockets 429; on the control socket the
same come as ``{"type": "error", "kind", "message"}`` and the socket stays open. Who may call
it at all: gateway/http/control_access.py. Every refusal is counted in
``tts_gateway_control_errors_total{kind}``, ``kind`` one of ``metrics.CONTROL_ERROR_KINDS``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref

from aiohttp import WSMsgType, web

from gateway.config import GatewayConfig
from gateway.core.call import Call, CallEnded
from gateway.core.speech import SpeechRefused, Utterance
from gateway.http.jsonbody import BadJson, parse_json, read_json
from gateway.http.keys import CALLS, CONFIG, METRICS, json_error

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

MAX_NAME_CHARS = 200  # a voice name
_REFUSAL_STATUS = {"queue_full": 429, "utterance_text": 413, "call_text": 413}
_sockets: weakref.WeakKeyDictionary[Call, int] = weakref.WeakKeyDictionary()


class BadRequest(Exception):
    pass


def max_body_bytes(config: GatewayConfig) -> int:
    """The largest control message: a speak of ``max_text_chars`` written as JSON escapes
    (up to 12 bytes a character), with room for the other fields."""
    return 12 * config.limits.max_text_chars + 4096


def _call(request: web.Request) -> Call:
    call_id = request.match_info["id"]
    call = request.app[CALLS].get(call_id)
    if call is None:
        request.app[METRICS].control_errors.labels("unknown_call").inc()
        raise web.HTTPNotFound(text=json.dumps({"error": {
            "status": 404, "message": f"no active call with id {_shown(call_id)}"}}),
            content_type="application/json")
    return call


def _refused(request: web.Request, kind: str, status: int, message: str) -> web.Response:
    request.app[METRICS].control_errors.labels(kind).inc()
    return json_error(status, message)


def _shown(value: object) -> str:
    """A value from the client, as it may appear in a reply: bounded."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_speak(body: object, request: web.Request, call: Call, *, streaming: bool) -> dict:
    """Validate a speak body; raise BadRequest naming the field."""
    config = request.app[CONFIG]
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object like {\"text\": \"Hello\"}")
    text = body.get("text")
    if not isinstance(text, str) or (not streaming and not text.strip()):
        raise BadRequest("text: required, a non-empty string")
    if len(text) > config.limits.max_text_chars:
        raise BadRequest(f"text: {len(text)} characters is over the limit of "
                         f"{config.limits.max_text_chars} (limits.max_text_chars)")
    provider = body.get("provider")
    if provider is not None and (not isinstance(provider, str)
                                 or provider not in config.providers):
        raise BadRequest(f"provider: {_shown(provider)} is not a configured provider "
                         f"(configured: {', '.join(config.providers)})")
    voice = body.get("voice")
    if voice is not None and (not isinstance(voice, str) or len(voice) > MAX_NAME_CHARS):
        raise BadRequest(f"voice: must be a string of at most {MAX_NAME_CHARS} characters")
    for flag in ("interrupt", "flush"):
        if not isinstance(body.get(flag, False), bool):
            raise BadRequest(f"{flag}: must be true or false")
    return {"text": text, "provider": provider, "voice": voice,
            "interrupt": body.get("interrupt", False), "flush": body.get("flush", False)}


@routes.get("/v1/calls")
async def list_calls(request: web.Request) -> web.Response:
    return web.json_response({"calls": [c.summary() for c in request.app[CALLS].values()]})


@routes.get("/v1/calls/{id}")
async def get_call(request: web.Request) -> web.Response:
    call = _call(request)
    return web.json_response({**call.summary(), "recent_events": call.events.history})


@routes.post("/v1/calls/{id}/speak")
async def speak(request: web.Request) -> web.Response:
    call = _call(request)
    try:
        body = await read_json(request, max_bytes=max_body_bytes(request.app[CONFIG]))
        args = parse_speak(body, request, call, streaming=False)
    except BadJson as exc:
        return _refused(request, exc.kind, exc.status, f"{exc}; send {{\"text\": \"Hello\"}}")
    except BadRequest as exc:
        return _refused(request, "bad_request", 400, str(exc))
    utt = Utterance.whole(args["text"], voice=args["voice"], provider=args["provider"])
    try:
        if args["interrupt"]:
            await call.interrupt()
        call.speak(utt)
    except CallEnded as exc:
        return json_error(409, str(exc))
    except SpeechRefused as exc:
        return _refused(request, exc.kind, _REFUSAL_STATUS[exc.kind], str(exc))
    return web.json_response({"speech_id": utt.id, "call_id": call.id}, status=202)


@routes.post("/v1/calls/{id}/interrupt")
async def interrupt(request: web.Request) -> web.Response:
    call = _call(request)
    cut = await call.interrupt()
    return web.json_response({"call_id": call.id, "interrupted": cut})


@routes.post("/v1/calls/{id}/hangup")
async def hangup(request: web.Request) -> web.Response:
    call = _call(request)
    call.request_hangup()
    return web.json_response({"call_id": call.id, "state": "hanging_up"}, status=202)


@routes.get("/v1/calls/{id}/control")
async def control_socket(request: web.Request) -> web.StreamResponse:
    """Text in (``speak`` pieces with ``flush``, ``interrupt``, ``hangup``), events out."""
    call = _call(request)
    config = request.app[CONFIG]
    limit = config.limits.max_control_sockets
    if _sockets.get(call, 0) >= limit:
        return _refused(request, "too_many_sockets", 429,
                        f"call {call.id} has {limit} control sockets open, the most it takes "
                        "(limits.max_control_sockets)")
    _sockets[call] = _sockets.get(call, 0) + 1
    try:
        return await _serve_control(request, call, max_body_bytes(config))
    finally:
        _sockets[call] -= 1


async def _serve_control(request: web.Request, call: Call,
                         max_bytes: int) -> web.WebSocketResponse:
    # Messages up to max_bytes are read and answered; a larger one up to four times that is
    # answered "too large" unparsed; beyond that the socket is closed (1009).
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=4 * max_bytes)
    await ws.prepare(request)
    # Events so far are replayed first: a bot that connects after call.started (a webhook
    # round trip later) still sees the greeting's speech.started.
    backlog = list(call.events.history)
    events = call.events.subscribe()
    for event in [{"type": "control.ready", **call.summary()}, *backlog]:
        if not await _send(ws, event):
            call.events.unsubscribe(events)
            return ws

    async def forward_events() -> None:
        while True:
            event = await events.get()
            if event is None:
                await ws.close()
                return
            if not await _send(ws, event):
                return

    forwarder = asyncio.get_running_loop().create_task(forward_events())
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                reply = await _control_message(request, call, msg.data, max_bytes)
            elif msg.type is WSMsgType.BINARY:
                reply = _socket_error(request, "bad_request", "send JSON text frames")
            else:  # the socket failed (a bad frame, a missed heartbeat): it is closing
                break
            if reply is not None and not await _send(ws, reply):
                break
    finally:
        call.events.unsubscribe(events)
        forwarder.cancel()
    return ws


async def _send(ws: web.WebSocketResponse, message: dict) -> bool:
    """Send unless the socket is gone; False when it is (a bot that went away is no error)."""
    if ws.closed:
        return False
    try:
        await ws.send_json(message)
    except ConnectionError:  # closed while we wrote: aiohttp's ClientConnectionResetError
        return False
    return True


def _socket_error(request: web.Request, kind: str, message: str) -> dict:
    request.app[METRICS].control_errors.labels(kind).inc()
    return {"type": "error", "kind": kind, "message": message}


async def _control_message(request: web.Request, call: Call, data: str,
                           max_bytes: int) -> dict | None:
    try:
        body = parse_json(data, max_bytes=max_bytes)
        kind = body.get("type") if isinstance(body, dict) else None
        if kind == "speak":
            args = parse_speak(body, request, call, streaming=True)
            utt = call.stream_text(args["text"], flush=args["flush"], voice=args["voice"])
            if utt is None:
                return None
            return {"type": "speak.accepted", "speech_id": utt.id, "flushed": args["flush"]}
        if kind == "interrupt":
            return {"type": "interrupt.done", "interrupted": await call.interrupt()}
        if kind == "hangup":
            call.request_hangup()
            return {"type": "hangup.accepted"}
        raise BadRequest("type: expected speak, interrupt or hangup")
    except BadJson as exc:
        return _socket_error(request, exc.kind, str(exc))
    except BadRequest as exc:
        return _socket_error(request, "bad_request", str(exc))
    except SpeechRefused as exc:
        return _socket_error(request, exc.kind, str(exc))
    except CallEnded as exc:
        return {"type": "error", "kind": "call_ended", "message": str(exc)}
