"""A flow's ``bot`` step hands the call to the route's bot: the gateway dials it only when
the caller gets there, not at the call's start."""

from __future__ import annotations

import pytest

from gateway.sim.carriers import make_call
from tests.bot.test_dialer import BotServer
from tests.conftest import base_config, running_gateway
from tests.e2e.test_twilio_call import open_control
from tests.flows.test_menu_calls import FAST, step_played


async def test_the_bot_step_dials_the_routes_bot_when_the_caller_gets_there():
    bot = BotServer(secret=None)
    url = await bot.start()
    data = base_config()
    data["providers"]["fast"] = FAST
    data["routes"] = {"ivr": {"provider": "fast", "bot": {"url": url}, "flow": {"steps": {
        "main": {"menu": {"prompt": "Press 0 for an agent.", "options": {"0": "agent"},
                          "timeout_s": 10}},
        "agent": {"bot": {}}}}}}
    data["default_route"] = "ivr"
    try:
        async with running_gateway(data) as gw:
            async with make_call("twilio", gw.ws_url, route="ivr") as sim:
                control = await open_control(gw, sim.call_id)
                await step_played(control, "main")
                assert bot.connections == []  # not dialed at the call's start
                await sim.send_dtmf("0")
                await control.next_event("flow.step", step="agent")
                await bot.wait(lambda: bot.events("call.started"), what="the bot dialed")
                started = bot.events("call.started")[0]
                assert started["call_id"] == sim.call_id
    finally:
        await bot.stop()


def test_a_bot_step_needs_a_bot_on_its_route():
    from gateway.config import ConfigError, parse_config

    data = base_config()
    data["routes"]["ivr"] = {"provider": "local", "flow": {"steps": {"agent": {"bot": {}}}}}
    with pytest.raises(ConfigError, match=r"routes\.ivr\.flow\.steps\.agent\.bot: the route "
                                          "has no bot"):
        parse_config(data, {})
