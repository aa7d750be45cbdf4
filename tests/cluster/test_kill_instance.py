"""Acceptance, with real processes: three ``tts-gateway serve`` instances on a real
redis-server, a call on each; ``kill -9`` of one. Its call leaves the directory within
``ttl_s`` (plus a heartbeat: the last refresh came at most one heartbeat before the kill);
the other instances' calls are undisturbed: no underrun, their greeting plays to its end,
and their control works, also through the other survivor (HTTP and the control socket)."""

from __future__ import annotations

import contextlib
import time

import redis.asyncio as aioredis

from gateway.carriers.twilio.sim import TwilioCallSim
from gateway.cluster.directory import call_key
from tests.cluster.conftest import CHARS_PER_SECOND, speak_through_control_socket
from tests.ops.test_drain import GatewayProcess, drain_config, free_port, wait_until

HEARTBEAT_S = 0.25
TTL_S = 1.5
GREETING = "Thank you for calling. Your order has shipped and will arrive on Tuesday."


def instance_config(redis_url: str) -> dict:
    port = free_port()
    config = drain_config(port, drain_timeout_s=2)
    config["cluster"] = {"redis_url": redis_url, "instance_url": f"http://127.0.0.1:{port}",
                         "heartbeat_s": HEARTBEAT_S, "ttl_s": TTL_S, "redis_timeout_s": 0.25}
    return config


@contextlib.asynccontextmanager
async def processes(tmp_path, redis_url: str, count: int):
    started: list[GatewayProcess] = []
    try:
        for index in range(count):
            folder = tmp_path / f"instance-{index}"
            folder.mkdir()
            started.append(GatewayProcess(folder, instance_config(redis_url)))
        for gw in started:
            await gw.wait_ready(timeout=60)
        yield started
    finally:
        for gw in started:
            await gw.close()


async def test_kill_9_of_one_instance_expires_its_calls_and_leaves_the_others_undisturbed(
        tmp_path, redis_server):
    redis = aioredis.Redis.from_url(redis_server.url)
    async with processes(tmp_path, redis_server.url, 3) as (a, b, victim), \
            contextlib.AsyncExitStack() as stack:
        sims = [await stack.enter_async_context(TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/bot"))
                for gw in (a, b, victim)]
        kept_a, kept_b, lost = sims

        async def all_in_directory():
            return await redis.exists(*(call_key(sim.call_sid) for sim in sims)) == len(sims)

        await wait_until(all_in_directory, 10, "the three calls in the directory")
        # each call's greeting, sent through an instance that does not hold it
        for gw, sim in ((b, kept_a), (a, kept_b), (a, lost)):
            status, body = await gw.post_json(f"/v1/calls/{sim.call_sid}/speak",
                                              {"text": GREETING, "flush": True})
            assert status == 202, body
        for sim in sims:
            await sim.wait_for_media(frames=25, timeout=10)  # half a second of each greeting

        victim.proc.kill()  # SIGKILL: no drain, no deregistration
        killed = time.monotonic()
        victim.proc.wait(10)

        async def left_directory():
            return not await redis.exists(call_key(lost.call_sid))

        await wait_until(left_directory, TTL_S + HEARTBEAT_S + 5.0,
                         "the killed instance's call to leave the directory")
        left_after = time.monotonic() - killed
        print(f"the killed instance's call left the directory {left_after:.2f} s after "
              f"kill -9 (ttl_s {TTL_S}, heartbeat_s {HEARTBEAT_S})")
        assert left_after <= TTL_S + HEARTBEAT_S + 1.0  # Redis expires it, not the gateway

        await lost.wait_ended(timeout=10)  # the carrier leg saw its socket close
        for gw in (a, b):  # the listing, from either survivor: the two live calls only
            status, body = await gw.get_json("/v1/calls")
            assert status == 200, body
            assert {c["id"] for c in body["calls"]} == {kept_a.call_sid, kept_b.call_sid}
            assert body["unreachable"] == []
            status, body = await gw.get_json("/v1/cluster")
            assert victim.http_url not in {i["url"] for i in body["instances"]}

        # the survivors' greetings play to their end without an underrun
        greeting_s = len(GREETING) / CHARS_PER_SECOND
        for sim in (kept_a, kept_b):
            await sim.wait_for_mark(timeout=greeting_s + 10)
            assert not sim.ended
            assert sim.result.underruns == 0, sim.result.underrun_gaps
            assert sim.result.violations == []
            assert len(sim.result.frames) * 0.020 >= greeting_s - 0.5

        # a control socket opened on the other survivor carries events both ways
        ws = await a.session.ws_connect(f"{a.ws_url}/v1/calls/{kept_b.call_sid}/control")
        try:
            await speak_through_control_socket(ws, kept_b.call_sid, "Through another process.")
        finally:
            await ws.close()

        # and their control works, direct and through the other survivor
        for gw, sim in ((b, kept_a), (a, kept_b)):
            before = len(sim.result.frames)
            status, body = await gw.post_json(f"/v1/calls/{sim.call_sid}/speak",
                                              {"text": GREETING})
            assert status == 202, body
            await sim.wait_for_media(frames=before + 10, timeout=10)
            status, body = await gw.post_json(f"/v1/calls/{sim.call_sid}/interrupt")
            assert status == 200 and body["interrupted"], body
            await sim.wait_for_clear(timeout=5)
            status, body = await gw.post_json(f"/v1/calls/{sim.call_sid}/hangup")
            assert status == 202, body
            await sim.wait_ended(timeout=10)
            assert sim.result.underruns == 0 and sim.result.violations == []
    await redis.aclose()
