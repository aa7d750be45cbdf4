import base64
import json
import struct

import pytest

from gateway.carriers.events import (
    Audio,
    CarrierFault,
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
from gateway.carriers.telnyx.protocol import TelnyxProtocol

STREAM = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"
CALL = "v3:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ"


def connected() -> str:
    return json.dumps({"event": "connected", "version": "1.0.0"})


def start(stream_id=STREAM, encoding="PCMU", rate=8000, **start_overrides) -> str:
    body = {
        "user_id": "3E6F995F-85F7-4705-9741-53B116D28237",
        "call_control_id": CALL,
        "call_session_id": "ff55a038-f08a-11ef-a1ee-02420a1f0b69",
        "from": "+13122010094",
        "to": "+13122123456",
        "tags": ["TAG1"],
        "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
        "media_format": {"encoding": encoding, "sample_rate": rate, "channels": 1},
    }
    body.update(start_overrides)
    body = {k: v for k, v in body.items() if v is not ...}
    message = {"event": "start", "sequence_number": "1", "stream_id": stream_id, "start": body}
    if stream_id is ...:
        del message["stream_id"]
    return json.dumps(message)


def media(payload: bytes = b"\x7f" * 160, track: str = "inbound", seq: int = 2) -> str:
    return json.dumps({
        "event": "media", "sequence_number": str(seq), "stream_id": STREAM,
        "media": {"track": track, "chunk": str(seq - 1), "timestamp": str((seq - 2) * 20),
                  "payload": base64.b64encode(payload).decode()},
    })


def started_protocol(**kwargs) -> TelnyxProtocol:
    proto = TelnyxProtocol()
    assert proto.receive_text(connected()) == Connected()
    assert isinstance(proto.receive_text(start(**kwargs)), Started)
    return proto


def expect_error(proto: TelnyxProtocol, text: str, kind: str) -> CarrierProtocolError:
    with pytest.raises(CarrierProtocolError) as info:
        proto.receive_text(text)
    assert info.value.kind == kind, str(info.value)
    return info.value


# ---- inbound transitions ---------------------------------------------------------


def test_class_attributes():
    assert TelnyxProtocol.carrier == "telnyx"
    assert TelnyxProtocol.marks_cleared_on_clear is True
    assert TelnyxProtocol.frames_per_message == 1
    assert TelnyxProtocol.lead_s is None
    assert started_protocol().hangup_message() is None


def test_full_call_sequence():
    proto = TelnyxProtocol()
    assert not proto.started and not proto.stopped
    assert proto.receive_text(connected()) == Connected()

    event = proto.receive_text(start())
    assert event == Started(
        call_id=CALL,
        stream_id=STREAM,
        media_format=MediaFormat("mulaw", 8000),
        custom_parameters={"client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d"},
        caller="+13122010094",
        called="+13122123456",
    )
    assert proto.started
    assert (proto.stream_id, proto.call_id) == (STREAM, CALL)
    assert proto.media_format == MediaFormat("mulaw", 8000)

    assert proto.receive_text(media(b"\x01\x02\x03")) == Audio(b"\x01\x02\x03")
    dtmf = {"event": "dtmf", "sequence_number": "5", "stream_id": STREAM,
            "occurred_at": "2025-06-05T08:54:19.698408Z", "dtmf": {"digit": "1"}}
    assert proto.receive_text(json.dumps(dtmf)) == Dtmf("1")
    mark = {"event": "mark", "sequence_number": "6", "stream_id": STREAM,
            "mark": {"name": "utt-17"}}
    assert proto.receive_text(json.dumps(mark)) == MarkPlayed("utt-17")
    stop = {"event": "stop", "sequence_number": "9", "stream_id": STREAM,
            "stop": {"user_id": "3E6F", "call_control_id": CALL}}
    assert proto.receive_text(json.dumps(stop)) == Stopped()
    assert proto.stopped


def test_start_without_connected_is_accepted():
    assert isinstance(TelnyxProtocol().receive_text(start()), Started)


@pytest.mark.parametrize(
    ("encoding", "rate", "expected"),
    [
        ("PCMU", 8000, MediaFormat("mulaw", 8000)),
        ("PCMA", 8000, MediaFormat("alaw", 8000)),
        ("L16", 8000, MediaFormat("l16", 8000)),
        ("L16", 16000, MediaFormat("l16", 16000)),
        ("L16", 24000, MediaFormat("l16", 24000)),
    ],
)
def test_media_format_mapping(encoding, rate, expected):
    proto = TelnyxProtocol()
    assert proto.receive_text(start(encoding=encoding, rate=rate)).media_format == expected
    assert proto.media_format == expected


def test_media_frames_out_of_sequence_order_are_all_passed_on():
    proto = started_protocol()
    frames = [media(bytes([n]) * 160, seq=n) for n in (5, 3, 4, 3)]
    assert [proto.receive_text(f).payload[0] for f in frames] == [5, 3, 4, 3]


def test_outbound_track_media_is_ignored_and_missing_track_is_inbound():
    proto = started_protocol()
    assert proto.receive_text(media(track="outbound")) is None
    text = json.dumps({"event": "media", "stream_id": STREAM, "media": {"payload": "AAE="}})
    assert proto.receive_text(text) == Audio(b"\x00\x01")


def test_media_without_stream_id_is_accepted():
    proto = started_protocol()
    assert proto.receive_text('{"event":"media","media":{"payload":"/w=="}}') == Audio(b"\xff")


# ---- custom parameters -------------------------------------------------------------


def test_custom_parameters_as_object_with_client_state():
    proto = TelnyxProtocol()
    event = proto.receive_text(start(custom_parameters={"tenant": "acme", "route": "ivr"}))
    assert event.custom_parameters == {"tenant": "acme", "route": "ivr",
                                       "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d"}
    assert proto.custom_parameters == event.custom_parameters


def test_custom_parameters_as_name_value_list():
    params = [{"name": "tenant", "value": "acme"}, {"name": "token", "value": "9f2c"}]
    event = TelnyxProtocol().receive_text(start(custom_parameters=params, client_state=...))
    assert event.custom_parameters == {"tenant": "acme", "token": "9f2c"}


def test_client_state_wins_over_a_custom_parameter_of_the_same_name():
    event = TelnyxProtocol().receive_text(
        start(custom_parameters={"client_state": "other"}, client_state="c3RhdGU="))
    assert event.custom_parameters == {"client_state": "c3RhdGU="}


def test_no_custom_parameters_and_no_client_state():
    assert TelnyxProtocol().receive_text(start(client_state=...)).custom_parameters == {}


def test_started_event_parameters_are_a_copy():
    proto = TelnyxProtocol()
    proto.receive_text(start()).custom_parameters["x"] = "y"
    assert "x" not in proto.custom_parameters


# ---- error -> CarrierFault ---------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "fault"),
    [
        ({"code": 100003, "title": "malformed_frame", "detail": "Unable to parse the frame"},
         CarrierFault("100003", "malformed_frame: Unable to parse the frame")),
        ({"code": 100004, "title": "invalid_media"}, CarrierFault("100004", "invalid_media")),
        ({"code": "100005", "detail": "slow down"}, CarrierFault("100005", "slow down")),
        ({"code": 100002}, CarrierFault("100002", "")),
        ({"title": "rate_limit_reached", "detail": "1 msg/s"},
         CarrierFault("rate_limit_reached", "1 msg/s")),
    ],
)
def test_error_becomes_carrier_fault(payload, fault):
    proto = started_protocol()
    text = json.dumps({"event": "error", "stream_id": STREAM, "payload": payload})
    assert proto.receive_text(text) == fault
    assert proto.receive_text(media(b"\x01")) == Audio(b"\x01")  # the stream goes on


def test_error_before_start_is_reported():
    text = '{"event":"error","payload":{"code":100002,"title":"unknown_error"}}'
    assert TelnyxProtocol().receive_text(text) == CarrierFault("100002", "unknown_error")


@pytest.mark.parametrize(
    "message",
    [
        {"event": "error", "stream_id": STREAM},
        {"event": "error", "stream_id": STREAM, "payload": "malformed_frame"},
        {"event": "error", "stream_id": STREAM, "payload": {"detail": "no code, no title"}},
        {"event": "error", "stream_id": STREAM, "payload": {"code": None, "title": ""}},
        {"event": "error", "stream_id": STREAM, "payload": {"code": [1]}},
    ],
)
def test_error_without_code_or_title(message):
    expect_error(started_protocol(), json.dumps(message), "missing_field")


# ---- L16 byte order ----------------------------------------------------------------


def test_l16_inbound_is_converted_from_big_endian_wire_to_little_endian():
    proto = started_protocol(encoding="L16", rate=16000)
    samples = (1, -2, 0x1234, -32768, 32767)
    wire = struct.pack(">5h", *samples)
    assert proto.receive_text(media(wire)) == Audio(struct.pack("<5h", *samples))


def test_l16_outbound_goes_big_endian_on_the_wire():
    proto = started_protocol(encoding="L16", rate=16000)
    samples = (1, -2, 0x1234, -32768, 32767)
    message = json.loads(proto.media_message(struct.pack("<5h", *samples)))
    assert base64.b64decode(message["media"]["payload"]) == struct.pack(">5h", *samples)


def test_l16_round_trip_is_identity():
    proto = started_protocol(encoding="L16", rate=8000)
    pcm = bytes(range(256)) * 2
    wire = base64.b64decode(json.loads(proto.media_message(pcm))["media"]["payload"])
    assert wire != pcm
    assert proto.receive_text(media(wire)).payload == pcm


def test_l16_odd_payload_is_rejected_both_ways():
    proto = started_protocol(encoding="L16", rate=16000)
    assert "16-bit samples" in str(expect_error(proto, media(b"\x00\x01\x02"), "bad_payload"))
    with pytest.raises(ValueError):
        proto.media_message(b"\x00\x01\x02")


@pytest.mark.parametrize("encoding", ["PCMU", "PCMA"])
def test_g711_payloads_are_passed_through_unchanged(encoding):
    proto = started_protocol(encoding=encoding)
    data = bytes(range(160))
    assert proto.receive_text(media(data)) == Audio(data)
    assert base64.b64decode(json.loads(proto.media_message(data))["media"]["payload"]) == data


# ---- inbound errors --------------------------------------------------------------


@pytest.mark.parametrize("text", ["not json", "{", "", "[" * 100_000])
def test_not_json(text):
    error = expect_error(TelnyxProtocol(), text, "not_json")
    assert "Telnyx" in str(error)


@pytest.mark.parametrize(
    "text",
    ['[]', '"media"', "42", "null", '{"stream_id":"X"}', '{"event":"bogus"}', '{"event":7}',
     '{"event":"clear"}', '{"event":["media"]}'],
)
def test_unknown_event(text):
    error = expect_error(TelnyxProtocol(), text, "unknown_event")
    assert "event" in str(error)


def test_unknown_event_lists_the_known_ones():
    error = expect_error(TelnyxProtocol(), '{"event":"playAudio"}', "unknown_event")
    assert "connected, start, media, dtmf, mark, error, stop" in str(error)


@pytest.mark.parametrize("event", ["media", "mark", "dtmf"])
def test_before_start_is_out_of_order(event):
    proto = TelnyxProtocol()
    proto.receive_text(connected())
    text = {
        "media": media(),
        "mark": json.dumps({"event": "mark", "stream_id": STREAM, "mark": {"name": "m"}}),
        "dtmf": json.dumps({"event": "dtmf", "stream_id": STREAM, "dtmf": {"digit": "1"}}),
    }[event]
    error = expect_error(proto, text, "out_of_order")
    assert f"{event} before start" in str(error)
    assert not proto.started


def test_second_start_is_out_of_order():
    proto = started_protocol()
    assert "second start" in str(expect_error(proto, start(encoding="L16", rate=16000),
                                              "out_of_order"))
    expect_error(proto, start("other", encoding="L16", rate=16000), "missing_field")
    assert proto.stream_id == STREAM
    assert proto.media_format == MediaFormat("mulaw", 8000)


def test_connected_twice_or_after_start_is_out_of_order():
    proto = TelnyxProtocol()
    proto.receive_text(connected())
    expect_error(proto, connected(), "out_of_order")
    proto = TelnyxProtocol()
    proto.receive_text(start())
    expect_error(proto, connected(), "out_of_order")


def test_anything_after_stop_is_out_of_order():
    proto = started_protocol()
    assert proto.receive_text('{"event":"stop"}') == Stopped()
    assert "after stop" in str(expect_error(proto, media(), "out_of_order"))
    expect_error(proto, '{"event":"stop"}', "out_of_order")
    expect_error(proto, '{"event":"error","payload":{"code":100002}}', "out_of_order")


def test_stop_before_start_is_accepted():
    assert TelnyxProtocol().receive_text('{"event":"stop"}') == Stopped()


@pytest.mark.parametrize(
    "overrides",
    [
        {"call_control_id": ...},
        {"call_control_id": ""},
        {"call_control_id": 12},
        {"media_format": ...},
        {"media_format": "PCMU"},
        {"media_format": {"encoding": "G722", "sample_rate": 16000}},
        {"media_format": {"encoding": "OPUS", "sample_rate": 16000}},
        {"media_format": {"encoding": "pcmu", "sample_rate": 8000}},
        {"media_format": {"encoding": ["PCMU"], "sample_rate": 8000}},
        {"media_format": {"encoding": "PCMU", "sample_rate": "8000"}},
        {"media_format": {"encoding": "PCMU", "sample_rate": 16000}},
        {"media_format": {"encoding": "PCMA", "sample_rate": 16000}},
        {"media_format": {"encoding": "L16", "sample_rate": 0}},
        {"media_format": {"encoding": "L16", "sample_rate": True}},
        {"media_format": {"encoding": "L16"}},
        {"custom_parameters": ["tenant=acme"]},
        {"custom_parameters": [{"name": "tenant"}]},
        {"custom_parameters": [{"name": "n", "value": 1}]},
        {"custom_parameters": {"n": 1}},
        {"custom_parameters": "tenant=acme"},
        {"client_state": 5},
    ],
)
def test_start_with_bad_fields(overrides):
    proto = TelnyxProtocol()
    expect_error(proto, start(**overrides), "missing_field")
    assert not proto.started
    assert proto.media_format == MediaFormat("mulaw", 8000)
    assert proto.custom_parameters == {}


def test_start_needs_a_top_level_stream_id():
    proto = TelnyxProtocol()
    error = expect_error(proto, start(stream_id=...), "missing_field")
    assert "top-level stream_id" in str(error)
    expect_error(proto, start(stream_id=""), "missing_field")
    expect_error(proto, json.dumps({"event": "start", "stream_id": STREAM}), "missing_field")


@pytest.mark.parametrize(
    "message",
    [
        {"event": "media", "stream_id": STREAM},
        {"event": "media", "stream_id": STREAM, "media": "AAAA"},
        {"event": "media", "stream_id": STREAM, "media": {"track": "inbound"}},
        {"event": "media", "stream_id": STREAM, "media": {"payload": 5}},
        {"event": "media", "stream_id": STREAM, "media": {"track": "both", "payload": "AA=="}},
        {"event": "media", "stream_id": "other", "media": {"payload": "AA=="}},
        {"event": "mark", "stream_id": STREAM},
        {"event": "mark", "stream_id": STREAM, "mark": {}},
        {"event": "mark", "stream_id": STREAM, "mark": {"name": 3}},
        {"event": "dtmf", "stream_id": STREAM, "dtmf": {}},
        {"event": "dtmf", "stream_id": STREAM, "dtmf": {"digit": ""}},
        {"event": "dtmf", "stream_id": STREAM},
    ],
)
def test_missing_or_invalid_fields(message):
    expect_error(started_protocol(), json.dumps(message), "missing_field")


@pytest.mark.parametrize("payload", ["not base64!", "AAA", "AA=A", "AAAA\n"])
def test_bad_base64_payload(payload):
    text = json.dumps({"event": "media", "stream_id": STREAM, "media": {"payload": payload}})
    expect_error(started_protocol(), text, "bad_payload")


def test_binary_frames_are_rejected():
    with pytest.raises(CarrierProtocolError) as info:
        started_protocol().receive_bytes(b"\x00" * 160)
    assert info.value.kind == "binary_frame"
    assert "Telnyx sends only JSON text" in str(info.value)


def test_rejected_frame_leaves_state_usable():
    proto = started_protocol()
    expect_error(proto, "garbage", "not_json")
    expect_error(proto, '{"event":"media","media":{"payload":"@@"}}', "bad_payload")
    assert proto.receive_text(media(b"\x05")) == Audio(b"\x05")


# ---- outbound --------------------------------------------------------------------


@pytest.mark.parametrize(
    "build", [lambda p: p.media_message(b"x"), lambda p: p.mark_message("m"),
              lambda p: p.clear_message(), lambda p: p.send(Clear())],
)
def test_sending_before_start_raises(build):
    proto = TelnyxProtocol()
    proto.receive_text(connected())
    with pytest.raises(RuntimeError, match="before Telnyx's start"):
        build(proto)


def test_media_message_shape_has_no_stream_id():
    proto = started_protocol()
    payload = bytes(range(160))
    text = proto.media_message(payload)
    assert isinstance(text, bytes)
    assert json.loads(text) == {"event": "media",
                                "media": {"payload": base64.b64encode(payload).decode()}}
    assert proto.send(PlayAudio(payload)) == text


def test_mark_and_clear_message_shapes():
    proto = started_protocol()
    assert json.loads(proto.mark_message("utt-17")) == {"event": "mark", "mark": {"name": "utt-17"}}
    assert proto.send(Mark("utt-17")) == proto.mark_message("utt-17")
    assert json.loads(proto.clear_message()) == {"event": "clear"}
    assert proto.send(Clear()) == proto.clear_message()


def test_mark_name_escaping():
    name = 'say "hi"\\\n\t\u2603\x00</script>'
    assert json.loads(started_protocol().mark_message(name))["mark"] == {"name": name}


def test_mark_name_must_be_a_string():
    with pytest.raises(TypeError):
        started_protocol().mark_message(5)


def test_send_rejects_unknown_commands():
    with pytest.raises(TypeError):
        started_protocol().send(object())
