"""GET / serves the console: the page loads in chromium with no console error, its modules
are served with the right types and policy, and nothing outside its folder is served."""

from __future__ import annotations

from tests.conftest import running_gateway, base_config


async def test_the_console_loads_in_chromium_with_no_console_error(browser, console_errors):
    async with running_gateway(base_config()) as gw:
        page = console_errors.watch(await browser.new_page())
        response = await page.goto(gw.http_url + "/")
        assert response is not None and response.status == 200
        await page.wait_for_load_state("networkidle")
        assert await page.title() == "tts-gateway console"
        assert await page.locator("#call-panel").inner_text() != ""
        assert console_errors == []


async def test_modules_have_their_types_and_nothing_else_is_served():
    async with running_gateway(base_config()) as gw:
        async with gw.session.get(gw.http_url + "/console/app.js") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/javascript"
            assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        for path in ("/console/..%2F__init__.py", "/console/__init__.py", "/console/nope.js",
                     "/console/%2e%2e%2fgateway.yaml"):
            async with gw.session.get(gw.http_url + path) as resp:
                assert resp.status == 404, path
