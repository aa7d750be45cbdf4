import json

import pytest

from gateway.carriers.asterisk.protocol import MAX_MEDIA_MESSAGE, MAX_TEXT_MESSAGE, AsteriskProtocol
from gateway.carriers.events import (
    Audio,
    Binary,
    CarrierFault,
    CarrierProtocolError,
    Clear,
    Dtmf,
    FlowControl,
    Mark,
    MarkPlayed,
    MediaFormat,
    PlayAudio,
    Started,
    StartRefused,
)

CONN = "2f8e3c1a-5d7b-4e0f-9a6c-1b2d3e4f5a6b"
CHANNEL = "WebSocket/media_connection1/0x7f2a4c001234"
CHANNEL_ID = "1712345678.42"


def plain_start(fmt="ulaw", size=160, **extra) -> str:
    fields = {"connection_id": CONN, "channel": CHANNEL, "channel_id": CHANNEL_ID,
              "format": fmt, "optimal_frame_size": size, "ptime": 20, **extra}
    return "MEDIA_START " + " ".join(f"{k}:{v}" for k, v in fields.items() if v is not ...)


def json_start(fmt="ulaw", size=160, variables=..., **extra) -> str:
    message = {"event": "MEDIA_START", "connection_id": CONN, "channel": CHANNEL,
               "channel_id": CHANNEL_ID, "format": fmt, "optimal_frame_size": size, "ptime": 20,
               "channel_variables": ({"TENANT": "acme", "ROUTE": "ivr"} if variables is ...
                                     else variables),
               **extra}
    return json.dumps({k: v for k, v in message.items() if v is not ...})


def started(form="plain-text", fmt="ulaw", size=160) -> AsteriskProtocol:
    proto = AsteriskProtocol()
    text = plain_start(fmt, size) if form == "plain-text" else json_start(fmt, size)
    assert isinstance(proto.receive_text(text), Started)
    return proto


def expect_error(proto: AsteriskProtocol, text: str, kind: str) -> CarrierProtocolError:
    with pytest.raises(CarrierProtocolError) as info:
        proto.receive_text(text)
    assert info.value.kind == kind, str(info.value)
    return info.value


def asterisk_answers_mark(command: bytes) -> str:
    """What chan_websocket's handle_command replies to our MARK_MEDIA, in either form."""
    text = command.decode()
    if text.startswith("{"):
        message = json.loads(text)
        assert message["command"] == "MARK_MEDIA"
        return json.dumps({"event": "MEDIA_MARK_PROCESSED", "channel_id": CHANNEL_ID,
                           "correlation_id": message["correlation_id"]})
    text = text.strip()  # ast_strip
    command, _, data = text.partition(" ")
    assert command == "MARK_MEDIA"
    return "MEDIA_MARK_PROCESSED" + (" " + data if data else "")


# ---- MEDIA_START -----------------------------------------------------------------


def test_class_attributes():
    assert AsteriskProtocol.carrier == "asterisk"
    assert AsteriskProtocol.marks_cleared_on_clear is False
    assert AsteriskProtocol.lead_s is None
    proto = AsteriskProtocol()
    assert not proto.started and not proto.stopped
    assert proto.early_audio_frames == 0


def test_plain_text_media_start():
    proto = AsteriskProtocol()
    event = proto.receive_text(plain_start() + "\n")
    assert event == Started(call_id=CHANNEL_ID, stream_id=CONN,
                            media_format=MediaFormat("mulaw", 8000), custom_parameters={},
                            details={"channel": CHANNEL})
    assert proto.started and not proto.stopped
    assert proto.control_format == "plain-text"
    assert (proto.call_id, proto.stream_id) == (CHANNEL_ID, CONN)
    assert proto.optimal_frame_size == 160
    assert proto.frames_per_message == 1


def test_json_media_start():
    proto = AsteriskProtocol()
    event = proto.receive_text(json_start("slin16", 640))
    assert event == Started(call_id=CHANNEL_ID, stream_id=CONN,
                            media_format=MediaFormat("l16", 16000),
                            custom_parameters={"TENANT": "acme", "ROUTE": "ivr"},
                            details={"channel": CHANNEL})
    assert proto.control_format == "json"
    assert proto.custom_parameters == {"TENANT": "acme", "ROUTE": "ivr"}
    event.custom_parameters["x"] = "y"
    assert "x" not in proto.custom_parameters


def test_plain_text_carries_no_channel_variables():
    event = AsteriskProtocol().receive_text(plain_start(channel_variables="TENANT=acme"))
    assert event.custom_parameters == {}


@pytest.mark.parametrize("form", ["plain-text", "json"])
def test_without_channel_id_the_call_id_is_the_channel_name_usable_in_a_url(form):
    proto = AsteriskProtocol()
    text = plain_start(channel_id=...) if form == "plain-text" else json_start(channel_id=...)
    event = proto.receive_text(text)
    # "WebSocket/<connection>/0x…" would need %2F in /v1/calls/{id}: the id has none
    assert event.call_id == proto.call_id == "WebSocket-media_connection1-0x7f2a4c001234"
    assert event.details == {"channel": CHANNEL}


def test_a_huge_channel_name_is_refused_as_a_call_id_and_bounded_as_a_detail():
    error = expect_error(AsteriskProtocol(), plain_start(channel_id=..., channel="W" * 200_000),
                         "bad_call_id")
    assert "200000 characters" in str(error) and len(str(error)) < 300
    event = AsteriskProtocol().receive_text(json_start(channel="W" * 200_000))
    assert event.call_id == CHANNEL_ID and len(event.details["channel"]) == 256


@pytest.mark.parametrize(
    "fmt, size, media_format",
    [("ulaw", 160, MediaFormat("mulaw", 8000)), ("alaw", 160, MediaFormat("alaw", 8000)),
     ("slin", 320, MediaFormat("l16", 8000)), ("slin16", 640, MediaFormat("l16", 16000)),
     ("slin24", 960, MediaFormat("l16", 24000)), ("ULAW", 160, MediaFormat("mulaw", 8000))],
)
def test_format_mapping(fmt, size, media_format):
    for form in ("plain-text", "json"):
        proto = started(form, fmt, size)
        assert proto.media_format == proto.inbound_format == media_format
        assert proto.frames_per_message == 1
        assert media_format.bytes_per_20ms == size


@pytest.mark.parametrize("fmt, size", [("slin12", 480), ("slin32", 1280), ("slin44", 1764),
                                       ("slin48", 1920), ("slin96", 3840), ("slin192", 7680)])
def test_rates_the_gateway_cannot_produce_are_refused(fmt, size):
    for text in (plain_start(fmt, size), json_start(fmt, size)):
        proto = AsteriskProtocol()
        with pytest.raises(StartRefused) as info:
            proto.receive_text(text)
        assert info.value.kind == "unsupported_format"
        assert "cannot produce" in str(info.value) and "8000 or 16000 or 24000" in str(info.value)
        assert not proto.started and proto.control_format is None


@pytest.mark.parametrize(
    "fmt, size, frames",
    [("ulaw", 240, 3),      # ptime 30: 480 bytes = 3 frames = 2 Asterisk frames
     ("slin", 160, 1),      # 10 ms frames: one 20 ms frame is two of them
     ("slin16", 1920, 3),   # 60 ms
     ("alaw", 100, 5)],
)
def test_frames_per_message_makes_whole_optimal_frames(fmt, size, frames):
    proto = started("plain-text", fmt, size)
    assert proto.frames_per_message == frames
    assert proto.frames_per_message * proto.media_format.bytes_per_20ms % size == 0


@pytest.mark.parametrize("fmt", ["g722", "opus", "slin7", "gsm", "", "ulaw16"])
def test_unsupported_format(fmt):
    proto = AsteriskProtocol()
    error = expect_error(proto, json_start(fmt), "missing_field")
    assert "ulaw, alaw, slin" in str(error)
    assert not proto.started


@pytest.mark.parametrize(
    "text",
    [plain_start(format=...), plain_start(size=0), plain_start(size=-160), plain_start(size="abc"),
     plain_start(size=...), plain_start(connection_id=...),
     plain_start(channel=..., channel_id=...),
     json_start(size="160x"), json_start(size=160.0), json_start(size=True),
     json_start(variables=["a"]), json_start(variables={"N": 1}), json_start(connection_id=""),
     plain_start(size=65_501), json_start("slin192", 7681)],
)
def test_media_start_with_bad_fields(text):
    proto = AsteriskProtocol()
    expect_error(proto, text, "missing_field")
    assert not proto.started
    assert proto.frames_per_message == 1


def test_second_media_start_is_out_of_order_and_changes_nothing():
    proto = started("plain-text")
    error = expect_error(proto, json_start("slin16", 640), "out_of_order")
    assert "second MEDIA_START" in str(error)
    assert proto.media_format == MediaFormat("mulaw", 8000)
    assert proto.control_format == "plain-text"
    assert proto.clear_message() == b"FLUSH_MEDIA"


# ---- events ----------------------------------------------------------------------


@pytest.mark.parametrize("form", ["plain-text", "json"])
def test_events_in_both_forms(form):
    proto = started(form)

    def event(name, **fields):
        if form == "json":
            return json.dumps({"event": name, "channel_id": CHANNEL_ID, **fields})
        return " ".join([name, *(f"{k}:{v}" for k, v in fields.items())])

    assert proto.receive_text(event("DTMF_END", digit="7")) == Dtmf("7")
    assert proto.receive_text(event("DTMF_END", digit="#")) == Dtmf("#")
    assert proto.receive_text(event("MEDIA_XOFF")) == FlowControl(True)
    assert proto.flow_paused
    assert proto.receive_text(event("MEDIA_XON")) == FlowControl(False)
    assert not proto.flow_paused
    assert proto.receive_text(event("QUEUE_DRAINED")) is None
    assert proto.receive_text(event("STATUS", queue_length=12, xon_level=800, xoff_level=900,
                                    queue_full="false", bulk_media="false",
                                    media_paused="false")) is None


def test_plain_events_as_asterisk_prints_them():
    proto = started("plain-text")
    assert proto.receive_text(f"DTMF_END digit:5 channel_id:{CHANNEL_ID}") == Dtmf("5")
    assert proto.receive_text("MEDIA_XOFF") == FlowControl(True)
    assert proto.receive_text("MEDIA_XON") == FlowControl(False)
    assert proto.receive_text("MEDIA_MARK_PROCESSED utt-17") == MarkPlayed("utt-17")
    assert (proto.receive_text("MEDIA_MARK_PROCESSED utt 17 with spaces")
            == MarkPlayed("utt 17 with spaces"))
    assert proto.receive_text("MEDIA_BUFFERING_COMPLETED bulk-1") is None
    assert proto.receive_text("MEDIA_BUFFERING_COMPLETED") is None
    assert proto.receive_text("QUEUE_DRAINED") is None
    status = (f"STATUS channel_id:{CHANNEL_ID} queue_length:0 xon_level:800 xoff_level:900 "
              "queue_full:false bulk_media:false media_paused:false")
    assert proto.receive_text(status) is None


def test_json_mark_processed():
    proto = started("json")
    text = json.dumps({"event": "MEDIA_MARK_PROCESSED", "channel_id": CHANNEL_ID,
                       "correlation_id": "utt-17"})
    assert proto.receive_text(text) == MarkPlayed("utt-17")
    text = json.dumps({"event": "MEDIA_BUFFERING_COMPLETED", "correlation_id": ""})
    assert proto.receive_text(text) is None


@pytest.mark.parametrize(
    "text, code, detail",
    [(f"ERROR channel_id:{CHANNEL_ID} error_text:MARK_MEDIA not supported in passthrough mode",
      "passthrough_mode", "MARK_MEDIA not supported in passthrough mode"),
     (json.dumps({"event": "ERROR", "channel_id": CHANNEL_ID,
                  "error_text": "Unable to parse JSON command"}),
      "bad_json_command", "Unable to parse JSON command"),
     (f"ERROR channel_id:{CHANNEL_ID} error_text:odd: text with colons",
      "other", "odd: text with colons"),
     ("ERROR something went wrong", "other", "something went wrong")],
)
def test_error_is_a_carrier_fault(text, code, detail):
    assert started().receive_text(text) == CarrierFault(code, detail)


def test_json_error_without_text_keeps_the_message():
    event = started("json").receive_text('{"event":"ERROR","channel_id":"1"}')
    assert event.code == "other"
    assert '"ERROR"' in event.detail


@pytest.mark.parametrize(
    "text",
    ["DTMF_END", "DTMF_END digit:", "DTMF_END digit:12", '{"event":"DTMF_END"}',
     '{"event":"DTMF_END","digit":5}', "MEDIA_MARK_PROCESSED", '{"event":"MEDIA_MARK_PROCESSED"}',
     '{"event":"MEDIA_MARK_PROCESSED","correlation_id":""}'],
)
def test_events_missing_fields(text):
    expect_error(started(), text, "missing_field")


def test_plain_text_without_key_value_pairs():
    expect_error(started(), "DTMF_END 5", "bad_payload")
    expect_error(AsteriskProtocol(), "MEDIA_START ulaw 160", "bad_payload")


@pytest.mark.parametrize(
    "text",
    ["DTMF_END digit:1", "MEDIA_XOFF", "MEDIA_XON", "MEDIA_MARK_PROCESSED m", "QUEUE_DRAINED",
     "STATUS queue_length:0", "ERROR error_text:x", '{"event":"MEDIA_XOFF"}'],
)
def test_events_before_media_start_are_out_of_order(text):
    proto = AsteriskProtocol()
    error = expect_error(proto, text, "out_of_order")
    assert "before MEDIA_START" in str(error)
    assert not proto.flow_paused


@pytest.mark.parametrize(
    "text",
    ["HANGUP", "BOGUS k:v", "", "   ", "media_start format:ulaw", '{"event":"HANGUP"}',
     '{"command":"MARK_MEDIA"}', "[]", '"MEDIA_START"', '{"event":7}', '{"event":["MEDIA_XON"]}'],
)
def test_unknown_event(text):
    error = expect_error(started(), text, "unknown_event")
    assert "MEDIA_START" in str(error) or "not an object" in str(error)


@pytest.mark.parametrize("text", ['{"event":"MEDIA_START"', "{", '{"event": MEDIA_XON}'])
def test_not_json(text):
    expect_error(AsteriskProtocol(), text, "not_json")


def test_control_form_is_detected_per_message():
    proto = started("json")
    assert proto.receive_text("MEDIA_XOFF") == FlowControl(True)
    assert proto.receive_text('{"event":"MEDIA_XON"}') == FlowControl(False)
    assert proto.clear_message() == b'{"command":"FLUSH_MEDIA"}'


def test_rejected_frame_leaves_state_usable():
    proto = started()
    expect_error(proto, "{garbage", "not_json")
    expect_error(proto, "DTMF_END", "missing_field")
    assert proto.receive_text("DTMF_END digit:1") == Dtmf("1")
    assert proto.receive_bytes(b"\x7f" * 160) == Audio(b"\x7f" * 160)


# ---- audio -----------------------------------------------------------------------


def test_audio_before_media_start_is_counted_and_dropped():
    proto = AsteriskProtocol()
    assert proto.receive_bytes(b"\xff" * 160) is None
    assert proto.receive_bytes(b"\xff" * 160) is None
    assert proto.early_audio_frames == 2
    assert isinstance(proto.receive_text(plain_start()), Started)
    assert proto.receive_bytes(b"\x01" * 160) == Audio(b"\x01" * 160)
    assert proto.early_audio_frames == 2


def test_audio_after_media_start():
    proto = started("json", "slin16", 640)
    frame = bytes(range(256)) * 2 + bytes(128)
    assert proto.receive_bytes(frame) == Audio(frame)
    assert proto.receive_bytes(b"") is None
    with pytest.raises(CarrierProtocolError) as info:
        proto.receive_bytes(b"\x00" * 639)
    assert info.value.kind == "bad_frame_size"
    # G.711 has one byte per sample: any length is whole samples
    assert started().receive_bytes(b"\x55" * 81) == Audio(b"\x55" * 81)


# ---- outbound --------------------------------------------------------------------


def test_media_message_is_binary_multiple_of_optimal_frame_size():
    proto = started()
    payload = bytes(range(160)) * 3
    message = proto.media_message(payload)
    assert type(message) is Binary and message == payload
    assert proto.send(PlayAudio(payload)) == message
    for length in (0, 159, 161, 480 + 80):
        with pytest.raises(ValueError, match="multiple of optimal_frame_size \\(160 bytes\\)"):
            proto.media_message(bytes(length))


def test_media_message_size_limit():
    proto = started("plain-text", "alaw", 100)
    assert proto.frames_per_message == 5
    assert len(proto.media_message(bytes(MAX_MEDIA_MESSAGE))) == MAX_MEDIA_MESSAGE == 65_500
    with pytest.raises(ValueError, match="at most 65500 bytes"):
        proto.media_message(bytes(MAX_MEDIA_MESSAGE + 100))


def test_playout_chunk_is_accepted():
    for fmt, size in (("ulaw", 240), ("slin16", 640), ("slin", 160), ("alaw", 100)):
        proto = started("json", fmt, size)
        chunk = bytes(proto.media_format.bytes_per_20ms * proto.frames_per_message)
        assert proto.media_message(chunk) == chunk


def test_plain_text_commands():
    proto = started("plain-text")
    assert proto.mark_message("utt-17") == b"MARK_MEDIA utt-17"
    assert proto.send(Mark("utt-17")) == b"MARK_MEDIA utt-17"
    assert proto.clear_message() == b"FLUSH_MEDIA"
    assert proto.send(Clear()) == b"FLUSH_MEDIA"
    assert proto.hangup_message() == b"HANGUP"
    for message in (proto.mark_message("m"), proto.clear_message(), proto.hangup_message()):
        assert type(message) is bytes


def test_json_commands():
    proto = started("json")
    assert proto.mark_message("utt-17") == b'{"command":"MARK_MEDIA","correlation_id":"utt-17"}'
    assert proto.send(Mark("utt-17")) == proto.mark_message("utt-17")
    assert proto.clear_message() == b'{"command":"FLUSH_MEDIA"}'
    assert proto.send(Clear()) == proto.clear_message()
    assert proto.hangup_message() == b'{"command":"HANGUP"}'
    for message in (proto.mark_message("m"), proto.clear_message(), proto.hangup_message()):
        assert type(message) is bytes
        assert type(json.loads(message)) is dict


@pytest.mark.parametrize("form", ["plain-text", "json"])
@pytest.mark.parametrize("name", ["utt-17", "utt 17", "é☃", "a:b"])
def test_mark_round_trips_through_asterisk(form, name):
    proto = started(form)
    assert proto.receive_text(asterisk_answers_mark(proto.mark_message(name))) == MarkPlayed(name)


def test_json_mark_names_may_hold_anything_json_escapes():
    proto = started("json")
    name = ' say "hi"\n\t'
    assert proto.receive_text(asterisk_answers_mark(proto.mark_message(name))) == MarkPlayed(name)


@pytest.mark.parametrize("name", [" lead", "trail ", "new\nline", "tab\tbed", "\x00"])
def test_plain_text_rejects_names_asterisk_would_alter(name):
    with pytest.raises(ValueError, match="printable"):
        started("plain-text").mark_message(name)


@pytest.mark.parametrize("form", ["plain-text", "json"])
def test_mark_command_limit_is_128_bytes(form):
    proto = started(form)
    overhead = len(proto.mark_message("x")) - 1
    longest = "x" * (MAX_TEXT_MESSAGE - overhead)
    assert len(proto.mark_message(longest)) == MAX_TEXT_MESSAGE == 128
    with pytest.raises(ValueError, match="at most 128 bytes"):
        proto.mark_message(longest + "x")
    # the limit is in bytes: a two-byte character counts twice
    with pytest.raises(ValueError, match="at most 128 bytes"):
        proto.mark_message("x" * (MAX_TEXT_MESSAGE - overhead - 1) + "é")
    with pytest.raises(ValueError, match="non-empty"):
        proto.mark_message("")


@pytest.mark.parametrize(
    "build", [lambda p: p.media_message(bytes(160)), lambda p: p.mark_message("m"),
              lambda p: p.clear_message(), lambda p: p.hangup_message(), lambda p: p.send(Clear())],
)
def test_sending_before_media_start_raises(build):
    proto = AsteriskProtocol()
    proto.receive_bytes(bytes(160))
    with pytest.raises(RuntimeError, match="before Asterisk's MEDIA_START"):
        build(proto)


def test_mark_name_must_be_a_string():
    with pytest.raises(TypeError):
        started().mark_message(5)


def test_send_rejects_unknown_commands():
    with pytest.raises(TypeError):
        started().send(object())
