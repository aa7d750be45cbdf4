import base64
import json

import pytest

from gateway.carriers.events import (
    Audio,
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
from gateway.carriers.plivo.protocol import PlivoProtocol

STREAM = "8765f1a2-0b7c-4d3e-9f10-1234567890ab"
CALL = "1234abcd-5678-90ef-1234-567890abcdef"


def start(encoding="audio/x-mulaw", rate=8000, extra_headers="userId=12345;sessionId=abc",
          **start_overrides) -> str:
    body = {
        "callId": CALL,
        "streamId": STREAM,
        "accountId": "MA0123456789",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": encoding, "sampleRate": rate},
    }
    body.update(start_overrides)
    body = {k: v for k, v in body.items() if v is not ...}
    message = {"event": "start", "sequenceNumber": 1, "start": body}
    if extra_headers is not ...:
        message["extra_headers"] = extra_headers
    return json.dumps(message)


def media(payload: bytes = b"\x7f" * 160, seq: int = 2, track: str = "inbound") -> str:
    return json.dumps({
        "event": "media", "sequenceNumber": seq, "streamId": STREAM,
        "media": {"track": track, "timestamp": "1705312200000", "chunk": seq - 1,
                  "payload": base64.b64encode(payload).decode()},
        "extra_headers": "userId=12345;sessionId=abc",
    })


def started_protocol(**kwargs) -> PlivoProtocol:
    proto = PlivoProtocol()
    assert isinstance(proto.receive_text(start(**kwargs)), Started)
    return proto


def expect_error(proto: PlivoProtocol, text: str, kind: str) -> CarrierProtocolError:
    with pytest.raises(CarrierProtocolError) as info:
        proto.receive_text(text)
    assert info.value.kind == kind, str(info.value)
    return info.value


# ---- inbound transitions ---------------------------------------------------------


def test_class_attributes():
    assert PlivoProtocol.carrier == "plivo"
    assert PlivoProtocol.marks_cleared_on_clear is False
    assert PlivoProtocol.frames_per_message == 1
    assert PlivoProtocol.lead_s is None
    assert started_protocol().hangup_message() is None


def test_full_call_sequence_starts_with_start():
    proto = PlivoProtocol()
    assert not proto.started
    event = proto.receive_text(start())
    assert event == Started(
        call_id=CALL,
        stream_id=STREAM,
        media_format=MediaFormat("mulaw", 8000),
        custom_parameters={"userId": "12345", "sessionId": "abc"},
    )
    assert proto.started and not proto.stopped
    assert (proto.stream_id, proto.call_id) == (STREAM, CALL)
    assert proto.custom_parameters == {"userId": "12345", "sessionId": "abc"}

    assert proto.receive_text(media(b"\x01\x02\x03")) == Audio(b"\x01\x02\x03")
    dtmf = {"event": "dtmf", "streamId": STREAM, "dtmf": {"digit": "5"}}
    assert proto.receive_text(json.dumps(dtmf)) == Dtmf("5")
    played = {"event": "playedStream", "streamId": STREAM, "name": "greeting"}
    assert proto.receive_text(json.dumps(played)) == MarkPlayed("greeting")
    cleared = {"sequenceNumber": 0, "event": "clearedAudio", "streamId": STREAM}
    assert proto.receive_text(json.dumps(cleared)) == Cleared()
    assert not proto.stopped  # no stop message: the socket closing ends the stream
    assert proto.receive_text(media(b"\x04")) == Audio(b"\x04")


@pytest.mark.parametrize("event", ["playedStream", "played"])
def test_played_and_played_stream_are_both_mark_echoes(event):
    proto = started_protocol()
    text = json.dumps({"event": event, "streamId": STREAM, "name": "utt-3"})
    assert proto.receive_text(text) == MarkPlayed("utt-3")


def test_dtmf_tolerates_stream_id_inside_dtmf():
    proto = started_protocol()
    text = json.dumps({"event": "dtmf", "dtmf": {"digit": "#", "streamId": STREAM}})
    assert proto.receive_text(text) == Dtmf("#")


def test_outbound_track_media_is_ignored_and_missing_track_is_inbound():
    proto = started_protocol()
    assert proto.receive_text(media(track="outbound")) is None
    assert proto.receive_text('{"event":"media","media":{"payload":"AAE="}}') == Audio(b"\x00\x01")


@pytest.mark.parametrize(
    ("encoding", "rate", "expected", "content_type"),
    [
        ("audio/x-mulaw", 8000, MediaFormat("mulaw", 8000), "audio/x-mulaw"),
        ("audio/x-l16", 8000, MediaFormat("l16", 8000), "audio/x-l16"),
        ("audio/x-l16", 16000, MediaFormat("l16", 16000), "audio/x-l16"),
    ],
)
def test_media_format_mapping_and_play_audio_in_the_same_format(encoding, rate, expected,
                                                                  content_type):
    proto = PlivoProtocol()
    assert proto.receive_text(start(encoding=encoding, rate=rate)).media_format == expected
    assert proto.media_format == expected
    message = json.loads(proto.media_message(b"\x00\x01"))
    assert message["media"]["contentType"] == content_type
    assert message["media"]["sampleRate"] == rate


def test_l16_payload_is_passed_through_little_endian():
    proto = started_protocol(encoding="audio/x-l16", rate=16000)
    pcm = b"\x01\x00\xff\x7f"  # 1, 32767 little-endian
    assert proto.receive_text(media(pcm)) == Audio(pcm)
    assert base64.b64decode(json.loads(proto.media_message(pcm))["media"]["payload"]) == pcm


# ---- extra_headers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra_headers", "expected"),
    [
        ("userId=12345;sessionId=abc", {"userId": "12345", "sessionId": "abc"}),
        ("userId=12345,sessionId=abc", {"userId": "12345", "sessionId": "abc"}),
        (" a = 1 ; b=2; ", {"a": "1", "b": "2"}),
        ("token=", {"token": ""}),
        ("k=v=w", {"k": "v=w"}),
        ("", {}),
        ("{}", {}),
        (..., {}),
        (None, {}),
        ({"tenant": "acme"}, {"tenant": "acme"}),
    ],
)
def test_extra_headers_become_custom_parameters(extra_headers, expected):
    proto = PlivoProtocol()
    assert proto.receive_text(start(extra_headers=extra_headers)).custom_parameters == expected
    assert proto.custom_parameters == expected


def test_extra_headers_inside_start_are_read_too():
    message = json.loads(start(extra_headers=...))
    message["start"]["extra_headers"] = "tenant=acme"
    assert PlivoProtocol().receive_text(json.dumps(message)).custom_parameters == {"tenant": "acme"}


@pytest.mark.parametrize("extra_headers", ["novalue", "a=1;junk", "=1", 12, ["a=1"], {"n": 1}])
def test_bad_extra_headers(extra_headers):
    proto = PlivoProtocol()
    expect_error(proto, start(extra_headers=extra_headers), "missing_field")
    assert not proto.started


# ---- inbound errors --------------------------------------------------------------


@pytest.mark.parametrize("text", ["not json", "{", "", "[" * 100_000])
def test_not_json(text):
    assert "Plivo" in str(expect_error(PlivoProtocol(), text, "not_json"))


@pytest.mark.parametrize(
    "text",
    ['[]', '"media"', "42", "null", '{"streamId":"S"}', '{"event":"bogus"}', '{"event":7}',
     '{"event":"connected"}', '{"event":"stop"}', '{"event":"playAudio"}',
     '{"event":"checkpoint"}'],
)
def test_unknown_event(text):
    error = expect_error(PlivoProtocol(), text, "unknown_event")
    assert "event" in str(error)


def test_unknown_event_lists_the_known_ones():
    error = expect_error(PlivoProtocol(), '{"event":"mark"}', "unknown_event")
    assert "start, media, dtmf, playedStream, played, clearedAudio" in str(error)


@pytest.mark.parametrize(
    "message",
    [
        {"event": "media", "streamId": STREAM, "media": {"payload": "AA=="}},
        {"event": "dtmf", "streamId": STREAM, "dtmf": {"digit": "1"}},
        {"event": "playedStream", "streamId": STREAM, "name": "m"},
        {"event": "played", "streamId": STREAM, "name": "m"},
        {"event": "clearedAudio", "streamId": STREAM},
    ],
)
def test_before_start_is_out_of_order(message):
    proto = PlivoProtocol()
    error = expect_error(proto, json.dumps(message), "out_of_order")
    assert f"{message['event']} before start" in str(error)
    assert "start first" in str(error)


def test_second_start_is_out_of_order():
    proto = started_protocol()
    assert "second start" in str(expect_error(proto, start(encoding="audio/x-l16", rate=16000),
                                              "out_of_order"))
    assert proto.media_format == MediaFormat("mulaw", 8000)
    assert json.loads(proto.media_message(b"x"))["media"]["contentType"] == "audio/x-mulaw"


@pytest.mark.parametrize(
    "overrides",
    [
        {"callId": ...},
        {"callId": ""},
        {"streamId": ...},
        {"streamId": 7},
        {"mediaFormat": ...},
        {"mediaFormat": "audio/x-mulaw"},
        {"mediaFormat": {"encoding": "audio/x-mulaw"}},
        {"mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": "8000"}},
        {"mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 16000}},
        {"mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 24000}},
        {"mediaFormat": {"encoding": "audio/x-alaw", "sampleRate": 8000}},
        {"mediaFormat": {"encoding": ["audio/x-l16"], "sampleRate": 8000}},
    ],
)
def test_start_with_bad_fields(overrides):
    proto = PlivoProtocol()
    expect_error(proto, start(**overrides), "missing_field")
    assert not proto.started
    assert proto.custom_parameters == {}
    with pytest.raises(RuntimeError):
        proto.media_message(b"x")


def test_start_without_start_object():
    expect_error(PlivoProtocol(), '{"event":"start","sequenceNumber":1}', "missing_field")


@pytest.mark.parametrize(
    "message",
    [
        {"event": "media", "streamId": STREAM},
        {"event": "media", "streamId": STREAM, "media": {"track": "inbound"}},
        {"event": "media", "streamId": STREAM, "media": {"payload": 5}},
        {"event": "media", "streamId": STREAM, "media": {"track": "both", "payload": "AA=="}},
        {"event": "media", "streamId": "other", "media": {"payload": "AA=="}},
        {"event": "dtmf", "streamId": STREAM},
        {"event": "dtmf", "streamId": STREAM, "dtmf": {"digit": ""}},
        {"event": "dtmf", "streamId": STREAM, "digit": "5"},
        {"event": "playedStream", "streamId": STREAM},
        {"event": "playedStream", "streamId": STREAM, "name": 3},
        {"event": "played", "streamId": STREAM, "checkpoint": {"name": "m"}},
        {"event": "clearedAudio", "streamId": "other"},
    ],
)
def test_missing_or_invalid_fields(message):
    expect_error(started_protocol(), json.dumps(message), "missing_field")


@pytest.mark.parametrize("payload", ["not base64!", "AAA", "AA=A", "AAAA\n", "AAé="])
def test_bad_base64_payload(payload):
    text = json.dumps({"event": "media", "streamId": STREAM, "media": {"payload": payload}})
    expect_error(started_protocol(), text, "bad_payload")


def test_binary_frames_are_rejected():
    with pytest.raises(CarrierProtocolError) as info:
        started_protocol().receive_bytes(b"\x00" * 160)
    assert info.value.kind == "binary_frame"
    assert "Plivo sends only JSON text" in str(info.value)


def test_rejected_frame_leaves_state_usable():
    proto = started_protocol()
    expect_error(proto, "garbage", "not_json")
    expect_error(proto, '{"event":"stop"}', "unknown_event")
    assert proto.receive_text(media(b"\x05")) == Audio(b"\x05")


# ---- outbound --------------------------------------------------------------------


@pytest.mark.parametrize(
    "build", [lambda p: p.media_message(b"x"), lambda p: p.mark_message("m"),
              lambda p: p.clear_message(), lambda p: p.dtmf_message("1"),
              lambda p: p.send(Clear())],
)
def test_sending_before_start_raises(build):
    with pytest.raises(RuntimeError, match="before Plivo's start"):
        build(PlivoProtocol())


def test_play_audio_shape():
    proto = started_protocol()
    payload = bytes(range(160))
    text = proto.media_message(payload)
    assert isinstance(text, bytes)
    assert json.loads(text) == {
        "event": "playAudio",
        "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000,
                  "payload": base64.b64encode(payload).decode()},
    }
    assert proto.send(PlayAudio(payload)) == text


def test_checkpoint_clear_audio_and_send_dtmf_shapes():
    proto = started_protocol()
    assert json.loads(proto.mark_message("greeting")) == {
        "event": "checkpoint", "streamId": STREAM, "name": "greeting"}
    assert proto.send(Mark("greeting")) == proto.mark_message("greeting")
    assert json.loads(proto.clear_message()) == {"event": "clearAudio", "streamId": STREAM}
    assert proto.send(Clear()) == proto.clear_message()
    assert json.loads(proto.dtmf_message("12*#A")) == {"event": "sendDTMF", "dtmf": "12*#A"}


@pytest.mark.parametrize("digits", ["", "1x", "1 2", 5, None, "\u0661"])
def test_send_dtmf_rejects_non_dtmf_digits(digits):
    with pytest.raises(ValueError):
        started_protocol().dtmf_message(digits)


def test_escaping_in_stream_id_and_checkpoint_name():
    odd_sid = 'S"quoted"\\back\nslash\u00e9'
    proto = PlivoProtocol()
    proto.receive_text(start(streamId=odd_sid))
    name = 'say "hi"\\\n\t\u2603\x00'
    assert json.loads(proto.mark_message(name)) == {"event": "checkpoint", "streamId": odd_sid,
                                                    "name": name}
    assert json.loads(proto.clear_message())["streamId"] == odd_sid


def test_mark_name_must_be_a_string():
    with pytest.raises(TypeError):
        started_protocol().mark_message(5)


def test_send_rejects_unknown_commands():
    with pytest.raises(TypeError):
        started_protocol().send(object())
