"""What every carrier's start must pass before it becomes a call (gateway/carriers/base.py):
a format the gateway can produce, a call id usable as a key, and, where the carrier plays
ours in another format than it streams (Telnyx), the played one for what we send."""

import base64
import json
import struct

import pytest

from gateway.carriers.registry import new_protocol
from gateway.carriers.base import MAX_CALL_ID, PLAYABLE_RATES, call_key
from gateway.carriers.events import Audio, MediaFormat, Started, StartRefused
from gateway.carriers.telnyx.protocol import TelnyxProtocol
from gateway.carriers.twilio.protocol import TwilioProtocol

CALL_SID = "CA" + "0" * 32
STREAM_SID = "MZ" + "1" * 32


def twilio_start(call_sid=CALL_SID, stream_sid=STREAM_SID, rate=8000) -> str:
    return json.dumps({"event": "start", "streamSid": stream_sid, "start": {
        "callSid": call_sid, "streamSid": stream_sid,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": rate, "channels": 1}}})


def telnyx_start(encoding="PCMU", rate=8000, call_id="v3:abc") -> str:
    return json.dumps({"event": "start", "stream_id": "s-1", "start": {
        "call_control_id": call_id,
        "media_format": {"encoding": encoding, "sample_rate": rate, "channels": 1}}})


def refused(proto, text: str, kind: str) -> StartRefused:
    with pytest.raises(StartRefused) as info:
        proto.receive_text(text)
    assert info.value.kind == kind, str(info.value)
    assert not proto.started  # the state is as it was
    return info.value


# ---- formats: what the gateway can produce, one table ---------------------------------


def test_the_table_is_g711_at_8khz_and_l16_at_the_resampler_s_output_rates():
    assert PLAYABLE_RATES == {"mulaw": {8000}, "alaw": {8000}, "l16": {8000, 16000, 24000}}


@pytest.mark.parametrize("rate", [12345, 10**9, 22050, 16000, 1])
def test_twilio_mulaw_at_any_rate_but_8000_is_refused(rate):
    error = refused(TwilioProtocol(), twilio_start(rate=rate), "unsupported_format")
    assert f"mulaw at {rate} Hz" in str(error) and "mulaw only at 8000 Hz" in str(error)


@pytest.mark.parametrize("rate", [12345, 22050, 48000, 10**9])
def test_telnyx_l16_at_a_rate_the_resampler_does_not_produce_is_refused(rate):
    refused(TelnyxProtocol(), telnyx_start("L16", rate), "unsupported_format")


@pytest.mark.parametrize("encoding, rate", [("PCMU", 8000), ("PCMA", 8000), ("L16", 8000),
                                            ("L16", 16000), ("L16", 24000)])
def test_telnyx_formats_the_gateway_produces_are_taken(encoding, rate):
    proto = TelnyxProtocol()
    assert isinstance(proto.receive_text(telnyx_start(encoding, rate)), Started)
    assert proto.media_format.sample_rate == rate


def test_a_refused_start_leaves_the_stream_open_to_a_good_one():
    proto = TwilioProtocol()
    refused(proto, twilio_start(rate=22050), "unsupported_format")
    assert proto.receive_text(twilio_start()).call_id == CALL_SID


# ---- Telnyx: what it plays is what the answer document asked for ---------------------


def test_telnyx_l16_document_with_a_pcmu_call_sends_l16_at_16khz():
    proto = new_protocol("telnyx", {"codec": "L16", "sample_rate": 16000})
    event = proto.receive_text(telnyx_start("PCMU", 8000))
    assert event.media_format == proto.inbound_format == MediaFormat("mulaw", 8000)
    assert proto.media_format == MediaFormat("l16", 16000)  # what the call synthesizes
    # inbound μ-law is passed on as it is, outbound L16 goes big-endian, 640 bytes a frame
    assert proto.receive_text(json.dumps({"event": "media", "stream_id": "s-1", "media": {
        "track": "inbound", "payload": base64.b64encode(b"\x7f\x01\x02").decode()}})
    ) == Audio(b"\x7f\x01\x02")
    frame = struct.pack("<320h", *range(320))
    wire = base64.b64decode(json.loads(proto.media_message(frame))["media"]["payload"])
    assert wire == struct.pack(">320h", *range(320))


@pytest.mark.parametrize("options, played", [
    ({"codec": "PCMU", "sample_rate": 8000}, MediaFormat("mulaw", 8000)),
    ({"codec": "PCMA", "sample_rate": 16000}, MediaFormat("alaw", 8000)),  # G.711 is 8 kHz
    ({"codec": "L16", "sample_rate": 8000}, MediaFormat("l16", 8000)),
])
def test_telnyx_plays_the_configured_codec_whatever_the_start_announces(options, played):
    for encoding, rate in (("PCMU", 8000), ("PCMA", 8000), ("L16", 16000)):
        proto = new_protocol("telnyx", options)
        proto.receive_text(telnyx_start(encoding, rate))
        assert proto.media_format == played


def test_other_carriers_play_what_their_start_announces():
    proto = new_protocol("twilio", {})
    proto.receive_text(twilio_start())
    assert proto.media_format == proto.inbound_format == MediaFormat("mulaw", 8000)


# ---- call ids: keys in /v1/calls/{id}, logs and events -------------------------------


TELNYX_ID = "v3:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ"
UUID = "40325ec2-5efd-4bd3-805f-53576e581d13"


@pytest.mark.parametrize("raw, key", [
    (CALL_SID, CALL_SID),          # the carriers' own ids are kept as they are
    (TELNYX_ID, TELNYX_ID),
    (UUID, UUID),
    ("1712345678.42", "1712345678.42"),
    ("x" * MAX_CALL_ID, "x" * MAX_CALL_ID),
    ("WebSocket/tts-gateway/0x7f2a4c001234", "WebSocket-tts-gateway-0x7f2a4c001234"),
    ("a b/c?d#e%f", "a-b-c-d-e-f"),
    ("///", None),                 # nothing left: refused
    ("x" * (MAX_CALL_ID + 1), None),
    ("CA1\nforged", None),
])
def test_call_key(raw, key):
    assert call_key(raw) == key


@pytest.mark.parametrize("raw", ["CA1\nINFO forged line", "CA1\r", "CA\x00", "x" * 200_000,
                                 "x" * (MAX_CALL_ID + 1)])
def test_a_call_id_that_cannot_be_a_carrier_s_is_refused(raw):
    error = refused(TwilioProtocol(), twilio_start(call_sid=raw), "bad_call_id")
    assert len(str(error)) < 200  # the id itself is not repeated


def test_a_call_id_with_a_slash_is_mapped_and_kept_in_the_details():
    proto = TwilioProtocol()
    event = proto.receive_text(twilio_start(call_sid="CA12/34"))
    assert event.call_id == proto.call_id == "CA12-34"
    assert event.details == {"carrier_call_id": "CA12/34"}


def test_a_huge_stream_id_is_refused():
    refused(TwilioProtocol(), twilio_start(stream_sid="M" * 300_000), "bad_call_id")
