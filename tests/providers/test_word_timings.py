"""Word timings: each provider's own messages (Cartesia's ``timestamps``, ElevenLabs'
character alignment, Inworld's ``wordAlignment``, Smallest's ``word_timestamp``, Together's
``word_timestamps``) read into turn-relative word timings, and the utterance's heard log
that turns sentence ends and word timings into ``heard_text``."""

import base64
import json
from contextlib import aclosing

from gateway.carriers.events import MediaFormat
from gateway.http.loopback import serve_on_loopback
from gateway.metrics import Metrics
from gateway.tts.providers.smallest import fake as smallest_fake
from gateway.core.speech import HeardLog
from gateway.tts.providers.cartesia.protocol import CartesiaProtocol
from gateway.tts.providers.elevenlabs.protocol import ElevenLabsProtocol
from gateway.tts.providers.elevenlabs.protocol import connect_params as eleven_connect
from gateway.tts.providers.events import ProviderAudio, ProviderWords
from gateway.tts.providers.inworld.protocol import InworldProtocol
from gateway.tts.providers.smallest.protocol import SmallestProtocol
from gateway.tts.providers.together.protocol import TogetherProtocol
from gateway.tts.providers.together.protocol import connect_params as together_connect
from gateway.tts.providers.driver import RemoteSettings
from gateway.tts.remote.pool import PoolSettings
from gateway.tts.remote.session import RemoteProvider

VOICE = "a0e99841-438c-4a64-b679-ae501e7d6091"


def timestamps(sid, words, start, end) -> str:
    return json.dumps({"type": "timestamps", "context_id": sid, "status_code": 206,
                       "word_timestamps": {"words": words, "start": start, "end": end}})


def test_cartesia_asks_for_timestamps_and_reads_them_from_the_turns_start():
    proto = CartesiaProtocol(voice=VOICE, word_timestamps=True)
    proto.begin("t1")
    first = json.loads(proto.send("t1", "Hello there.")[0])
    assert first["add_timestamps"] is True
    [event] = proto.receive(timestamps("t1", ["Hello", "there."], [0.0, 0.4], [0.35, 0.8]))
    assert type(event) is ProviderWords and event.context_id == "t1"
    assert [(w.text, w.start_s, w.end_s) for w in event.words] == [
        ("Hello", 0.0, 0.35), ("there.", 0.4, 0.8)]


def test_cartesia_timestamps_that_do_not_make_sense_are_skipped_not_fatal():
    proto = CartesiaProtocol(voice=VOICE, word_timestamps=True)
    proto.begin("t1")
    proto.send("t1", "Hello there.")
    assert proto.receive(timestamps("t1", "Hello", [0], [1])) == []
    [event] = proto.receive(timestamps("t1", ["a", 5, "b" * 500, "c"],
                                       [0, 0, 0, -1], [1, 1, float("nan"), 2]))
    assert [w.text for w in event.words] == ["a"]
    assert proto.receive(timestamps("elsewhere", ["a"], [0], [1])) == []  # no such turn
    assert CartesiaProtocol(voice=VOICE).begin("t2") == []  # off: not asked for


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
    assert log.result(4.0, by_marks=False) == (
        4.0, "Your order shipped. It comes Friday. The driver")
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


# ---- ElevenLabs: per-chunk character alignment ---------------------------------------------


def eleven_chunk(cid, audio: bytes, chars, starts, durations, key="charDurationsMs"):
    alignment = {"chars": chars, "charStartTimesMs": starts, key: durations}
    return json.dumps({"audio": base64.b64encode(audio).decode(), "isFinal": False,
                       "alignment": alignment, "normalizedAlignment": alignment,
                       "contextId": cid})


def words_of(events):
    return [(w.text, round(w.start_s, 3), round(w.end_s, 3))
            for e in events if type(e) is ProviderWords for w in e.words]


def test_elevenlabs_joins_characters_into_words_timed_from_the_contexts_start():
    proto = ElevenLabsProtocol(output_format="ulaw_8000", word_timestamps=True)
    proto.begin("c1")
    # 0.5 s of μ-law per chunk; each chunk's times count from its own start
    first = proto.receive(eleven_chunk("c1", b"\xff" * 4000, list("Hi there"),
                                       [0, 100, 200, 250, 300, 350, 400, 450],
                                       [100, 100, 50, 50, 50, 50, 50, 50]))
    assert type(first[0]) is ProviderAudio
    assert words_of(first) == [("Hi", 0.0, 0.2), ("there", 0.25, 0.5)]
    second = proto.receive(eleven_chunk("c1", b"\xff" * 4000, list(" now."), [0, 10, 110, 210, 310],
                                        [10, 100, 100, 100, 50], key="charsDurationsMs"))
    assert words_of(second) == [("now.", 0.51, 0.86)]


def test_elevenlabs_alignment_that_does_not_make_sense_is_skipped_and_bounded():
    proto = ElevenLabsProtocol(output_format="ulaw_8000", word_timestamps=True)
    proto.begin("c1")
    audio = b"\xff" * 800
    assert words_of(proto.receive(eleven_chunk("c1", audio, "abc", [0], [1]))) == []
    events = proto.receive(eleven_chunk("c1", audio, ["a", 5, "bb" * 9, "c", " ", "d"],
                                        [0, 0, 0, -1, 0, 10], [1, 1, 1, 1, float("nan"), 5]))
    assert words_of(events) == [("a", 0.1, 0.101), ("d", 0.11, 0.115)]
    many = proto.receive(eleven_chunk("c1", audio, ["x", " "] * 5000, [0] * 10000, [1] * 10000))
    assert len(words_of(many)) == 1000
    long = proto.receive(eleven_chunk("c1", audio, ["y"] * 5000, [0] * 5000, [1] * 5000))
    assert [len(w) for w, _, _ in words_of(long)] == [64]
    # off: the alignment is not read; a cancelled context's words are dropped with its audio
    quiet = ElevenLabsProtocol(output_format="ulaw_8000")
    quiet.begin("c1")
    assert words_of(quiet.receive(eleven_chunk("c1", audio, ["a"], [0], [1]))) == []
    proto.cancel_message("c1")
    assert words_of(proto.receive(eleven_chunk("c1", audio, ["a"], [0], [1]))) == []


def test_elevenlabs_asks_for_alignment_in_step_with_its_audio():
    url, _ = eleven_connect("k", "v", sync_alignment=True)
    assert "sync_alignment=true" in url
    assert "sync_alignment" not in eleven_connect("k", "v")[0]


# ---- Inworld: timestampType WORD, restarting with each generation ---------------------------


def inworld_chunk(cid, audio: bytes | None, words=None, starts=None, ends=None):
    chunk: dict = {}
    if audio is not None:
        chunk["audioContent"] = base64.b64encode(audio).decode()
    if words is not None:
        chunk["timestampInfo"] = {"wordAlignment": {
            "words": words, "wordStartTimeSeconds": starts, "wordEndTimeSeconds": ends}}
    return json.dumps({"result": {"contextId": cid, "audioChunk": chunk,
                                  "status": {"code": 0, "message": "", "details": []}}})


def inworld_flushed(cid):
    return json.dumps({"result": {"contextId": cid, "flushCompleted": {},
                                  "status": {"code": 0, "message": "", "details": []}}})


def test_inworld_asks_for_word_timestamps_and_counts_each_generation_from_its_start():
    proto = InworldProtocol(voice="Ashley", word_timestamps=True)
    [create] = proto.begin("c1", encoding="MULAW", sample_rate=8000)
    assert json.loads(create)["create"]["timestampType"] == "WORD"
    proto.send("c1", "Hi there. ")
    first = proto.receive(inworld_chunk("c1", b"\xff" * 8000, ["Hi", " ", "there."],
                                        [0.0, 0.3, 0.35], [0.3, 0.35, 0.9]))
    assert words_of(first) == [("Hi", 0.0, 0.3), ("there.", 0.35, 0.9)]
    assert proto.receive(inworld_flushed("c1")) == []
    proto.send("c1", "Bye now. ")
    # the next generation's timestamps start at 0 again: after the first one's 1 s of audio
    # (ASYNC transport: a chunk of timestamps only)
    proto.receive(inworld_chunk("c1", b"\xff" * 4000))
    later = proto.receive(inworld_chunk("c1", None, ["Bye", "now."], [0.0, 0.25], [0.2, 0.5]))
    assert words_of(later) == [("Bye", 1.0, 1.2), ("now.", 1.25, 1.5)]


def test_inworld_timestamps_that_do_not_make_sense_are_skipped_not_fatal():
    proto = InworldProtocol(voice="Ashley", word_timestamps=True)
    proto.begin("c1", encoding="MULAW", sample_rate=8000)
    assert words_of(proto.receive(inworld_chunk("c1", b"\xff", "Hi", [0], [1]))) == []
    events = proto.receive(inworld_chunk("c1", b"\xff", ["a", None, "b", "c", "d"],
                                         [0, 0, "1", 0.5, 2], [1, 1, 2, 0.4, 1e9]))
    assert words_of(events) == [("a", 0.0, 1.0)]
    many = proto.receive(inworld_chunk("c1", None, ["w" * 500] * 3000, [0] * 3000, [1] * 3000))
    assert len(words_of(many)) == 1000 and all(len(w) == 64 for w, _, _ in words_of(many))
    assert words_of(proto.receive(inworld_chunk("elsewhere", None, ["a"], [0], [1]))) == []
    # off: not asked for, not read
    quiet = InworldProtocol(voice="Ashley")
    [create] = quiet.begin("c1", encoding="MULAW", sample_rate=8000)
    assert "timestampType" not in json.loads(create)["create"]
    assert words_of(quiet.receive(inworld_chunk("c1", b"\xff", ["a"], [0], [1]))) == []


# ---- Smallest: a word_timestamp frame per word, timed from its request ---------------------


def smallest_word(rid, word, start, end, **data):
    return json.dumps({"session_id": "s", "request_id": "task_1", "external_request_id": rid,
                       "status": "word_timestamp",
                       "data": {"id": 0, "word": word, "start": start, "end": end, **data}})


def test_smallest_asks_for_word_timestamps_and_reads_them_from_the_requests_start():
    proto = SmallestProtocol("meher", word_timestamps=True)
    [request] = proto.send("r1", "Hello there.")
    assert json.loads(request)["word_timestamps"] is True
    assert words_of(proto.receive(smallest_word("r1", "Hello", 0.0, 0.4))) == [
        ("Hello", 0.0, 0.4)]
    assert words_of(proto.receive(smallest_word("r1", "$100", 1.12, 1.92))) == [
        ("$100", 1.12, 1.92)]


def test_smallest_word_frames_that_do_not_make_sense_are_skipped_not_fatal():
    proto = SmallestProtocol("meher", word_timestamps=True)
    proto.send("r1", "Hello there.")
    for frame in (smallest_word("r1", 5, 0, 1), smallest_word("r1", "a", -1, 1),
                  smallest_word("r1", "a", 2, 1), smallest_word("r1", "a", 0, float("inf")),
                  smallest_word("r1", " ", 0, 1), smallest_word("other", "a", 0, 1),
                  json.dumps({"status": "word_timestamp", "data": ["a"]})):
        assert proto.receive(frame) == []
    [event] = proto.receive(smallest_word("r1", "w" * 10_000, 0, 1))
    assert event.words[0].text == "w" * 64
    proto.cancel("r1")
    assert proto.receive(smallest_word("r1", "late", 0, 1)) == []  # cut with its audio
    assert "word_timestamps" not in json.loads(SmallestProtocol("meher").send("r2", "Hi.")[0])


async def test_an_utterance_of_several_requests_times_each_ones_words_after_the_ones_before():
    """Smallest takes one request per segment (a turn each): its word timings count from
    that request's audio, so the session moves them past the audio of the requests before
    (else the second sentence's words would land inside the first one's audio)."""
    fake = smallest_fake.make_app(chars_per_second=20.0)
    runner, port = await serve_on_loopback(fake)
    provider = RemoteProvider(RemoteSettings(
        name="s", type="smallest", api_key="test-key", voice="meher",
        endpoint=f"ws://127.0.0.1:{port}/waves/v1/tts/live",
        options={"complete_backoff_ms": 50}), PoolSettings(min_idle=0, max=2))
    provider.use_metrics(Metrics())
    await provider.start()

    async def segments():
        yield "Hello there."
        yield "Bye now."

    try:
        session = await provider.open_session(MediaFormat("mulaw", 8000))
        audio, words = 0, []
        async with aclosing(session.stream(segments())) as stream:
            async for chunk in stream:
                words += [(w.text, w.start_s, audio / 8000) for w in chunk.words]
                audio += len(chunk.data)
        await session.release()
    finally:
        await provider.close()
        await runner.cleanup()
    first_s = fake["log"][0]["bytes"] / 8000
    assert [w for w, _, _ in words] == ["Hello", "there", "Bye", "now"]
    assert words[2][1] >= first_s - 1e-6  # "Bye" starts after the first request's audio
    assert all(start <= heard_by + 0.2 for _, start, heard_by in words)  # and not late


# ---- Together: alignment=word -> conversation.item.word_timestamps, per item ---------------


def together_delta(cid, item, pcm: bytes):
    return json.dumps({"type": "conversation.item.audio_output.delta", "item_id": item,
                       "context_id": cid, "delta": base64.b64encode(pcm).decode()})


def together_words(cid, item, words, starts, ends):
    return json.dumps({"type": "conversation.item.word_timestamps", "item_id": item,
                       "context_id": cid, "words": words, "start_seconds": starts,
                       "end_seconds": ends})


def test_together_asks_for_word_alignment_and_times_each_item_from_its_start():
    url, _ = together_connect("k", alignment="word")
    assert "alignment=word" in url and "alignment" not in together_connect("k")[0]
    proto = TogetherProtocol(sample_rate=8000, word_timestamps=True)
    proto.begin("c1")
    proto.send("c1", "Hi there. Bye now.")
    proto.receive(together_delta("c1", "tts_1", bytes(16000)))  # 1 s
    assert words_of(proto.receive(together_words("c1", "tts_1", ["Hi", "there."],
                                                 [0.0, 0.3], [0.25, 0.9]))) == [
        ("Hi", 0.0, 0.25), ("there.", 0.3, 0.9)]
    proto.receive(together_delta("c1", "tts_2", bytes(8000)))  # the second item, at 1 s
    proto.receive(together_delta("c1", "tts_2", bytes(8000)))
    # (no context_id echoed: the item tells it)
    late = json.loads(together_words("c1", "tts_2", ["Bye", "now."], [0.0, 0.3], [0.25, 0.8]))
    del late["context_id"]
    assert words_of(proto.receive(json.dumps(late))) == [("Bye", 1.0, 1.25), ("now.", 1.3, 1.8)]


def test_together_word_timestamps_that_do_not_make_sense_are_skipped_not_fatal():
    proto = TogetherProtocol(sample_rate=8000, word_timestamps=True)
    proto.begin("c1")
    proto.send("c1", "Hi there.")
    proto.receive(together_delta("c1", "tts_1", bytes(800)))
    assert proto.receive(together_words("c1", "tts_1", "Hi", [0], [1])) == []
    assert proto.receive(json.dumps({"type": "conversation.item.word_timestamps"})) == []
    events = proto.receive(together_words("c1", "tts_1", ["a", "b", {}, "c"],
                                          [0, True, 0, 2], [1, 1, 1, 1]))
    assert words_of(events) == [("a", 0.0, 1.0)]
    many = proto.receive(together_words("c1", "tts_1", ["x"] * 5000, [0] * 5000, [1] * 5000))
    assert len(words_of(many)) == 1000
    quiet = TogetherProtocol(sample_rate=8000)
    quiet.begin("c1")
    quiet.send("c1", "Hi.")
    assert quiet.receive(together_words("c1", "tts_1", ["a"], [0], [1])) == []
    proto.cancel("c1")  # cut: its words go with its audio
    assert proto.receive(together_words("c1", "tts_1", ["a"], [0], [1])) == []
