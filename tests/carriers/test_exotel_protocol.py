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
from gateway.carriers.exotel.protocol import ExotelProtocol

STREAM = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA8f3b2f5c1d6e7a9b0c1d2e3f4a5b6c7d"


def connected() -> str:
    return json.dumps({"event": "connected"})


def start(stream_sid=STREAM, rate="8000", **start_overrides) -> str:
    body = {
        "stream_sid": stream_sid,
        "call_sid": CALL,
        "account_sid": "AC0",
        "from": "+919876543210",
        "to": "+918012345678",
        "custom_parameters": {"tenant": "acme"},
        "media_format": {"encoding": "audio/x-raw", "sample_rate": rate, "bit_rate": "16"},
    }
    body.update(start_overrides)
    body = {k: v for k, v in body.items() if v is not ...}
    message = {"event": "start", "sequence_number": "1", "stream_sid": stream_sid, "start": body}
    return json.dumps({k: v for k, v in message.items() if v is not ...})


def media(payload: bytes = b"\x00\x01" * 1600, seq: int = 3) -> str:
    return json.dumps({
        "event": "media", "sequence_number": str(seq), "stream_sid": STREAM,
        "media": {"chunk": str(seq - 1), "timestamp": str((seq - 2) * 100),
                  "payload": base64.b64encode(payload).decode()},
    })


def started_protocol(**kwargs) -> ExotelProtocol:
    proto = ExotelProtocol()
    assert proto.receive_text(connected()) == Connected()
    assert isinstance(proto.receive_text(start(**kwargs)), Started)
    return proto


def expect_error(proto: ExotelProtocol, text: str, kind: str) -> CarrierProtocolError:
    with pytest.raises(CarrierProtocolError) as info:
        proto.receive_text(text)
    assert info.value.kind == kind, str(info.value)
    return info.value


# ---- inbound transitions ---------------------------------------------------------


def test_class_attributes():
    assert ExotelProtocol.carrier == "exotel"
    assert ExotelProtocol.marks_cleared_on_clear is False
    assert ExotelProtocol.lead_s is None
    assert started_protocol().hangup_message() is None


def test_full_call_sequence():
    proto = ExotelProtocol()
    assert not proto.started and not proto.stopped
    assert proto.receive_text(connected()) == Connected()
    event = proto.receive_text(start())
    assert event == Started(
        call_id=CALL,
        stream_id=STREAM,
        media_format=MediaFormat("l16", 8000),
        custom_parameters={"tenant": "acme"},
        caller="+919876543210",
        called="+918012345678",
    )
    assert (proto.stream_id, proto.call_id) == (STREAM, CALL)
    assert proto.custom_parameters == {"tenant": "acme"}

    pcm = bytes(range(256)) * 12 + bytes(128)  # 3200 B: 100 ms at 8 kHz
    assert proto.receive_text(media(pcm)) == Audio(pcm)
    dtmf = {"event": "dtmf", "sequence_number": "7", "stream_sid": STREAM,
            "dtmf": {"digit": "5", "duration": "100"}}
    assert proto.receive_text(json.dumps(dtmf)) == Dtmf("5")
    mark = {"event": "mark", "sequence_number": "15", "stream_sid": STREAM,
            "mark": {"name": "utt-17"}}
    assert proto.receive_text(json.dumps(mark)) == MarkPlayed("utt-17")
    stop = {"event": "stop", "sequence_number": "20", "stream_sid": STREAM,
            "stop": {"call_sid": CALL, "account_sid": "AC0", "reason": "callended"}}
    assert proto.receive_text(json.dumps(stop)) == Stopped()
    assert proto.stopped


def test_start_without_connected_and_without_custom_parameters():
    event = ExotelProtocol().receive_text(start(custom_parameters=...))
    assert event.custom_parameters == {}


def test_stream_sid_only_inside_start():
    text = json.dumps({"event": "start", "start": {
        "stream_sid": STREAM, "call_sid": CALL,
        "media_format": {"encoding": "audio/x-raw", "sample_rate": "16000", "bit_rate": "16"}}})
    assert ExotelProtocol().receive_text(text).stream_id == STREAM


def test_started_event_parameters_are_a_copy():
    proto = ExotelProtocol()
    proto.receive_text(start()).custom_parameters["x"] = "y"
    assert "x" not in proto.custom_parameters


# ---- sample rate and the chunk rule --------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "frames", "chunk_bytes"),
    [("8000", 10, 3200), ("16000", 5, 3200), ("24000", 4, 3840)],
)
def test_sample_rate_is_read_from_start_and_sets_frames_per_message(rate, frames, chunk_bytes):
    proto = ExotelProtocol()
    event = proto.receive_text(start(rate=rate))
    assert event.media_format == MediaFormat("l16", int(rate))
    assert proto.media_format == MediaFormat("l16", int(rate))
    assert proto.frames_per_message == frames
    chunk = proto.frames_per_message * proto.media_format.bytes_per_20ms
    assert chunk == chunk_bytes
    assert chunk >= 3200 and chunk % 320 == 0
    # one frame fewer is not a legal chunk
    smaller = (frames - 1) * proto.media_format.bytes_per_20ms
    assert smaller < 3200 or smaller % 320
    message = json.loads(proto.media_message(bytes(chunk)))
    assert base64.b64decode(message["media"]["payload"]) == bytes(chunk)


@pytest.mark.parametrize(("frame_bytes", "frames"), [(320, 10), (640, 5), (960, 4), (480, 8),
                                                     (3200, 1), (4000, 2)])
def test_chunk_rule_needs_both_the_minimum_and_the_320_byte_multiple(frame_bytes, frames):
    from gateway.carriers.exotel.protocol import _frames_per_message

    assert _frames_per_message(frame_bytes) == frames  # 480 B: 7 frames = 3360 B, not N×320


def test_numeric_sample_rate_is_accepted_too():
    started = ExotelProtocol().receive_text(start(rate=16000))
    assert started.media_format == MediaFormat("l16", 16000)


def test_frames_per_message_before_start_is_the_8k_default():
    proto = ExotelProtocol()
    assert proto.frames_per_message == 10
    assert proto.media_format == MediaFormat("l16", 8000)


@pytest.mark.parametrize("size", [3200, 3520, 6400, 99_840])
def test_legal_chunk_sizes(size):
    proto = started_protocol(rate="16000")
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    text = proto.media_message(payload)
    assert base64.b64decode(json.loads(text)["media"]["payload"]) == payload


@pytest.mark.parametrize("size", [0, 320, 640, 3199, 3201, 3300, 3360, 100_160, 102_400])
def test_illegal_chunk_sizes_raise_value_error(size):
    proto = started_protocol(rate="24000")
    with pytest.raises(ValueError, match="multiple of 320"):
        proto.media_message(bytes(size))
    with pytest.raises(ValueError):
        proto.send(PlayAudio(bytes(size)))


# ---- inbound errors --------------------------------------------------------------


@pytest.mark.parametrize("text", ["not json", "{", "", "[" * 100_000])
def test_not_json(text):
    assert "Exotel" in str(expect_error(ExotelProtocol(), text, "not_json"))


@pytest.mark.parametrize(
    "text",
    ['[]', '"media"', "42", "null", '{"stream_sid":"MZ"}', '{"event":"bogus"}', '{"event":7}',
     '{"event":"clear","stream_sid":"MZ"}', '{"event":"error"}'],
)
def test_unknown_event(text):
    assert "event" in str(expect_error(ExotelProtocol(), text, "unknown_event"))


@pytest.mark.parametrize("event", ["media", "mark", "dtmf"])
def test_before_start_is_out_of_order(event):
    proto = ExotelProtocol()
    proto.receive_text(connected())
    text = {
        "media": media(),
        "mark": json.dumps({"event": "mark", "stream_sid": STREAM, "mark": {"name": "m"}}),
        "dtmf": json.dumps({"event": "dtmf", "stream_sid": STREAM, "dtmf": {"digit": "1"}}),
    }[event]
    error = expect_error(proto, text, "out_of_order")
    assert f"{event} before start" in str(error)


def test_second_start_is_out_of_order():
    proto = started_protocol()
    assert "second start" in str(expect_error(proto, start(rate="24000"), "out_of_order"))
    assert proto.media_format == MediaFormat("l16", 8000)
    assert proto.frames_per_message == 10


def test_connected_twice_or_after_start_is_out_of_order():
    proto = ExotelProtocol()
    proto.receive_text(connected())
    expect_error(proto, connected(), "out_of_order")
    proto = ExotelProtocol()
    proto.receive_text(start())
    expect_error(proto, connected(), "out_of_order")


def test_anything_after_stop_is_out_of_order():
    proto = started_protocol()
    proto.receive_text('{"event":"stop","stop":{"reason":"stopped"}}')
    assert "after stop" in str(expect_error(proto, media(), "out_of_order"))
    expect_error(proto, '{"event":"stop"}', "out_of_order")


@pytest.mark.parametrize(
    "overrides",
    [
        {"call_sid": ...},
        {"call_sid": ""},
        {"custom_parameters": ["a"]},
        {"custom_parameters": {"n": 1}},
        {"media_format": ...},
        {"media_format": "audio/x-raw"},
        {"media_format": {"encoding": "audio/x-mulaw", "sample_rate": "8000", "bit_rate": "16"}},
        {"media_format": {"encoding": "audio/x-raw", "bit_rate": "16"}},
        {"media_format": {"encoding": "audio/x-raw", "sample_rate": "44100", "bit_rate": "16"}},
        {"media_format": {"encoding": "audio/x-raw", "sample_rate": "8k", "bit_rate": "16"}},
        {"media_format": {"encoding": "audio/x-raw", "sample_rate": "\u00b2", "bit_rate": "16"}},
        {"media_format": {"encoding": "audio/x-raw", "sample_rate": 8000.5, "bit_rate": "16"}},
        {"media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "8"}},
    ],
)
def test_start_with_bad_fields(overrides):
    proto = ExotelProtocol()
    expect_error(proto, start(**overrides), "missing_field")
    assert not proto.started
    assert proto.frames_per_message == 10


def test_start_without_start_object_or_stream_sid():
    expect_error(ExotelProtocol(), '{"event":"start","stream_sid":"MZ1"}', "missing_field")
    expect_error(ExotelProtocol(), start(stream_sid=...), "missing_field")
    expect_error(ExotelProtocol(), start(stream_sid=""), "missing_field")


def test_start_with_two_different_stream_sids():
    message = json.loads(start())
    message["start"]["stream_sid"] = "MZother"
    proto = ExotelProtocol()
    assert "differs" in str(expect_error(proto, json.dumps(message), "missing_field"))
    assert not proto.started


@pytest.mark.parametrize(
    "message",
    [
        {"event": "media", "stream_sid": STREAM},
        {"event": "media", "stream_sid": STREAM, "media": "AAAA"},
        {"event": "media", "stream_sid": STREAM, "media": {"chunk": "2"}},
        {"event": "media", "stream_sid": STREAM, "media": {"payload": 5}},
        {"event": "media", "stream_sid": "MZwrong", "media": {"payload": "AA=="}},
        {"event": "mark", "stream_sid": STREAM},
        {"event": "mark", "stream_sid": STREAM, "mark": {"name": None}},
        {"event": "dtmf", "stream_sid": STREAM, "dtmf": {"duration": "100"}},
        {"event": "dtmf", "stream_sid": STREAM},
    ],
)
def test_missing_or_invalid_fields(message):
    expect_error(started_protocol(), json.dumps(message), "missing_field")


@pytest.mark.parametrize("payload", ["not base64!", "AAA", "AA=A", "AAAA\n"])
def test_bad_base64_payload(payload):
    text = json.dumps({"event": "media", "stream_sid": STREAM, "media": {"payload": payload}})
    expect_error(started_protocol(), text, "bad_payload")


def test_binary_frames_are_rejected():
    with pytest.raises(CarrierProtocolError) as info:
        started_protocol().receive_bytes(b"\x00" * 3200)
    assert info.value.kind == "binary_frame"
    assert "Exotel sends only JSON text" in str(info.value)


def test_rejected_frame_leaves_state_usable():
    proto = started_protocol()
    expect_error(proto, "garbage", "not_json")
    assert proto.receive_text(media(b"\x05\x00")) == Audio(b"\x05\x00")


# ---- outbound --------------------------------------------------------------------


@pytest.mark.parametrize(
    "build", [lambda p: p.media_message(bytes(3200)), lambda p: p.mark_message("m"),
              lambda p: p.clear_message(), lambda p: p.send(Clear())],
)
def test_sending_before_start_raises(build):
    proto = ExotelProtocol()
    proto.receive_text(connected())
    with pytest.raises(RuntimeError, match="before Exotel's start"):
        build(proto)


def test_media_message_shape():
    proto = started_protocol()
    payload = bytes(range(160)) * 20
    text = proto.media_message(payload)
    assert isinstance(text, bytes)
    assert json.loads(text) == {"event": "media", "stream_sid": STREAM,
                                "media": {"payload": base64.b64encode(payload).decode()}}
    assert proto.send(PlayAudio(payload)) == text


def test_mark_and_clear_message_shapes():
    proto = started_protocol()
    assert json.loads(proto.mark_message("utt-17")) == {
        "event": "mark", "stream_sid": STREAM, "mark": {"name": "utt-17"}}
    assert proto.send(Mark("utt-17")) == proto.mark_message("utt-17")
    assert json.loads(proto.clear_message()) == {"event": "clear", "stream_sid": STREAM}
    assert proto.send(Clear()) == proto.clear_message()


def test_escaping_in_stream_sid_and_mark_name():
    odd_sid = 'MZ"quoted"\\back\nslash\u00e9'
    proto = ExotelProtocol()
    proto.receive_text(start(odd_sid))
    name = 'say "hi"\\\n\t\u2603\x00'
    for text in (proto.mark_message(name), proto.media_message(bytes(3200)), proto.clear_message()):
        assert json.loads(text)["stream_sid"] == odd_sid
    assert json.loads(proto.mark_message(name))["mark"] == {"name": name}


def test_mark_name_must_be_a_string():
    with pytest.raises(TypeError):
        started_protocol().mark_message(5)


def test_send_rejects_unknown_commands():
    with pytest.raises(TypeError):
        started_protocol().send(object())
