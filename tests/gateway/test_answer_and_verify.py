"""Carrier checks and answer webhooks through the real app on a loopback port.

A refused media connection must be an HTTP error before the upgrade (the carrier never
gets a WebSocket), counted in ``carrier_auth_failures_total`` and logged without secrets.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
import xml.etree.ElementTree as ET

import aiohttp
import jwt
import pytest
from twilio.request_validator import RequestValidator

from gateway.config import parse_config
from gateway.http.app import create_app
from gateway.http.keys import METRICS
from gateway.http.loopback import serve_on_loopback
from gateway.http.accesslog import RedactingAccessLogger

ENV = {
    "TWILIO_TOKEN": "twilio-token-5f1c9a",
    "SW_BEARER": "signalwire-bearer-77d0e3",
    "SW_SIGNING": "signalwire-signing-2b8e41",
    "PLIVO_TOKEN": "plivo-token",  # the token of the plivo-python vectors in test_auth.py
    "VONAGE_SECRET": "vonage-signature-secret-0a9c6e0123456789",
    "EXOTEL_PW": "exotel-pass-c3f2",
    "AST_PW": "asterisk-pass-91aa",
    "ROUTE_TOKEN": "route-token-e4d7b2",
}
PUBLIC = "https://gw.example.com"
TOK = ENV["ROUTE_TOKEN"]


def config_data(public_url: str | None = PUBLIC, **carriers) -> dict:
    return {
        "server": {"public_url": public_url} if public_url else {},
        "providers": {"fake": {"type": "fake"}},
        "routes": {"demo": {"provider": "fake"},
                   "secure": {"provider": "fake", "token_env": "ROUTE_TOKEN"}},
        "default_route": "demo",
        "carriers": carriers or {
            "twilio": {"auth_token_env": "TWILIO_TOKEN"},
            "signalwire": {"bearer_token_env": "SW_BEARER", "codec": "PCMU"},
            "telnyx": {},
            "plivo": {"auth_token_env": "PLIVO_TOKEN"},
            "vonage": {"signature_secret_env": "VONAGE_SECRET"},
            "exotel": {"username": "exo", "password_env": "EXOTEL_PW", "sample_rate": 16000},
            "asterisk": {"username": "ast", "password_env": "AST_PW"},
        },
    }


class Gateway:
    def __init__(self, app, runner, port):
        self.app, self.runner, self.port = app, runner, port
        self.base = f"127.0.0.1:{port}"
        self.session = aiohttp.ClientSession()

    async def handshake(self, path: str, headers: dict | None = None) -> int:
        """101 if the WebSocket opened, else the HTTP status of the refusal."""
        try:
            ws = await self.session.ws_connect(f"ws://{self.base}{path}", headers=headers or {})
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await ws.close()
        return 101

    async def request(self, method: str, path: str, **kwargs) -> tuple[int, str, bytes]:
        async with self.session.request(method, f"http://{self.base}{path}", **kwargs) as resp:
            return resp.status, resp.content_type, await resp.read()

    def failures(self, carrier: str, reason: str) -> float:
        return self.app[METRICS].registry.get_sample_value(
            "tts_gateway_carrier_auth_failures_total",
            {"carrier": carrier, "reason": reason}) or 0.0


@pytest.fixture
async def serve():
    running: list[Gateway] = []

    async def start(data: dict | None = None) -> Gateway:
        app = create_app(parse_config(data or config_data(), ENV))
        runner, port = await serve_on_loopback(app, access_log_class=RedactingAccessLogger)
        gw = Gateway(app, runner, port)
        running.append(gw)
        return gw

    yield start
    for gw in running:
        await gw.session.close()
        await gw.runner.cleanup()


@pytest.fixture
async def gw(serve):
    return await serve()


def twilio_sig(url: str, params: dict | None = None, token: str = ENV["TWILIO_TOKEN"]) -> str:
    return RequestValidator(token).compute_signature(url, params or {})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def vonage_jwt(secret: str = ENV["VONAGE_SECRET"], **claims) -> str:
    claims = {"iat": int(time.time()), "jti": "j", "application_id": "app", **claims}
    return "Bearer " + jwt.encode(claims, secret, algorithm="HS256")


def stream_url(body: bytes) -> str:
    return ET.fromstring(body).find("Connect/Stream").get("url")


# -- media connections -------------------------------------------------------------------

async def test_twilio_signature_from_the_official_library_opens_the_stream(gw):
    url = "wss://gw.example.com/v1/media/twilio/demo"
    path = "/v1/media/twilio/demo"
    assert await gw.handshake(path, {"X-Twilio-Signature": twilio_sig(url)}) == 101
    with_port = twilio_sig("wss://gw.example.com:443/v1/media/twilio/demo")
    assert await gw.handshake(path, {"X-Twilio-Signature": with_port}) == 101
    # route chosen later by a custom parameter: the signed URL has no route
    assert await gw.handshake("/v1/media/twilio", {
        "X-Twilio-Signature": twilio_sig("wss://gw.example.com/v1/media/twilio")}) == 101
    assert gw.failures("twilio", "signature") == 0


async def test_twilio_wrong_missing_and_https_signatures_are_refused_before_the_upgrade(gw):
    url = "wss://gw.example.com/v1/media/twilio/demo"
    path = "/v1/media/twilio/demo"
    assert await gw.handshake(path, {"X-Twilio-Signature": twilio_sig(url, token="nope")}) == 403
    assert await gw.handshake(path) == 403
    https = twilio_sig("https://gw.example.com/v1/media/twilio/demo")
    assert await gw.handshake(path, {"X-Twilio-Signature": https}) == 403
    assert gw.failures("twilio", "signature") == 3
    status, content_type, body = await gw.request("GET", path)
    assert status == 403 and content_type == "application/json"
    error = json.loads(body)["error"]
    assert error["reason"] == "signature" and "X-Twilio-Signature" in error["message"]


async def test_twilio_signature_behind_a_proxy_without_public_url(serve):
    gw = await serve(config_data(public_url=None))
    path = "/v1/media/twilio/demo"
    sig = twilio_sig("wss://pub.example.org/v1/media/twilio/demo")
    assert await gw.handshake(path, {"X-Twilio-Signature": sig,
                                     "X-Forwarded-Proto": "https",
                                     "X-Forwarded-Host": "pub.example.org"}) == 101
    assert await gw.handshake(path, {"X-Twilio-Signature": sig,
                                     "Forwarded": "for=1.2.3.4;proto=https;host=pub.example.org"
                                     }) == 101
    assert await gw.handshake(path, {"X-Twilio-Signature": sig}) == 403  # Host is 127.0.0.1
    own = twilio_sig(f"wss://{gw.base}/v1/media/twilio/demo")  # always wss, even over ws
    assert await gw.handshake(path, {"X-Twilio-Signature": own}) == 101


async def test_twilio_signature_under_a_public_url_with_a_path_prefix(serve):
    gw = await serve(config_data(public_url="https://gw.example.com/tts/"))
    sig = twilio_sig("wss://gw.example.com/tts/v1/media/twilio/demo")
    assert await gw.handshake("/v1/media/twilio/demo", {"X-Twilio-Signature": sig}) == 101


async def test_signalwire_bearer_token(gw):
    path = "/v1/media/signalwire/demo"
    assert await gw.handshake(path, {"Authorization": f"Bearer {ENV['SW_BEARER']}"}) == 101
    assert await gw.handshake(path, {"Authorization": "Bearer wrong"}) == 403
    assert await gw.handshake(path) == 403
    assert gw.failures("signalwire", "bearer") == 2


async def test_signalwire_signature_when_no_bearer_token_is_configured(serve):
    gw = await serve(config_data(signalwire={"auth_token_env": "SW_SIGNING"}))
    path = "/v1/media/signalwire/demo"
    good = twilio_sig("wss://gw.example.com/v1/media/signalwire/demo", token=ENV["SW_SIGNING"])
    assert await gw.handshake(path, {"X-SignalWire-Signature": good}) == 101
    assert await gw.handshake(path, {"X-Twilio-Signature": good}) == 101
    https = twilio_sig("https://gw.example.com/v1/media/signalwire/demo", token=ENV["SW_SIGNING"])
    assert await gw.handshake(path, {"X-SignalWire-Signature": https}) == 403
    assert await gw.handshake(path) == 403
    assert gw.failures("signalwire", "signature") == 2


PLIVO_WSS_SIG = "GYIUuaOO9usG4K3esYkpVV5YFhvj/YdrbR03uNKGn00="  # plivo-python, nonce 12345


async def test_plivo_v3_signature(gw):
    path = "/v1/media/plivo/demo"
    nonce = {"X-Plivo-Signature-V3-Nonce": "12345"}
    assert await gw.handshake(path, {**nonce, "X-Plivo-Signature-V3": PLIVO_WSS_SIG}) == 101
    mac = hmac.new(b"plivo-token", b"https://gw.example.com/v1/media/plivo/demo.12345",
                   hashlib.sha256).digest()
    https_sig = base64.b64encode(mac).decode()
    assert await gw.handshake(path, {**nonce, "X-Plivo-Signature-V3": https_sig}) == 101
    several = f"c29tZXRoaW5nIGVsc2U=,{PLIVO_WSS_SIG}"
    assert await gw.handshake(path, {**nonce, "X-Plivo-Signature-V3": several}) == 101
    assert await gw.handshake(path, {**nonce, "X-Plivo-Signature-V3": "c29tZXRoaW5n"}) == 403
    assert await gw.handshake(path, {"X-Plivo-Signature-V3-Nonce": "54321",
                                     "X-Plivo-Signature-V3": PLIVO_WSS_SIG}) == 403
    assert await gw.handshake(path, {"X-Plivo-Signature-V3": PLIVO_WSS_SIG}) == 403
    assert gw.failures("plivo", "signature") == 3


async def test_vonage_jwt(gw):
    path = "/v1/media/vonage/demo"
    assert await gw.handshake(path, {"Authorization": vonage_jwt()}) == 101
    wrong = vonage_jwt(secret="some-other-secret-0123456789abcdef")
    assert await gw.handshake(path, {"Authorization": wrong}) == 403
    now = int(time.time())
    expired = vonage_jwt(iat=now - 600, exp=now - 300)
    assert await gw.handshake(path, {"Authorization": expired}) == 403
    none = ".".join(base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
                    for part in ({"alg": "none", "typ": "JWT"}, {"iat": now})) + "."
    assert await gw.handshake(path, {"Authorization": f"Bearer {none}"}) == 403
    assert await gw.handshake(path) == 403
    assert gw.failures("vonage", "jwt") == 4


async def test_exotel_and_asterisk_basic_auth(gw):
    # the URL the Exotel answer document hands out carries ?sample-rate=
    path = "/v1/media/exotel/demo?sample-rate=16000"
    assert await gw.handshake(path, {"Authorization": basic("exo", ENV["EXOTEL_PW"])}) == 101
    assert await gw.handshake(path, {"Authorization": basic("exo", "guess")}) == 403
    assert await gw.handshake(path) == 403
    assert gw.failures("exotel", "basic") == 2
    path = "/v1/media/asterisk/demo"
    assert await gw.handshake(path, {"Authorization": basic("ast", ENV["AST_PW"])}) == 101
    assert await gw.handshake(path, {"Authorization": basic("exo", ENV["AST_PW"])}) == 403
    assert gw.failures("asterisk", "basic") == 1


async def test_route_token(gw):
    assert await gw.handshake("/v1/media/telnyx/demo") == 101  # nothing configured: no check
    assert await gw.handshake(f"/v1/media/telnyx/secure/{TOK}") == 101
    assert await gw.handshake("/v1/media/telnyx/secure") == 403
    assert await gw.handshake("/v1/media/telnyx/secure/not-the-token") == 403
    assert gw.failures("telnyx", "token") == 2
    assert await gw.handshake(f"/v1/media/telnyx/demo/{TOK}") == 404  # demo has no token
    # every check applies: Twilio signs the path with the token in it
    url = f"wss://gw.example.com/v1/media/twilio/secure/{TOK}"
    assert await gw.handshake(f"/v1/media/twilio/secure/{TOK}",
                              {"X-Twilio-Signature": twilio_sig(url)}) == 101
    bare = twilio_sig("wss://gw.example.com/v1/media/twilio/secure")
    assert await gw.handshake("/v1/media/twilio/secure", {"X-Twilio-Signature": bare}) == 403
    assert gw.failures("twilio", "token") == 1


async def test_a_default_route_with_a_token_needs_it_in_the_path(serve):
    data = config_data(telnyx={})
    data["default_route"] = "secure"
    gw = await serve(data)
    assert await gw.handshake("/v1/media/telnyx") == 403
    assert await gw.handshake(f"/v1/media/telnyx/secure/{TOK}") == 101


# -- answer webhooks ---------------------------------------------------------------------

async def test_twilio_answer_needs_its_signature(gw):
    url = "https://gw.example.com/v1/answer/twilio/secure"
    form = {"CallSid": "CA0001", "From": "+15551230000", "To": "+15559870000"}
    status, content_type, body = await gw.request(
        "POST", "/v1/answer/twilio/secure", data=form,
        headers={"X-Twilio-Signature": twilio_sig(url, form)})
    assert status == 200 and content_type == "application/xml"
    root = ET.fromstring(body)
    assert stream_url(body) == f"wss://gw.example.com/v1/media/twilio/secure/{TOK}"
    assert root.find("Connect/Stream/Parameter").attrib == {"name": "route", "value": "secure"}
    assert root[-1].tag == "Hangup"

    refused = [
        {"X-Twilio-Signature": twilio_sig(url, form, token="wrong")},
        {"X-Twilio-Signature": twilio_sig(url, {**form, "To": "+15550000000"})},  # tampered
        {"X-Twilio-Signature": twilio_sig(url.replace("https", "wss"), form)},
        {},
    ]
    for headers in refused:
        status, _, body = await gw.request("POST", "/v1/answer/twilio/secure", data=form,
                                           headers=headers)
        assert status == 403 and TOK.encode() not in body
    assert gw.failures("twilio", "signature") == 4


async def test_twilio_answer_by_get(gw):
    path = "/v1/answer/twilio/demo?CallSid=CA0002&From=%2B15551230000"
    sig = twilio_sig("https://gw.example.com" + path)
    status, _, body = await gw.request("GET", path, headers={"X-Twilio-Signature": sig})
    assert status == 200
    assert stream_url(body) == "wss://gw.example.com/v1/media/twilio/demo"


async def test_telnyx_answer_with_public_url_and_behind_a_proxy(gw, serve):
    status, _, body = await gw.request("POST", "/v1/answer/telnyx/demo")
    assert status == 200
    assert stream_url(body) == "wss://gw.example.com/v1/media/telnyx/demo"
    assert ET.fromstring(body).find("Connect/Stream").get("bidirectionalMode") == "rtp"
    proxied = await serve(config_data(public_url=None, telnyx={}))
    status, _, body = await proxied.request(
        "GET", "/v1/answer/telnyx/demo",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pub.example.org"})
    assert status == 200 and stream_url(body) == "wss://pub.example.org/v1/media/telnyx/demo"
    status, _, body = await proxied.request("GET", "/v1/answer/telnyx/demo")
    assert stream_url(body) == f"wss://{proxied.base}/v1/media/telnyx/demo"


async def test_an_unsigned_answer_reveals_a_route_token_only_to_who_has_it(gw):
    status, _, body = await gw.request("POST", "/v1/answer/telnyx/secure")
    assert status == 403 and json.loads(body)["error"]["reason"] == "token"
    status, _, body = await gw.request("POST", "/v1/answer/telnyx/secure/wrong-token")
    assert status == 403 and TOK.encode() not in body
    status, _, body = await gw.request("POST", f"/v1/answer/telnyx/secure/{TOK}")
    assert status == 200
    assert stream_url(body) == f"wss://gw.example.com/v1/media/telnyx/secure/{TOK}"
    status, _, _ = await gw.request("POST", f"/v1/answer/telnyx/demo/{TOK}")
    assert status == 404
    assert gw.failures("telnyx", "token") == 2


async def test_plivo_answer(gw):
    form = {"CallUUID": "abc", "From": "+15551234", "To": "+15550000"}
    good = "otKXKwnLsW2cA+KIg/fnAdd62galR9d9MMtWdcjJjRY="  # plivo-python, nonce 12345
    headers = {"X-Plivo-Signature-V3-Nonce": "12345", "X-Plivo-Signature-V3": good}
    status, _, body = await gw.request("POST", "/v1/answer/plivo/demo", data=form,
                                       headers=headers)
    assert status == 200
    (stream,) = ET.fromstring(body)
    assert stream.text == "wss://gw.example.com/v1/media/plivo/demo"
    assert stream.get("contentType") == "audio/x-mulaw;rate=8000"
    status, _, _ = await gw.request("POST", "/v1/answer/plivo/demo",
                                    data={**form, "From": "+1999"}, headers=headers)
    assert status == 403 and gw.failures("plivo", "signature") == 1


async def test_vonage_answer(gw):
    status, content_type, body = await gw.request(
        "GET", "/v1/answer/vonage/demo?uuid=63f61863-4a51&to=447700900000",
        headers={"Authorization": vonage_jwt()})
    assert status == 200 and content_type == "application/json"
    (endpoint,) = json.loads(body)[0]["endpoint"]
    assert endpoint["uri"] == "wss://gw.example.com/v1/media/vonage/demo"
    # the numbers ride on to the stream's websocket:connected (call.started's from/to)
    assert endpoint["headers"] == {"route": "demo", "call_uuid": "63f61863-4a51",
                                   "to": "447700900000"}
    assert endpoint["authorization"] == {"type": "vonage"}
    status, _, body = await gw.request("POST", "/v1/answer/vonage/secure",
                                       json={"uuid": "aaaa-bbbb", "to": "4477",
                                             "from": "4478\nforged", "tenant": "x"},
                                       headers={"Authorization": vonage_jwt()})
    (endpoint,) = json.loads(body)[0]["endpoint"]
    assert status == 200 and endpoint["headers"] == {  # an unprintable number is left out
        "route": "secure", "call_uuid": "aaaa-bbbb", "to": "4477"}
    assert endpoint["uri"] == f"wss://gw.example.com/v1/media/vonage/secure/{TOK}"
    status, _, _ = await gw.request("GET", "/v1/answer/vonage/demo?uuid=x")
    assert status == 403 and gw.failures("vonage", "jwt") == 1


async def test_exotel_answer_gives_credentials_only_to_an_authenticated_request(gw):
    status, _, body = await gw.request("GET", "/v1/answer/exotel/demo?CallSid=c1")
    assert status == 200
    assert json.loads(body) == {
        "url": "wss://gw.example.com/v1/media/exotel/demo?sample-rate=16000"}
    status, _, body = await gw.request(
        "GET", "/v1/answer/exotel/demo", headers={"Authorization": basic("exo", ENV["EXOTEL_PW"])})
    assert status == 200
    assert json.loads(body)["url"] == (f"wss://exo:{ENV['EXOTEL_PW']}@gw.example.com"
                                       "/v1/media/exotel/demo?sample-rate=16000")
    status, _, body = await gw.request("GET", "/v1/answer/exotel/demo",
                                       headers={"Authorization": basic("exo", "guess")})
    assert status == 403 and ENV["EXOTEL_PW"].encode() not in body


async def test_signalwire_answer_gives_the_bearer_token_only_when_verified(gw):
    status, _, body = await gw.request("POST", "/v1/answer/signalwire/demo")
    stream = ET.fromstring(body).find("Connect/Stream")
    assert status == 200 and "authBearerToken" not in stream.attrib
    assert stream.get("codec") == "PCMU"
    status, _, body = await gw.request("POST", f"/v1/answer/signalwire/secure/{TOK}")
    stream = ET.fromstring(body).find("Connect/Stream")
    assert stream.get("authBearerToken") == ENV["SW_BEARER"]
    assert stream.get("url") == f"wss://gw.example.com/v1/media/signalwire/secure/{TOK}"


async def test_signalwire_answer_signature(serve):
    gw = await serve(config_data(signalwire={"auth_token_env": "SW_SIGNING",
                                             "bearer_token_env": "SW_BEARER"}))
    form = {"CallSid": "c1"}
    sig = twilio_sig("https://gw.example.com/v1/answer/signalwire/demo", form,
                     token=ENV["SW_SIGNING"])
    status, _, body = await gw.request("POST", "/v1/answer/signalwire/demo", data=form,
                                       headers={"X-SignalWire-Signature": sig})
    assert status == 200
    assert ET.fromstring(body).find("Connect/Stream").get("authBearerToken") == ENV["SW_BEARER"]
    status, _, _ = await gw.request("POST", "/v1/answer/signalwire/demo", data=form)
    assert status == 403


async def test_answer_not_found(gw):
    status, _, body = await gw.request("POST", "/v1/answer/asterisk/demo")
    assert status == 404 and b"Pointing a phone number at the gateway" in body
    assert (await gw.request("POST", "/v1/answer/telnyx/nope"))[0] == 404
    assert (await gw.request("POST", "/v1/answer/bandwidth/demo"))[0] == 404
    assert (await gw.request("GET", "/v1/answer/audiosocket/demo"))[0] == 404


async def test_no_secret_reaches_the_logs(gw, serve, caplog):
    caplog.set_level(logging.DEBUG)
    sw = await serve(config_data(signalwire={"auth_token_env": "SW_SIGNING"}))
    almost = {k: v[:-1] + "x" for k, v in ENV.items()}  # near misses, as a guesser sends
    await gw.handshake("/v1/media/twilio/demo", {"X-Twilio-Signature": "bad"})
    await gw.handshake("/v1/media/signalwire/demo",
                       {"Authorization": f"Bearer {almost['SW_BEARER']}"})
    await gw.handshake("/v1/media/plivo/demo",
                       {"X-Plivo-Signature-V3": "x", "X-Plivo-Signature-V3-Nonce": "1"})
    await gw.handshake("/v1/media/vonage/demo",
                       {"Authorization": vonage_jwt(secret=almost["VONAGE_SECRET"])})
    await gw.handshake("/v1/media/exotel/demo",
                       {"Authorization": basic("exo", almost["EXOTEL_PW"])})
    await gw.handshake("/v1/media/asterisk/demo",
                       {"Authorization": basic("ast", almost["AST_PW"])})
    await gw.handshake(f"/v1/media/telnyx/secure/{almost['ROUTE_TOKEN']}")
    await gw.request("POST", "/v1/answer/twilio/secure", data={"a": "b"})
    await gw.request("GET", "/v1/answer/exotel/demo")
    await sw.handshake("/v1/media/signalwire/demo", {"X-SignalWire-Signature": "bad"})
    await gw.handshake(f"/v1/media/telnyx/secure/{TOK}")  # accepted: in the access log too
    await asyncio.sleep(0.05)  # the access log line is written when the handler returns
    logged = caplog.text
    assert "refused" in logged and "/v1/media/telnyx/secure/<token>" in logged
    for name, value in ENV.items():
        assert value not in logged, name
        assert almost[name] not in logged, name
