import base64
import json

import pytest

from gateway.carriers.events import (
    Audio,
    CarrierProtocolError,
    Clear,
    Connected,
    Dtmf,
    Mark,
    MarkPlayed,
    MediaFormat,
    PlayAudio,
    Started,
    Stopped,
)
from gateway.carriers.signalwire.protocol import SignalWireProtocol
from gateway.carriers.twilio.protocol import TwilioProtocol

# SignalWire's ids are UUIDs, not Twilio's MZ…/CA… SIDs
STREAM = "b4c2e0a6-1f3d-4e5a-8b9c-0d1e2f3a4b5c"
CALL = "7f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"

_DEFAULT = object()


def connected() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start(media_format=_DEFAULT, **start_overrides) -> str:
    body = {
        "accountSid": "f0e1d2c3-b4a5-9687-7869-5a4b3c2d1e0f",
        "streamSid": STREAM,
        "callSid": CALL,
        "tracks": ["inbound"],
        "customParameters": {"tenant": "acme"},
        "mediaFormat": ({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
                        if media_format is _DEFAULT else media_format),
    }
    body.update(start_overrides)
    body = {k: v for k, v in body.items() if v is not ...}
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": STREAM, "start": body})


def media(payload: bytes = b"\x7f" * 160, seq: int = 2) -> str:
    return json.dumps({
        "event": "media", "sequenceNumber": str(seq), "streamSid": STREAM,
        "media": {"track": "inbound", "chunk": str(seq - 1), "timestamp": str((seq - 2) * 20),
                  "payload": base64.b64encode(payload).decode()},
    })


def fmt(encoding: str, rate: int | None) -> dict:
    value = {"encoding": encoding, "channels": 1}
    if rate is not None:
        value["sampleRate"] = rate
    return value


def expect_error(proto, text: str, kind: str) -> CarrierProtocolError:
    with pytest.raises(CarrierProtocolError) as info:
        proto.receive_text(text)
    assert info.value.kind == kind, str(info.value)
    return info.value


def test_class_attributes():
    assert SignalWireProtocol.carrier == "signalwire"
    assert SignalWireProtocol.marks_cleared_on_clear is True
    assert SignalWireProtocol.frames_per_message == 1
    assert SignalWireProtocol.lead_s is None
    assert issubclass(SignalWireProtocol, TwilioProtocol)
    assert SignalWireProtocol().hangup_message() is None


def test_full_call_sequence_is_twilios():
    proto = SignalWireProtocol()
    assert proto.receive_text(connected()) == Connected()
    assert proto.receive_text(start()) == Started(
        call_id=CALL, stream_id=STREAM, media_format=MediaFormat("mulaw", 8000),
        custom_parameters={"tenant": "acme"},
    )
    assert proto.receive_text(media(b"\x01\x02")) == Audio(b"\x01\x02")
    dtmf = {"event": "dtmf", "streamSid": STREAM, "dtmf": {"track": "inbound_track", "digit": "9"}}
    assert proto.receive_text(json.dumps(dtmf)) == Dtmf("9")
    mark = {"event": "mark", "streamSid": STREAM, "mark": {"name": "utt-1"}}
    assert proto.receive_text(json.dumps(mark)) == MarkPlayed("utt-1")
    assert proto.receive_text(json.dumps({"event": "stop", "streamSid": STREAM})) == Stopped()
    assert proto.stopped
    expect_error(proto, media(), "out_of_order")


@pytest.mark.parametrize(
    ("media_format", "expected"),
    [
        (fmt("audio/x-mulaw", 8000), MediaFormat("mulaw", 8000)),
        (fmt("audio/x-mulaw", None), MediaFormat("mulaw", 8000)),
        (fmt("audio/x-alaw", 8000), MediaFormat("alaw", 8000)),
        (fmt("audio/x-l16", 8000), MediaFormat("l16", 8000)),
        (fmt("audio/x-l16", 16000), MediaFormat("l16", 16000)),
        (fmt("audio/x-l16", 24000), MediaFormat("l16", 24000)),
        (..., MediaFormat("mulaw", 8000)),
    ],
)
def test_codecs_signalwire_can_stream(media_format, expected):
    proto = SignalWireProtocol()
    event = proto.receive_text(start(media_format))
    assert event.media_format == expected
    assert proto.media_format == expected
    assert event.custom_parameters == {"tenant": "acme"}
    assert (proto.stream_id, proto.call_id) == (STREAM, CALL)


def test_l16_audio_passes_through_unchanged_both_ways():
    proto = SignalWireProtocol()
    proto.receive_text(start(fmt("audio/x-l16", 16000)))
    pcm = b"\x01\x00\xff\x7f" * 160
    assert proto.receive_text(media(pcm)) == Audio(pcm)
    message = json.loads(proto.media_message(pcm))
    assert message == {"event": "media", "streamSid": STREAM,
                       "media": {"payload": base64.b64encode(pcm).decode()}}


@pytest.mark.parametrize(
    "media_format",
    [
        "audio/x-l16",
        fmt("audio/x-l16", None),
        fmt("audio/x-l16", 44100),
        fmt("audio/x-l16", "16000"),
        fmt("audio/x-alaw", 16000),
        fmt("audio/x-mulaw", 16000),
        fmt("audio/x-opus", 48000),
        fmt("L16", 16000),
        {"encoding": ["audio/x-l16"], "sampleRate": 16000},
    ],
)
def test_unsupported_media_formats(media_format):
    proto = SignalWireProtocol()
    error = expect_error(proto, start(media_format), "missing_field")
    assert "mediaFormat" in str(error)
    assert not proto.started
    assert proto.media_format == MediaFormat("mulaw", 8000)


def test_twilio_itself_still_accepts_only_mulaw():
    for media_format in (fmt("audio/x-alaw", 8000), fmt("audio/x-l16", 16000)):
        expect_error(TwilioProtocol(), start(media_format), "missing_field")


def test_other_start_rules_are_twilios():
    proto = SignalWireProtocol()
    expect_error(proto, start(fmt("audio/x-l16", 16000), callSid=...), "missing_field")
    expect_error(proto, start(fmt("audio/x-l16", 16000), streamSid="other"), "missing_field")
    expect_error(proto, start(fmt("audio/x-l16", 16000), customParameters=["a"]), "missing_field")
    assert not proto.started
    proto.receive_text(start(fmt("audio/x-l16", 16000)))
    error = expect_error(proto, start(fmt("audio/x-alaw", 8000)), "out_of_order")
    assert "second start" in str(error)
    assert proto.media_format == MediaFormat("l16", 16000)


def test_started_event_parameters_are_a_copy():
    proto = SignalWireProtocol()
    proto.receive_text(start(fmt("audio/x-l16", 16000))).custom_parameters["x"] = "y"
    assert "x" not in proto.custom_parameters


def test_binary_frames_are_rejected_naming_signalwire():
    with pytest.raises(CarrierProtocolError) as info:
        SignalWireProtocol().receive_bytes(b"\x00" * 160)
    assert info.value.kind == "binary_frame"
    assert "SignalWire sends only JSON text" in str(info.value)


@pytest.mark.parametrize(
    ("text", "kind"),
    [("nope", "not_json"), ('{"event":"bogus"}', "unknown_event"),
     (json.dumps({"event": "media", "streamSid": STREAM, "media": {"payload": "@@"}}),
      "out_of_order")],
)
def test_inbound_errors_before_start(text, kind):
    expect_error(SignalWireProtocol(), text, kind)


def test_bad_payload_and_missing_field_after_start():
    proto = SignalWireProtocol()
    proto.receive_text(start())
    expect_error(proto, json.dumps({"event": "media", "streamSid": STREAM,
                                    "media": {"payload": "AA=A"}}), "bad_payload")
    expect_error(proto, json.dumps({"event": "mark", "streamSid": STREAM}), "missing_field")
    assert proto.receive_text(media(b"\x09")) == Audio(b"\x09")


def test_outbound_messages_are_twilios():
    proto = SignalWireProtocol()
    with pytest.raises(RuntimeError):
        proto.media_message(b"x")
    proto.receive_text(start(fmt("audio/x-alaw", 8000)))
    assert json.loads(proto.send(PlayAudio(b"\xd5" * 160))) == {
        "event": "media", "streamSid": STREAM,
        "media": {"payload": base64.b64encode(b"\xd5" * 160).decode()}}
    assert json.loads(proto.send(Mark("utt-2"))) == {"event": "mark", "streamSid": STREAM,
                                                     "mark": {"name": "utt-2"}}
    assert json.loads(proto.send(Clear())) == {"event": "clear", "streamSid": STREAM}
