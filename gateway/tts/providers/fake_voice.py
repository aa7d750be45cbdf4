"""Audio that says which words it speaks, so a test can tell what the caller heard.

A fake provider profile with ``tag_words=True`` voices each word of the text as a pure
tone whose pitch is derived from the word (:func:`word_tone`: one of :data:`TONES` steps of
100 Hz from 500 Hz, well inside the telephone band), each word as long as its share of the
text, with a short pause after it. What a caller heard (after resampling, G.711 and
20 ms framing) decodes back to the sequence of word tones with :func:`heard_tones`;
:func:`text_tones` gives the sequence a text should produce. Distinct words may share a
tone, so tests pick words whose tones tell their sentences apart.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from gateway.tts.fake import speechlike_pcm

__all__ = ["TONES", "char_spans", "heard_tones", "tagged_pcm", "text_tones", "voice_pcm",
           "word_spans", "word_tone", "words_out"]

BASE_HZ = 500
STEP_HZ = 100
TONES = 25  # 500 .. 2900 Hz
GAP_S = 0.04  # the pause after each word
_WORD = re.compile(r"[A-Za-z0-9']+")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def word_tone(word: str) -> int:
    """The tone (0 .. TONES-1) that voices ``word`` (case-insensitive)."""
    return zlib.crc32(word.lower().encode()) % TONES


def text_tones(text: str) -> list[int]:
    """The tones ``text`` is voiced with, as :func:`heard_tones` reports them (a word
    whose tone equals the one before merges with it)."""
    return _collapse([word_tone(w) for w in words(text)])


def tagged_pcm(text: str, seconds: float, rate: int) -> bytes:
    """``seconds`` of 16-bit PCM at ``rate``: a tone per word of ``text``, each word's
    length in proportion to its characters, a pause after each."""
    ws = words(text)
    total = int(seconds * rate)
    if not ws:
        return bytes(2 * total)
    weights = np.array([len(w) + 1 for w in ws], dtype=float)
    bounds = np.round(np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * total)
    out = np.zeros(total)
    gap = int(GAP_S * rate)
    fade = max(1, int(0.005 * rate))
    for word, start, end in zip(ws, bounds[:-1].astype(int), bounds[1:].astype(int)):
        n = max(0, end - start - gap)
        if n <= 2 * fade:
            continue
        t = np.arange(n) / rate
        tone = np.sin(2 * np.pi * (BASE_HZ + STEP_HZ * word_tone(word)) * t)
        ramp = np.ones(n)
        ramp[:fade] = np.linspace(0, 1, fade)
        ramp[-fade:] = np.linspace(1, 0, fade)
        out[start:start + n] = tone * ramp
    return (out * 9000).astype("<i2").tobytes()


def word_spans(text: str, seconds: float) -> list[tuple[str, float, float]]:
    """``(word, start, end)`` in seconds of each word's tone in :func:`tagged_pcm` of
    ``text`` (the word as written): the word timings a fake reports for its audio."""
    ws = _WORD.findall(text)
    if not ws:
        return []
    weights = np.array([len(w) + 1 for w in ws], dtype=float)
    bounds = np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * seconds
    return [(w, float(a), float(max(a, b - GAP_S))) for w, a, b in zip(ws, bounds[:-1], bounds[1:])]


def words_out(spans: list, out_s: float) -> tuple[list, list]:
    """``(spoken, rest)``: the spans (of :func:`word_spans` or :func:`char_spans`) that
    ended within the first ``out_s`` seconds of audio, and the others; a fake reports a
    word's timing once its audio is out."""
    n = 0
    while n < len(spans) and spans[n][2] <= out_s + 1e-9:
        n += 1
    return spans[:n], spans[n:]


def char_spans(text: str, seconds: float) -> list[tuple[str, float, float]]:
    """``(character, start, end)`` for every character of ``text`` on :func:`tagged_pcm`'s
    timeline: a word's letters share its tone's span evenly; the characters between words
    (spaces, punctuation) share the pause before the next word."""
    out: list[tuple[str, float, float]] = []
    at, pos = 0.0, 0
    for (_, start, end), match in zip(word_spans(text, seconds), _WORD.finditer(text)):
        out += _spread(text[pos:match.start()], at, start)
        out += _spread(match.group(), start, end)
        pos, at = match.end(), end
    return out + _spread(text[pos:], at, max(at, seconds))


def _spread(chars: str, start: float, end: float) -> list[tuple[str, float, float]]:
    step = (end - start) / len(chars) if chars else 0.0
    return [(c, start + i * step, start + (i + 1) * step) for i, c in enumerate(chars)]


def voice_pcm(text: str, seconds: float, rate: int, *, tagged: bool) -> bytes:
    """What a fake synthesizes for ``text``: tagged tones, or its speech-like signal."""
    return tagged_pcm(text, seconds, rate) if tagged else speechlike_pcm(seconds, rate)


def heard_tones(pcm16le: bytes, rate: int = 8000) -> list[int]:
    """The word tones in ``pcm16le``, in order; a tone heard twice in a row (a word cut
    and restarted, a pause inside a word) counts once."""
    x = np.frombuffer(pcm16le, dtype="<i2").astype(np.float64) / 32768.0
    window, hop = rate // 50, rate // 100
    if len(x) < window:
        return []
    starts = range(0, len(x) - window + 1, hop)
    frames = np.stack([x[s:s + window] for s in starts])
    level = np.sqrt(np.mean(frames ** 2, axis=1))
    size = rate  # zero-padded to 1 Hz bins
    spectra = np.abs(np.fft.rfft(frames * np.hanning(window), n=size, axis=1))
    peaks = np.argmax(spectra, axis=1) * rate / size
    labels = []
    for rms, freq in zip(level, peaks):
        tone = round((freq - BASE_HZ) / STEP_HZ)
        if rms < 0.02 or not 0 <= tone < TONES or abs(freq - BASE_HZ - STEP_HZ * tone) > 25:
            labels.append(-1)
        else:
            labels.append(tone)
    runs: list[int] = []  # tones held for at least 3 hops (30 ms): not a transition
    previous, length = -1, 0
    for label in [*labels, -1]:
        if label == previous:
            length += 1
            continue
        if previous >= 0 and length >= 3:
            runs.append(previous)
        previous, length = label, 1
    return _collapse(runs)


def _collapse(tones: list[int]) -> list[int]:
    out: list[int] = []
    for tone in tones:
        if not out or out[-1] != tone:
            out.append(tone)
    return out
