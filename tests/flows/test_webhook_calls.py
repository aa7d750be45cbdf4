"""A flow driven by the business's server: a test HTTP server on loopback gets the call and
the digits and answers the steps the caller hears next; a webhook that times out, answers
500, answers garbage, answers too much or names steps it may not, leads to the route's
fallback step, logged and counted, and the call goes on."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest
import pytest_asyncio
from aiohttp import web

from gateway.http.loopback import serve_on_loopback
from gateway.sim.carriers import make_call
from tests.conftest import base_config, running_gateway
from tests.e2e.test_twilio_call import metric_value, open_control
from tests.flows.test_menu_calls import FAST, step_played

pytestmark = pytest.mark.asyncio(loop_scope="module")


class BusinessServer:
    """Answers by path: ``/ok`` the steps for the digits it got, the others fail."""

    def __init__(self):
        self.requests: list[dict] = []
        app = web.Application()
        app.router.add_post("/ok", self.ok)
        app.router.add_post("/slow", self.slow)
        app.router.add_post("/error", self.error)
        app.router.add_post("/garbage", self.garbage)
        app.router.add_post("/huge", self.huge)
        app.router.add_post("/forbidden", self.forbidden)
        self.app = app

    async def ok(self, request):
        body = await request.json()
        self.requests.append(body)
        return web.json_response({"steps": [{"say": f"You pressed {body['digits']}."},
                                            {"goto": "bye"}]})

    async def slow(self, request):
        self.requests.append(await request.json())
        await asyncio.sleep(3)
        return web.json_response({"steps": []})

    async def error(self, request):
        self.requests.append(await request.json())
        return web.json_response({"error": "boom"}, status=500)

    async def garbage(self, request):
        self.requests.append(await request.json())
        return web.Response(text="<html>not json", content_type="text/html")

    async def huge(self, request):
        self.requests.append(await request.json())
        return web.json_response({"steps": [{"say": "x" * 1000}] * 20})

    async def forbidden(self, request):
        self.requests.append(await request.json())
        return web.json_response({"steps": [{"webhook": {"url": "http://127.0.0.1:1/"}}]})


def flow(url: str) -> dict:
    return {
        "fallback": "sorry",
        "steps": {
            "ask": {"gather": {"prompt": "Two keys.", "max_digits": 2, "timeout_s": 10},
                    "next": "hook"},
            "hook": {"webhook": {"url": url, "timeout_s": 0.5, "max_response_bytes": 4096}},
            "sorry": {"say": "Sorry, please hold.", "next": "wait"},
            "wait": {"gather": {"timeout_s": 30}},
            "bye": {"hangup": {}},
        },
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup():
    business = BusinessServer()
    runner, port = await serve_on_loopback(business.app)
    data = base_config()
    data["providers"]["fast"] = FAST
    data["routes"] = {path: {"provider": "fast", "flow": flow(f"http://127.0.0.1:{port}/{path}")}
                      for path in ("ok", "slow", "error", "garbage", "huge", "forbidden")}
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        down = closed.getsockname()[1]
    data["routes"]["down"] = {"provider": "fast", "flow": flow(f"http://127.0.0.1:{down}/x")}
    data["default_route"] = "ok"
    try:
        async with running_gateway(data) as gateway:
            yield gateway, business
    finally:
        await runner.cleanup()


async def test_the_server_gets_the_digits_and_its_steps_play_next(setup):
    gw, business = setup
    async with make_call("twilio", gw.ws_url, route="ok") as sim:
        control = await open_control(gw, sim.call_id)
        await step_played(control, "ask")
        await sim.send_dtmf("42")
        await control.next_event("flow.step", step="hook")
        done = await step_played(control, "hook#0")
        assert done["interrupted"] is False
        await control.next_event("flow.step", step="bye")
        await sim.wait_ended(timeout=10)
        assert sim.result.closed_by_gateway
    sent = business.requests[-1]
    assert sent["digits"] == "42" and sent["call_id"] == sim.call_id
    assert sent["route"] == "ok" and sent["step"] == "hook" and sent["carrier"] == "twilio"
    metrics = await gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_flow_webhooks_total", outcome="ok") >= 1


@pytest.mark.parametrize("route,reason", [("slow", "timeout"), ("error", "status"),
                                          ("garbage", "invalid"), ("huge", "too_large"),
                                          ("forbidden", "invalid"), ("down", "unreachable")])
async def test_a_failed_webhook_goes_on_at_the_fallback_logged_and_counted(setup, caplog,
                                                                          route, reason):
    gw, business = setup
    before = metric_value(await gw.metrics_text(), "tts_gateway_flow_webhooks_total",
                          outcome=reason)
    with caplog.at_level(logging.WARNING, logger="gateway.flow.runtime"):
        async with make_call("twilio", gw.ws_url, route=route) as sim:
            control = await open_control(gw, sim.call_id)
            await step_played(control, "ask")
            await sim.send_dtmf("7#")
            failed = await control.next_event("flow.webhook_failed", step="hook")
            assert failed["reason"] == reason
            done = await step_played(control, "sorry")  # the call goes on
            assert done["interrupted"] is False
            await control.next_event("flow.step", step="wait")
            assert not sim.result.closed_by_gateway
    if route != "down":
        assert business.requests[-1]["digits"] == "7"
    after = metric_value(await gw.metrics_text(), "tts_gateway_flow_webhooks_total",
                         outcome=reason)
    assert after == before + 1
    assert any("flow webhook http://127.0.0.1" in r.getMessage() and reason in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


async def test_the_answer_format_in_the_example_is_what_the_parser_takes():
    from gateway.config import load_config
    from gateway.flow.webhook import answer_steps
    from tests.conftest import ROOT

    config = load_config(ROOT / "gateway.yaml", environ={})
    flows = {n: r.flow for n, r in config.routes.items() if r.flow is not None}
    hook = flows["menu"].steps["main"]
    body = json.dumps({"steps": [{"say": "Hi."}, {"menu": {"options": {"1": "hours"}}},
                                 {"goto": "bye"}]}).encode()
    steps = answer_steps(body, hook, flows, "menu", frozenset(config.providers))
    assert [s.verb for s in steps] == ["say", "menu", "goto"]
