"""Voice activity on the caller's audio: when the caller starts and stops speaking.

Sans-I/O: 16-bit little-endian PCM in (any length), :class:`SpeechStarted` and
:class:`SpeechStopped` out, with times in milliseconds of the caller's audio since the
detector's first sample (20 ms per carrier frame, so on a call: ms since the stream began).

A classifier says of each short window whether it holds speech; the detector adds the
hysteresis that turns those verdicts into turns. Speech starts once voiced windows span
``min_speech_ms`` (short unvoiced gaps between syllables allowed); it stops after
``min_silence_ms`` without a voiced window. ``SpeechStarted.at_ms`` is the onset (the
first voiced window), not the moment the detector became sure.

A window only counts as voiced when it is louder than the line's background: the 95th
percentile of the levels of the last three seconds that were not the caller's turn. That
is what keeps the gateway's own speech, coming back from the line as echo (typically 25
dB weaker), from interrupting it, without an echo canceller and without a fixed level
that would miss a quiet caller: a line with no echo keeps the floor at -55 dBFS.

The classifier is Google's WebRTC VAD (``webrtcvad-wheels``), chosen over Silero (through
onnxruntime) by measurement (``gateway/bench/vad.py``): on a quiet line it found every
phrase sooner (p95 272 against 292 ms, Silero missed 3 of 48), it missed fewer under the
gateway's echo, it costs about 2 µs per 20 ms frame against 27 to 80 for Silero, and
Silero's package would pull in torch.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

with warnings.catch_warnings():  # as in telcodecs.g711: audioop-lts on 3.13
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

#: sample rates the detector takes (the caller's audio is converted to one of these)
RATES = (8000, 16000)
#: windows quieter than this are never speech (RMS, dB relative to full scale)
QUIETEST_SPEECH_DBFS = -55.0
#: speech must be louder than this percentile of the last BACKGROUND_S seconds that were
#: not the caller's turn: the line's noise and the echo of the gateway's own speech
BACKGROUND_PERCENTILE = 95
BACKGROUND_S = 3
FLOOR_EVERY_WINDOWS = 5
#: of the span that starts a turn, at least this share must be voiced windows
MIN_VOICED_SHARE = 0.6


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    at_ms: int  # the onset: where the first voiced window of the turn began


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    at_ms: int  # where the last voiced window ended
    speech_ms: int  # from the onset to the end


SpeechEvent = SpeechStarted | SpeechStopped


class WebRtcClassifier:
    """Is this 20 ms window speech? The WebRTC VAD, at ``aggressiveness`` 0..3 (3 rejects
    the most non-speech)."""

    window_ms = 20

    def __init__(self, sample_rate: int, aggressiveness: int = 3):
        import webrtcvad

        self.sample_rate = sample_rate
        self.window_bytes = sample_rate * self.window_ms // 1000 * 2
        self._vad = webrtcvad.Vad(aggressiveness)

    def __call__(self, window: bytes) -> bool:
        return self._vad.is_speech(window, self.sample_rate)


class SpeechDetector:
    """One caller's turns. ``feed(pcm)`` returns the events that audio completes."""

    def __init__(self, sample_rate: int = 8000, *, min_speech_ms: int = 200,
                 min_silence_ms: int = 500,
                 classifier: Callable[[bytes], bool] | None = None,
                 quietest_dbfs: float = QUIETEST_SPEECH_DBFS, start_ms: int = 0):
        if sample_rate not in RATES:
            raise ValueError(f"the detector takes {' or '.join(map(str, RATES))} Hz audio")
        self.sample_rate = sample_rate
        self.classifier = classifier or WebRtcClassifier(sample_rate)
        self.window_ms: int = self.classifier.window_ms
        self._window_bytes: int = self.classifier.window_bytes
        # below this RMS a window is silence whatever the classifier thinks (cheap first)
        self._quietest_rms = 32768 * 10 ** (quietest_dbfs / 20)
        self.min_speech_ms = min_speech_ms
        self.min_silence_ms = min_silence_ms
        self._floor_rms = self._quietest_rms
        # levels of the last few seconds that were not the caller's turn (noise, echo)
        self._background: deque[int] = deque(maxlen=BACKGROUND_S * 1000 // self.window_ms)
        self._held: list[int] = []
        self._since_floor = 0
        self._pending = b""
        self._now_ms = start_ms  # end of the last window classified
        self.speaking = False
        self._onset_ms: int | None = None  # first voiced window of the turn (or candidate)
        self._voiced_ms = 0  # of the candidate turn
        self._last_voiced_end_ms = 0

    def configure(self, *, min_speech_ms: int, min_silence_ms: int) -> None:
        self.min_speech_ms = min_speech_ms
        self.min_silence_ms = min_silence_ms

    @property
    def now_ms(self) -> int:
        return self._now_ms

    def feed(self, pcm: bytes) -> list[SpeechEvent]:
        data = self._pending + pcm if self._pending else pcm
        size = self._window_bytes
        whole = len(data) - len(data) % size
        self._pending = data[whole:]
        events: list[SpeechEvent] = []
        for offset in range(0, whole, size):
            event = self._window(data[offset:offset + size])
            if event is not None:
                events.append(event)
        return events

    def _window(self, window: bytes) -> SpeechEvent | None:
        rms = audioop.rms(window, 2)
        event = self._advance(rms >= self._floor_rms and self.classifier(window))
        self._note_background(rms)
        return event

    def _note_background(self, rms: int) -> None:
        """Keep the level of what was not the caller's turn: the windows of a candidate
        are held until it turns out to be a click or the line's echo (then they count) or
        the caller's turn (then they never do)."""
        if self.speaking:
            self._held.clear()
            return
        if self._onset_ms is not None:
            self._held.append(rms)
            return
        self._background.append(rms)
        self._since_floor += 1
        if self._since_floor >= FLOOR_EVERY_WINDOWS:
            self._since_floor = 0
            ordered = sorted(self._background)
            # until a second is known, the loudest of it (the first echo of a greeting)
            warm = len(ordered) * self.window_ms >= 1000
            loud = ordered[int(len(ordered) * BACKGROUND_PERCENTILE / 100)] if warm else ordered[-1]
            self._floor_rms = max(self._quietest_rms, loud)

    @property
    def floor_dbfs(self) -> float:
        """How loud a window must be to count as speech now."""
        return 20 * math.log10(self._floor_rms / 32768) if self._floor_rms else -math.inf

    def _advance(self, voiced: bool) -> SpeechEvent | None:
        start = self._now_ms
        self._now_ms = end = start + self.window_ms
        if voiced:
            if self._onset_ms is not None and not self.speaking and (
                    start - self._onset_ms >= 2 * self.min_speech_ms):
                self._drop_candidate()  # too sparse to be a turn: look afresh from here
            if self._onset_ms is None:
                self._onset_ms, self._voiced_ms = start, 0
            self._voiced_ms += self.window_ms
            self._last_voiced_end_ms = end
            span = end - self._onset_ms
            if (not self.speaking and span >= self.min_speech_ms
                    and self._voiced_ms >= span * MIN_VOICED_SHARE):
                self.speaking = True
                return SpeechStarted(self._onset_ms)
            return None
        if self._onset_ms is None:
            return None
        quiet_ms = end - self._last_voiced_end_ms
        if self.speaking:
            if quiet_ms >= self.min_silence_ms:
                onset, self._onset_ms = self._onset_ms, None
                self.speaking = False
                stop = self._last_voiced_end_ms
                return SpeechStopped(stop, stop - onset)
        elif quiet_ms > _candidate_gap_ms(self.min_speech_ms):
            self._drop_candidate()  # a click or a breath, not the start of a turn
        return None

    def _drop_candidate(self) -> None:
        self._onset_ms = None
        self._background.extend(self._held)
        self._held.clear()


def _candidate_gap_ms(min_speech_ms: int) -> int:
    """The longest unvoiced gap inside the ``min_speech_ms`` that start a turn: syllables
    have short gaps; noise bursts are mostly isolated windows."""
    return min(60, max(20, min_speech_ms // 4))
