import json
import uuid

import pytest

from gateway.carriers.events import (
    Audio,
    Binary,
    CarrierProtocolError,
    Clear,
    Cleared,
    Dtmf,
    Mark,
    MarkPlayed,
    MediaFormat,
    PlayAudio,
    Started,
)
from gateway.carriers.vonage.protocol import VonageProtocol

CALL = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"


def connected(content_type="audio/l16;rate=16000", **headers) -> str:
    message = {"event": "websocket:connected", "content-type": content_type}
    message.update(headers)
    return json.dumps({k: v for k, v in message.items() if v is not ...})


def started_protocol(rate: int = 16000, **headers) -> VonageProtocol:
    proto = VonageProtocol()
    headers.setdefault("call_uuid", CALL)
    assert isinstance(proto.receive_text(connected(f"audio/l16;rate={rate}", **headers)), Started)
    return proto


def expect_error(proto: VonageProtocol, text: str, kind: str) -> CarrierProtocolError:
    with pytest.raises(CarrierProtocolError) as info:
        proto.receive_text(text)
    assert info.value.kind == kind, str(info.value)
    return info.value


# ---- inbound ---------------------------------------------------------------------


def test_class_attributes():
    assert VonageProtocol.carrier == "vonage"
    assert VonageProtocol.marks_cleared_on_clear is False
    assert VonageProtocol.frames_per_message == 1
    assert VonageProtocol.lead_s == 0.04
    assert VonageProtocol().hangup_message() is None


def test_connected_is_started_with_headers_as_parameters():
    proto = VonageProtocol()
    assert not proto.started
    event = proto.receive_text(connected(call_uuid=CALL, tenant="acme", route="ivr",
                                         retries=3, nested={"a": "b"}))
    assert event == Started(call_id=CALL, stream_id=CALL,
                            media_format=MediaFormat("l16", 16000),
                            custom_parameters={"tenant": "acme", "route": "ivr"})
    assert proto.started and not proto.stopped
    assert (proto.call_id, proto.stream_id) == (CALL, CALL)
    assert proto.media_format == MediaFormat("l16", 16000)
    assert proto.custom_parameters == {"tenant": "acme", "route": "ivr"}


def test_uuid_header_is_the_call_id_when_call_uuid_is_absent():
    event = VonageProtocol().receive_text(connected(uuid="leg-1", tenant="acme"))
    assert event.call_id == event.stream_id == "leg-1"
    assert event.custom_parameters == {"tenant": "acme"}


def test_call_uuid_wins_over_uuid_which_stays_a_parameter():
    event = VonageProtocol().receive_text(connected(call_uuid="call-1", uuid="leg-1"))
    assert event.call_id == "call-1"
    assert event.custom_parameters == {"uuid": "leg-1"}


def test_without_id_header_a_fresh_uuid_is_generated():
    first = VonageProtocol().receive_text(connected())
    second = VonageProtocol().receive_text(connected(call_uuid="", uuid=7))
    assert str(uuid.UUID(first.call_id)) == first.call_id == first.stream_id
    assert str(uuid.UUID(second.call_id)) == second.call_id != first.call_id


@pytest.mark.parametrize(
    "content_type, rate",
    [("audio/l16;rate=8000", 8000), ("audio/l16;rate=16000", 16000),
     ("audio/l16;rate=24000", 24000), ("Audio/L16; rate=24000", 24000),
     ("audio/l16;channels=1;rate=8000", 8000)],
)
def test_content_type_gives_the_rate(content_type, rate):
    started = VonageProtocol().receive_text(connected(content_type))
    assert started.media_format == MediaFormat("l16", rate)


@pytest.mark.parametrize(
    "content_type",
    [..., 16000, "audio/l16", "audio/l16;rate=44100", "audio/pcmu;rate=8000",
     "audio/l16;rate=16k", ""],
)
def test_bad_content_type(content_type):
    proto = VonageProtocol()
    error = expect_error(proto, connected(content_type), "missing_field")
    assert "audio/l16;rate=8000, 16000 or 24000" in str(error)
    assert not proto.started


def test_binary_frames_are_caller_audio():
    proto = started_protocol()
    frame = bytes(range(256)) * 2 + bytes(128)
    assert proto.receive_bytes(frame) == Audio(frame)
    assert proto.receive_bytes(b"") is None


def test_odd_sized_audio_is_rejected():
    with pytest.raises(CarrierProtocolError) as info:
        started_protocol().receive_bytes(b"\x00" * 641)
    assert info.value.kind == "bad_frame_size"


def test_binary_before_connected_is_out_of_order():
    proto = VonageProtocol()
    with pytest.raises(CarrierProtocolError) as info:
        proto.receive_bytes(b"\x00" * 640)
    assert info.value.kind == "out_of_order"
    assert "before websocket:connected" in str(info.value)
    assert isinstance(proto.receive_text(connected()), Started)


@pytest.mark.parametrize(
    "message",
    [{"digit": "5", "duration": 260}, {"dtmf": "5"}, {"dtmf": {"digit": "5", "duration": 100}},
     {"digit": 5}],
)
def test_dtmf_shapes(message):
    text = json.dumps({"event": "websocket:dtmf", **message})
    assert started_protocol().receive_text(text) == Dtmf("5")


def test_dtmf_star_and_hash():
    proto = started_protocol()
    assert proto.receive_text('{"event":"websocket:dtmf","digit":"#"}') == Dtmf("#")
    assert proto.receive_text('{"event":"websocket:dtmf","dtmf":{"digit":"*"}}') == Dtmf("*")


@pytest.mark.parametrize(
    "message",
    [{}, {"digit": ""}, {"dtmf": {}}, {"dtmf": {"digit": 3.5}}, {"digit": True},
     {"dtmf": ["5"]}, {"digit": 12}],
)
def test_dtmf_without_digit(message):
    text = json.dumps({"event": "websocket:dtmf", **message})
    error = expect_error(started_protocol(), text, "missing_field")
    assert "digit" in str(error)


def test_notify_echo_is_mark_played():
    proto = started_protocol()
    text = json.dumps({"event": "websocket:notify", "payload": {"name": "utt-17"}})
    assert proto.receive_text(text) == MarkPlayed("utt-17")


@pytest.mark.parametrize(
    "message",
    [{"event": "websocket:notify"}, {"event": "websocket:notify", "payload": "utt"},
     {"event": "websocket:notify", "payload": {"reply_id": "utt-17"}},
     {"event": "websocket:notify", "payload": {"name": 17}}],
)
def test_notify_without_name(message):
    expect_error(started_protocol(), json.dumps(message), "missing_field")


def test_cleared():
    assert started_protocol().receive_text('{"event":"websocket:cleared"}') == Cleared()


@pytest.mark.parametrize(
    "text",
    ['{"event":"websocket:dtmf","digit":"1"}',
     '{"event":"websocket:notify","payload":{"name":"a"}}', '{"event":"websocket:cleared"}'],
)
def test_events_before_connected_are_out_of_order(text):
    proto = VonageProtocol()
    error = expect_error(proto, text, "out_of_order")
    assert "before websocket:connected" in str(error)
    assert not proto.started


def test_second_connected_is_out_of_order_and_changes_nothing():
    proto = started_protocol(tenant="acme")
    error = expect_error(proto, connected("audio/l16;rate=8000", call_uuid="other"), "out_of_order")
    assert "second websocket:connected" in str(error)
    assert proto.call_id == CALL
    assert proto.media_format == MediaFormat("l16", 16000)
    assert proto.custom_parameters == {"tenant": "acme"}


@pytest.mark.parametrize("text", ["not json", "{", "", "[" * 100_000])
def test_not_json(text):
    expect_error(VonageProtocol(), text, "not_json")


@pytest.mark.parametrize(
    "text",
    ["[]", '"websocket:connected"', "null", "{}", '{"event":"websocket:error","message":"x"}',
     '{"event":7}', '{"event":["websocket:cleared"]}', '{"action":"clear"}'],
)
def test_unknown_event(text):
    error = expect_error(started_protocol(), text, "unknown_event")
    assert "event" in str(error)


def test_rejected_frame_leaves_state_usable():
    proto = started_protocol()
    expect_error(proto, "garbage", "not_json")
    expect_error(proto, '{"event":"websocket:notify"}', "missing_field")
    assert proto.receive_bytes(b"\x01\x00") == Audio(b"\x01\x00")


def test_started_event_parameters_are_a_copy():
    proto = VonageProtocol()
    event = proto.receive_text(connected(tenant="acme"))
    event.custom_parameters["x"] = "y"
    assert "x" not in proto.custom_parameters


# ---- outbound --------------------------------------------------------------------


@pytest.mark.parametrize("rate, size", [(8000, 320), (16000, 640), (24000, 960)])
def test_media_message_is_one_binary_frame_of_exactly_20_ms(rate, size):
    proto = started_protocol(rate)
    frame = bytes(range(256)) * (size // 256) + bytes(size % 256)
    message = proto.media_message(frame)
    assert type(message) is Binary
    assert message == frame
    assert proto.send(PlayAudio(frame)) == message
    for wrong in (size - 2, size + 2, size // 2, size * 2, 0):
        with pytest.raises(ValueError, match=f"exactly one 20 ms frame: {size} bytes at {rate} Hz"):
            proto.media_message(bytes(wrong))


def test_mark_message_shape():
    proto = started_protocol()
    text = proto.mark_message("utt-17")
    assert text == b'{"action":"notify","payload":{"name":"utt-17"}}'
    assert proto.send(Mark("utt-17")) == text
    assert type(text) is bytes


def test_mark_name_round_trips_through_the_notify_echo():
    proto = started_protocol()
    name = 'say "hi"\\\n\u2603'
    sent = json.loads(proto.mark_message(name))
    echo = json.dumps({"event": "websocket:notify", "payload": sent["payload"]})
    assert proto.receive_text(echo) == MarkPlayed(name)


def test_clear_message_shape():
    proto = started_protocol()
    assert proto.clear_message() == b'{"action":"clear"}'
    assert type(proto.clear_message()) is bytes
    assert proto.send(Clear()) == proto.clear_message()


@pytest.mark.parametrize(
    "build", [lambda p: p.media_message(b"\x00" * 640), lambda p: p.mark_message("m"),
              lambda p: p.clear_message(), lambda p: p.send(Clear())],
)
def test_sending_before_connected_raises(build):
    with pytest.raises(RuntimeError, match="before Vonage's websocket:connected"):
        build(VonageProtocol())


def test_mark_name_must_be_a_string():
    with pytest.raises(TypeError):
        started_protocol().mark_message(5)


def test_send_rejects_unknown_commands():
    with pytest.raises(TypeError):
        started_protocol().send(object())


def test_caller_and_called_come_from_the_ncco_headers_when_they_carry_them():
    proto = VonageProtocol()
    event = proto.receive_text(json.dumps({
        "event": "websocket:connected", "content-type": "audio/l16;rate=16000",
        "call_uuid": CALL, "from": "447700900000", "to": "447700900001" * 20}))
    assert (event.caller, event.called) == ("447700900000", None)  # the second: too long
    assert (proto.caller, proto.called) == ("447700900000", None)
