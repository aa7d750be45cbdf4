"""The control API for bots: list calls, speak, play, interrupt, hang up, and a control socket.

``{id}`` is the carrier's call id (Twilio's CallSid). Errors are JSON
``{"error": {"status", "message"}}``: bad body 400, unknown call 404, call ending 409, body
too large 413, a limit on the call's speech or its sockets 429; on the control socket the
same come as ``{"type": "error", "kind", "message"}`` and the socket stays open. Who may call
it at all: gateway/http/control_access.py. Every refusal is counted in
``tts_gateway_control_errors_total{kind}``, ``kind`` one of ``metrics.CONTROL_ERROR_KINDS``.
"""

from __future__ import annotations

import json
import weakref

from aiohttp import web

from gateway.bot import protocol
from gateway.bot.channel import SEND_BUFFER_BYTES, serve_bot_socket
from gateway.bot.protocol import MessageLimits, ProtocolError
from gateway.cluster.forward import (cluster_status, directory_of, forward_socket, forwarding,
                                     list_cluster)
from gateway.core.call import Call, CallEnded
from gateway.core.speech import SpeechRefused, Utterance
from gateway.http.control_access import socket_protocols
from gateway.http.jsonbody import BadJson, read_json
from gateway.http.keys import CALLS, CONFIG, METRICS, json_error
from gateway.prompts.recorded import PromptError

routes = web.RouteTableDef()

_REFUSAL_STATUS = {"queue_full": 429, "utterance_text": 413, "call_text": 413}
_sockets: weakref.WeakKeyDictionary[Call, int] = weakref.WeakKeyDictionary()


def _call(request: web.Request) -> Call:
    call_id = request.match_info["id"]
    call = request.app[CALLS].get(call_id)
    if call is None:
        request.app[METRICS].control_errors.labels("unknown_call").inc()
        raise web.HTTPNotFound(text=json.dumps({"error": {
            "status": 404, "message": f"no active call with id {protocol.shown(call_id)}"}}),
            content_type="application/json")
    return call


def _refused(request: web.Request, kind: str, status: int, message: str) -> web.Response:
    request.app[METRICS].control_errors.labels(kind).inc()
    return json_error(status, message)


@routes.get("/v1/calls")
async def list_calls(request: web.Request) -> web.Response:
    """This instance's calls; with cluster on, every instance's (gateway/cluster/)."""
    local = [c.summary() for c in request.app[CALLS].values()]
    directory = directory_of(request)
    if directory is None:
        return web.json_response({"calls": local})
    return await list_cluster(request, directory, local)


routes.get("/v1/cluster")(cluster_status)


@routes.get("/v1/calls/{id}")
@forwarding("get")
async def get_call(request: web.Request) -> web.Response:
    call = _call(request)
    return web.json_response({**call.summary(), "recent_events": call.events.history})


@routes.post("/v1/calls/{id}/speak")
@forwarding("speak")
async def speak(request: web.Request) -> web.Response:
    call = _call(request)
    limits = MessageLimits.from_config(request.app[CONFIG])
    try:
        body = await read_json(request, max_bytes=limits.max_message_bytes)
        args = protocol.parse_speak(body, limits, streaming=False)
    except BadJson as exc:
        return _refused(request, exc.kind, exc.status, f"{exc}; send {{\"text\": \"Hello\"}}")
    except ProtocolError as exc:
        return _refused(request, exc.kind, 400, str(exc))
    utt = Utterance.whole(args.text, voice=args.voice, provider=args.provider,
                          interruptible=args.interruptible)
    try:
        if args.interrupt:
            await call.interrupt()
        call.speak(utt)
    except CallEnded as exc:
        return json_error(409, str(exc))
    except SpeechRefused as exc:
        return _refused(request, exc.kind, _REFUSAL_STATUS[exc.kind], str(exc))
    return web.json_response({"speech_id": utt.id, "call_id": call.id}, status=202)


@routes.post("/v1/calls/{id}/play")
@forwarding("play")
async def play(request: web.Request) -> web.Response:
    """``{"prompt": NAME}`` (prompts.items) or ``{"url": "https://..."}``: queued like
    speech; a recording that cannot be loaded ends in its ``speech.done`` error."""
    call = _call(request)
    limits = MessageLimits.from_config(request.app[CONFIG])
    try:
        body = await read_json(request, max_bytes=limits.max_message_bytes)
        args = protocol.parse_play(body)
    except BadJson as exc:
        return _refused(request, exc.kind, exc.status, f"{exc}; send {{\"prompt\": \"welcome\"}}")
    except ProtocolError as exc:
        return _refused(request, exc.kind, 400, str(exc))
    try:
        if args.interrupt:
            await call.interrupt()
        utt = call.play(prompt=args.prompt, url=args.url, interruptible=args.interruptible)
    except PromptError as exc:
        return _refused(request, "unknown_prompt" if exc.kind == "unknown_prompt"
                        else "bad_request", 404 if exc.kind == "unknown_prompt" else 400,
                        str(exc))
    except CallEnded as exc:
        return json_error(409, str(exc))
    except SpeechRefused as exc:
        return _refused(request, exc.kind, _REFUSAL_STATUS[exc.kind], str(exc))
    return web.json_response({"speech_id": utt.id, "call_id": call.id,
                              "prompt": args.prompt}, status=202)


@routes.post("/v1/calls/{id}/interrupt")
@forwarding("interrupt")
async def interrupt(request: web.Request) -> web.Response:
    call = _call(request)
    cut = await call.interrupt()
    return web.json_response({"call_id": call.id, "interrupted": cut})


@routes.post("/v1/calls/{id}/hangup")
@forwarding("hangup")
async def hangup(request: web.Request) -> web.Response:
    call = _call(request)
    call.request_hangup()
    return web.json_response({"call_id": call.id, "state": "hanging_up"}, status=202)


@routes.get("/v1/calls/{id}/control")
async def control_socket(request: web.Request) -> web.StreamResponse:
    """The bot protocol (gateway/bot/) on a socket the bot opens: ``control.ready`` with the
    call's summary, then ``call.started`` and the events so far, then live events; with
    ``?audio=l16/16000&packet_ms=20`` (or a ``listen`` message) the caller's audio too."""
    max_bytes = MessageLimits.from_config(request.app[CONFIG]).max_message_bytes
    directory = directory_of(request)
    if directory is not None and request.match_info["id"] not in request.app[CALLS]:
        return await forward_socket(request, directory, request.match_info["id"],
                                    max_msg_size=4 * max_bytes)
    call = _call(request)
    try:
        listen = protocol.parse_listen_query(request.query)
    except ProtocolError as exc:
        return _refused(request, exc.kind, 400, str(exc))
    limit = request.app[CONFIG].limits.max_control_sockets
    if _sockets.get(call, 0) >= limit:
        return _refused(request, "too_many_sockets", 429,
                        f"call {call.id} has {limit} control sockets open, the most it takes "
                        "(limits.max_control_sockets)")
    _sockets[call] = _sockets.get(call, 0) + 1
    try:
        # Messages up to the limit are read and answered; a larger one up to four times
        # that is answered "too large" unparsed; beyond that the socket is closed (1009).
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=4 * max_bytes,
                                   writer_limit=SEND_BUFFER_BYTES,
                                   protocols=socket_protocols(request))
        await ws.prepare(request)
        if not ws.closed:
            try:
                await ws.send_json({"type": "control.ready", **call.summary()})
            except ConnectionError:
                return ws
        await serve_bot_socket(call, ws, audio=listen.audio if listen else None,
                               packet_ms=listen.packet_ms if listen else 20)
        return ws
    finally:
        _sockets[call] -= 1
