"""Word timings: Cartesia's ``timestamps`` frames read into turn-relative word timings, and
the utterance's heard log that turns sentence ends and word timings into ``heard_text``."""

import json

from gateway.core.speech import HeardLog
from gateway.tts.providers.cartesia import CartesiaProtocol
from gateway.tts.providers.events import ProviderWords

VOICE = "a0e99841-438c-4a64-b679-ae501e7d6091"


def timestamps(sid, words, start, end) -> str:
    return json.dumps({"type": "timestamps", "context_id": sid, "status_code": 206,
                       "word_timestamps": {"words": words, "start": start, "end": end}})


def test_cartesia_asks_for_timestamps_and_reads_them_from_the_turns_start():
    proto = CartesiaProtocol(voice=VOICE, word_timestamps=True)
    proto.begin("t1")
    first = json.loads(proto.send_text("t1", "Hello there.")[0])
    assert first["add_timestamps"] is True
    [event] = proto.receive(timestamps("t1", ["Hello", "there."], [0.0, 0.4], [0.35, 0.8]))
    assert type(event) is ProviderWords and event.context_id == "t1"
    assert [(w.text, w.start_s, w.end_s) for w in event.words] == [
        ("Hello", 0.0, 0.35), ("there.", 0.4, 0.8)]


def test_cartesia_timestamps_that_do_not_make_sense_are_skipped_not_fatal():
    proto = CartesiaProtocol(voice=VOICE, word_timestamps=True)
    proto.begin("t1")
    proto.send_text("t1", "Hello there.")
    assert proto.receive(timestamps("t1", "Hello", [0], [1])) == []
    [event] = proto.receive(timestamps("t1", ["a", 5, "b" * 500, "c"],
                                       [0, 0, 0, -1], [1, 1, float("nan"), 2]))
    assert [w.text for w in event.words] == ["a"]
    assert proto.receive(timestamps("elsewhere", ["a"], [0], [1])) == []  # no such turn
    assert CartesiaProtocol(voice=VOICE).begin("t2") is None  # off: not asked for


def heard(ends, texts, words=(), marked=None):
    log = HeardLog()
    log.texts = list(texts)
    for i, end in enumerate(ends):
        log.segment_ended(i, end)
    if marked is not None:
        log.marked = list(marked)
    for end, word in words:
        log.add_word(end, word, 1000)
    return log


def test_heard_text_is_the_sentences_heard_out_then_the_words_that_played():
    texts = ["Your order shipped.", "It comes Friday.", "The driver calls first."]
    words = [(0.5, "Your"), (0.9, "order"), (1.4, "shipped."), (2.0, "It"), (2.4, "comes"),
             (3.0, "Friday."), (3.4, "The"), (3.9, "driver"), (4.3, "calls"), (5.0, "first.")]
    log = heard([1.5, 3.1, 5.2], texts, words)
    assert log.result(4.0, by_marks=False) == (4.0, "Your order shipped. It comes Friday. The driver")
    assert log.result(1.0, by_marks=False)[1] == "Your order"
    assert log.result(0.1, by_marks=False)[1] == ""
    # with marks, the marks say which sentences were heard; the clock is held between them
    marked = heard([1.5, 3.1, 5.2], texts, words, marked=[True, False, False])
    assert marked.result(4.0, by_marks=True) == (3.1, "Your order shipped. It comes Friday.")
    assert marked.result(0.2, by_marks=True)[0] == 1.5
    # no word timings: whole sentences only
    assert heard([1.5, 3.1], texts).result(4.0, by_marks=False)[1] == (
        "Your order shipped. It comes Friday.")


def test_heard_log_bounds_what_a_provider_sends():
    log = HeardLog()
    for n in range(10_000):
        log.add_word(n / 10, "w" * 1000, 100)
    assert len(log.words) < 200 and all(len(w) <= 64 for _, w in log.words)
