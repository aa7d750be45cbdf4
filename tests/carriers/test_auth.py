"""The sans-I/O carrier checks, against the carriers' own algorithms."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from twilio.request_validator import RequestValidator

from gateway.carriers import auth
from gateway.carriers.plivo.auth import check_plivo_signature, plivo_signature, plivo_signed_url
from gateway.carriers.twilio.auth import check_twilio_signature, twilio_signature
from gateway.carriers.vonage.auth import JWT_MAX_AGE_S, vonage_jwt_problem

TOKEN = "twilio-auth-token-0123456789abcdef"
URL = "wss://gw.example.com/v1/media/twilio/demo"
VONAGE_SECRET = "vonage-signature-secret-0123456789abcdef"


# -- Twilio ------------------------------------------------------------------------------

def test_twilio_signature_is_the_official_librarys():
    official = RequestValidator(TOKEN)
    assert twilio_signature(TOKEN, URL) == official.compute_signature(URL, {})
    params = {"CallSid": "CA123", "From": "+15551234567", "To": "+15557654321", "Digits": "1"}
    https = "https://gw.example.com/v1/answer/twilio/demo"
    assert twilio_signature(TOKEN, https, list(params.items())) == \
        official.compute_signature(https, params)


def test_twilio_signature_sorts_repeated_parameters_like_twilio():
    class Multi(dict):  # what Twilio's validator accepts for repeated form fields
        def getall(self, name):
            return self[name]

    pairs = [("b", "2"), ("a", "z"), ("a", "y")]
    expected = RequestValidator(TOKEN).compute_signature(URL, Multi(a=["z", "y"], b=["2"]))
    assert twilio_signature(TOKEN, URL, pairs) == expected


def test_twilio_check_accepts_the_url_with_or_without_its_default_port():
    official = RequestValidator(TOKEN)
    with_port = official.compute_signature("wss://gw.example.com:443/v1/media/twilio/demo", {})
    assert check_twilio_signature(TOKEN, [URL], (), with_port)
    plain = official.compute_signature(URL, {})
    assert check_twilio_signature(TOKEN, ["wss://gw.example.com:443/v1/media/twilio/demo"],
                                  (), plain)


def test_twilio_check_refuses_https_wrong_token_and_missing():
    official = RequestValidator(TOKEN)
    https = official.compute_signature(URL.replace("wss://", "https://"), {})
    assert not check_twilio_signature(TOKEN, [URL], (), https)
    assert not check_twilio_signature(TOKEN, [URL], (),
                                      RequestValidator("other").compute_signature(URL, {}))
    assert not check_twilio_signature(TOKEN, [URL], (), None)
    assert not check_twilio_signature(TOKEN, [URL], (), "")
    assert not check_twilio_signature(TOKEN, [URL], (), "not base64 at all ✓")


@pytest.mark.parametrize("url, variants", [
    ("wss://h.example/p", ["wss://h.example/p", "wss://h.example:443/p"]),
    ("wss://h.example:443/p", ["wss://h.example:443/p", "wss://h.example/p"]),
    ("https://h.example/p?q=1", ["https://h.example/p?q=1", "https://h.example:443/p?q=1"]),
    ("ws://h.example/p", ["ws://h.example/p", "ws://h.example:80/p"]),
    ("wss://h.example:8443/p", ["wss://h.example:8443/p"]),
    ("wss://u:p@h.example/p", ["wss://u:p@h.example/p", "wss://u:p@h.example:443/p"]),
    ("wss://[::1]:443/p", ["wss://[::1]:443/p", "wss://[::1]/p"]),
])
def test_url_variants(url, variants):
    assert auth.url_variants(url) == variants


# -- where the public URL comes from ----------------------------------------------------

def test_origin_from_public_url_keeps_a_path_prefix():
    origin = auth.origin_from_public_url("https://gw.example.com/tts/")
    assert origin.url("/v1/media/twilio/demo", scheme="wss") == \
        "wss://gw.example.com/tts/v1/media/twilio/demo"
    assert origin.url("/v1/answer/twilio/demo?x=1") == \
        "https://gw.example.com/tts/v1/answer/twilio/demo?x=1"


def test_origin_from_forwarded_headers():
    x = auth.origin_from_headers({"X-Forwarded-Proto": "https, http",
                                  "X-Forwarded-Host": "pub.example.org, inner"},
                                 "http", "10.0.0.5:8080")
    assert (x.scheme, x.authority) == ("https", "pub.example.org")
    rfc = auth.origin_from_headers(
        {"Forwarded": 'for=1.2.3.4;proto=https;host="pub.example.org:8443", for=5.6.7.8'},
        "http", "10.0.0.5:8080")
    assert (rfc.scheme, rfc.authority) == ("https", "pub.example.org:8443")
    direct = auth.origin_from_headers({}, "http", "127.0.0.1:8080")
    assert (direct.scheme, direct.authority) == ("http", "127.0.0.1:8080")


# -- Plivo V3 ------------------------------------------------------------------------------
# Vectors computed with plivo-python 4.63 (plivo/utils/signature_v3.py: construct_get_url,
# construct_post_url, get_signature_v3), auth token "plivo-token", nonce "12345".

PLIVO_VECTORS = [
    ("GET", "wss://gw.example.com/v1/media/plivo/demo", [],
     "wss://gw.example.com/v1/media/plivo/demo",
     "GYIUuaOO9usG4K3esYkpVV5YFhvj/YdrbR03uNKGn00="),
    ("POST", "https://gw.example.com/v1/answer/plivo/demo",
     [("To", "+15550000"), ("CallUUID", "abc"), ("From", "+15551234")],
     "https://gw.example.com/v1/answer/plivo/demo?CallUUIDabcFrom+15551234To+15550000",
     "otKXKwnLsW2cA+KIg/fnAdd62galR9d9MMtWdcjJjRY="),
    ("POST", "https://gw.example.com/v1/answer/plivo/demo?x=1", [("CallUUID", "abc")],
     "https://gw.example.com/v1/answer/plivo/demo?x=1.CallUUIDabc",
     "cWpBSwaA60ORceJcAVdHDUW8xCZBIItb8Avt9uxVGzc="),
    ("GET", "https://gw.example.com/v1/answer/plivo/demo?b=2&a=1", [],
     "https://gw.example.com/v1/answer/plivo/demo?a=1&b=2",
     "SY0wlVebGGjoTFoe1AuIT4AG3qEBMcu+jRDkUxomo4k="),
]


@pytest.mark.parametrize("method, url, params, signed, signature", PLIVO_VECTORS)
def test_plivo_v3_matches_plivo_python(method, url, params, signed, signature):
    assert plivo_signed_url(method, url, params) == signed
    assert plivo_signature("plivo-token", signed, "12345") == signature
    assert check_plivo_signature("plivo-token", method, [url], params, "12345", signature)


def test_plivo_v3_accepts_any_of_several_signatures_and_refuses_the_rest():
    method, url, params, _, good = PLIVO_VECTORS[0]
    other = plivo_signature("rotated-out-token", url, "12345")
    assert check_plivo_signature("plivo-token", method, [url], params, "12345",
                                 f"{other}, {good}")
    assert not check_plivo_signature("plivo-token", method, [url], params, "12345", other)
    assert not check_plivo_signature("plivo-token", method, [url], params, "54321", good)
    assert not check_plivo_signature("plivo-token", method, [url], params, None, good)
    assert not check_plivo_signature("plivo-token", method, [url], params, "12345", None)
    https = url.replace("wss://", "https://")
    assert check_plivo_signature("plivo-token", method, [https, url], params, "12345", good)


# -- Vonage JWT ---------------------------------------------------------------------------

def _jwt(claims: dict, secret: str = VONAGE_SECRET, algorithm: str = "HS256") -> str:
    return "Bearer " + jwt.encode(claims, secret, algorithm=algorithm)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_vonage_jwt_good():
    now = int(time.time())
    claims = {"iat": now, "jti": "j1", "application_id": "app", "api_key": "k"}
    assert vonage_jwt_problem(VONAGE_SECRET, _jwt(claims)) is None
    assert vonage_jwt_problem(VONAGE_SECRET, _jwt({**claims, "exp": now + 60})) is None


@pytest.mark.parametrize("case", ["wrong secret", "expired", "missing iat", "too old", "future",
                                  "HS512", "alg none", "garbage", "missing", "basic"])
def test_vonage_jwt_refused(case):
    now = int(time.time())
    header = {
        "wrong secret": lambda: _jwt({"iat": now}, secret="another-secret-0123456789abcdefgh"),
        "expired": lambda: _jwt({"iat": now - 120, "exp": now - 60}),
        "missing iat": lambda: _jwt({"jti": "x"}),
        "too old": lambda: _jwt({"iat": now - JWT_MAX_AGE_S - 120}),
        "future": lambda: _jwt({"iat": now + 600}),
        "HS512": lambda: _jwt({"iat": now}, secret=VONAGE_SECRET * 2, algorithm="HS512"),
        "alg none": lambda: "Bearer " + _b64({"alg": "none", "typ": "JWT"}) + "."
                            + _b64({"iat": now}) + ".",
        "garbage": lambda: "Bearer not.a.jwt",
        "missing": lambda: None,
        "basic": lambda: "Basic dXNlcjpwYXNz",
    }[case]()
    problem = vonage_jwt_problem(VONAGE_SECRET, header)
    assert problem
    if case in ("HS512", "alg none"):
        assert problem == "the JWT is not signed with HS256"
    assert VONAGE_SECRET not in problem


def test_vonage_jwt_leeway():
    now = int(time.time())
    assert vonage_jwt_problem(VONAGE_SECRET, _jwt({"iat": now, "exp": now - 5})) is None
    assert vonage_jwt_problem(VONAGE_SECRET, _jwt({"iat": now + 5})) is None


# -- Basic, bearer, path segments --------------------------------------------------------

def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic():
    assert auth.check_basic("exo", "p:ss w0rd", _basic("exo", "p:ss w0rd"))
    assert not auth.check_basic("exo", "pw", _basic("exo", "nope"))
    assert not auth.check_basic("exo", "pw", _basic("someone", "pw"))
    assert not auth.check_basic("exo", "pw", None)
    assert not auth.check_basic("exo", "pw", "Basic %%%not-base64")
    assert not auth.check_basic("exo", "pw", "Basic ZXhv\u00e9OnB3")  # not ASCII
    assert not auth.check_basic("exo", "pw", "Basic " + base64.b64encode(b"exopw").decode())
    assert not auth.check_basic("exo", "pw", "Bearer " + base64.b64encode(b"exo:pw").decode())


def test_bearer_and_same_secret():
    assert auth.check_bearer("s3cret", "Bearer s3cret")
    assert auth.check_bearer("s3cret", "bearer  s3cret ")
    assert not auth.check_bearer("s3cret", "Bearer s3cre")
    assert not auth.check_bearer("s3cret", "Basic s3cret")
    assert not auth.check_bearer("s3cret", "Bearer")
    assert not auth.check_bearer("s3cret", None)
    assert auth.same_secret("é-token", "é-token") and not auth.same_secret("a", None)


def test_media_path_quotes_each_segment():
    assert auth.media_path("twilio", "demo") == "/v1/media/twilio/demo"
    assert auth.media_path("twilio", "demo", "a/b+c") == "/v1/media/twilio/demo/a%2Fb%2Bc"


def test_signatures_are_hmacs_not_plain_hashes():
    # guard against a refactor that drops the key: the token must change the result
    assert twilio_signature("a", URL) != twilio_signature("b", URL)
    mac = hmac.new(b"plivo-token", f"{URL}.n".encode(), hashlib.sha256).digest()
    assert plivo_signature("plivo-token", URL, "n") == base64.b64encode(mac).decode()
