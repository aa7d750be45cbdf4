"""Answer documents: well-formed, escaped, pointing at exactly the media URL given."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import pytest

from gateway.carriers.answer import AnswerRequest
from gateway.carriers.registry import CARRIERS, answer_document
from gateway.carriers.twilio.answer import twiml

MEDIA = "wss://gw.example.com/v1/media/twilio/demo/tok%2Fen"
NASTY = 'de"mo<&>\''


def document(carrier: str, media_url: str, route: str, options: dict, *,
             bearer_token: str | None = None, call_uuid: str | None = None,
             signed: bool = False, username: str | None = None,
             password: str | None = None) -> tuple[str, bytes]:
    """The carrier's document for a verified request with these secrets and webhook fields."""
    secrets = {name: value for name, value in (("bearer_token", bearer_token),
                                               ("password", password)) if value}
    return answer_document(carrier, AnswerRequest(
        media_url, route, {"username": username, **options}, secrets=secrets,
        configured=frozenset(secrets) | ({"signature_secret"} if signed else set()),
        webhook={"uuid": call_uuid} if call_uuid else {}))


def _xml(body: bytes) -> ET.Element:
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(body)


def test_twiml_connects_the_stream_then_hangs_up():
    root = _xml(twiml(MEDIA, "demo"))
    assert root.tag == "Response"
    assert [child.tag for child in root] == ["Connect", "Hangup"]
    (stream,) = root.find("Connect")
    assert stream.tag == "Stream" and stream.attrib == {"url": MEDIA}
    (param,) = stream
    assert param.tag == "Parameter" and param.attrib == {"name": "route", "value": "demo"}


def test_twiml_escapes_what_it_is_given():
    url = MEDIA + '?x="1"&y=<2>'
    root = _xml(twiml(url, NASTY, bearer_token='b"&<'))
    stream = root.find("Connect/Stream")
    assert stream.get("url") == url
    assert stream.get("authBearerToken") == 'b"&<'
    assert stream.find("Parameter").get("value") == NASTY


def test_signalwire_cxml_carries_codec_and_bearer_only_when_given():
    content_type, body = document("signalwire", MEDIA, "demo",
                                  {"codec": "L16@16000h"}, bearer_token="bt")
    stream = _xml(body).find("Connect/Stream")
    assert content_type == "application/xml"
    assert stream.get("codec") == "L16@16000h" and stream.get("authBearerToken") == "bt"
    _, body = document("signalwire", MEDIA, "demo", {"codec": "PCMU"})
    assert "authBearerToken" not in _xml(body).find("Connect/Stream").attrib


def test_texml_is_bidirectional_rtp():
    _, body = document("telnyx", MEDIA, "demo",
                       {"codec": "PCMA", "sample_rate": 8000})
    root = _xml(body)
    assert [child.tag for child in root] == ["Connect"]
    stream = root.find("Connect/Stream")
    assert stream.attrib == {"url": MEDIA, "track": "inbound_track", "codec": "PCMA",
                             "bidirectionalMode": "rtp", "bidirectionalCodec": "PCMA",
                             "bidirectionalSamplingRate": "8000"}


@pytest.mark.parametrize("content_type, rate", [("audio/x-mulaw", 8000), ("audio/x-l16", 16000)])
def test_plivo_xml(content_type, rate):
    _, body = document("plivo", MEDIA, "demo",
                       {"content_type": content_type, "sample_rate": rate})
    (stream,) = _xml(body)
    assert stream.tag == "Stream" and stream.text == MEDIA
    assert stream.attrib == {"bidirectional": "true", "keepCallAlive": "true",
                             "audioTrack": "inbound", "contentType": f"{content_type};rate={rate}"}


def test_vonage_ncco():
    content_type, body = document("vonage", MEDIA, NASTY, {"sample_rate": 16000},
                                  call_uuid="63f61863-4a51", signed=True)
    assert content_type == "application/json"
    assert json.loads(body) == [{"action": "connect", "endpoint": [{
        "type": "websocket", "uri": MEDIA, "content-type": "audio/l16;rate=16000",
        "headers": {"route": NASTY, "call_uuid": "63f61863-4a51"},
        "authorization": {"type": "vonage"}}]}]
    _, body = document("vonage", MEDIA, "demo", {"sample_rate": 8000})
    (endpoint,) = json.loads(body)[0]["endpoint"]
    assert "authorization" not in endpoint and endpoint["headers"] == {"route": "demo"}
    assert endpoint["content-type"] == "audio/l16;rate=8000"


def test_exotel_url_and_credentials():
    _, body = document("exotel", MEDIA, "demo", {"sample_rate": 16000})
    assert json.loads(body) == {"url": MEDIA + "?sample-rate=16000"}
    _, body = document("exotel", MEDIA, "demo", {"sample_rate": 8000},
                       username="exo user", password="p@ss:w/rd")
    url = urlsplit(json.loads(body)["url"])
    assert url.scheme == "wss" and url.hostname == "gw.example.com"
    assert url.username == "exo%20user" and url.password == "p%40ss%3Aw%2Frd"
    assert url.path == "/v1/media/twilio/demo/tok%2Fen" and url.query == "sample-rate=8000"
    # credentials only as a pair
    _, body = document("exotel", MEDIA, "demo", {"sample_rate": 8000},
                       username="exo", password=None)
    assert "@" not in json.loads(body)["url"]


@pytest.mark.parametrize("carrier", [name for name, spec in CARRIERS.items()
                                     if spec.answer is None])
def test_dialplan_carriers_have_no_document(carrier):
    with pytest.raises(ValueError):
        document(carrier, MEDIA, "demo", {})
