"""Failover between a route's providers, through a real gateway, over loopback.

Each route lists a primary provider's fake and a fallback's fake; the primary is made to
fail before its first audio (an error frame, a refused connection), in the middle of an
utterance (the socket cut after some audio), or by never answering. The fakes voice each
word as a tone that names it (``tag_words``, :mod:`gateway.tts.providers.fake_voice`), so the
tests decode what the caller heard, word by word, and check that every sentence was heard,
in order, with at most the sentence that was cut repeated; and that the failover metric
and the ``speech.failover`` event say what happened.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from telcodecs import ulaw_decode

from gateway.http.keys import CALLS, PROVIDERS
from gateway.http.loopback import serve_on_loopback
from gateway.tts.providers.cartesia import fake as cartesia
from gateway.tts.providers.elevenlabs import fake as elevenlabs
from gateway.tts.providers.smallest import fake as smallest
from gateway.tts.providers.fake_voice import heard_tones, text_tones
from gateway.carriers.twilio.sim import TwilioCallSim
from tests.conftest import RunningGateway, base_config, start_gateway
from tests.e2e.test_twilio_call import metric_value, open_control

KEY_ENV = {"FAKE_TTS_KEY": "test-key"}
#: kind -> (make_app, path, voice, provider options, seconds of audio per character)
FAKES = {
    "cartesia": (cartesia.make_app, cartesia.PATH, "a0e99841-438c-4a64-b679-ae501e7d6091",
                 {}, 1 / 30),
    "elevenlabs": (elevenlabs.make_app, elevenlabs.PATH, "21m00Tcm4TlvDq8ikWAM", {}, 1 / 30),
    "smallest": (smallest.make_app, "/waves/v1/tts/live", "meher",
                 {"complete_backoff_ms": 50}, 1 / 15),
}
#: the fakes speak twice as fast as their default where they can (shorter tests)
FAST = {"cartesia": {"chars_per_second": 30.0}, "elevenlabs": {"chars_per_second": 30.0},
        "smallest": {}}
SENTENCES = ["Your order shipped this morning.",
             "It should reach you by Friday evening.",
             "The driver will call before arriving."]
TEXT = " ".join(SENTENCES)


@dataclass
class Setup:
    gw: RunningGateway
    fakes: dict[str, web.Application] = field(default_factory=dict)

    def call(self, call_sid: str):
        return self.gw.app[CALLS][call_sid]


@pytest.fixture
async def failover():
    """``await failover({name: (kind, fake_profile, pool)}, route={...})`` -> Setup; the
    first name is the route's provider, the others (if any) its fallbacks, in order."""
    cleanups = []

    async def start(providers: dict[str, tuple[str, dict, dict]], **route) -> Setup:
        data = base_config()
        data["providers"] = {}
        fakes = {}
        for name, (kind, profile, pool) in providers.items():
            make_app, path, voice, options, _ = FAKES[kind]
            fake = make_app(**{"tag_words": True, **FAST[kind], **profile})
            runner, port = await serve_on_loopback(fake)
            cleanups.append(runner.cleanup)
            fakes[name] = fake
            data["providers"][name] = {
                "type": kind, "api_key_env": "FAKE_TTS_KEY", "voice": voice,
                "endpoint": f"ws://127.0.0.1:{port}{path}", "options": options,
                "pool": {"min_idle": 1, "max": 4, **pool},
            }
        names = list(providers)
        fallback = {"fallback": names[1:]} if names[1:] else {}
        data["routes"] = {"bot": {"provider": names[0], **fallback, **route}}
        data["default_route"] = "bot"
        gw = await start_gateway(data, KEY_ENV)
        cleanups.append(gw.runner.cleanup)
        cleanups.append(gw.session.close)
        return Setup(gw, fakes)

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


def heard_sentences(heard: list[int], sentences: list[str]) -> int | None:
    """Check that ``heard`` (word tones) is every sentence in order, with at most the
    beginning of one sentence heard once more right before the whole of it; return the
    index of that sentence, or None when nothing repeated."""
    tones = [text_tones(s) for s in sentences]
    assert len({tuple(t) for t in tones}) == len(tones), "test sentences must differ"

    def joined(parts):
        out = []
        for tone in (t for part in parts for t in part):
            if not out or out[-1] != tone:
                out.append(tone)
        return out

    if heard == joined(tones):
        return None
    for k in range(len(tones)):
        for cut in range(len(tones[k]) + 1):
            if heard == joined([*tones[:k], tones[k][:cut], *tones[k:]]):
                return k
    raise AssertionError(f"the caller heard {heard}, not the sentences {tones} in order "
                         "(at most one of them cut and repeated)")


def heard_by(sim) -> list[int]:
    return heard_tones(ulaw_decode(sim.result.heard))


async def speak(setup: Setup, call_sid: str, text: str) -> str:
    status, body = await setup.gw.post_json(f"/v1/calls/{call_sid}/speak", {"text": text})
    assert status == 202, body
    return body["speech_id"]


def logged_texts(fake) -> list[str]:
    return [entry["text"].strip() for entry in fake["log"]]


def sentence_bytes(kind: str, sentence: str) -> int:
    """μ-law bytes the fake produces for one sentence (8 kHz, one byte a sample)."""
    return int(max(0.2, len(sentence) * FAKES[kind][4]) * 8000)


@pytest.mark.parametrize("how", ["error_frame", "connect"])
async def test_a_provider_that_fails_before_audio_hands_the_utterance_over(failover, how):
    if how == "error_frame":  # an error frame for the first sentence, before any audio
        primary = ("cartesia", {"fail_on": "shipped"}, {})
    else:  # the provider refuses the connection (a wrong key: HTTP 401)
        primary = ("cartesia", {"api_key": "another-key"}, {"min_idle": 0})
    setup = await failover({"primary": primary, "backup": ("elevenlabs", {}, {})})
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await speak(setup, sim.call_sid, TEXT)
        event = await control.next_event("speech.failover", speech_id=speech_id, timeout=20)
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        await sim.hangup()
    reason = "error" if how == "error_frame" else "connect"
    assert event["from_provider"] == "primary" and event["to_provider"] == "backup"
    assert event["reason"] == reason and event["segments_done"] == 0
    assert heard_sentences(heard_by(sim), SENTENCES) is None  # all of it, nothing twice
    assert logged_texts(setup.fakes["backup"]) == SENTENCES
    assert setup.fakes["primary"]["log"] == []  # not a sound from the primary
    assert sim.result.violations == []
    metrics = await setup.gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_failovers_total", from_provider="primary",
                        to_provider="backup", reason=reason) == 1


@pytest.mark.parametrize("kind", ["cartesia", "elevenlabs", "smallest"])
async def test_a_provider_cut_mid_utterance_hands_over_the_sentences_not_yet_received(
        failover, kind):
    """Cartesia says when each sentence's audio is out (flush_done); ElevenLabs cannot,
    so each sentence is a context of its own; Smallest takes one request per sentence.

    The fakes send ten times faster than real time: when the socket is cut, half a second
    into the second sentence, the caller is still hearing the first, and the part of the
    second that came is still queued. It is dropped: the caller hears each sentence once.
    """
    cut = sentence_bytes(kind, SENTENCES[0]) + 4000
    backup = "cartesia" if kind != "cartesia" else "elevenlabs"
    setup = await failover({"primary": (kind, {"cut_after_bytes": cut}, {}),
                            "backup": (backup, {}, {})})
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await speak(setup, sim.call_sid, TEXT)
        event = await control.next_event("speech.failover", speech_id=speech_id, timeout=20)
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        await sim.hangup()
    assert (event["from_provider"], event["to_provider"], event["reason"]) == (
        "primary", "backup", "closed")
    assert event["segments_done"] == 1  # the first sentence was whole
    # the backup spoke the rest, from the start of the sentence that was cut
    assert logged_texts(setup.fakes["backup"]) == SENTENCES[1:]
    assert heard_sentences(heard_by(sim), SENTENCES) is None
    assert sim.result.violations == []
    metrics = await setup.gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_failovers_total", from_provider="primary",
                        to_provider="backup", reason="closed") == 1


async def test_a_sentence_cut_while_the_caller_hears_it_restarts_from_its_beginning(failover):
    """A provider at about real-time pace: when its socket is cut the caller has heard the
    beginning of the second sentence; the fallback says that sentence again, whole."""
    cut = sentence_bytes("cartesia", SENTENCES[0]) + 4000
    setup = await failover({"primary": ("cartesia", {"cut_after_bytes": cut,
                                                     "burst_factor": 1.5}, {}),
                            "backup": ("elevenlabs", {}, {})})
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await speak(setup, sim.call_sid, TEXT)
        event = await control.next_event("speech.failover", speech_id=speech_id, timeout=20)
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        await sim.hangup()
    assert event["reason"] == "closed" and event["segments_done"] == 1
    assert logged_texts(setup.fakes["backup"]) == SENTENCES[1:]
    # at most the beginning of the cut sentence, once more (where the cut fell is timing)
    assert heard_sentences(heard_by(sim), SENTENCES) in (None, 1)


async def test_a_provider_that_never_answers_is_failed_over_once_per_call(failover):
    setup = await failover({"primary": ("cartesia", {"never_answer": True}, {}),
                            "backup": ("elevenlabs", {}, {})},
                           first_audio_timeout_ms=1500)
    second = ["Anything else I can help with?"]
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await speak(setup, sim.call_sid, TEXT)
        event = await control.next_event("speech.failover", speech_id=speech_id, timeout=20)
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        # the call stays with the provider that took over: no second timeout
        speech_id = await speak(setup, sim.call_sid, second[0])
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        assert not [e for e in control.events if e["type"] == "speech.failover"]
        # the call gave the silent socket back (not to be reused) as soon as it failed
        primary_pool = setup.gw.app[PROVIDERS]["primary"].pool
        assert primary_pool.leased_count == 0
        assert setup.call(sim.call_sid)._sessions.keys() == {"backup"}
        await sim.hangup()
    assert (event["from_provider"], event["to_provider"], event["reason"]) == (
        "primary", "backup", "timeout")
    assert heard_sentences(heard_by(sim), SENTENCES + second) is None
    assert logged_texts(setup.fakes["backup"]) == SENTENCES + second
    metrics = await setup.gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_failovers_total", from_provider="primary",
                        to_provider="backup", reason="timeout") == 1
    assert metric_value(metrics, "tts_gateway_pool_reconnects_total", provider="primary",
                        reason="dirty") == 1  # closed, not pooled for another call


async def test_streamed_text_goes_on_with_the_fallback(failover):
    """The bot is still writing when the primary is cut: the sentences it had and those
    it sends afterwards all reach the fallback."""
    cut = sentence_bytes("cartesia", SENTENCES[0]) + 4000
    setup = await failover({"primary": ("cartesia", {"cut_after_bytes": cut}, {}),
                            "backup": ("elevenlabs", {}, {})})
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        await control.ws.send_json({"type": "speak", "text": SENTENCES[0] + " "})
        await control.ws.send_json({"type": "speak", "text": SENTENCES[1][:12]})
        first = await control.next_event("speech.first_audio", timeout=20)
        await control.ws.send_json({"type": "speak", "text": SENTENCES[1][12:] + " "})
        event = await control.next_event("speech.failover", timeout=20)
        await control.ws.send_json({"type": "speak", "text": SENTENCES[2], "flush": True})
        done = await control.next_event("speech.done", speech_id=first["speech_id"], timeout=30)
        assert done["interrupted"] is False and "error" not in done
        await sim.hangup()
    assert event["speech_id"] == first["speech_id"] and event["reason"] == "closed"
    assert logged_texts(setup.fakes["backup"]) == SENTENCES[1:]
    assert heard_sentences(heard_by(sim), SENTENCES) in (None, 1)


async def test_when_every_provider_fails_the_bot_hears_why_and_the_call_goes_on(failover):
    setup = await failover({"primary": ("cartesia", {"fail_on": "FAILME"}, {}),
                            "backup": ("elevenlabs", {"fail_on": "FAILME"}, {})})
    after = ["This one works fine."]
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await speak(setup, sim.call_sid, "Please FAILME now.")
        event = await control.next_event("speech.failover", speech_id=speech_id, timeout=20)
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=20)
        assert done["interrupted"] is False
        assert "every provider failed" in done["error"]
        assert "primary" in done["error"] and "backup" in done["error"]
        # the call is still up and speaks the next utterance
        speech_id = await speak(setup, sim.call_sid, after[0])
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        assert done["interrupted"] is False and "error" not in done
        await sim.hangup()
    assert (event["from_provider"], event["to_provider"], event["reason"]) == (
        "primary", "backup", "error")
    assert heard_sentences(heard_by(sim), after) is None
    metrics = await setup.gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_utterances_total", carrier="twilio",
                        outcome="failed") == 1
    for name in ("primary", "backup"):
        assert sum(float(line.split()[-1]) for line in metrics.splitlines()
                   if line.startswith("tts_gateway_tts_errors_total{")
                   and f'provider="{name}"' in line) == 1


async def test_a_provider_failing_mid_utterance_is_an_error_reported_after_its_audio_played(
        failover):
    """Without a fallback, a socket cut in the second sentence (the fake sends ten times
    faster than real time, so the caller is still hearing the first) fails the utterance.
    The audio that came plays to its end; then ``speech.done`` says what failed: nothing
    was interrupted (no clear), and it fires on the mark echo, as for any utterance."""
    cut = sentence_bytes("cartesia", SENTENCES[0]) + 4000
    setup = await failover({"only": ("cartesia", {"cut_after_bytes": cut}, {})})
    async with TwilioCallSim(f"{setup.gw.ws_url}/v1/media/twilio") as sim:
        control = await open_control(setup.gw, sim.call_sid)
        speech_id = await speak(setup, sim.call_sid, TEXT)
        done = await control.next_event("speech.done", speech_id=speech_id, timeout=30)
        done_at = time.monotonic()
        result = sim.result
        assert done["interrupted"] is False
        assert "only" in done["error"] and "closed" in done["error"]
        echoed_at = [t for t, name in result.marks_sent_back if name == speech_id]
        assert len(echoed_at) == 1 and echoed_at[0] <= done_at  # after the audio played
        await sim.hangup()
    heard = len(result.frames) * 0.020
    print(f"heard {heard:.2f} s; the last frame arrived {done_at - result.frames[-1][0]:.2f} s "
          f"and the mark was echoed {done_at - echoed_at[0]:.3f} s before speech.done")
    assert heard == pytest.approx(cut / 8000, abs=0.15)  # every byte that came was heard
    assert result.clears == [] and result.violations == []
    metrics = await setup.gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_utterances_total", carrier="twilio",
                        outcome="failed") == 1
    assert metric_value(metrics, "tts_gateway_tts_errors_total", provider="only",
                        kind="connection_closed") == 1
