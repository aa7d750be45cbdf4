"""The console's calls table, timeline, controls and latency plot in headless chromium,
against a real gateway with a call placed by the Twilio simulator; with
``TTS_GATEWAY_SCREENSHOTS=<dir>`` (``make screenshots``) it also saves the latency plot's
screenshot for the README there."""

from __future__ import annotations

import math

from gateway.carriers.twilio.sim import TwilioCallSim
from gateway.metrics import FINE_BUCKETS, LATENCY_BUCKETS
from tests.conftest import base_config, running_gateway
from tests.console.helpers import screenshot, wait_listed

GREETING = "Hello from the console test. This call shows up in the table."
LONG_TEXT = ("This is a long announcement, long enough to be interrupted from the console. "
             "It goes on about the weather, the traffic and the opening hours of the shop. ")


def short_greeting_config() -> dict:
    data = base_config()
    data["routes"]["demo"]["greeting"] = GREETING
    return data


async def speech_id_of(page) -> str:
    """The speech id the console's speak answer reported."""
    status = page.locator("#call-controls .status")
    await status.filter(has_text="queued sp_").wait_for(timeout=10_000)
    return (await status.inner_text()).removeprefix("queued ").strip()


async def test_a_call_is_listed_followed_spoken_to_interrupted_and_hung_up(browser,
                                                                          console_errors):
    async with running_gateway(short_greeting_config()) as gw:
        async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/demo") as sim:
            await wait_listed(gw, sim.call_sid)
            page = console_errors.watch(await browser.new_page(
                viewport={"width": 1280, "height": 800}))
            await page.goto(gw.http_url + "/")
            row = page.locator(f'#calls-table tbody tr[data-call-id="{sim.call_sid}"]')
            await row.wait_for(timeout=10_000)
            assert await row.locator("td").nth(1).inner_text() == "twilio"
            assert await row.locator("td").nth(2).inner_text() == "demo"
            assert await row.get_attribute("data-state") in ("active", "connected", "started",
                                                             "speaking")
            await row.click()
            timeline = page.locator("#timeline")
            await timeline.locator('li[data-type="speech.done"]').first.wait_for(
                timeout=30_000)
            assert await timeline.locator('li[data-type="speech.first_audio"]').count() == 1
            # the table shows the greeting's first-audio latency once it is polled again
            await row.locator("td").nth(6).filter(has_text=" ms").wait_for(timeout=5_000)

            # speak from the console: typed and clicked
            frames_before = (await wait_listed(gw, sim.call_sid))["frames_sent"]
            await page.fill("#speak-text", "The console speaks now.")
            await page.fill("#speak-provider", "local")
            await page.click("#speak-button")
            spoken = await speech_id_of(page)
            for kind in ("speech.started", "speech.done"):
                await timeline.locator(f'li[data-type="{kind}"]',
                                       has_text=spoken).wait_for(timeout=30_000)
            summary = await wait_listed(gw, sim.call_sid)
            print(f"frames sent for the console's speech: {summary['frames_sent'] - frames_before}")
            assert summary["frames_sent"] > frames_before + 25  # over half a second of speech

            # the latency plot shows the provider's first audio as the endpoint gives it
            _, stats = await gw.get_json("/v1/stats/latency")
            local = stats["first_audio"]["local"]
            legend = page.locator('#latency-plot [data-series="first_audio:local"]')
            await legend.filter(has_text=f"({local['count']})").wait_for(timeout=10_000)
            mean = float(await legend.get_attribute("data-mean-ms"))
            assert math.isclose(mean, local["sum_ms"] / local["count"], abs_tol=0.1)
            assert "ms" in await legend.text_content()
            assert await page.locator('#latency-plot [data-series="gateway_added:twilio"]'
                                      ).count() == 1
            print(f"first audio (local): {local}")

            # interrupt a long utterance from the console
            await page.fill("#speak-text", LONG_TEXT)
            await page.fill("#speak-provider", "")
            await page.click("#speak-button")
            long_id = await speech_id_of(page)
            await timeline.locator('li[data-type="speech.first_audio"]',
                                   has_text=long_id).wait_for(timeout=30_000)
            await screenshot(page.locator("#latency-plot"), "console-latency.png")
            await page.click("#interrupt-button")
            done = timeline.locator('li[data-type="speech.done"]', has_text=long_id)
            await done.wait_for(timeout=10_000)
            assert "interrupted=true" in await done.inner_text()
            assert "cause=api" in await done.inner_text()

            # hang up: the gateway ends the stream, the row goes away
            await page.click("#hangup-button")
            await timeline.locator('li[data-type="call.ended"]').wait_for(timeout=20_000)
            await row.wait_for(state="detached", timeout=10_000)
        assert sim.result.closed_by_gateway
        assert console_errors == []


async def test_the_endpoints_shapes_and_bounds():
    async with running_gateway(short_greeting_config()) as gw:
        status, routes = await gw.get_json("/v1/routes")
        assert status == 200
        assert routes["default_route"] == "demo"
        demo = next(r for r in routes["routes"] if r["name"] == "demo")
        assert demo == {"name": "demo", "provider": "local", "voice": None, "fallback": [],
                        "flow": False, "bot": False, "barge_in": "off", "greeting": True,
                        "token": False}
        assert next(r for r in routes["routes"] if r["name"] == "menu")["flow"] is True
        assert {"name": "twilio", "transport": "websocket"} in routes["carriers"]
        status, empty = await gw.get_json("/v1/stats/latency")
        assert status == 200 and empty["first_frame"] == {} and empty["gateway_added"] == {}
        async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/demo") as sim:
            await wait_listed(gw, sim.call_sid)
            await sim.wait_for_mark(timeout=30)
            summary = (await gw.get_json(f"/v1/calls/{sim.call_sid}"))[1]
            assert summary["first_audio_ms"] > 0 and summary["duration_s"] >= 0
        status, stats = await gw.get_json("/v1/stats/latency")
        assert set(stats) == {"at", "first_audio", "first_frame", "gateway_added"}
        assert set(stats["first_audio"]) <= {"local"}  # providers of the configuration only
        assert set(stats["first_frame"]) == set(stats["gateway_added"]) == {"twilio"}
        for family, buckets in (("first_audio", LATENCY_BUCKETS),
                                ("first_frame", LATENCY_BUCKETS),
                                ("gateway_added", FINE_BUCKETS)):
            for series in stats[family].values():
                assert series["le_ms"] == [round(b * 1000, 3) for b in buckets] + [None]
                cumulative = series["cumulative"]
                assert cumulative == sorted(cumulative) and cumulative[-1] == series["count"]
                assert series["count"] >= 1 and series["sum_ms"] > 0
                assert 0 < series["p50_ms"] <= series["p95_ms"] <= buckets[-1] * 1000
        print("latency after one call:", {k: stats[k] for k in ("first_audio", "first_frame")})
