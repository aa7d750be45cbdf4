"""Voice activity on the caller's audio: when the caller starts and stops speaking.

Sans-I/O: 16-bit little-endian PCM in (any length), :class:`SpeechStarted` and
:class:`SpeechStopped` out, with times in milliseconds of the caller's audio since the
detector's first sample (20 ms per carrier frame, so on a call: ms since the stream began).

A classifier says of each short window whether it holds speech; the detector adds the
hysteresis that turns those verdicts into turns. Speech starts once voiced windows span
``min_speech_ms`` (short unvoiced gaps between syllables allowed); it stops after
``min_silence_ms`` without a voiced window. ``SpeechStarted.at_ms`` is the onset (the
first voiced window), not the moment the detector became sure.

A window only counts as voiced when it is louder than the line's background, kept in two
parts, because the gateway knows when it plays audio and how loud: it tells the detector
(:meth:`SpeechDetector.note_playback`), and echo of its own speech can only be on the line
then and ``ECHO_TAIL_MS`` after ("echo time").

* The quiet floor, the line's noise: the 95th percentile of the last three seconds of the
  windows outside echo time that were not the caller's turn. A candidate that was dropped
  (a click, or "Wait," before a pause) adds only its median window, so a short word cannot
  lift the floor over the rest of the phrase; and a turn that follows such a word within
  ``WORD_PAUSE_MS`` is dated from that word.
* In echo time, the echo floor: the same percentile of the echo-time windows, dropped
  candidates included (on a line with echo those are mostly the echo). It never goes above
  what an echo can be, the gateway's loudest window of the last ``PLAYBACK_LEVEL_MS`` less
  ``ECHO_RETURN_LOSS_DB`` (louder is the caller, and such a window teaches no floor). Where
  the line does echo, the floor stays within ``LEAST_ECHO_FLOOR_BELOW_BOUND_DB`` of that
  bound, since the learned percentile under-counts the echo's loud windows (they are the
  ones held as candidates); the first ``ECHO_WARM_MS`` of echo time are taken to echo.

* Once the echo's path is known (:class:`EchoPath`: its delay and loss, from the played
  and heard levels), the floor in echo time is at most ``ECHO_PATH_MARGIN_DB`` above the
  echo that path predicts for this very window: the caller is heard in the gateway's
  pauses between words, where the level bound alone hid a quiet caller.

No echo canceller and no fixed level that would miss a quiet caller: a quiet line keeps
the floor at -55 dBFS, and a line without echo keeps it there while the gateway speaks.
The first ``FLOOR_EVERY_WINDOWS`` windows only teach the line's noise.

The classifier is Google's WebRTC VAD (``webrtcvad-wheels``), chosen over Silero (through
onnxruntime) by measurement (``gateway/bench/vad.py``): on a quiet line it found every
phrase sooner (p95 272 against 292 ms, Silero missed 3 of 48), it missed fewer under the
gateway's echo, it costs about 2 µs per 20 ms frame against 27 to 80 for Silero, and
Silero's package would pull in torch.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, insort
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

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
QUIET_OUTLIERS = 4
FLOOR_EVERY_WINDOWS = 5
#: of the span that starts a turn, at least this share must be voiced windows
MIN_VOICED_SHARE = 0.6
#: a word dropped as too short ("Wait," then a comma's pause) that is followed this soon
#: by a turn is where that turn began
WORD_PAUSE_MS = 1000
#: echo of the gateway's audio comes back this long after it played (line and jitter)
ECHO_TAIL_MS = 300
#: a line's echo is at least this much weaker than what the gateway plays
ECHO_RETURN_LOSS_DB = 20.0
#: where the line has an echo (the echo time's peaks, its 99th percentile, this much above
#: the quiet floor), the floor in echo time is at most this far below that bound
AUDIBLE_ECHO_DB = 3.0
ECHO_PEAK_PERCENTILE = 99
LEAST_ECHO_FLOOR_BELOW_BOUND_DB = 6.0
#: the echo floor is learned from this much echo time; until then the line is taken to echo
ECHO_WARM_MS = 200
#: the gateway's level is the loudest it played in this span (covers the echo's delay)
PLAYBACK_LEVEL_MS = 500
#: the echo path, learned from what the gateway played and what came back (see EchoPath)
ECHO_PATH_EVERY_MS = 500
ECHO_PATH_SPAN_MS = 3000
ECHO_PATH_MIN_CORRELATION = 0.6
#: where the path is known, a window is louder than its echo can be when it is this much
#: above the echo the path predicts for it
ECHO_PATH_MARGIN_DB = 6.0


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    at_ms: int  # the onset: where the first voiced window of the turn began


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    at_ms: int  # where the last voiced window ended
    speech_ms: int  # from the onset to the end


SpeechEvent = SpeechStarted | SpeechStopped


class Classifier(Protocol):
    """What the detector asks of a classifier: is this window of ``window_bytes`` bytes
    (``window_ms`` of 16-bit PCM) speech?"""

    window_ms: int
    window_bytes: int

    def __call__(self, window: bytes) -> bool: ...


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


class EchoPath:
    """How the gateway's audio comes back on this line: the delay (in windows) at which the
    line's level follows the level the gateway played best, and how much weaker it comes
    back. Learned every ``ECHO_PATH_EVERY_MS`` from the last ``ECHO_PATH_SPAN_MS`` by a
    normalized cross-correlation of the two level envelopes (log RMS per window); trusted
    when the correlation is at least ``ECHO_PATH_MIN_CORRELATION``. With it, the echo a
    window can hold is predicted from the few windows the gateway played one delay
    earlier, instead of from the loudest of the last half second: a caller is heard in
    the gateway's pauses between words, not only over its loudest syllables.

    Not an echo canceller: levels only, about a microsecond per window, plus a few tens
    of microseconds of numpy per ``ECHO_PATH_EVERY_MS`` while the gateway plays."""

    #: the played level is taken as the loudest of this many windows either side (jitter)
    SPREAD = 1

    def __init__(self, window_ms: int, quietest_rms: float, max_gain: float):
        self.window_ms = window_ms
        self._span = ECHO_PATH_SPAN_MS // window_ms
        self._max_lag = ECHO_TAIL_MS // window_ms
        self._ring = 1 << (self._span + self._max_lag + 2 * self._max_lag).bit_length()
        # per window, in rings: arrays, cheap to read one at a time and seen by numpy as is
        self._played = array("d", bytes(8 * self._ring))
        self._played_at = array("q", [-1]) * self._ring  # which window each slot holds
        self._line = array("d", bytes(8 * self._ring))
        self._usable = array("b", bytes(self._ring))  # a window not in the caller's turn
        # numpy's views of the rings, and the offsets learn() reads them at (made once:
        # numpy's cost per call, not the arithmetic, is most of what learning costs)
        self._played_np = np.frombuffer(self._played)
        self._played_at_np = np.frombuffer(self._played_at, np.int64)
        self._line_np = np.frombuffer(self._line)
        self._usable_np = np.frombuffer(self._usable, np.int8).view(bool)
        self._played_offsets = np.arange(-self._span - self._max_lag - self.SPREAD, self.SPREAD)
        self._line_offsets = np.arange(-self._span, 0)
        # where each line window's played level ``lag`` windows earlier is read: one column
        # per lag (learn() reads it transposed, laid out as the sliding window view it
        # replaces, so that its sums add in the same order and give the same lag and gain)
        self._lags = (self._max_lag - np.arange(self._max_lag + 1))[None, :]
        self._eps = quietest_rms
        self._max_gain = max_gain
        self.lag: int | None = None  # windows from playing to coming back
        self.gain = 0.0
        self.correlation = 0.0

    def played(self, index: int, rms: int, now: int) -> None:
        """The gateway plays ``rms`` in window ``index`` (``now``: the current window)."""
        if not now - self._max_lag <= index < now + self._max_lag:
            return  # too far ahead to keep a slot for (or long past)
        slot = index & (self._ring - 1)
        if self._played_at[slot] != index:
            self._played_at[slot] = index
            self._played[slot] = rms
        elif rms > self._played[slot]:
            self._played[slot] = rms

    def heard(self, index: int, rms: int, usable: bool) -> None:
        slot = index & (self._ring - 1)
        self._line[slot] = rms
        self._usable[slot] = usable

    def not_usable(self, first: int, last: int) -> None:
        """Windows ``first``..``last`` were the caller: they teach nothing of the echo."""
        for index in range(max(first, last - self._ring + 1), last + 1):
            self._usable[index & (self._ring - 1)] = False

    def predicted(self, index: int) -> float | None:
        """The loudest the echo in window ``index`` can be, or None if the path is unknown."""
        if self.lag is None:
            return None
        mask, played, played_at = self._ring - 1, self._played, self._played_at
        loudest: float = 0
        for at in range(index - self.lag - self.SPREAD - 1, index - self.lag + self.SPREAD + 2):
            slot = at & mask
            if played_at[slot] == at and played[slot] > loudest:
                loudest = played[slot]
        return loudest * self.gain

    def learn(self, now: int) -> None:
        """Find the delay and gain from windows up to ``now`` (exclusive)."""
        span, max_lag, mask = self._span, self._max_lag, self._ring - 1
        wanted = self._played_offsets + now
        indices = wanted & mask
        played = np.where(self._played_at_np[indices] == wanted, self._played_np[indices], 0.0)
        # the loudest of each window's neighbours (jitter of a frame either way)
        spread = np.maximum(np.maximum(played[:-2], played[1:-1]), played[2:])
        line_slots = (self._line_offsets + now) & mask
        columns = np.flatnonzero(self._usable_np[line_slots])
        if len(columns) < span // 2:
            self.lag = None
            return
        line = self._line_np[line_slots[columns]]
        log_line = np.log(line + self._eps)
        # row ``lag``: the log of the spread played level ``lag`` windows before each window
        log_played = np.log(spread + self._eps)[columns[:, None] + self._lags].T
        a = log_played - log_played.mean(axis=1, keepdims=True)
        b = log_line - log_line.mean()
        norm = np.sqrt((a * a).sum(axis=1) * (b * b).sum())
        correlation = np.divide(a @ b, norm, out=np.zeros_like(norm), where=norm > 0)
        lag = int(np.argmax(correlation))
        self.correlation = float(correlation[lag])
        if self.correlation < ECHO_PATH_MIN_CORRELATION:
            self.lag = None
            return
        played_then = spread[max_lag - lag + columns]
        loud = played_then >= 8 * self._eps
        if np.count_nonzero(loud) < span // 10:
            self.lag = None
            return
        ratios = line[loud] / played_then[loud]
        high = int(len(ratios) * 0.98)
        self.lag = lag
        self.gain = min(self._max_gain, float(np.partition(ratios, high)[high]))


class LoudestPlayed:
    """The loudest level the gateway played among its audio that ends at or after a given
    time: what bounds the echo. Kept as steps (until_ms, rms) whose ends grow and levels
    fall: audio no louder than audio that ends later can never be the answer, so it is not
    kept. A note and a question cost a few comparisons, however long the gateway speaks.
    The questions' times never go back (they are the detector's clock)."""

    #: more steps than the playout's lead can make (it sends ~100 ms ahead): a bound only
    MAX_STEPS = 256

    __slots__ = ("_steps",)

    def __init__(self) -> None:
        self._steps: list[tuple[int, int]] = []

    def add(self, until_ms: int, rms: int) -> None:
        steps = self._steps
        at = len(steps)
        while at and steps[at - 1][0] >= until_ms:
            at -= 1
        if at < len(steps) and steps[at][1] >= rms:
            return  # audio as loud ends as late or later
        end = at + 1 if at < len(steps) and steps[at][0] == until_ms else at
        start = at
        while start and steps[start - 1][1] <= rms:
            start -= 1
        steps[start:end] = [(until_ms, rms)]
        if len(steps) > self.MAX_STEPS:
            del steps[-1]

    def since(self, since_ms: int) -> int:
        """The loudest level of the audio that ends at or after ``since_ms`` (0 if none)."""
        steps = self._steps
        while steps and steps[0][0] < since_ms:
            del steps[0]
        return steps[0][1] if steps else 0


class LevelHistory:
    """The last ``keep`` window levels, and the same levels kept in order (a few bisections
    per window instead of sorting a few seconds of levels whenever a floor is asked for)."""

    __slots__ = ("_levels", "_ordered")

    def __init__(self, keep: int):
        self._levels: deque[int] = deque(maxlen=keep)
        self._ordered: list[int] = []

    def __len__(self) -> int:
        return len(self._levels)

    def append(self, level: int) -> None:
        levels, ordered = self._levels, self._ordered
        if len(levels) == levels.maxlen:
            del ordered[bisect_left(ordered, levels[0])]
        levels.append(level)
        insort(ordered, level)

    def extend(self, levels: list[int]) -> None:
        for level in levels:
            self.append(level)

    def ordered(self) -> list[int]:
        return self._ordered


class SpeechDetector:
    """One caller's turns. ``feed(pcm)`` returns the events that audio completes."""

    def __init__(self, sample_rate: int = 8000, *, min_speech_ms: int = 140,
                 min_silence_ms: int = 500,
                 classifier: Classifier | None = None,
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
        # levels of the last few seconds that were not the caller's turn: while the
        # gateway's audio may come back as echo, and the rest of the time (the line's noise)
        keep = BACKGROUND_S * 1000 // self.window_ms
        self._background = LevelHistory(keep)
        self._echo_background = LevelHistory(keep)
        self._echo_plain = LevelHistory(keep)  # ... not held as candidates
        self._quiet_floor_rms = self._echo_floor_rms = self._quietest_rms
        self._echo_audible = True  # until known otherwise
        self._held: list[int] = []
        self._held_in_echo = self._held_in_echo_time = False
        self._since_floor = 0
        self._playback_until_ms = -ECHO_TAIL_MS  # the gateway's audio plays until then
        self._loudest_played = LoudestPlayed()
        self._erl_gain = 10 ** (-ECHO_RETURN_LOSS_DB / 20)
        self._least_echo_gain = 10 ** (-LEAST_ECHO_FLOOR_BELOW_BOUND_DB / 20)
        self._audible_echo_ratio = 10 ** (AUDIBLE_ECHO_DB / 20)
        self._origin_ms = start_ms
        self._echo_path = EchoPath(self.window_ms, self._quietest_rms, self._erl_gain)
        self._echo_path_margin = 10 ** (ECHO_PATH_MARGIN_DB / 20)
        self._echo_path_every = max(1, ECHO_PATH_EVERY_MS // self.window_ms)
        self._since_echo_path = 0
        self._pending = b""
        self._now_ms = start_ms  # end of the last window classified
        self.speaking = False
        self._onset_ms: int | None = None  # first voiced window of the turn (or candidate)
        self._voiced_ms = 0  # of the candidate turn
        self._last_voiced_end_ms = 0
        # a short word dropped as a candidate ("Wait," then a pause): (onset, end)
        self._dropped: tuple[int, int] | None = None

    def configure(self, *, min_speech_ms: int, min_silence_ms: int) -> None:
        self.min_speech_ms = min_speech_ms
        self.min_silence_ms = min_silence_ms

    @property
    def now_ms(self) -> int:
        return self._now_ms

    def note_playback(self, rms: int, until_ms: int) -> None:
        """The gateway plays audio of RMS level ``rms`` (16-bit PCM) that ends ``until_ms``
        on this detector's clock (``now_ms`` plus what is sent ahead): its echo may come
        back until ``ECHO_TAIL_MS`` later, and is at most ``ECHO_RETURN_LOSS_DB`` weaker."""
        now = self._now_ms
        until_ms = min(until_ms, now + 10_000)  # bounded, whatever the caller says
        if until_ms > self._playback_until_ms:
            self._playback_until_ms = until_ms
        rms = max(0, int(rms))
        self._loudest_played.add(until_ms, rms)
        origin, window_ms = self._origin_ms, self.window_ms
        self._echo_path.played((until_ms - origin) // window_ms - 1, rms,
                               (now - origin) // window_ms)

    def _index_of(self, ms: int) -> int:
        """The window that begins at ``ms`` on this detector's clock."""
        return (ms - self._origin_ms) // self.window_ms

    @property
    def in_echo_time(self) -> bool:
        """The gateway's audio (or silence it sends), or its echo, may be on the line."""
        return self._now_ms < self._playback_until_ms + ECHO_TAIL_MS

    def feed(self, pcm: bytes) -> list[SpeechEvent]:
        size = self._window_bytes
        if not self._pending and len(pcm) == size:  # a call's frame is one window
            event = self._window(pcm)
            return [] if event is None else [event]
        data = self._pending + pcm if self._pending else pcm
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
        now = self._now_ms
        index = (now - self._origin_ms) // self.window_ms
        # the loudest an echo can be now: the gateway's loudest recent window less the echo
        # return loss (silence the gateway sends is no echo time: the line's noise)
        if now < self._playback_until_ms + ECHO_TAIL_MS:
            bound = self._loudest_played.since(now - PLAYBACK_LEVEL_MS) * self._erl_gain
        else:
            bound = 0.0
        echo = bound >= self._quietest_rms
        if echo:
            learned = self._echo_floor_rms
            if self._echo_audible:
                # there is an echo: its loud windows are a selection the percentile
                # under-counts, so the floor stays near the bound
                learned = max(learned, bound * self._least_echo_gain)
            self._floor_rms = max(self._quiet_floor_rms, min(learned, bound))
            predicted = self._echo_path.predicted(index)
            if predicted is not None:  # the echo's path is known: what it can be right now
                self._floor_rms = max(self._quiet_floor_rms, min(
                    self._floor_rms, predicted * self._echo_path_margin))
        else:
            self._floor_rms = self._quiet_floor_rms
        self._learn_echo_path(index, rms, echo)
        # the first windows only teach the line's noise: no floor is known before them
        warm = index >= FLOOR_EVERY_WINDOWS
        event = self._advance(warm and rms >= self._floor_rms and self.classifier(window))
        self._note_background(rms, echo, echo and rms <= bound)
        return event

    def _learn_echo_path(self, index: int, rms: int, echo: bool) -> None:
        path = self._echo_path
        path.heard(index, rms, not self.speaking)
        if not echo:
            self._since_echo_path = 0
            path.lag = None  # learned afresh when the gateway speaks again
            return
        self._since_echo_path += 1
        # a line's echo path stays put: relearned less often once known
        every = self._echo_path_every * (1 if path.lag is None else 4)
        if self._since_echo_path >= every:
            self._since_echo_path = 0
            path.learn(index)

    def _note_background(self, rms: int, echo: bool, could_be_echo: bool) -> None:
        """Keep the level of what was not the caller's turn: the windows of a candidate
        are held until it turns out to be a click or the line's echo (then they count) or
        the caller's turn (then they never do). ``echo``: in echo time; ``could_be_echo``:
        and no louder than an echo can be."""
        if self.speaking:
            self._held.clear()
            return
        if self._onset_ms is not None:
            # a candidate could be echo only if each of its windows could be
            if not self._held:
                self._held_in_echo_time = echo
            self._held_in_echo = could_be_echo if not self._held else (
                self._held_in_echo and could_be_echo)
            self._held.append(rms)
            return
        if echo:
            self._echo_background.append(rms)
            self._echo_plain.append(rms)
        else:
            self._background.append(rms)
        self._since_floor += 1
        if self._since_floor >= FLOOR_EVERY_WINDOWS:
            self._update_floors()

    def _update_floors(self) -> None:
        self._since_floor = 0
        # a few loud windows (a dropped word's medians) must not make the floor of a
        # short background: at least QUIET_OUTLIERS are left out whatever its length
        self._quiet_floor_rms = self._percentile(self._background, None,
                                                 outliers=QUIET_OUTLIERS)
        # until ECHO_WARM_MS of echo time is known, echo is assumed (the floor near the bound)
        self._echo_floor_rms = self._percentile(self._echo_background, 0.0)
        # whether there is an echo at all: by the windows no candidate held (a caller's
        # dropped word must not make a line without echo look like one)
        loud = self._percentile(self._echo_plain, math.inf, ECHO_PEAK_PERCENTILE)
        self._echo_audible = loud > self._quiet_floor_rms * self._audible_echo_ratio

    def _percentile(self, levels: LevelHistory, warm_default: float | None,
                    percentile: int = BACKGROUND_PERCENTILE, outliers: int = 0) -> float:
        if warm_default is not None and len(levels) * self.window_ms < ECHO_WARM_MS:
            return warm_default
        if len(levels) <= outliers:
            return self._quietest_rms
        ordered = levels.ordered()
        index = min(int(len(ordered) * percentile / 100), len(ordered) - 1 - outliers)
        return max(self._quietest_rms, ordered[index])

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
                self._echo_path.not_usable(self._index_of(self._onset_ms),
                                           self._index_of(start))
                dropped, self._dropped = self._dropped, None
                if dropped is not None and self._onset_ms - dropped[1] <= WORD_PAUSE_MS:
                    self._onset_ms = dropped[0]  # the turn began with that word
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
        """Not a turn. If each of its windows could be echo, most likely the echo: all of
        them teach the echo floor. Otherwise a click or a short word before a pause, whose
        loud windows must not lift the floor over the rest of the phrase: outside echo
        time its median window counts, in echo time (it was louder than an echo) none."""
        onset, self._onset_ms = self._onset_ms, None
        held = self._held
        earlier, self._dropped = self._dropped, None
        if held:
            if not self._held_in_echo and onset is not None:
                if earlier is not None and onset - earlier[1] <= WORD_PAUSE_MS:
                    onset = earlier[0]  # "Wait, stop, ...": still the same words
                self._dropped = (onset, self._last_voiced_end_ms)
            if self._held_in_echo:
                self._echo_background.extend(held)
            elif not self._held_in_echo_time:
                self._background.append(sorted(held)[len(held) // 2])
            self._update_floors()
        held.clear()


def _candidate_gap_ms(min_speech_ms: int) -> int:
    """The longest unvoiced gap inside the ``min_speech_ms`` that start a turn: syllables
    have short gaps; noise bursts are mostly isolated windows."""
    return min(60, max(20, min_speech_ms // 4))
