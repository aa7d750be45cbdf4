import uuid

import pytest

from gateway.carriers.audiosocket.protocol import (
    AUDIO_KIND_RATES,
    KIND_AUDIO,
    KIND_DTMF,
    KIND_ERROR,
    KIND_HANGUP,
    KIND_UUID,
    AudioSocketProtocol,
    MessageDecoder,
    audio_kind,
    encode_message,
)
from gateway.carriers.events import (
    Audio,
    Binary,
    CarrierFault,
    CarrierProtocolError,
    Clear,
    Dtmf,
    Mark,
    MediaFormat,
    PlayAudio,
    Started,
    StartRefused,
    Stopped,
)

CALL = uuid.UUID("40325ec2-5efd-4bd3-805f-53576e581d13")
UUID_MESSAGE = b"\x01\x00\x10" + CALL.bytes
FRAME = bytes(range(160)) * 2  # 20 ms of slin at 8 kHz


def started(sample_rate: int = 8000) -> AudioSocketProtocol:
    proto = AudioSocketProtocol(sample_rate) if sample_rate != 8000 else AudioSocketProtocol()
    assert [type(e) for e in proto.feed(UUID_MESSAGE)] == [Started]
    return proto


def expect_error(proto: AudioSocketProtocol, data: bytes, kind: str) -> CarrierProtocolError:
    with pytest.raises(CarrierProtocolError) as info:
        proto.feed(data)
    assert info.value.kind == kind, str(info.value)
    return info.value


# ---- framing helpers -------------------------------------------------------------


def test_kinds_and_rates():
    assert ((KIND_HANGUP, KIND_UUID, KIND_DTMF, KIND_AUDIO, KIND_ERROR)
            == (0x00, 0x01, 0x03, 0x10, 0xFF))
    assert AUDIO_KIND_RATES == {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000,
                                0x15: 44100, 0x16: 48000, 0x17: 96000, 0x18: 192000}


@pytest.mark.parametrize("kind, rate", sorted(AUDIO_KIND_RATES.items()))
def test_audio_kind_for_each_rate(kind, rate):
    assert audio_kind(rate) == kind


@pytest.mark.parametrize("rate", [0, 11025, 16001, 22050, "8000"])
def test_no_kind_for_other_rates(rate):
    with pytest.raises(ValueError, match="no audio kind"):
        audio_kind(rate)
    with pytest.raises(ValueError, match="no audio kind"):
        AudioSocketProtocol(rate)


def test_encode_message_bytes():
    assert encode_message(KIND_HANGUP) == b"\x00\x00\x00"
    assert encode_message(KIND_DTMF, b"5") == b"\x03\x00\x015"
    assert encode_message(KIND_UUID, CALL.bytes) == UUID_MESSAGE
    assert encode_message(KIND_AUDIO, FRAME) == b"\x10\x01\x40" + FRAME
    assert encode_message(0x18, bytes(7680))[:3] == b"\x18\x1e\x00"
    assert len(encode_message(0x10, bytes(0xFFFF))) == 0xFFFF + 3


@pytest.mark.parametrize("kind, payload", [(-1, b""), (256, b""), (0x10, bytes(0x10000))])
def test_encode_message_rejects_what_cannot_be_framed(kind, payload):
    with pytest.raises(ValueError):
        encode_message(kind, payload)


def test_decoder_reassembles_messages_from_any_chunking():
    stream = (encode_message(KIND_UUID, CALL.bytes) + encode_message(KIND_AUDIO, FRAME)
              + encode_message(KIND_DTMF, b"#") + encode_message(KIND_HANGUP))
    expected = [(KIND_UUID, CALL.bytes), (KIND_AUDIO, FRAME), (KIND_DTMF, b"#"), (KIND_HANGUP, b"")]
    for size in (1, 2, 3, 7, 100, len(stream)):
        decoder = MessageDecoder()
        messages = []
        for i in range(0, len(stream), size):
            messages += decoder.feed(stream[i:i + size])
        assert messages == expected, size
        assert decoder.buffered == 0


def test_decoder_holds_a_partial_message():
    decoder = MessageDecoder()
    message = encode_message(KIND_AUDIO, FRAME)
    assert decoder.feed(message[:-1]) == []
    assert decoder.buffered == len(message) - 1
    assert decoder.feed(message[-1:] + message[:2]) == [(KIND_AUDIO, FRAME)]
    assert decoder.buffered == 2


def test_decoder_checks_each_header_once_before_its_payload():
    seen = []
    decoder = MessageDecoder(lambda kind, length: seen.append((kind, length)))
    message = encode_message(KIND_AUDIO, FRAME)
    for i in range(3):
        decoder.feed(message[i:i + 1])
    assert seen == [(KIND_AUDIO, 320)]
    for byte in message[3:]:
        decoder.feed(bytes((byte,)))
    assert seen == [(KIND_AUDIO, 320)]
    decoder.feed(encode_message(KIND_HANGUP))
    assert seen == [(KIND_AUDIO, 320), (KIND_HANGUP, 0)]


def test_decoder_is_unusable_after_a_failed_check():
    def check(kind, length):
        if kind == 0x47:
            raise CarrierProtocolError("unknown_event", "not AudioSocket")

    decoder = MessageDecoder(check)
    with pytest.raises(CarrierProtocolError):
        decoder.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(CarrierProtocolError, match="already broken") as info:
        decoder.feed(encode_message(KIND_HANGUP))
    assert info.value.kind == "unknown_event"


# ---- inbound ---------------------------------------------------------------------


def test_class_attributes():
    proto = AudioSocketProtocol()
    assert proto.carrier == "audiosocket"
    assert proto.marks_cleared_on_clear is False
    assert proto.frames_per_message == 1
    assert proto.lead_s == 0.0
    assert proto.media_format == MediaFormat("l16", 8000)
    assert not proto.started and not proto.stopped
    assert proto.mark_message("m") is None
    assert proto.clear_message() is None
    assert proto.hangup_message() == b"\x00\x00\x00"


def test_full_call_sequence():
    proto = AudioSocketProtocol()
    events = proto.feed(UUID_MESSAGE + encode_message(KIND_AUDIO, FRAME)
                        + encode_message(KIND_DTMF, b"7") + encode_message(KIND_ERROR, b"\x02")
                        + encode_message(KIND_HANGUP))
    assert events == [
        Started(call_id=str(CALL), stream_id=str(CALL), media_format=MediaFormat("l16", 8000),
                custom_parameters={}),
        Audio(FRAME),
        Dtmf("7"),
        CarrierFault("frame_forwarding", "AudioSocket error code 02 (frame_forwarding)"),
        Stopped(),
    ]
    assert proto.started and proto.stopped
    assert proto.call_id == proto.stream_id == "40325ec2-5efd-4bd3-805f-53576e581d13"
    assert proto.custom_parameters == {}


def test_feeding_one_byte_at_a_time():
    proto = AudioSocketProtocol()
    stream = UUID_MESSAGE + encode_message(KIND_AUDIO, FRAME) + encode_message(KIND_DTMF, b"*")
    events = []
    boundaries = {len(UUID_MESSAGE), len(UUID_MESSAGE) + 323, len(stream)}
    for i in range(len(stream)):
        got = proto.feed(stream[i:i + 1])
        assert bool(got) == (i + 1 in boundaries), i
        events += got
    assert [type(e) for e in events] == [Started, Audio, Dtmf]
    assert events[1] == Audio(FRAME)
    assert events[2] == Dtmf("*")


def test_message_split_across_reads():
    proto = started()
    message = encode_message(KIND_AUDIO, FRAME)
    assert proto.feed(message[:2]) == []
    assert proto.feed(message[2:200]) == []
    assert proto.feed(message[200:] + message + message[:5]) == [Audio(FRAME), Audio(FRAME)]
    assert proto.feed(message[5:]) == [Audio(FRAME)]
    assert proto.feed(b"") == []


PLAYABLE = {kind: rate for kind, rate in AUDIO_KIND_RATES.items() if rate in (8000, 16000, 24000)}


@pytest.mark.parametrize("kind, rate", sorted(PLAYABLE.items()))
def test_each_rate_takes_its_own_kind(kind, rate):
    proto = started(rate)
    assert proto.media_format == MediaFormat("l16", rate)
    frame = bytes(proto.media_format.bytes_per_20ms)
    assert proto.feed(encode_message(kind, frame)) == [Audio(frame)]
    assert proto.media_message(frame) == encode_message(kind, frame)


@pytest.mark.parametrize("rate", sorted(set(AUDIO_KIND_RATES.values()) - set(PLAYABLE.values())))
def test_a_rate_the_gateway_cannot_produce_is_refused_at_the_uuid(rate):
    proto = AudioSocketProtocol(sample_rate=rate)
    with pytest.raises(StartRefused) as info:
        proto.feed(UUID_MESSAGE)
    assert info.value.kind == "unsupported_format" and not proto.started


@pytest.mark.parametrize("kind", [0x11, 0x12, 0x13, 0x18])
def test_audio_of_another_rate_is_a_clear_error(kind):
    proto = started()
    rate = AUDIO_KIND_RATES[kind]
    error = expect_error(proto, encode_message(kind, bytes(320)), "bad_payload")
    assert f"({rate} Hz) on a stream set up for 8000 Hz" in str(error)
    assert f"AudioSocketProtocol(sample_rate={rate})" in str(error)


def test_8khz_audio_on_a_16khz_stream_is_rejected():
    error = expect_error(started(16000), encode_message(KIND_AUDIO, FRAME), "bad_payload")
    assert "sample_rate=8000" in str(error)


def test_dtmf_digits():
    proto = started()
    for digit in "0123456789*#ABCD":
        assert proto.feed(encode_message(KIND_DTMF, digit.encode())) == [Dtmf(digit)]


@pytest.mark.parametrize(
    "payload, code",
    [(b"", "unspecified"), (b"\x01", "caller_hangup"), (b"\x02", "frame_forwarding"),
     (b"\x04", "memory"), (b"\x03", "caller_hangup+frame_forwarding"),
     (b"\x07", "caller_hangup+frame_forwarding+memory"), (b"\x08", "other"), (b"\x00", "other"),
     (b"\x01\x02", "other"), (b"app-specific", "other")],
)
def test_error_codes(payload, code):
    event, = started().feed(encode_message(KIND_ERROR, payload))
    assert type(event) is CarrierFault
    assert event.code == code
    if payload:
        assert payload.hex() in event.detail


def test_hangup_and_error_before_uuid_are_accepted():
    assert AudioSocketProtocol().feed(encode_message(KIND_ERROR, b"\x04"))[0].code == "memory"
    proto = AudioSocketProtocol()
    assert proto.feed(encode_message(KIND_HANGUP)) == [Stopped()]
    assert proto.stopped and not proto.started


def test_hangup_with_a_payload_still_hangs_up():
    assert started().feed(encode_message(KIND_HANGUP, b"\x10")) == [Stopped()]


# ---- inbound errors (a TCP stream cannot resync) ---------------------------------


@pytest.mark.parametrize(
    "data, kind, text",
    [(encode_message(KIND_AUDIO, FRAME), "out_of_order", "before the UUID message"),
     (encode_message(KIND_DTMF, b"1"), "out_of_order", "before the UUID message"),
     (encode_message(0x02, b"x"), "unknown_event", "unknown AudioSocket message kind 0x02"),
     (b"GET / HTTP/1.1\r\n", "unknown_event", "kind 0x47"),
     (encode_message(KIND_UUID, CALL.bytes[:15]), "bad_payload", "a UUID is 16 bytes"),
     (encode_message(KIND_UUID, CALL.bytes + b"\x00"), "bad_payload", "a UUID is 16 bytes")],
)
def test_errors_before_uuid(data, kind, text):
    proto = AudioSocketProtocol()
    assert text in str(expect_error(proto, data, kind))
    assert not proto.started


@pytest.mark.parametrize(
    "header, kind",
    [(b"\x10\x0c\x81", "bad_frame_size"),   # 3201 bytes: odd, and more than 200 ms at 8 kHz
     (b"\x10\x0c\x82", "bad_frame_size"),   # 3202 bytes: more than 200 ms at 8 kHz
     (b"\x10\x00\x00", "bad_frame_size"),   # empty audio
     (b"\x10\x01\x41", "bad_frame_size"),   # 321 bytes: half a sample
     (b"\xff\x01\x01", "bad_frame_size"),   # a 257-byte error code
     (b"\x00\xff\xff", "bad_frame_size"),   # a 65535-byte hangup
     (b"\x03\x00\x02", "bad_payload"),      # a two-byte DTMF digit
     (b"\x7f\x00\x00", "unknown_event")],
)
def test_bad_headers_fail_before_the_payload_arrives(header, kind):
    proto = started()
    expect_error(proto, header, kind)


def test_audio_size_limit_scales_with_the_rate():
    assert started(16000).feed(encode_message(0x12, bytes(6400))) == [Audio(bytes(6400))]
    expect_error(started(16000), b"\x12\x19\x02", "bad_frame_size")  # 6402 bytes


def test_dtmf_byte_must_be_printable_ascii():
    for byte in (b" ", b"\x00", b"\x80", b"\xff"):
        expect_error(started(), encode_message(KIND_DTMF, byte), "bad_payload")


def test_second_uuid_is_out_of_order():
    proto = started()
    other = uuid.uuid4()
    error = expect_error(proto, encode_message(KIND_UUID, other.bytes), "out_of_order")
    assert "second AudioSocket UUID" in str(error)
    assert proto.call_id == str(CALL)


def test_anything_after_hangup_is_out_of_order():
    proto = started()
    proto.feed(encode_message(KIND_HANGUP))
    error = expect_error(proto, encode_message(KIND_AUDIO, FRAME), "out_of_order")
    assert "after hangup" in str(error)


@pytest.mark.parametrize(
    "bad", [b"\x02\x00\x00", encode_message(0x12, bytes(640)), encode_message(KIND_DTMF, b"\x00")],
)
def test_stream_is_unusable_after_an_error(bad):
    proto = started()
    first = expect_error(proto, bad, _kind_of(bad))
    again = expect_error(proto, encode_message(KIND_AUDIO, FRAME), first.kind)
    assert "cannot resync" in str(again)
    expect_error(proto, b"", first.kind)


def _kind_of(bad: bytes) -> str:
    return {0x02: "unknown_event", 0x12: "bad_payload", KIND_DTMF: "bad_payload"}[bad[0]]


def test_events_before_the_bad_message_in_the_same_chunk_are_dropped_with_it():
    proto = started()
    with pytest.raises(CarrierProtocolError):
        proto.feed(encode_message(KIND_AUDIO, FRAME) + b"\x02\x00\x00")
    with pytest.raises(CarrierProtocolError):
        proto.feed(encode_message(KIND_AUDIO, FRAME))


# ---- receive_bytes / receive_text ------------------------------------------------


def test_receive_bytes_takes_one_whole_message():
    proto = AudioSocketProtocol()
    assert isinstance(proto.receive_bytes(UUID_MESSAGE), Started)
    assert proto.receive_bytes(encode_message(KIND_AUDIO, FRAME)) == Audio(FRAME)
    assert proto.receive_bytes(encode_message(KIND_HANGUP)) == Stopped()


@pytest.mark.parametrize(
    "data",
    [b"", b"\x10", b"\x10\x01", encode_message(KIND_AUDIO, FRAME)[:-1],
     encode_message(KIND_AUDIO, FRAME) + b"\x00", encode_message(KIND_AUDIO, FRAME) * 2],
)
def test_receive_bytes_rejects_anything_but_one_message_and_changes_nothing(data):
    proto = started()
    with pytest.raises(CarrierProtocolError) as info:
        proto.receive_bytes(data)
    assert info.value.kind == "bad_frame_size"
    assert "use feed()" in str(info.value)
    assert proto.feed(encode_message(KIND_AUDIO, FRAME)) == [Audio(FRAME)]


def test_receive_bytes_refuses_while_feed_holds_a_partial_message():
    proto = started()
    proto.feed(encode_message(KIND_AUDIO, FRAME)[:10])
    with pytest.raises(CarrierProtocolError, match="10 bytes already buffered"):
        proto.receive_bytes(encode_message(KIND_DTMF, b"1"))


def test_receive_text_is_a_type_error():
    with pytest.raises(TypeError, match="no text frames"):
        started().receive_text("MEDIA_START")


# ---- outbound --------------------------------------------------------------------


def test_media_message_bytes():
    proto = started()
    message = proto.media_message(FRAME)
    assert message == b"\x10\x01\x40" + FRAME
    assert type(message) is bytes and type(message) is not Binary
    assert proto.send(PlayAudio(FRAME)) == message
    assert MessageDecoder().feed(message) == [(KIND_AUDIO, FRAME)]


@pytest.mark.parametrize("length", [0, 160, 318, 322, 640])
def test_media_message_takes_exactly_one_20ms_frame(length):
    with pytest.raises(ValueError, match="exactly one 20 ms frame: 320 bytes at 8000 Hz"):
        started().media_message(bytes(length))


def test_media_before_uuid_raises():
    with pytest.raises(RuntimeError, match="before AudioSocket's UUID"):
        AudioSocketProtocol().media_message(FRAME)


def test_hangup_works_before_uuid_to_turn_a_connection_away():
    proto = AudioSocketProtocol()
    assert proto.hangup_message() == encode_message(KIND_HANGUP)
    assert MessageDecoder().feed(proto.hangup_message()) == [(KIND_HANGUP, b"")]


def test_send_marks_and_clears_are_none():
    proto = started()
    assert proto.send(Mark("utt-1")) is None
    assert proto.send(Clear()) is None
    with pytest.raises(TypeError):
        proto.send(object())
