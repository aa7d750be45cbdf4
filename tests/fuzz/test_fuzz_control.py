"""Fuzz the control API: random bodies, methods and call ids on every control endpoint,
and random frames on a call's control socket, while a healthy call runs beside them.

Properties: no 5xx; every refusal is a JSON error (``{"error": {...}}`` over HTTP,
``{"type": "error"}`` on the socket); the control socket survives every frame; and the
gateway ends unharmed (tests/fuzz/harness.py).
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sim.carriers import make_call
from tests.fuzz.harness import (FUZZ_SETTINGS, JSON_VALUES, RAW_JSON_ATTACKS, GatewayThread,
                                attack, fuzz_config, mutated_json, run_client)

SPEAK_BODIES = [json.dumps(b) for b in (
    {"text": "Hello there."},
    {"text": "Hi.", "voice": "fake", "provider": "voice", "interrupt": True},
    {"type": "speak", "text": "Part one", "flush": False},
    {"type": "speak", "text": " and the end.", "flush": True},
    {"type": "interrupt"},
    {"prompt": "welcome", "interrupt": True},
    {"type": "play", "prompt": "welcome", "interruptible": False},
)]
BODIES = st.one_of(
    mutated_json(SPEAK_BODIES),
    JSON_VALUES.map(json.dumps),
    RAW_JSON_ATTACKS,
    st.binary(max_size=300),
    st.text(max_size=300),
)
CALL_IDS = st.one_of(st.text(min_size=1, max_size=60), st.sampled_from(
    ["..", "%2F", "a%00b", "x" * 5000, "%0aFORGED", "CA" + "0" * 32]))
ACTIONS = st.sampled_from(["", "/speak", "/play", "/interrupt", "/hangup", "/control",
                           "/nope"])
METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS",
                           "FOO", "PROPFIND"])


@pytest.fixture(scope="module")
def gw():
    gateway = GatewayThread(fuzz_config()).start()
    gateway.victim = make_call("twilio", gateway.ws_url, route="fuzz")
    gateway.run(gateway.victim.connect())
    try:
        yield gateway
    finally:
        gateway.run(gateway.victim.hangup())
        gateway.stop()


# Methods aiohttp's HTTP parser does not know are refused before any handler runs, with
# its own plain-text 400; only the control API's own answers must be JSON.
PARSED_METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}


def _assert_json_error(status: int, body: bytes, what: str, method: str) -> None:
    assert status < 500, f"{what}: answered {status}: {body[:300]!r}"
    if status >= 400 and method in PARSED_METHODS and method != "HEAD":
        error = json.loads(body)["error"]
        assert isinstance(error["message"], str) and error["status"] == status, body[:300]


async def _request(url: str, method: str, body: bytes) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url, data=body,
                                headers={"Content-Type": "application/json"}) as resp:
            return resp.status, await resp.read()


def test_control_endpoints_answer_every_body_with_4xx_json_not_5xx(gw):
    victim = gw.victim.call_id

    @FUZZ_SETTINGS
    @given(method=METHODS, action=ACTIONS.filter(lambda a: a not in ("/hangup", "/control")),
           body=BODIES)
    def on_the_live_call(method, action, body):
        body = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        url = f"{gw.http_url}/v1/calls/{victim}{action}"
        status, answer = run_client(lambda: _request(url, method, body))
        _assert_json_error(status, answer, f"{method} {action}", method)

    @FUZZ_SETTINGS
    @given(method=METHODS, call_id=CALL_IDS, action=ACTIONS, body=BODIES)
    def on_any_call_id(method, call_id, action, body):
        body = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        url = f"{gw.http_url}/v1/calls/{call_id}{action}"
        try:
            status, answer = run_client(lambda: _request(url, method, body))
        except ValueError:  # a URL the client itself refuses to send
            return
        if status != 404 or answer.startswith(b"{"):  # aiohttp's own 404 for no route is text
            _assert_json_error(status, answer, f"{method} {call_id!r}{action}", method)
        assert status < 500

    rss_before = attack(gw, on_the_live_call, on_any_call_id)
    status, _ = run_client(lambda: _request(f"{gw.http_url}/v1/calls/{victim}", "GET", b""))
    assert status == 200, "the call attacked through the control API is gone"
    gw.assert_unharmed("fuzz control endpoints", rss_before)


FRAMES = st.one_of(
    mutated_json(SPEAK_BODIES).map(lambda s: ("text", s)),
    JSON_VALUES.map(lambda v: ("text", json.dumps(v))),
    RAW_JSON_ATTACKS.map(lambda s: ("text", s)),
    st.text(max_size=200).map(lambda s: ("text", s)),
    st.binary(max_size=200).map(lambda b: ("bytes", b)),
)


async def _control_session(url: str, frames: list[tuple[str, str | bytes]]) -> list[dict]:
    """Send the frames; return what came back. The socket must stay open throughout."""
    replies: list[dict] = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, max_msg_size=0) as ws:
            ready = json.loads((await ws.receive()).data)
            assert ready["type"] == "control.ready", ready
            for kind, frame in frames:
                if kind == "text":
                    await ws.send_str(frame)
                else:
                    await ws.send_bytes(frame)
            # an interrupt last: its answer says the socket still works after the frames
            await ws.send_str('{"type": "interrupt"}')
            async with asyncio.timeout(10):
                while True:
                    msg = await ws.receive()
                    assert msg.type is aiohttp.WSMsgType.TEXT, (
                        f"control socket closed ({msg.type.name}, {msg.data!r}, {msg.extra!r})")
                    reply = json.loads(msg.data)
                    replies.append(reply)
                    if reply.get("type") == "interrupt.done":
                        return replies


def test_control_socket_survives_every_frame(gw):
    url = f"{gw.ws_url}/v1/calls/{gw.victim.call_id}/control"

    @FUZZ_SETTINGS
    @given(frames=st.lists(FRAMES, min_size=1, max_size=5))
    def example(frames):
        replies = run_client(lambda: _control_session(url, frames))
        for reply in replies:
            if reply.get("type") == "error":
                assert isinstance(reply.get("message"), str), reply

    rss_before = attack(gw, example)
    gw.assert_unharmed("fuzz control socket", rss_before)
