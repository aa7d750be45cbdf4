"""Who may use the control API from a browser: the token as a header or as the control
socket's subprotocol, and no request from another site's page (CSRF, cross-site WebSocket
hijacking, DNS rebinding), whatever the token. The console asks for the token on a 401,
keeps it for the tab and works with it."""

from __future__ import annotations

import aiohttp
import pytest

from gateway.carriers.twilio.sim import TwilioCallSim
from gateway.http.control_access import bearer_protocol
from tests.conftest import base_config, running_gateway
from tests.console.helpers import TOKEN, bearer, token_config, wait_listed
from tests.e2e.test_twilio_call import metric_value

EVIL = "http://evil.example"


async def test_a_foreign_origin_is_refused_on_http_and_websocket_and_counted():
    async with running_gateway(base_config()) as gw:
        own = gw.http_url
        async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/demo") as sim:
            await wait_listed(gw, sim.call_sid)
            control = f"/v1/calls/{sim.call_sid}/control"
            # a page on another site posting text/plain (no preflight) or reading the calls
            for method, path in (("POST", f"/v1/calls/{sim.call_sid}/speak"),
                                 ("POST", f"/v1/calls/{sim.call_sid}/hangup"),
                                 ("GET", "/v1/calls"), ("GET", "/v1/routes"),
                                 ("GET", "/v1/stats/latency")):
                async with gw.session.request(method, own + path, data='{"text": "pwned"}',
                                              headers={"Origin": EVIL,
                                                       "Content-Type": "text/plain"}) as resp:
                    assert resp.status == 403, path
                    assert "Origin" in (await resp.json())["error"]["message"]
            for origin in (EVIL, "null", f"http://127.0.0.1:{gw.port + 1}"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await gw.session.ws_connect(gw.ws_url + control, headers={"Origin": origin})
                assert refused.value.status == 403, origin
            # the same origin and no origin at all (curl, bots) are served
            localhost = f"localhost:{gw.port}"
            for headers in ({"Origin": own}, {"Origin": f"http://{localhost}", "Host": localhost},
                            {}):
                status, body = await gw.get_json("/v1/calls", headers=headers)
                assert status == 200 and body["calls"][0]["id"] == sim.call_sid, headers
                ws = await gw.session.ws_connect(gw.ws_url + control, headers=headers)
                assert (await ws.receive_json())["type"] == "control.ready"
                await ws.close()
            assert not sim.result.closed_by_gateway  # the hang-up above was refused
        metrics = await gw.metrics_text()
        assert metric_value(metrics, "tts_gateway_control_errors_total",
                            kind="cross_origin") == 8


async def test_without_a_token_a_host_name_other_than_loopback_is_refused():
    """DNS rebinding: evil.example resolves to 127.0.0.1, its page is then same-origin."""
    async with running_gateway(base_config()) as gw:
        for host in ("evil.example", f"evil.example:{gw.port}"):
            status, body = await gw.get_json("/v1/calls", headers={"Host": host})
            assert status == 403 and "loopback name" in body["error"]["message"], host
        for host in (f"localhost:{gw.port}", f"127.0.0.1:{gw.port}", f"[::1]:{gw.port}"):
            assert (await gw.get_json("/v1/calls", headers={"Host": host}))[0] == 200, host


async def test_the_token_is_taken_as_header_or_websocket_subprotocol_and_echoed():
    data, environ = token_config()
    async with running_gateway(data, environ) as gw:
        assert (await gw.get_json("/v1/calls"))[0] == 401
        assert (await gw.get_json("/v1/routes", headers=bearer("wrong")))[0] == 401
        status, body = await gw.get_json("/v1/routes", headers=bearer())
        assert status == 200 and body["routes"][0]["name"] == "demo"
        async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/demo") as sim:
            await wait_listed(gw, sim.call_sid, headers=bearer())
            url = f"{gw.ws_url}/v1/calls/{sim.call_sid}/control"
            for protocols in ((), (bearer_protocol("wrong"),), ("tts-gateway.bearer.",)):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await gw.session.ws_connect(url, protocols=protocols)
                assert refused.value.status == 401
            protocol = bearer_protocol(TOKEN)
            assert "=" not in protocol and "/" not in protocol and "+" not in protocol
            ws = await gw.session.ws_connect(url, protocols=("other", protocol),
                                             headers={"Origin": gw.http_url})
            assert ws.protocol == protocol  # echoed: a browser fails the socket otherwise
            assert (await ws.receive_json())["type"] == "control.ready"
            await ws.close()


async def test_the_console_asks_for_the_token_keeps_it_for_the_tab_and_works_with_it(browser):
    data, environ = token_config()
    async with running_gateway(data, environ) as gw:
        async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/demo") as sim:
            await wait_listed(gw, sim.call_sid, headers=bearer())
            page = await browser.new_page()
            await page.goto(gw.http_url + "/")
            form = page.locator("#token-form")
            await form.wait_for(state="visible", timeout=10_000)
            assert "needs its token" in await page.locator("#token-error").inner_text()
            assert await page.locator("#calls-table tbody tr").count() == 0
            # a wrong token: refused, said so, no data
            await page.fill("#token", "wrong")
            await page.press("#token", "Enter")
            await page.locator("#token-error").filter(has_text="refused").wait_for(
                timeout=10_000)
            assert await form.is_visible()
            assert await page.locator("#calls-table tbody tr").count() == 0
            # the right one: the calls come, and the control socket takes it as subprotocol
            await page.fill("#token", TOKEN)
            await page.press("#token", "Enter")
            row = page.locator(f'#calls-table tbody tr[data-call-id="{sim.call_sid}"]')
            await row.wait_for(timeout=10_000)
            assert not await form.is_visible()
            await row.click()
            await page.locator('#timeline li[data-type="call.started"]').wait_for(
                timeout=10_000)
            assert await page.evaluate("sessionStorage.getItem('tts-gateway.control-token')"
                                       ) == TOKEN
            assert await page.evaluate("localStorage.length") == 0
            # another tab (a new context: its own session storage) is asked again
            other = await (await browser.new_context()).new_page()
            await other.goto(gw.http_url + "/")
            await other.locator("#token-form").wait_for(state="visible", timeout=10_000)
