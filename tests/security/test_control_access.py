"""The control API is closed by default (issue 12, finding 1).

* ``tts-gateway serve`` refuses an address other than loopback without a token, saying how
  to set one; ``check-config`` reports it for the file's own host; ``auth.control: open``
  starts with a warning;
* without a token the API answers only requests from this host that no proxy or tunnel
  passed on (through the real server: a forwarded request is refused 403); with one, every
  request needs it;
* a route's token cannot be read from anything the control API answers or emits.

Only loopback addresses are used: the refused address is 192.0.2.10 (TEST-NET-1, never this
machine's), so even a gateway that wrongly started could not listen on it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.http.loopback import serve_on_loopback
from gateway.carriers.twilio.sim import TwilioCallSim
from tests.conftest import start_gateway
from tests.e2e.test_twilio_call import metric_value, open_control
from tests.ops.test_drain import GatewayProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
FAKE = {"fake": {"type": "fake", "handshake_ms": 0, "first_audio_ms": 20,
                 "chars_per_second": 15}}


def fake_file(tmp_path: Path, **top) -> Path:
    data = {"server": {"host": "127.0.0.1", "port": 0}, "providers": FAKE,
            "routes": {"demo": {"provider": "fake"}}, **top}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TTS_TEST_")}
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env={**clean, **(env or {})})


@pytest.fixture
def fake_config(gateway_config):
    gateway_config["providers"] = FAKE
    gateway_config["routes"] = {"demo": {"provider": "fake"}}
    return gateway_config


# ---- at start ---------------------------------------------------------------------------


def test_serve_refuses_an_address_beyond_loopback_without_a_token(tmp_path):
    done = cli("serve", "--config", str(fake_file(tmp_path)), "--host", "192.0.2.10")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "would listen on 192.0.2.10, which is not loopback, without a token" in done.stderr
    assert "auth.control_token_env" in done.stderr and "auth.control: open" in done.stderr
    # a token given on the command line (the container image's way) must exist
    done = cli("serve", "--config", str(fake_file(tmp_path)), "--host", "192.0.2.10",
               "--control-token-env", "TTS_TEST_CONTROL_TOKEN")
    assert done.returncode == 2
    assert "environment variable TTS_TEST_CONTROL_TOKEN is not set" in done.stderr


def test_check_config_reports_the_files_own_host(tmp_path):
    public = {"host": "0.0.0.0", "port": 8080}
    done = cli("check-config", "--config", str(fake_file(tmp_path, server=public)))
    assert done.returncode == 2 and "would listen on 0.0.0.0" in done.stderr
    path = fake_file(tmp_path, server=public,
                     auth={"control_token_env": "TTS_TEST_CONTROL_TOKEN"})
    done = cli("check-config", "--config", str(path), env={"TTS_TEST_CONTROL_TOKEN": "s3cret"})
    assert done.returncode == 0, done.stderr
    done = cli("check-config", "--config", str(fake_file(tmp_path, server=public,
                                                         auth={"control": "open"})))
    assert done.returncode == 0 and "auth.control is open" in done.stderr
    assert cli("check-config", "--config", str(fake_file(tmp_path))).returncode == 0


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.5", False),
    ("192.0.2.10", False), ("fe80::1%eth0", False), ("gw.example.com", False),
    ("localhost.example.com", False),
])
def test_which_listen_addresses_are_loopback(host, loopback):
    from gateway.config import GatewayConfig
    from gateway.http.control_access import exposure_problem, is_loopback_host

    assert is_loopback_host(host) is loopback
    assert (exposure_problem(GatewayConfig(), host) is None) is loopback
    assert exposure_problem(GatewayConfig(control_token="t"), host) is None
    assert exposure_problem(GatewayConfig(control_auth="open"), host) is None


async def test_an_open_control_api_warns_at_start_and_answers_anyone(tmp_path):
    config = {"server": {"host": "127.0.0.1", "port": free_port()}, "providers": FAKE,
              "routes": {"demo": {"provider": "fake"}}, "auth": {"control": "open"}}
    gw = GatewayProcess(tmp_path, config)
    try:
        await gw.wait_ready()
        async with gw.session.get(f"{gw.http_url}/v1/calls",
                                  headers={"X-Forwarded-For": "203.0.113.9"}) as resp:
            assert resp.status == 200
        gw.sigterm()
        await gw.wait_exit(30)
    finally:
        await gw.close()
    (warning,) = [line for line in gw.log().splitlines() if "auth.control is open" in line]
    assert " WARNING " in warning and "anyone who reaches 127.0.0.1:" in warning


# ---- every request ----------------------------------------------------------------------


async def test_without_a_token_only_direct_local_requests_reach_the_control_api(fake_config):
    gw = await start_gateway(fake_config)
    try:
        assert (await gw.get_json("/v1/calls"))[0] == 200
        async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/demo") as sim:
            await open_control(gw, sim.call_sid)  # from this host, directly: served
            for header in ({"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"},
                           {"X-Real-IP": "203.0.113.9"}, {"X-Forwarded-Host": "gw.example"}):
                status, body = await gw.get_json("/v1/calls", headers=header)
                assert status == 403 and "auth.control_token_env" in body["error"]["message"]
                status, _ = await gw.post_json(f"/v1/calls/{sim.call_sid}/hangup", {},
                                               headers=header)
                assert status == 403
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await gw.session.ws_connect(f"{gw.ws_url}/v1/calls/{sim.call_sid}/control",
                                            headers={"X-Forwarded-For": "203.0.113.9"})
            assert refused.value.status == 403
            # what is not the control API is not affected
            async with gw.session.get(f"{gw.http_url}/healthz",
                                      headers={"X-Forwarded-For": "203.0.113.9"}) as resp:
                assert resp.status == 200
            assert (await gw.get_json(f"/v1/calls/{sim.call_sid}"))[0] == 200  # still there
            await sim.hangup()
        metrics = await gw.metrics_text()
    finally:
        await gw.session.close()
        await gw.runner.cleanup()
    assert metric_value(metrics, "tts_gateway_control_errors_total", kind="not_local") == 9


def test_a_peer_beyond_this_host_is_not_local():
    from gateway.http.control_access import is_local_request

    def request(peer: str, **headers) -> web.Request:
        transport = type("Transport", (), {"get_extra_info": lambda self, name, default=None:
                                           (peer, 4242) if name == "peername" else default})()
        return make_mocked_request("GET", "/v1/calls", headers=headers, transport=transport)

    assert is_local_request(request("127.0.0.1"))
    assert is_local_request(request("::1"))
    assert not is_local_request(request("198.51.100.7"))
    assert not is_local_request(request("10.1.2.3"))
    assert not is_local_request(request("127.0.0.1", **{"X-Forwarded-For": "198.51.100.7"}))


async def test_with_a_token_every_control_request_needs_it(fake_config):
    fake_config["auth"] = {"control_token_env": "CONTROL_TOKEN"}
    config_env = {"CONTROL_TOKEN": "s3cret-control"}
    from gateway.config import parse_config
    from gateway.http.app import create_app

    app = create_app(parse_config(fake_config, config_env))
    runner, port = await serve_on_loopback(app)
    url = f"http://127.0.0.1:{port}/v1/calls"
    try:
        async with aiohttp.ClientSession() as session:
            for headers, expected in (({}, 401), ({"Authorization": "Bearer wrong"}, 401),
                                      ({"Authorization": "s3cret-control"}, 401),
                                      ({"Authorization": "Bearer s3cret-control"}, 200),
                                      ({"Authorization": "Bearer s3cret-control",
                                        "X-Forwarded-For": "203.0.113.9"}, 200)):
                async with session.get(url, headers=headers) as resp:
                    assert resp.status == expected, headers
        # a header that is not even ASCII is a wrong token, not a crash
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/calls HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer \xff\xfe\x80"
                     b"\r\nConnection: close\r\n\r\n")
        head = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert head.startswith(b"HTTP/1.1 401"), head[:80]
    finally:
        await runner.cleanup()


# ---- route tokens -----------------------------------------------------------------------


async def test_route_tokens_cannot_be_read_from_the_control_api(fake_config):
    """Everything the control API answers or emits about a call on a route with a token:
    the calls, the call, speak and its errors, the control socket's messages and events,
    the events POSTed to the route's events_url, and the metrics."""
    token = "route-token-5Qw8zR2vLk"
    posted: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        posted.append(await request.text())
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/events", receive)
    receiver_runner, receiver_port = await serve_on_loopback(receiver)
    fake_config["routes"] = {"demo": {
        "provider": "fake", "token_env": "DEMO_ROUTE_TOKEN", "greeting": "Hello there.",
        "events_url": f"http://127.0.0.1:{receiver_port}/events"}}
    gw = await start_gateway(fake_config, environ={"DEMO_ROUTE_TOKEN": token})
    seen: list[str] = []

    async def get(path: str) -> None:
        async with gw.session.get(gw.http_url + path) as resp:
            seen.append(await resp.text())

    async def post(path: str, body) -> None:
        async with gw.session.post(gw.http_url + path, data=body) as resp:
            seen.append(await resp.text())

    try:
        async with TwilioCallSim(f"{gw.ws_url}/v1/media/twilio/demo/{token}") as sim:
            control = await open_control(gw, sim.call_sid)
            calls = f"/v1/calls/{sim.call_sid}"
            await control.ws.send_str(json.dumps({"type": "speak", "text": "Hi. There.",
                                                  "flush": True}))
            await control.ws.send_str("{not json")
            await control.ws.send_str(json.dumps({"type": "speak", "text": 1}))
            await control.next_event("speech.done", timeout=20)
            await get("/v1/calls")
            await get(calls)
            await get("/v1/calls/nobody")
            await get("/v1/calls/demo/control")
            await post(calls + "/speak", json.dumps({"text": "Bye.", "provider": "nope"}))
            await post(calls + "/speak", json.dumps({"text": "Bye.", "voice": None}))
            await post(calls + "/interrupt", b"")
            await post(calls + "/hangup", b"")
            await sim.wait_ended(timeout=20)
            async with asyncio.timeout(10):
                while True:  # the control socket gets everything up to call.ended
                    msg = await control.ws.receive()
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        break
                    control.events.append(json.loads(msg.data))
            seen += [json.dumps(event) for event in control.events]
        await get("/metrics")
        async with asyncio.timeout(10):
            while not any('"call.ended"' in body for body in posted):
                await asyncio.sleep(0.02)
    finally:
        await gw.session.close()
        await gw.runner.cleanup()
        await receiver_runner.cleanup()
    kinds = {json.loads(body)["type"] for body in posted}
    assert {"call.started", "speech.started", "speech.done", "call.ended"} <= kinds
    assert len(seen) > 10
    for text in seen + posted:  # (no request above carried the token)
        assert token not in text, text[:300]
