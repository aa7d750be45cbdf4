"""Failover's parts, without a network: the route's configuration, the order providers are
tried in, the ledger of text segments, the playout's take-back, the default session's
segment reports, and the word tags the fakes voice (end to end: tests/e2e/test_failover.py).
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest
from telcodecs import Transcoder, ulaw_decode

from gateway.config import ConfigError, parse_config
from gateway.core.failover import SegmentLedger, failover_reason, provider_plan
from gateway.core.playout import Cue, Playout
from gateway.core.speech import Utterance
from gateway.tts.providers.fake_voice import heard_tones, tagged_pcm, text_tones
from gateway.tts.base import AudioChunk, TtsError, TtsSession
from tests.conftest import base_config


def with_providers(**route):
    data = base_config()
    data["providers"]["second"] = {"type": "fake"}
    data["providers"]["third"] = {"type": "fake", "first_audio_ms": 10}
    data["routes"]["demo"].update(route)
    return data


def problems_of(data):
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    return info.value.problems


# -- configuration -------------------------------------------------------------------------


def test_a_route_lists_its_fallbacks_in_order():
    route = parse_config(with_providers(fallback=["third", "second"]), {}).routes["demo"]
    assert route.provider == "local" and route.fallback == ("third", "second")
    assert route.providers == ("local", "third", "second")
    assert route.first_audio_timeout_ms == 2000  # the default once there is a fallback


def test_a_single_fallback_may_be_a_name_and_the_timeout_is_configurable():
    route = parse_config(with_providers(fallback="second", first_audio_timeout_ms=750),
                         {}).routes["demo"]
    assert route.fallback == ("second",) and route.first_audio_timeout_ms == 750


def test_a_route_without_fallback_is_as_before():
    route = parse_config(base_config(), {}).routes["demo"]
    assert route.fallback == () and route.providers == ("local",)
    assert route.first_audio_timeout_ms is None  # no limit unless asked for


@pytest.mark.parametrize("route, expected", [
    ({"fallback": ["nope"]}, "routes.demo.fallback: 'nope' is not a configured provider"),
    ({"fallback": ["second", "second"]}, "routes.demo.fallback: 'second' is listed twice"),
    ({"fallback": ["local"]}, "routes.demo.fallback: 'local' is listed twice"),
    ({"fallback": []}, "routes.demo.fallback: expected a list of provider names"),
    ({"fallback": {"a": 1}}, "routes.demo.fallback: expected a list of provider names"),
    ({"provider": ["local", "second"]},
     "routes.demo.provider: one provider name, got a list; put the providers to fail over "
     "to in routes.demo.fallback"),
    ({"first_audio_timeout_ms": 5}, "routes.demo.first_audio_timeout_ms: 5 is outside"),
    ({"first_audio_timeout_ms": "soon"},
     "routes.demo.first_audio_timeout_ms: expected int"),
])
def test_failover_settings_are_validated_naming_the_key(route, expected):
    problems = problems_of(with_providers(**route))
    assert len(problems) == 1 and problems[0].startswith(expected), problems


# -- the order of providers ----------------------------------------------------------------


def route_of(**route):
    return parse_config(with_providers(**route), {}).routes["demo"]


def test_the_plan_follows_the_route_and_gives_the_voice_to_its_own_provider_only():
    route = route_of(fallback=["second", "third"], voice="en_US-joe-medium")
    utt = Utterance.whole("Hi.")
    assert provider_plan(route, utt, "local") == [
        ("local", "en_US-joe-medium"), ("second", None), ("third", None)]
    # after a failover the call starts where it went, then wraps around
    assert provider_plan(route, utt, "second") == [
        ("second", None), ("third", None), ("local", "en_US-joe-medium")]


def test_a_bot_chosen_provider_goes_first_then_the_routes():
    route = route_of(fallback=["second"])
    utt = Utterance.whole("Hi.", provider="third", voice="v1")
    assert provider_plan(route, utt, "second") == [
        ("third", "v1"), ("local", None), ("second", None)]
    # without fallbacks the route has no failover, whoever chose the provider
    assert provider_plan(route_of(), utt, "local") == [("third", "v1")]


def test_failover_reasons_are_few():
    kinds = {"connect": "connect", "handshake": "connect", "pool_exhausted": "connect",
             "connection_closed": "closed", "no_audio": "timeout",
             "synthesis_failed": "error", "server_error": "error", "rate_limited": "error"}
    for kind, reason in kinds.items():
        assert failover_reason(TtsError(kind, "x")) == reason


# -- the ledger of segments ----------------------------------------------------------------


async def collect(feed, limit=None):
    out = []
    async for segment in feed:
        out.append(segment)
        if limit and len(out) == limit:
            break
    return out


async def test_a_whole_text_is_cut_into_sentences_and_a_feed_starts_at_the_first_not_done():
    utt = Utterance.whole("One two. Three four! Five?")
    ledger = SegmentLedger(utt, by_sentence=True)
    handed = []
    assert await collect(ledger.feed(lambda: handed.append(1))) == [
        "One two.", "Three four!", "Five?"]
    assert len(handed) == 3 and not ledger.complete
    ledger.completed(0)(1)  # the first provider finished one sentence
    assert await collect(ledger.feed(lambda: None)) == ["Three four!", "Five?"]
    ledger.completed(1)(2)
    assert ledger.done == 3 and ledger.complete


async def test_without_failover_the_segments_are_the_utterances():
    utt = Utterance.whole("One two. Three four!")
    ledger = SegmentLedger(utt, by_sentence=False)
    assert await collect(ledger.feed(lambda: None)) == ["One two. Three four!"]


async def test_streamed_text_is_never_lost_by_an_abandoned_feed():
    utt = Utterance(source="stream")
    ledger = SegmentLedger(utt, by_sentence=True)
    utt.append("First sentence. Second")
    first = ledger.feed(lambda: None)
    assert await first.__anext__() == "First sentence."
    waiting = asyncio.ensure_future(first.__anext__())  # the provider waits for more text
    await asyncio.sleep(0.01)
    waiting.cancel()  # ... and fails meanwhile
    with pytest.raises(asyncio.CancelledError):
        await waiting
    utt.append(" one. Third")
    utt.close()
    ledger.completed(0)(1)
    assert await collect(ledger.feed(lambda: None)) == ["Second one.", "Third"]
    assert ledger.texts == ["First sentence.", "Second one.", "Third"]


# -- the playout gives back what it has not sent ----------------------------------------------


class _Clock:
    def activate(self, playout):
        pass

    def deactivate(self, playout):
        pass


def test_drop_tail_takes_back_the_last_entries_and_returns_their_cues():
    playout = Playout(_Clock(), lambda messages: None, lambda: 0, lambda frame: frame,
                      lead=0.1, carrier="twilio", on_error=lambda exc: None)
    cue = Cue(None, lambda now: None)
    for item in (b"a", b"b", cue, b"c", b"d"):
        playout.enqueue(item)
    assert playout.drop_tail(3) == [cue]
    assert list(playout.queue) == [b"a", b"b"]
    assert playout.drop_tail(10) == [] and not playout.queue


# -- the default session reports each segment ------------------------------------------------


class _Session(TtsSession):
    async def synthesize(self, text, voice=None):
        for word in text.split():
            yield AudioChunk(word.encode(), "mulaw", 8000)


async def test_the_default_stream_reports_each_segment_after_its_audio():
    async def segments():
        for text in ("a b", "c", "d e f"):
            yield text

    events = []
    stream = _Session().stream(segments(), on_segments_done=lambda n: events.append(n))
    async with aclosing(stream) as chunks:
        async for chunk in chunks:
            events.append(chunk.data.decode())
    assert events == ["a", "b", 1, "c", 2, "d", "e", "f", 3]


# -- word tags ---------------------------------------------------------------------------------


def test_word_tags_survive_resampling_and_g711():
    text = "Please hold while we check your order."
    transcoder = Transcoder("pcm_s16le", 24000, "mulaw", 8000)
    pcm = tagged_pcm(text, len(text) / 15, 24000)
    heard = ulaw_decode(transcoder.feed(pcm) + transcoder.flush())
    assert heard_tones(heard) == text_tones(text)
    assert len(text_tones(text)) == 7
