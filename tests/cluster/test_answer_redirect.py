"""The answer endpoints point a new call at an instance with room (gateway/http/answer.py,
gateway/cluster/directory.py ``redirect_target``): instances on loopback sharing a real
redis-server, each with its own ``cluster.public_url``; a full or draining instance's TwiML
names the one with the most room; with Redis down, or no other instance with a public URL,
an instance answers with its own address."""

from __future__ import annotations

import contextlib
import re

import aiohttp

from gateway.carriers.twilio.sim import TwilioCallSim
from gateway.http.keys import CLUSTER, DRAIN
from gateway.sim.carriers.auth import auth_headers
from tests.cluster.conftest import start_instance, stop_instance
from tests.cluster.test_cross_instance_control import wait_until
from tests.e2e.test_twilio_call import metric_value


@contextlib.asynccontextmanager
async def instances(redis_url: str, *specs: dict):
    """One instance per spec: ``{"public_url": ..., "max_calls": ...}`` (both optional)."""
    started = []
    try:
        for spec in specs:
            cluster = {"public_url": spec["public_url"]} if spec.get("public_url") else {}
            started.append(await start_instance(
                redis_url, extra={"limits": {"max_calls": spec.get("max_calls", 4)}},
                **cluster))
        yield started
    finally:
        for gw in started:
            await stop_instance(gw)


async def stream_host(gw) -> str:
    """The host of the media URL in the TwiML ``gw`` answers a new call with."""
    async with gw.session.post(f"{gw.http_url}/v1/answer/twilio/bot",
                               data={"CallSid": "CAnew", "AccountSid": "AC1"}) as response:
        body = await response.text()
        assert response.status == 200, body
    found = re.search(r'url="wss://([^/"]+)/v1/media/twilio/bot"', body)
    assert found, body
    return found.group(1)


def known_calls(gw) -> dict[str, int]:
    """Each other instance's active calls, as ``gw``'s registry snapshot has them."""
    return {r["url"]: r["active_calls"] for r in gw.app[CLUSTER].registry}


def redirects(metrics: str, reason: str) -> float:
    return metric_value(metrics, "tts_gateway_cluster_redirects_total", reason=reason)


async def test_a_full_or_draining_instance_points_the_call_at_the_one_with_most_room(
        redis_server):
    async with instances(redis_server.url,
                         {"public_url": "https://a.example.com", "max_calls": 1},
                         {"public_url": "https://b.example.com", "max_calls": 4},
                         {"public_url": "https://c.example.com", "max_calls": 4}) as (a, b, _c), \
            contextlib.AsyncExitStack() as stack:
        own_a = f"127.0.0.1:{a.port}"
        assert await stream_host(a) == own_a  # room here: as without a cluster

        for gw in (a, b, b):  # A full (1 of 1); B 2 of 4, C 0 of 4
            await stack.enter_async_context(TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/bot"))

        async def seen() -> bool:
            calls = known_calls(a)
            return calls.get(b.http_url) == 2 and calls.get(a.http_url) == 1
        await wait_until(seen, 10, "A's snapshot of the registry")
        assert await stream_host(a) == "c.example.com"  # the most room
        assert redirects(await a.metrics_text(), "full") == 1

        b.app[DRAIN].begin("test")
        await wait_until(lambda: _draining_seen(a, b), 10, "B's drain in A's snapshot")
        # B drains: its answers point at C (A is full), and A never points at B
        assert await stream_host(b) == "c.example.com"
        assert redirects(await b.metrics_text(), "draining") == 1
        for _ in range(3):
            assert await stream_host(a) == "c.example.com"


async def _draining_seen(a, b) -> bool:
    return any(r["url"] == b.http_url and r["draining"] for r in a.app[CLUSTER].registry)


async def test_an_instance_without_a_public_url_is_never_chosen(redis_server):
    async with instances(redis_server.url, {"public_url": "https://a.example.com",
                                            "max_calls": 1},
                         {"max_calls": 4}) as (a, b):
        async with TwilioCallSim(f"{a.ws_url}/v1/media/twilio/bot"):
            async def seen() -> bool:
                return known_calls(a).get(a.http_url) == 1 and b.http_url in known_calls(a)
            await wait_until(seen, 10, "A's snapshot of the registry")
            assert await stream_host(a) == f"127.0.0.1:{a.port}"
            assert redirects(await a.metrics_text(), "full") == 0


async def test_with_redis_down_an_instance_answers_with_its_own_url(redis_server):
    async with instances(redis_server.url,
                         {"public_url": "https://a.example.com", "max_calls": 1},
                         {"public_url": "https://b.example.com"}) as (a, b):
        async with TwilioCallSim(f"{a.ws_url}/v1/media/twilio/bot"):
            async def seen() -> bool:
                return known_calls(a).get(a.http_url) == 1 and b.http_url in known_calls(a)
            await wait_until(seen, 10, "A's snapshot of the registry")
            assert await stream_host(a) == "b.example.com"

            redis_server.stop()
            try:
                await wait_until(lambda: _forgotten(a), 10, "A's snapshot dropped")
                assert await stream_host(a) == f"127.0.0.1:{a.port}"
            finally:
                redis_server.start()
            # Redis back: the next heartbeats fill the snapshot again
            await wait_until(seen, 15, "A's snapshot again")
            assert await stream_host(a) == "b.example.com"


async def _forgotten(gw) -> bool:
    return not gw.app[CLUSTER].registry


async def test_a_stream_signed_for_the_instances_own_public_url_is_accepted(redis_server):
    """Twilio signs the URL the TwiML named: after a redirect that is the instance's own
    ``cluster.public_url``, not the shared ``server.public_url``; both are accepted."""
    gw = await start_instance(
        redis_server.url, public_url="https://b.example.com",
        extra={"server": {"public_url": "https://gw.example.com"},
               "carriers": {"twilio": {"auth_token_env": "TWILIO_TOKEN"}}},
        environ={"TWILIO_TOKEN": "twilio-secret"})
    path = "/v1/media/twilio/bot"
    try:
        for signed_for, accepted in (("wss://gw.example.com", True),
                                     ("wss://b.example.com", True),
                                     ("wss://elsewhere.example.com", False)):
            headers = auth_headers("twilio", signed_for + path, {"auth_token": "twilio-secret"})
            try:
                ws = await gw.session.ws_connect(f"{gw.ws_url}{path}", headers=headers)
            except aiohttp.WSServerHandshakeError as refused:
                assert not accepted and refused.status == 403, signed_for
            else:
                await ws.close()
                assert accepted, signed_for
    finally:
        await stop_instance(gw)
