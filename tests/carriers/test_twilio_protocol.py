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
from gateway.carriers.twilio.protocol import TwilioProtocol

STREAM = "MZ0123456789abcdef0123456789abcdef"
CALL = "CA0123456789abcdef0123456789abcdef"


def connected() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start(stream_sid: str = STREAM, **start_overrides) -> str:
    body = {
        "accountSid": "AC0",
        "streamSid": stream_sid,
        "callSid": CALL,
        "tracks": ["inbound"],
        "customParameters": {"tenant": "acme", "route": "ivr"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    body.update(start_overrides)
    body = {k: v for k, v in body.items() if v is not ...}
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
                       "start": body})


def media(payload: bytes = b"\x7f" * 160, track: str = "inbound", seq: int = 2) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": STREAM,
            "media": {
                "track": track,
                "chunk": str(seq - 1),
                "timestamp": str((seq - 2) * 20),
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


def started_protocol(stream_sid: str = STREAM) -> TwilioProtocol:
    proto = TwilioProtocol()
    assert proto.receive_text(connected()) == Connected()
    assert isinstance(proto.receive_text(start(stream_sid)), Started)
    return proto


def expect_error(proto: TwilioProtocol, text: str, kind: str) -> CarrierProtocolError:
    with pytest.raises(CarrierProtocolError) as info:
        proto.receive_text(text)
    assert info.value.kind == kind, str(info.value)
    return info.value


# ---- inbound transitions ---------------------------------------------------------


def test_class_attributes():
    assert TwilioProtocol.carrier == "twilio"
    assert TwilioProtocol.marks_cleared_on_clear is True


def test_full_call_sequence():
    proto = TwilioProtocol()
    assert not proto.started
    assert proto.receive_text(connected()) == Connected()

    event = proto.receive_text(start())
    assert event == Started(
        call_id=CALL,
        stream_id=STREAM,
        media_format=MediaFormat("mulaw", 8000),
        custom_parameters={"tenant": "acme", "route": "ivr"},
    )
    assert proto.started
    assert proto.stream_id == STREAM
    assert proto.call_id == CALL
    assert proto.media_format == MediaFormat("mulaw", 8000)
    assert proto.custom_parameters == {"tenant": "acme", "route": "ivr"}

    assert proto.receive_text(media(b"\x01\x02\x03")) == Audio(b"\x01\x02\x03")
    dtmf = {"event": "dtmf", "sequenceNumber": "3", "streamSid": STREAM,
            "dtmf": {"track": "inbound_track", "digit": "#"}}
    assert proto.receive_text(json.dumps(dtmf)) == Dtmf("#")
    mark = {"event": "mark", "sequenceNumber": "4", "streamSid": STREAM, "mark": {"name": "utt-1"}}
    assert proto.receive_text(json.dumps(mark)) == MarkPlayed("utt-1")
    stop = {"event": "stop", "sequenceNumber": "5", "streamSid": STREAM,
            "stop": {"accountSid": "AC0", "callSid": CALL}}
    assert proto.receive_text(json.dumps(stop)) == Stopped()
    assert proto.stopped


def test_start_without_connected_is_accepted():
    proto = TwilioProtocol()
    assert isinstance(proto.receive_text(start()), Started)


def test_start_without_custom_parameters_or_media_format():
    proto = TwilioProtocol()
    event = proto.receive_text(start(customParameters=..., mediaFormat=...))
    assert event.custom_parameters == {}
    assert event.media_format == MediaFormat("mulaw", 8000)


def test_stream_sid_only_inside_start():
    proto = TwilioProtocol()
    text = json.dumps({"event": "start", "start": {"callSid": CALL, "streamSid": STREAM}})
    assert proto.receive_text(text).stream_id == STREAM


def test_outbound_track_media_is_ignored():
    proto = started_protocol()
    assert proto.receive_text(media(track="outbound")) is None


def test_media_without_track_is_inbound():
    proto = started_protocol()
    text = json.dumps({"event": "media", "streamSid": STREAM, "media": {"payload": "AAE="}})
    assert proto.receive_text(text) == Audio(b"\x00\x01")


def test_stop_before_start_is_accepted():
    proto = TwilioProtocol()
    assert proto.receive_text('{"event":"stop"}') == Stopped()


def test_started_event_parameters_are_a_copy():
    proto = TwilioProtocol()
    event = proto.receive_text(start())
    event.custom_parameters["x"] = "y"
    assert "x" not in proto.custom_parameters


# ---- inbound errors --------------------------------------------------------------


@pytest.mark.parametrize("text", ["not json", "{", "", "[" * 100_000])
def test_not_json(text):
    expect_error(TwilioProtocol(), text, "not_json")


@pytest.mark.parametrize(
    "text",
    ['[]', '"media"', "42", "null", '{"streamSid":"MZ"}', '{"event":"bogus"}', '{"event":7}',
     '{"event":"clear","streamSid":"MZ"}'],
)
def test_unknown_event(text):
    error = expect_error(TwilioProtocol(), text, "unknown_event")
    assert "event" in str(error)


@pytest.mark.parametrize("event", ["media", "mark", "dtmf"])
def test_before_start_is_out_of_order(event):
    proto = TwilioProtocol()
    proto.receive_text(connected())
    text = {
        "media": media(),
        "mark": json.dumps({"event": "mark", "streamSid": STREAM, "mark": {"name": "m"}}),
        "dtmf": json.dumps({"event": "dtmf", "streamSid": STREAM, "dtmf": {"digit": "1"}}),
    }[event]
    error = expect_error(proto, text, "out_of_order")
    assert f"{event} before start" in str(error)
    assert "connected, then start" in str(error)


def test_second_start_is_out_of_order():
    proto = started_protocol()
    error = expect_error(proto, start(), "out_of_order")
    assert "second start" in str(error)
    assert proto.stream_id == STREAM


def test_connected_twice_or_after_start_is_out_of_order():
    proto = TwilioProtocol()
    proto.receive_text(connected())
    expect_error(proto, connected(), "out_of_order")
    proto = TwilioProtocol()
    proto.receive_text(start())
    expect_error(proto, connected(), "out_of_order")


def test_anything_after_stop_is_out_of_order():
    proto = started_protocol()
    proto.receive_text('{"event":"stop"}')
    assert "after stop" in str(expect_error(proto, media(), "out_of_order"))
    expect_error(proto, '{"event":"stop"}', "out_of_order")


@pytest.mark.parametrize(
    "overrides",
    [
        {"callSid": ...},
        {"callSid": ""},
        {"callSid": 12},
        {"customParameters": ["a"]},
        {"customParameters": {"n": 1}},
        {"mediaFormat": "mulaw"},
        {"mediaFormat": {"encoding": "audio/x-alaw", "sampleRate": 8000}},
        {"mediaFormat": {"encoding": ["audio/x-mulaw"], "sampleRate": 8000}},
        {"mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": "8000"}},
        {"streamSid": "MZother"},
    ],
)
def test_start_with_bad_fields(overrides):
    proto = TwilioProtocol()
    text = start(**overrides)
    expect_error(proto, text, "missing_field")
    assert not proto.started


def test_start_without_start_object_or_stream_sid():
    expect_error(TwilioProtocol(), '{"event":"start","streamSid":"MZ1"}', "missing_field")
    expect_error(TwilioProtocol(), '{"event":"start","start":{"callSid":"CA1"}}', "missing_field")


@pytest.mark.parametrize(
    "message",
    [
        {"event": "media", "streamSid": STREAM},
        {"event": "media", "streamSid": STREAM, "media": "AAAA"},
        {"event": "media", "streamSid": STREAM, "media": {"track": "inbound"}},
        {"event": "media", "streamSid": STREAM, "media": {"payload": 5}},
        {"event": "media", "streamSid": STREAM, "media": {"track": "both", "payload": "AA=="}},
        {"event": "media", "streamSid": "MZwrong", "media": {"payload": "AA=="}},
        {"event": "mark", "streamSid": STREAM},
        {"event": "mark", "streamSid": STREAM, "mark": {}},
        {"event": "mark", "streamSid": STREAM, "mark": {"name": 3}},
        {"event": "dtmf", "streamSid": STREAM, "dtmf": {"track": "inbound_track"}},
        {"event": "dtmf", "streamSid": STREAM},
    ],
)
def test_missing_or_invalid_fields(message):
    expect_error(started_protocol(), json.dumps(message), "missing_field")


@pytest.mark.parametrize("payload", ["not base64!", "AAA", "AA=A", "AAAA\n"])
def test_bad_base64_payload(payload):
    text = json.dumps({"event": "media", "streamSid": STREAM, "media": {"payload": payload}})
    expect_error(started_protocol(), text, "bad_payload")


def test_binary_frames_are_rejected():
    with pytest.raises(CarrierProtocolError) as info:
        started_protocol().receive_bytes(b"\x00" * 160)
    assert info.value.kind == "binary_frame"
    assert "only JSON text" in str(info.value)


def test_rejected_frame_leaves_state_usable():
    proto = started_protocol()
    expect_error(proto, "garbage", "not_json")
    assert proto.receive_text(media(b"\x05")) == Audio(b"\x05")


# ---- outbound --------------------------------------------------------------------


@pytest.mark.parametrize(
    "build", [lambda p: p.media_message(b"x"), lambda p: p.mark_message("m"),
              lambda p: p.clear_message(), lambda p: p.send(Clear())],
)
def test_sending_before_start_raises(build):
    proto = TwilioProtocol()
    proto.receive_text(connected())
    with pytest.raises(RuntimeError, match="before Twilio's start"):
        build(proto)


def test_media_message_shape():
    proto = started_protocol()
    payload = bytes(range(160))
    text = proto.media_message(payload)
    message = json.loads(text)
    assert message.keys() == {"event", "streamSid", "media"}
    assert message["event"] == "media"
    assert message["streamSid"] == STREAM
    assert message["media"].keys() == {"payload"}
    assert len(message["media"]["payload"]) == 216
    assert base64.b64decode(message["media"]["payload"], validate=True) == payload
    assert proto.send(PlayAudio(payload)) == text


def test_mark_and_clear_message_shapes():
    proto = started_protocol()
    mark = json.loads(proto.mark_message("utt-17"))
    assert mark == {"event": "mark", "streamSid": STREAM, "mark": {"name": "utt-17"}}
    assert proto.send(Mark("utt-17")) == proto.mark_message("utt-17")
    clear = json.loads(proto.clear_message())
    assert clear == {"event": "clear", "streamSid": STREAM}
    assert proto.send(Clear()) == proto.clear_message()


def test_escaping_in_stream_id_and_mark_name():
    odd_sid = 'MZ"quoted"\\back\nslash\u00e9'
    proto = TwilioProtocol()
    proto.receive_text(start(odd_sid))
    name = 'say "hi"\\\n\t\u2603\x00</script>'
    for text in (proto.mark_message(name), proto.media_message(b"\xff"), proto.clear_message()):
        assert json.loads(text)["streamSid"] == odd_sid
    assert json.loads(proto.mark_message(name))["mark"] == {"name": name}


def test_empty_payload_and_large_payload():
    proto = started_protocol()
    assert json.loads(proto.media_message(b""))["media"]["payload"] == ""
    big = bytes(8000 * 30)
    assert base64.b64decode(json.loads(proto.media_message(big))["media"]["payload"]) == big


def test_outbound_round_trips_through_the_fake_twilio():
    from tests.sim.test_twilio_model import TwilioPlayoutModel  # answers with mark names

    proto = started_protocol()
    model = TwilioPlayoutModel(STREAM, now=0.0)
    assert model.receive_text(proto.media_message(b"\x11" * 160).decode(), 0.0) == []
    assert model.receive_text(proto.mark_message("a\"b").decode(), 0.0) == []
    assert model.receive_text(proto.clear_message().decode(), 0.01) == ['a"b']
    assert model.violations == []


def test_mark_name_must_be_a_string():
    with pytest.raises(TypeError):
        started_protocol().mark_message(5)


def test_send_rejects_unknown_commands():
    with pytest.raises(TypeError):
        started_protocol().send(object())


def test_fast_media_path_agrees_with_the_full_parser():
    """Well-formed media skips json.loads; anything unusual still meets the full parser."""
    import json as _json

    proto = started_protocol()
    payload = bytes(range(160))
    b64 = base64.b64encode(payload).decode()
    typical = ('{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2",'
               f'"timestamp":"5","payload":"{b64}"}},"streamSid":"{STREAM}"}}')
    assert proto._fast_inbound_media(typical) == Audio(payload)
    assert proto.receive_text(typical) == Audio(payload)
    # reordered and spaced JSON is still valid Twilio: the full parser takes it
    spaced = _json.dumps({"event": "media", "streamSid": STREAM,
                          "media": {"payload": b64, "track": "inbound"}}, indent=1)
    assert proto._fast_inbound_media(spaced) is None
    assert proto.receive_text(spaced) == Audio(payload)
    for broken, kind in ((typical.replace(b64, "@@@"), "bad_payload"),
                         (typical.replace(STREAM, "MZother"), "missing_field")):
        assert proto._fast_inbound_media(broken) is None
        with pytest.raises(CarrierProtocolError) as info:
            proto.receive_text(broken)
        assert info.value.kind == kind
    outbound = typical.replace('"track":"inbound"', '"track":"outbound"')
    assert proto._fast_inbound_media(outbound) is None and proto.receive_text(outbound) is None
