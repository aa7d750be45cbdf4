import base64
import json

import pytest

from gateway.carriers.twilio.sim import FrameTiming, TwilioCallResult
from gateway.carriers.twilio.sim import TwilioPlayoutModel as EchoingModel

SID = "MZ" + "ab" * 16


class TwilioPlayoutModel(EchoingModel):
    """The model, answering with the names of the marks it echoes (what these tests read)."""

    def advance(self, now):
        return [echo.name for echo in super().advance(now)]

    def receive_text(self, text, now):
        return [echo.name for echo in super().receive_text(text, now)]

    def receive_bytes(self, data, now):
        return [echo.name for echo in super().receive_bytes(data, now)]


def media(payload: bytes, sid: str = SID) -> str:
    return json.dumps({"event": "media", "streamSid": sid,
                       "media": {"payload": base64.b64encode(payload).decode()}})


def mark(name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": name}})


def clear() -> str:
    return json.dumps({"event": "clear", "streamSid": SID})


def frame(n: int = 0) -> bytes:
    return bytes([n % 256]) * 160


def test_drains_at_8000_bytes_per_second():
    model = TwilioPlayoutModel(SID, now=10.0)
    model.receive_text(media(bytes(range(200)) * 40), 10.0)  # 8000 bytes = 1 s
    assert model.buffered_bytes == 8000
    model.advance(10.25)
    assert len(model.heard) == 2000
    assert model.buffered_seconds == pytest.approx(0.75)
    model.advance(10.25)
    assert len(model.heard) == 2000
    model.advance(11.5)
    assert bytes(model.heard) == bytes(range(200)) * 40
    assert not model.playing
    assert model.heard_segments == [(10.0, 8000)]


def test_audio_is_heard_in_order_across_messages():
    model = TwilioPlayoutModel(SID)
    for n in range(5):
        model.receive_text(media(frame(n)), 0.0)
    model.advance(0.05)  # two and a half frames
    assert bytes(model.heard) == frame(0) + frame(1) + frame(2)[:80]
    model.advance(1.0)
    assert bytes(model.heard) == b"".join(frame(n) for n in range(5))


def test_time_must_not_go_backwards():
    model = TwilioPlayoutModel(SID, now=5.0)
    with pytest.raises(ValueError, match="backwards"):
        model.advance(4.0)


def test_mark_is_echoed_when_the_audio_before_it_has_played():
    model = TwilioPlayoutModel(SID)
    model.receive_text(media(bytes(8000)), 0.0)
    assert model.receive_text(mark("one-second"), 0.0) == []
    model.receive_text(media(bytes(800)), 0.0)
    assert model.receive_text(mark("later"), 0.0) == []
    assert model.pending_marks == ("one-second", "later")
    assert model.next_deadline() == pytest.approx(1.0)
    assert model.advance(0.999) == []
    assert model.advance(1.0) == ["one-second"]
    assert model.next_deadline() == pytest.approx(1.1)
    assert model.advance(2.0) == ["later"]
    assert model.marks_echoed == [(pytest.approx(1.0), "one-second"), (pytest.approx(1.1), "later")]
    assert model.next_deadline() is None


def test_next_deadline_is_reached_exactly_with_large_clock_values():
    start = 12_345_678.123456
    model = TwilioPlayoutModel(SID, now=start)
    model.receive_text(media(bytes(1234)), start)
    model.receive_text(mark("m"), start)
    deadline = model.next_deadline()
    assert model.advance(deadline) == ["m"]


def test_mark_with_empty_buffer_is_echoed_at_once():
    model = TwilioPlayoutModel(SID)
    assert model.receive_text(mark("idle"), 3.0) == ["idle"]
    model.receive_text(media(frame()), 3.0)
    model.advance(3.5)
    assert model.receive_text(mark("after-drain"), 3.5) == ["after-drain"]


def test_marks_passed_are_returned_by_the_next_receive():
    model = TwilioPlayoutModel(SID)
    model.receive_text(media(frame()), 0.0)
    model.receive_text(mark("m"), 0.0)
    assert model.receive_text(media(frame()), 0.5) == ["m"]


def test_clear_drops_audio_and_echoes_pending_marks_at_once():
    model = TwilioPlayoutModel(SID)
    model.receive_text(media(b"\x01" * 4000), 0.0)
    model.receive_text(mark("a"), 0.0)
    model.receive_text(media(b"\x02" * 4000), 0.0)
    model.receive_text(mark("b"), 0.0)
    echoes = model.receive_text(clear(), 0.25)
    assert echoes == ["a", "b"]
    assert model.marks_echoed == [(0.25, "a"), (0.25, "b")]
    assert model.clears == [0.25]
    assert len(model.heard) == 2000
    assert model.cleared_bytes == 6000
    assert model.buffered_bytes == 0 and not model.playing
    model.advance(5.0)
    assert bytes(model.heard) == b"\x01" * 2000  # cleared audio is never heard

    model.receive_text(media(b"\x03" * 160), 5.0)
    model.advance(6.0)
    assert bytes(model.heard) == b"\x01" * 2000 + b"\x03" * 160
    assert model.heard_segments == [(0.0, 2000), (5.0, 160)]
    assert model.underruns == 0


def test_clear_echoes_only_marks_not_yet_passed():
    model = TwilioPlayoutModel(SID)
    model.receive_text(media(frame()), 0.0)
    model.receive_text(mark("played"), 0.0)
    model.receive_text(media(bytes(8000)), 0.0)
    model.receive_text(mark("pending"), 0.0)
    assert model.receive_text(clear(), 0.5) == ["played", "pending"]
    assert model.marks_echoed == [(pytest.approx(0.02), "played"), (0.5, "pending")]


def test_clear_with_empty_buffer():
    model = TwilioPlayoutModel(SID)
    assert model.receive_text(clear(), 1.0) == []
    assert model.clears == [1.0]
    assert model.violations == []


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '{"event": "media"}',
        '{"event": "play", "streamSid": "%s"}' % SID,
        '{"streamSid": "%s"}' % SID,
        # media
        json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "AAAA"},
                    "sequenceNumber": "1"}),
        json.dumps({"event": "media", "media": {"payload": "AAAA"}}),
        json.dumps({"event": "media", "streamSid": "MZother", "media": {"payload": "AAAA"}}),
        json.dumps({"event": "media", "streamSid": SID, "media": "AAAA"}),
        json.dumps({"event": "media", "streamSid": SID, "media": {}}),
        json.dumps({"event": "media", "streamSid": SID,
                    "media": {"payload": "AAAA", "track": "outbound"}}),
        json.dumps({"event": "media", "streamSid": SID, "media": {"payload": 1234}}),
        json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "!!!!"}}),
        json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "AAA"}}),
        # mark
        json.dumps({"event": "mark", "streamSid": SID}),
        json.dumps({"event": "mark", "streamSid": SID, "mark": "m"}),
        json.dumps({"event": "mark", "streamSid": SID, "mark": {}}),
        json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": None}}),
        json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "m", "extra": 1}}),
        json.dumps({"event": "mark", "streamSid": None, "mark": {"name": "m"}}),
        # clear
        json.dumps({"event": "clear"}),
        json.dumps({"event": "clear", "streamSid": SID, "clear": {}}),
        json.dumps({"event": "clear", "streamSid": "MZother"}),
    ],
)
def test_malformed_messages_are_31951_and_dropped(text):
    model = TwilioPlayoutModel(SID)
    model.receive_text(media(frame()), 0.0)
    model.receive_text(mark("kept"), 0.0)
    assert model.receive_text(text, 0.0) == []
    assert [code for code, _ in model.violations] == ["31951"]
    assert model.buffered_bytes == 160
    assert model.pending_marks == ("kept",)
    assert model.clears == []
    assert len(model.arrivals) == 1


def test_binary_frames_are_31950_and_dropped():
    model = TwilioPlayoutModel(SID)
    model.receive_bytes(frame(), 0.0)
    assert model.violations == [
        ("31950", "binary frame of 160 bytes; Twilio accepts only JSON text frames")]
    assert model.buffered_bytes == 0 and model.arrivals == []


def test_ten_minute_cap_drops_excess_audio():
    model = TwilioPlayoutModel(SID)
    ten_minutes = 600 * 8000
    model.receive_text(media(bytes(ten_minutes - 100)), 0.0)
    model.receive_text(media(b"\x01" * 160), 0.0)
    model.receive_text(media(b"\x02" * 160), 0.0)
    assert model.buffered_bytes == ten_minutes
    assert model.dropped_bytes == 60 + 160
    assert [code for code, _ in model.violations] == ["31931"]  # once per overflow episode
    model.advance(1.0)  # 8000 bytes of room
    model.receive_text(media(b"\x03" * 160), 1.0)
    assert model.buffered_bytes == ten_minutes - 8000 + 160
    model.advance(700.0)
    assert bytes(model.heard[-260:]) == b"\x01" * 100 + b"\x03" * 160


def test_underrun_when_the_buffer_runs_dry_mid_utterance():
    model = TwilioPlayoutModel(SID)
    model.receive_text(media(frame()), 0.0)
    model.receive_text(media(frame()), 0.0405)  # ran dry at 0.020: a 20.5 ms hole
    assert model.underruns == 1
    assert model.underrun_gaps == [(pytest.approx(0.020), pytest.approx(0.0205))]
    model.advance(0.1)
    assert model.heard_segments == [(0.0, 160), (0.0405, 160)]


def test_no_underrun_within_tolerance_or_while_buffered():
    model = TwilioPlayoutModel(SID)
    model.receive_text(media(frame()), 0.0)
    model.receive_text(media(frame()), 0.0205)  # 0.5 ms after running dry
    model.receive_text(media(frame()), 0.03)  # arrives while the previous frame plays
    assert model.underruns == 0


def test_no_underrun_across_a_mark_or_clear():
    model = TwilioPlayoutModel(SID)
    model.receive_text(media(frame()), 0.0)
    model.receive_text(mark("end-of-utterance"), 0.0)
    model.receive_text(media(frame()), 2.0)
    model.receive_text(media(bytes(800)), 2.0)
    model.receive_text(clear(), 2.05)
    model.receive_text(media(frame()), 3.0)
    assert model.underruns == 0
    assert model.utterance_starts == [0, 1, 3]
    model.receive_text(media(frame()), 4.0)
    assert model.underruns == 1


def test_close_discards_buffered_audio_and_pending_marks():
    model = TwilioPlayoutModel(SID)
    model.receive_text(media(bytes(8000)), 0.0)
    model.receive_text(mark("goodbye"), 0.0)
    model.close(0.5)
    assert len(model.heard) == 4000
    assert model.discarded_at_close_bytes == 4000
    assert model.marks_echoed == []
    assert model.receive_text(media(frame()), 1.0) == []
    assert model.advance(2.0) == []
    assert len(model.heard) == 4000


def _result(frames, starts):
    return TwilioCallResult(call_sid="CA", stream_sid=SID, frames=frames, utterance_starts=starts)


def test_frame_timing_is_lateness_against_real_time_per_utterance():
    frames = [(10.0, frame()), (10.02, frame()), (10.05, frame()), (10.06, frame())]  # 10 ms late
    frames += [(20.0, frame()), (20.0, frame()), (20.0, frame())]  # a new utterance, sent early
    timing = _result(frames, [0, 4]).frame_timing()
    assert timing == FrameTiming(count=7, p50=0.0, p99=pytest.approx(0.01), max=pytest.approx(0.01))
    assert _result([], []).frame_timing() is None


def test_result_helpers():
    result = TwilioCallResult(
        call_sid="CA",
        stream_sid=SID,
        start_sent_at=1.0,
        first_media_at=1.25,
        heard=b"\x01" * 160 + b"\x02" * 80,
        heard_segments=[(5.0, 160), (5.04, 80)],
    )
    assert result.first_audio_latency == pytest.approx(0.25)
    assert result.heard_seconds == pytest.approx(0.03)
    assert result.heard_with_silence() == b"\x01" * 160 + b"\xff" * 160 + b"\x02" * 80


def test_frame_timing_starts_a_queued_utterance_when_the_previous_one_has_played():
    """An utterance sent ahead, behind one still playing, is not late for arriving early."""
    frame = b"\xff" * 160
    first = [(0.02 * i, frame) for i in range(10)]  # plays 0.0 .. 0.2
    # the next utterance's first frame arrives 100 ms early, the rest just in time
    second = [(0.1, frame)] + [(0.2 + 0.02 * i - 0.06, frame) for i in range(1, 10)]
    result = TwilioCallResult("CA1", "MZ1", frames=first + second, utterance_starts=[0, 10])
    assert result.frame_timing().max == 0.0
    # 50 ms of delay eats into the 60 ms lead: still on time
    gap = second[:5] + [(t + 0.05, f) for t, f in second[5:]]
    timing = TwilioCallResult("CA1", "MZ1", frames=first + gap,
                              utterance_starts=[0, 10]).frame_timing()
    assert timing.max == 0.0
    # 100 ms of delay is 40 ms past the moment the caller needed the frame
    late = second[:5] + [(t + 0.1, f) for t, f in second[5:]]
    timing = TwilioCallResult("CA1", "MZ1", frames=first + late,
                              utterance_starts=[0, 10]).frame_timing()
    assert abs(timing.max - 0.04) < 1e-9
