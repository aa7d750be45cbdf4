"""The playout queue on a fake timeline (pump(now) is driven by the test, not a timer)."""

from gateway.core.playout import FRAME_SECONDS, Cue, MediaClock, Playout
from gateway.metrics import Metrics


def make_playout(lead=0.08, backlog=lambda: 0, **options):
    sent = []
    writes = []

    def write(messages):
        writes.append(len(messages))
        sent.extend(messages)

    clock = MediaClock(Metrics())
    errors = []
    playout = Playout(clock, write, backlog, lambda frame: frame, lead=lead, carrier="twilio",
                      on_error=errors.append, **options)
    playout.writes = writes
    return playout, clock, sent, errors


def test_frames_leave_only_within_the_lead_of_their_play_time():
    playout, clock, sent, _ = make_playout(lead=0.08)
    playout.begin_utterance()
    for i in range(20):
        playout.enqueue(f"f{i}")
    assert clock.active_count == 1
    playout.pump(100.0)
    # play times 100.00 .. 100.08 are within the lead: five frames, not the whole queue
    assert sent == ["f0", "f1", "f2", "f3", "f4"]
    assert playout.writes == [5]  # everything due in a tick leaves in one write
    playout.pump(100.0 + FRAME_SECONDS)
    assert sent[-1] == "f5" and len(sent) == 6
    # a late tick (60 ms) releases everything due by then, no more
    playout.pump(100.0 + 4 * FRAME_SECONDS)
    assert len(sent) == 9
    assert playout.frames_sent == 9


def test_mark_follows_the_last_frame_at_once_and_the_queue_deactivates():
    playout, clock, sent, _ = make_playout(lead=0.04)
    reached = []
    playout.begin_utterance()
    for i in range(3):
        playout.enqueue(f"f{i}")
    playout.enqueue(Cue("mark", reached.append))
    playout.end_utterance()
    playout.pump(10.0)
    assert sent == ["f0", "f1", "f2", "mark"]
    assert playout.writes == [4]
    assert reached == [10.0]
    assert clock.active_count == 0


def test_underrun_counted_once_mid_utterance_and_timeline_rebased():
    playout, _, sent, _ = make_playout(lead=0.02)
    playout.begin_utterance()
    playout.pump(5.0)  # waiting for first audio is not an underrun
    assert playout.underruns == 0
    playout.enqueue("a")
    playout.enqueue("b")
    playout.pump(5.0)
    assert sent == ["a", "b"]
    playout.pump(5.1)  # the caller has heard a and b; nothing more arrived: a hole
    playout.pump(5.2)
    assert playout.underruns == 1
    playout.enqueue("c")
    playout.pump(5.3)
    assert sent[-1] == "c"
    assert abs(playout.next_play_time - (5.3 + FRAME_SECONDS)) < 1e-9  # rebased, no catch-up burst
    playout.end_utterance()
    playout.pump(6.0)
    assert playout.underruns == 1  # end of an utterance is not an underrun


def test_slow_socket_is_skipped_not_waited_for():
    backlog = [10 ** 6]
    playout, _, sent, _ = make_playout(backlog=lambda: backlog[0])
    playout.enqueue("x")
    playout.pump(1.0)
    assert sent == []
    backlog[0] = 0
    playout.pump(1.02)
    assert sent == ["x"]


def test_clear_drops_frames_and_returns_unreached_cues():
    playout, _, sent, _ = make_playout(lead=0.02)
    playout.begin_utterance()
    for i in range(10):
        playout.enqueue(f"f{i}")
    cue = Cue("m", lambda now: None)
    playout.enqueue(cue)
    playout.pump(1.0)
    assert playout.clear() == [cue]
    playout.pump(2.0)
    assert "m" not in sent and len(sent) == 2


def test_a_failing_socket_closes_only_this_playout():
    clock = MediaClock(Metrics())
    errors = []

    def broken(messages):
        raise ConnectionResetError("gone")

    playout = Playout(clock, broken, lambda: 0, lambda f: f, lead=0.1, carrier="twilio",
                      on_error=errors.append)
    playout.enqueue("x")
    playout.pump(1.0)
    assert playout.closed and isinstance(errors[0], ConnectionResetError)
    assert clock.active_count == 0


def test_counters_reach_prometheus_once_per_tick():
    playout, clock, _sent, _ = make_playout(lead=0.1)
    for i in range(6):
        playout.enqueue(f"f{i}")
    playout.pump(1.0)
    assert clock.metrics.frames_sent.labels("twilio")._value.get() == 0
    clock.flush_counters()
    assert clock.metrics.frames_sent.labels("twilio")._value.get() == 6


def test_frames_per_write_pairs_frames_without_letting_the_carrier_run_dry():
    sent, writes = [], []

    def write(messages):
        writes.append(len(messages))
        sent.extend(messages)

    clock = MediaClock(Metrics())
    playout = Playout(clock, write, lambda: 0, lambda f: f, lead=0.08, carrier="twilio",
                      on_error=None, frames_per_write=2)
    playout.begin_utterance()
    for i in range(40):
        playout.enqueue(f"f{i}")
    t = 50.0
    playout.pump(t)  # the first frames leave at once (no waiting to start)
    assert writes == [5]
    for tick in range(1, 21):
        playout.pump(t + tick * 0.02)
        # never less than lead - 20 ms of audio ahead of the carrier's playout
        assert playout.next_play_time - (t + tick * 0.02) >= 0.06 - 1e-9
    assert set(writes[1:]) == {2} and len(writes) == 11


def test_with_no_lead_each_frame_leaves_on_its_own_tick_never_in_a_burst():
    """AudioSocket cannot buffer: a frame may leave only in the tick of its play time."""
    playout, _, sent, _ = make_playout(lead=0.0)
    playout.begin_utterance()
    for i in range(10):
        playout.enqueue(f"f{i}")
    playout.end_utterance()
    per_tick = []
    for tick in range(12):
        before = len(sent)
        playout.pump(50.0 + tick * FRAME_SECONDS)
        per_tick.append(len(sent) - before)
    assert per_tick == [1] * 10 + [0, 0]
    assert playout.writes == [1] * 10


def test_chunks_longer_than_20_ms_advance_the_timeline_by_their_length():
    """Exotel takes at least 3.2 KB per message: a 200 ms chunk occupies ten ticks."""
    playout, _clock, sent, _ = make_playout(lead=0.1, frame_seconds=0.2)
    playout.begin_utterance()
    for i in range(3):
        playout.enqueue(f"c{i}")
    playout.end_utterance()
    playout.pump(10.0)
    assert sent == ["c0"]  # c1 plays at 10.2, beyond the 100 ms lead (and half a tick)
    playout.pump(10.08)
    assert sent == ["c0"]
    playout.pump(10.09)
    assert sent == ["c0", "c1"]
    assert playout.frames_sent == 20  # counted in 20 ms frames


def test_flow_control_holds_frames_and_resumes_from_now():
    playout, _clock, sent, _ = make_playout(lead=0.04)
    playout.begin_utterance()
    for i in range(10):
        playout.enqueue(f"f{i}")
    playout.pump(1.0)
    assert len(sent) == 3
    playout.pause(True)
    playout.pump(1.5)
    playout.pump(2.0)
    assert len(sent) == 3 and playout.underruns == 0
    playout.pause(False)
    playout.pump(2.0)
    assert sent[3:] == ["f3", "f4", "f5"]  # the timeline restarts at 2.0, not 1.06


def test_with_no_lead_ticks_late_by_varying_amounts_still_send_one_frame_each():
    """Rebasing on a late tick must not make the next, less late tick skip its frame."""
    playout, _, sent, _ = make_playout(lead=0.0)
    playout.begin_utterance()
    for i in range(8):
        playout.enqueue(f"f{i}")
    playout.end_utterance()
    lateness = [0.008, 0.001, 0.006, 0.0, 0.009, 0.002, 0.0, 0.004]
    per_tick = []
    for tick, late in enumerate(lateness):
        before = len(sent)
        playout.pump(7.0 + tick * FRAME_SECONDS + late)
        per_tick.append(len(sent) - before)
    assert per_tick == [1] * 8
