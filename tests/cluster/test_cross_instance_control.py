"""Three gateway instances on loopback sharing a real redis-server: control requests sent
to the instance that does not hold the call reach it; every instance lists every call; a
dead instance's calls expire; Redis down mid-call costs no frame and only cross-instance
control answers 503 until it is back."""

from __future__ import annotations

import asyncio
import contextlib
import time

from gateway.carriers.twilio.sim import TwilioCallSim
from gateway.http.keys import CLUSTER
from tests.cluster.conftest import (CHARS_PER_SECOND, speak_through_control_socket,
                                    start_instance, stop_instance)
from tests.e2e.test_twilio_call import metric_value

# 60 characters: 4.0 s of audio
LONG_TEXT = "Your order has shipped and will arrive on Tuesday morning ok."


@contextlib.asynccontextmanager
async def instances(redis_url: str, count: int = 3):
    started = []
    try:
        for _ in range(count):
            started.append(await start_instance(redis_url))
        yield started
    finally:
        for gw in started:
            await stop_instance(gw)


async def wait_until(check, timeout: float, what: str):
    """``await check()`` until it returns something truthy (polled, bounded in time)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def listed_ids(gw) -> set[str]:
    status, body = await gw.get_json("/v1/calls")
    assert status == 200, body
    return {c["id"] for c in body["calls"]}


async def test_control_sent_to_the_wrong_instance_reaches_the_call(redis_server):
    async with instances(redis_server.url) as (a, b, c), contextlib.AsyncExitStack() as stack:
        sims = [await stack.enter_async_context(TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/bot"))
                for gw in (a, b, c)]
        ids = {sim.call_sid for sim in sims}

        # every instance lists every call, each named with the instance that holds it
        for gw in (a, b, c):
            await wait_until(lambda gw=gw: _all_listed(gw, ids), 10, "the cluster listing")
        status, body = await b.get_json("/v1/calls")
        where = {call["id"]: call["instance"] for call in body["calls"]}
        assert where == {sims[0].call_sid: a.http_url, sims[1].call_sid: b.http_url,
                         sims[2].call_sid: c.http_url}
        assert body["unreachable"] == []

        # A's call, driven through B and C
        call_a = sims[0]
        status, body = await b.post_json(f"/v1/calls/{call_a.call_sid}/speak",
                                         {"text": LONG_TEXT})
        assert status == 202 and body["call_id"] == call_a.call_sid, body
        await call_a.wait_for_media(frames=10, timeout=10)
        status, body = await c.get_json(f"/v1/calls/{call_a.call_sid}")
        assert status == 200 and body["id"] == call_a.call_sid and body["speaking"], body
        status, body = await c.post_json(f"/v1/calls/{call_a.call_sid}/interrupt")
        assert status == 200 and body == {"call_id": call_a.call_sid, "interrupted": True}
        await call_a.wait_for_clear(timeout=5)

        # C's call hung up through A
        status, body = await a.post_json(f"/v1/calls/{sims[2].call_sid}/hangup")
        assert status == 202 and body["state"] == "hanging_up", body
        await sims[2].wait_ended(timeout=10)

        # a call nobody holds: 404, from any instance
        status, body = await b.post_json("/v1/calls/CAnobody/speak", {"text": "hi"})
        assert status == 404 and "in the cluster" in body["error"]["message"]

        # the forwards were timed on the instance that forwarded them
        for gw, op in ((b, "speak"), (c, "get"), (c, "interrupt"), (a, "hangup")):
            count = metric_value(await gw.metrics_text(),
                                 "tts_gateway_cluster_forward_seconds_count", op=op)
            assert count >= 1, (gw.http_url, op)

        status, body = await a.get_json("/v1/cluster")
        assert status == 200 and body["redis_up"] is True
        assert {i["url"] for i in body["instances"]} == {a.http_url, b.http_url, c.http_url}
        assert all(i["capacity"] >= 1 and i["draining"] is False for i in body["instances"])


async def test_a_control_socket_opened_on_the_wrong_instance_carries_events_both_ways(
        redis_server):
    async with instances(redis_server.url, count=2) as (a, b):
        async with TwilioCallSim(f"{a.ws_url}/v1/media/twilio/bot") as sim:
            await wait_until(lambda: _all_listed(b, {sim.call_sid}), 10, "the call listed")
            ws = await b.session.ws_connect(f"{b.ws_url}/v1/calls/{sim.call_sid}/control")
            try:
                await speak_through_control_socket(ws, sim.call_sid,
                                                   "Hello from the other side.")
                await ws.send_json({"type": "hangup"})
                await sim.wait_ended(timeout=10)
            finally:
                await ws.close()
            count = metric_value(await b.metrics_text(),
                                 "tts_gateway_cluster_forward_seconds_count", op="control")
            assert count == 1
        # a socket for a call nobody holds: refused before the upgrade, 404
        async with b.session.get(f"{b.http_url}/v1/calls/CAnobody/control") as resp:
            assert resp.status == 404


async def _all_listed(gw, ids: set[str]) -> bool:
    return ids <= await listed_ids(gw)


async def test_an_instance_whose_heartbeat_stops_has_its_calls_expire(redis_server):
    async with instances(redis_server.url, count=2) as (a, b):
        doomed = await start_instance(redis_server.url)
        try:
            async with TwilioCallSim(f"{a.ws_url}/v1/media/twilio/bot") as kept, \
                    TwilioCallSim(f"{doomed.ws_url}/v1/media/twilio/bot") as lost:
                await wait_until(lambda: _all_listed(b, {kept.call_sid, lost.call_sid}), 10,
                                 "both calls listed")
                await a.post_json(f"/v1/calls/{kept.call_sid}/speak", {"text": LONG_TEXT})
                # the instance dies as if killed: no deregistration, its keys just stop
                # being refreshed (its carrier leg dropped first, or closing the app would
                # wait for that socket's handler)
                await doomed.app[CLUSTER].stop(deregister=False)
                died = time.monotonic()
                await lost.drop()
                await stop_instance(doomed)

                ttl = a.app[CLUSTER].config.ttl_s
                await wait_until(lambda: _gone(b, lost.call_sid), ttl * 4,
                                 "the dead instance's call to leave the directory")
                print(f"dead instance's call left the directory after "
                      f"{time.monotonic() - died:.2f} s (ttl_s {ttl})")
                assert kept.call_sid in await listed_ids(b)
                await kept.wait_for_mark(timeout=len(LONG_TEXT) / CHARS_PER_SECOND + 10)
                assert kept.result.underruns == 0
                status, body = await b.get_json("/v1/cluster")
                assert status == 200
                assert doomed.http_url not in {i["url"] for i in body["instances"]}
        finally:
            if not doomed.session.closed:
                await stop_instance(doomed)


async def _gone(gw, call_id: str) -> bool:
    return call_id not in await listed_ids(gw)


async def test_redis_down_mid_call_costs_no_frame_and_only_cross_instance_control(
        redis_server):
    async with instances(redis_server.url, count=2) as (a, b):
        async with TwilioCallSim(f"{a.ws_url}/v1/media/twilio/bot") as sim:
            await wait_until(lambda: _all_listed(b, {sim.call_sid}), 10, "the call listed")
            status, body = await b.post_json(f"/v1/calls/{sim.call_sid}/speak",
                                             {"text": LONG_TEXT})
            assert status == 202, body
            await sim.wait_for_media(frames=10, timeout=10)

            # in a thread: the gateways share this event loop, which must never block
            await asyncio.to_thread(redis_server.stop)
            try:
                # cross-instance control: a clear 503 while Redis is down
                status, body = await b.post_json(f"/v1/calls/{sim.call_sid}/speak",
                                                 {"text": "Still there?"})
                assert status == 503, body
                assert "cluster directory cannot be read" in body["error"]["message"]
                status, body = await b.get_json("/v1/calls")
                assert status == 503, body
                # the owner still answers for its own call, and a new call goes on
                status, body = await a.get_json(f"/v1/calls/{sim.call_sid}")
                assert status == 200, body
                async with TwilioCallSim(f"{a.ws_url}/v1/media/twilio/bot") as newcomer:
                    status, body = await a.post_json(f"/v1/calls/{newcomer.call_sid}/speak",
                                                     {"text": "Welcome."})
                    assert status == 202, body
                    await newcomer.wait_for_media(frames=5, timeout=10)
                    await asyncio.sleep(1.0)  # several failed heartbeats while the call plays
            finally:
                await asyncio.to_thread(redis_server.start)

            # back: the directory is rebuilt from the live calls (the new server is empty)
            async def forwarded() -> bool:
                status, _ = await b.get_json(f"/v1/calls/{sim.call_sid}")
                return status == 200
            started = time.monotonic()
            await wait_until(forwarded, 20, "cross-instance control to work again")
            print(f"cross-instance control back {time.monotonic() - started:.2f} s after "
                  "Redis restarted")
            status, body = await b.post_json(f"/v1/calls/{sim.call_sid}/speak",
                                             {"text": "Back again."})
            assert status == 202, body

            await sim.wait_for_mark(timeout=len(LONG_TEXT) / CHARS_PER_SECOND + 10)
            result = sim.result
            print(f"call through the Redis outage: {len(result.frames)} frames, "
                  f"{result.underruns} underruns {result.underrun_gaps}")
            assert result.underruns == 0
            errors = metric_value(await a.metrics_text(),
                                  "tts_gateway_cluster_redis_errors_total", op="heartbeat")
            assert errors >= 1


async def test_forwarded_control_latency_against_direct(redis_server):
    """Figures, not asserts (a loaded 2-core machine): GET /v1/calls/{id} on the owner and
    through another instance (a Redis lookup, a loopback hop)."""
    async with instances(redis_server.url, count=2) as (a, b):
        async with TwilioCallSim(f"{a.ws_url}/v1/media/twilio/bot") as sim:
            await wait_until(lambda: _all_listed(b, {sim.call_sid}), 10, "the call listed")
            timings = {}
            for name, gw in (("direct", a), ("forwarded", b)):
                seconds = []
                for _ in range(200):
                    started = time.perf_counter()
                    status, _ = await gw.get_json(f"/v1/calls/{sim.call_sid}")
                    seconds.append(time.perf_counter() - started)
                    assert status == 200
                seconds.sort()
                timings[name] = (seconds[len(seconds) // 2], seconds[int(len(seconds) * .99)])
            writes = a.app[CLUSTER].writes
            print("control GET latency (ms, p50/p99): " + ", ".join(
                f"{name} {p50 * 1000:.2f}/{p99 * 1000:.2f}" for name, (p50, p99) in
                timings.items()) + f"; directory writes so far on the owner: {writes}")
