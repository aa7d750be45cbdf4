"""Fuzz every carrier endpoint: random and mutated messages on each carrier's media
WebSocket and on AudioSocket's TCP port, while a healthy call runs beside them.

Each example opens a connection the way the carrier does, sends a sequence built from the
carrier's own valid messages (from its simulator), mutated (a value replaced, deleted or
retyped; bytes truncated, flipped or grown), mixed with raw attacks (deep nesting, huge
integers, non-JSON) and random text or bytes, then hangs up. Properties: the upgrade is
never answered 5xx, and the gateway ends unharmed (tests/fuzz/harness.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sim.carriers import make_call, media_url
from tests.fuzz.harness import (FUZZ_SETTINGS, RAW_JSON_ATTACKS, GatewayThread, fuzz_config,
                                mutated_bytes, mutated_json, attack, run_client)

WEBSOCKET_CARRIERS = ("twilio", "signalwire", "telnyx", "plivo", "vonage", "exotel",
                      "asterisk")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


AUDIOSOCKET_PORT = _free_port()
LINGER_S = 0.15  # how long an example's connection stays open after its last message


@pytest.fixture(scope="module")
def gw():
    config = fuzz_config()
    config["carriers"]["audiosocket"] = {"host": "127.0.0.1", "port": AUDIOSOCKET_PORT,
                                         "route": "fuzz"}
    gateway = GatewayThread(config).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def _sim(carrier: str):
    if carrier == "audiosocket":
        return make_call(carrier, "tcp://127.0.0.1:1")
    return make_call(carrier, "ws://127.0.0.1:1", route="fuzz")


TEMPLATE_CALL_IDS = {carrier: _sim(carrier).call_id for carrier in (*WEBSOCKET_CARRIERS,
                                                                      "audiosocket")}


def with_fresh_call_id(carrier: str, steps: list[str | bytes]) -> list[str | bytes]:
    """The example's messages with the template's call id replaced by a new one, so that
    each example is a new call (a second stream of a live call id is refused)."""
    old, new = TEMPLATE_CALL_IDS[carrier], _sim(carrier).call_id
    if carrier == "audiosocket":
        old_b, new_b = uuid.UUID(old).bytes, uuid.UUID(new).bytes
        return [s.replace(old_b, new_b) if isinstance(s, bytes) else s for s in steps]
    return [s.replace(old, new) if isinstance(s, str) else s for s in steps]


def valid_messages(carrier: str) -> tuple[list[str | bytes], list[str | bytes]]:
    """(the messages that start a stream, the others) as the carrier's simulator sends them."""
    call = _sim(carrier)
    call.call_id = TEMPLATE_CALL_IDS[carrier]
    frame = b"\xff" * call.inbound_frame_bytes
    others = [*call.media_messages(0, frame), *call.media_messages(1, frame),
              *call.dtmf_messages("5"), *call.goodbye()]
    return call.hello(), others


def _is_json(message: str | bytes) -> bool:
    if not isinstance(message, str):
        return False
    try:
        return isinstance(json.loads(message), dict)
    except ValueError:
        return False


@st.composite
def mutated_text(draw, messages: list[str]) -> str:
    """A plain-text command (Asterisk's) with characters inserted, cut or replaced."""
    text = draw(st.sampled_from(messages))
    cut = draw(st.integers(0, len(text)))
    return text[:cut] + draw(st.text(max_size=30)) + text[cut + draw(st.integers(0, 5)):]


@st.composite
def mutated_opening(draw, hello: list[str | bytes]) -> list[str | bytes]:
    """The carrier's opening messages with the last (the start) mutated."""
    *before, start = hello
    if _is_json(start):
        return [*before, draw(mutated_json([start], leaves_only=True))]
    if isinstance(start, str):
        return [*before, draw(mutated_text([start]))]
    return [*before, draw(mutated_bytes([start]))]


def steps_for(carrier: str) -> st.SearchStrategy[list[str | bytes]]:
    hello, others = valid_messages(carrier)
    everything = hello + others
    texts = [m for m in everything if isinstance(m, str)]
    json_texts = [m for m in texts if _is_json(m)]
    plain_texts = [m for m in texts if not _is_json(m)]
    binaries = [m for m in everything if isinstance(m, bytes)]
    choices = [st.sampled_from(everything), RAW_JSON_ATTACKS, st.text(max_size=200),
               st.binary(max_size=200)]
    if json_texts:
        choices.append(mutated_json(json_texts))
    if plain_texts:
        choices.append(mutated_text(plain_texts))
    if binaries:
        choices.append(mutated_bytes(binaries))
    step = st.one_of(*choices)
    # Usually a start first, valid or with one field changed, so the mutations reach the
    # call and the values the call is built from, not only the handshake.
    opening = st.one_of(st.just(hello), mutated_opening(hello), st.lists(step, max_size=2))
    return st.tuples(opening, st.lists(step, min_size=1, max_size=6)).map(
        lambda parts: [*parts[0], *parts[1]])


async def _send_over_websocket(url: str, steps: list[str | bytes]) -> int | None:
    """Send the steps; the HTTP status if the upgrade was refused, else None."""
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(url, max_msg_size=0, autoping=True)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        async with ws:
            for step in steps:
                if ws.closed:
                    break
                try:
                    if isinstance(step, str):
                        await ws.send_str(step)
                    else:
                        await ws.send_bytes(step)
                except ConnectionError:
                    break
            # let the gateway act on what it got (a call that started synthesizes its
            # greeting from the values of the start) before hanging up
            try:
                async with asyncio.timeout(LINGER_S):
                    while not ws.closed:
                        await ws.receive()
            except TimeoutError:
                pass
    return None


@pytest.mark.parametrize("carrier", WEBSOCKET_CARRIERS)
def test_carrier_endpoint_survives_random_and_mutated_messages(gw, carrier):
    url = media_url(carrier, gw.ws_url, "fuzz")

    @FUZZ_SETTINGS
    @given(steps=steps_for(carrier))
    def example(steps):
        fresh = with_fresh_call_id(carrier, steps)
        status = run_client(lambda: _send_over_websocket(url, fresh))
        assert status is None or status < 500, f"upgrade answered {status}"

    rss_before = attack(gw, example)
    gw.assert_unharmed(f"fuzz {carrier}", rss_before)


async def _send_over_tcp(port: int, steps: list[bytes]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for step in steps:
            writer.write(step if isinstance(step, bytes) else step.encode())
            await writer.drain()
        try:
            async with asyncio.timeout(LINGER_S):
                while await reader.read(4096):
                    pass
        except TimeoutError:
            pass
    except ConnectionError:
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


def test_audiosocket_survives_random_and_mutated_frames(gw):

    @FUZZ_SETTINGS
    @given(steps=steps_for("audiosocket"))
    def example(steps):
        fresh = with_fresh_call_id("audiosocket", steps)
        run_client(lambda: _send_over_tcp(AUDIOSOCKET_PORT, fresh))

    rss_before = attack(gw, example)
    gw.assert_unharmed("fuzz audiosocket", rss_before)
