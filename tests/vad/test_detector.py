"""The speech detector offline: real speech (Piper, espeak-ng) is found, with hysteresis;
a minute of digital silence, of -45 dBFS white noise and of the gateway's own speech as
echo at -25 dB never starts a turn. Figures (false starts, cost per frame) are printed."""

from __future__ import annotations

import time

import pytest
from telcodecs import ulaw_decode, ulaw_encode

from gateway.core.vad import SpeechDetector, SpeechStarted, SpeechStopped
from gateway.sim.carriers import caller_speech as cs

RATE = 8000


@pytest.fixture(scope="module")
def voices() -> dict[str, list[bytes]]:
    return {"piper": cs.piper_phrases(cs.PHRASES[:3], RATE),
            "espeak": cs.espeak_phrases(cs.PHRASES[:3], RATE)}


def run(pcm: bytes, **options) -> tuple[list, float]:
    """Events of ``pcm`` fed as a call feeds it (20 ms of μ-law, decoded), and the CPU
    microseconds per frame."""
    detector = SpeechDetector(RATE, **options)
    wire = ulaw_encode(pcm)
    events = []
    began = time.process_time()
    for offset in range(0, len(wire) - 159, 160):
        events += detector.feed(ulaw_decode(wire[offset:offset + 160]))
    frames = len(wire) // 160
    return events, (time.process_time() - began) / max(1, frames) * 1e6


@pytest.mark.parametrize("voice", ["piper", "espeak"])
@pytest.mark.parametrize("level", [-10.0, -35.0])
def test_each_phrase_is_one_turn_from_its_onset(voices, voice, level):
    for phrase in voices[voice]:
        speech = cs.trimmed(cs.at_level(phrase, RATE, level), RATE)
        events, _ = run(cs.silence(1.0, RATE) + speech + cs.silence(1.0, RATE))
        starts = [e for e in events if isinstance(e, SpeechStarted)]
        stops = [e for e in events if isinstance(e, SpeechStopped)]
        assert len(starts) >= 1 and len(stops) == len(starts)
        assert 1000 - 60 <= starts[0].at_ms <= 1000 + 300  # the onset, not the decision
        assert stops[-1].at_ms <= 1000 + len(speech) / 2 / RATE * 1000 + 60
        assert stops[0].speech_ms == stops[0].at_ms - starts[0].at_ms


def test_a_click_shorter_than_min_speech_ms_is_no_turn(voices):
    burst = cs.trimmed(cs.at_level(voices["piper"][0], RATE, -15.0), RATE)[: RATE // 10 * 2]
    events, _ = run(cs.silence(0.5, RATE) + burst + cs.silence(1.0, RATE), min_speech_ms=200)
    assert events == []
    events, _ = run(cs.silence(0.5, RATE) + burst + cs.silence(1.0, RATE), min_speech_ms=60)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]


def test_no_turn_in_a_minute_of_silence_noise_or_the_gateways_echo(voices):
    gateway = b"".join(voices["piper"])  # the gateway's own speech, 8 s or so, looped
    echo = cs.echo_of(gateway, RATE, attenuation_db=25.0)
    minute = 60 * RATE * 2
    backgrounds = {
        "digital silence": cs.silence(60, RATE),
        "white noise -45 dBFS": cs.white_noise(60, RATE, -45.0, seed=3),
        "echo -25 dB": (echo * (minute // len(echo) + 1))[:minute],
    }
    for name, pcm in backgrounds.items():
        events, cost = run(pcm)
        print(f"{name}: {len(events)} events, {cost:.1f} us per 20 ms frame")
        assert events == [], name


def test_speech_over_the_echo_is_still_found(voices):
    gateway = b"".join(voices["piper"][::-1])
    echo = cs.echo_of(gateway, RATE, attenuation_db=25.0)
    speech = cs.trimmed(cs.at_level(voices["espeak"][1], RATE, -25.0), RATE)
    caller = cs.silence(3.0, RATE) + speech
    events, cost = run(cs.mix(echo[: len(caller)], caller))
    starts = [e for e in events if isinstance(e, SpeechStarted)]
    print(f"speech over echo: {cost:.1f} us per 20 ms frame")
    assert starts and starts[0].at_ms >= 3000 - 60


def test_the_detector_takes_any_chunking_and_bounds_its_buffers(voices):
    speech = cs.at_level(voices["espeak"][0], RATE, -20.0)
    pcm = cs.silence(0.5, RATE) + speech + cs.silence(1.0, RATE)
    whole, _ = run(pcm)
    detector = SpeechDetector(RATE)
    odd = []
    for offset in range(0, len(pcm), 333):  # odd sizes, even a split sample
        odd += detector.feed(pcm[offset:offset + 333])
    assert [type(e) for e in odd] == [type(e) for e in whole]
    assert len(detector._pending) < 320 and len(detector._held) <= 20


def test_bad_rates_are_refused():
    with pytest.raises(ValueError, match="8000 or 16000"):
        SpeechDetector(24000)
