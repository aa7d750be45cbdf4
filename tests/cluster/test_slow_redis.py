"""A Redis that accepts connections and never answers (a hung server, a black-holed route):
every directory operation is bounded by ``cluster.redis_timeout_s``, calls play, and
cross-instance control answers 503 in bounded time."""

from __future__ import annotations

import asyncio
import time

from gateway.carriers.twilio.sim import TwilioCallSim
from tests.cluster.conftest import CHARS_PER_SECOND, start_instance, stop_instance

TEXT = "Thanks for waiting, your call is important to us."


async def test_a_redis_that_never_answers_costs_calls_nothing_and_control_gets_503():
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gw = await start_instance(f"redis://127.0.0.1:{port}/0")
    try:
        async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/bot") as sim:
            async def known() -> bool:
                return (await gw.get_json(f"/v1/calls/{sim.call_sid}"))[0] == 200
            async with asyncio.timeout(10):
                while not await known():
                    await asyncio.sleep(0.05)
            status, body = await gw.post_json(f"/v1/calls/{sim.call_sid}/speak", {"text": TEXT})
            assert status == 202, body

            started = time.monotonic()
            status, body = await gw.post_json("/v1/calls/CAelsewhere/speak", {"text": "hi"})
            waited = time.monotonic() - started
            assert status == 503, body
            print(f"503 from a silent Redis after {waited:.2f} s (redis_timeout_s 0.25)")
            assert waited < 10  # bounded, far above the 0.5 s it takes, for a loaded machine

            await sim.wait_for_mark(timeout=len(TEXT) / CHARS_PER_SECOND + 10)
            assert sim.result.underruns == 0
    finally:
        await stop_instance(gw)
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
