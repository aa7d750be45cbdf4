"""The control API for bots: list calls, speak, interrupt, hang up, and a control socket.

``{id}`` is the carrier's call id (Twilio's CallSid). Errors are JSON
``{"error": {"status", "message"}}``: unknown call 404, bad body 400, call ending 409.
When ``auth.control_token_env`` is set, every request needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging

from aiohttp import WSMsgType, web

from gateway.core.call import Call, CallEnded
from gateway.core.speech import Utterance
from gateway.http.keys import CALLS, CONFIG, METRICS, json_error

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


class BadRequest(Exception):
    pass


@web.middleware
async def control_auth(request: web.Request, handler):
    token = request.app[CONFIG].control_token
    if token and request.path.startswith("/v1/calls"):
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            request.app[METRICS].control_errors.labels("unauthorized").inc()
            return json_error(401, "missing or wrong bearer token (Authorization: Bearer <token>)")
    return await handler(request)


def _call(request: web.Request) -> Call:
    call_id = request.match_info["id"]
    call = request.app[CALLS].get(call_id)
    if call is None:
        request.app[METRICS].control_errors.labels("unknown_call").inc()
        raise web.HTTPNotFound(text=json.dumps({"error": {
            "status": 404, "message": f"no active call with id {call_id!r}"}}),
            content_type="application/json")
    return call


def _bad(request: web.Request, message: str) -> web.Response:
    request.app[METRICS].control_errors.labels("bad_request").inc()
    return json_error(400, message)


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
    if provider is not None and provider not in config.providers:
        raise BadRequest(f"provider: {provider!r} is not configured "
                         f"(configured: {', '.join(config.providers)})")
    voice = body.get("voice")
    if voice is not None and not isinstance(voice, str):
        raise BadRequest("voice: must be a string")
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
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _bad(request, "body is not valid JSON; send {\"text\": \"Hello\"}")
    try:
        args = parse_speak(body, request, call, streaming=False)
    except BadRequest as exc:
        return _bad(request, str(exc))
    utt = Utterance.whole(args["text"], voice=args["voice"], provider=args["provider"])
    try:
        if args["interrupt"]:
            await call.interrupt()
        call.speak(utt)
    except CallEnded as exc:
        return json_error(409, str(exc))
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
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    # Events so far are replayed first: a bot that connects after call.started (a webhook
    # round trip later) still sees the greeting's speech.started.
    backlog = list(call.events.history)
    events = call.events.subscribe()
    await ws.send_json({"type": "control.ready", **call.summary()})
    for event in backlog:
        await ws.send_json(event)

    async def forward_events() -> None:
        while True:
            event = await events.get()
            if event is None:
                await ws.close()
                return
            await ws.send_json(event)

    forwarder = asyncio.get_running_loop().create_task(forward_events())
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                await ws.send_json({"type": "error", "message": "send JSON text frames"})
                continue
            reply = await _control_message(request, call, msg.data)
            if reply is not None:
                await ws.send_json(reply)
    finally:
        call.events.unsubscribe(events)
        forwarder.cancel()
    return ws


async def _control_message(request: web.Request, call: Call, data: str) -> dict | None:
    try:
        body = json.loads(data)
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
    except (json.JSONDecodeError, BadRequest) as exc:
        request.app[METRICS].control_errors.labels("bad_request").inc()
        return {"type": "error", "message": str(exc)}
    except CallEnded as exc:
        return {"type": "error", "message": str(exc)}
