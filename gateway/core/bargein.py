"""Barge-in: the caller's voice or keys cut the gateway's speech short.

:class:`CallerSpeech` listens to one call's inbound audio (``Call.caller_audio``), decodes
it to 16-bit PCM at 8 or 16 kHz and runs the voice activity detector on it, on the media
path itself: the WebRTC VAD costs a few microseconds per 20 ms frame (see
gateway/bench/vad.py), so nothing is queued or batched. The detector runs while the call's
barge-in mode (``Call.barge_in.mode``, which a bot may change at run time) is ``speech`` or
``any``, or while someone watches for the caller's turns (``watch()``: a listening bot);
otherwise a frame costs one attribute check.

The detector is told what the gateway plays (``_note_playback``): the level of the next
frame the call's playout will send and when the audio sent so far ends, on the caller's
clock, so it learns the echo only while there can be one and knows how loud it can be.

Every turn becomes ``caller.speech_started`` / ``caller.speech_stopped`` on the call's
events, whether or not it interrupts anything. A turn (after ``min_speech_ms``) in mode
``speech`` or ``any``, or a key in mode ``dtmf`` or ``any``, interrupts the gateway exactly
as the API's interrupt does (``Call.interrupt(cause=...)``), if the utterance playing is
interruptible. One that is not (``interruptible: false``) plays to its end and the queue
after it is left alone: the caller's speech is reported, and the bot decides.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from telcodecs import Transcoder

from gateway.core.vad import SpeechDetector, SpeechStarted
from gateway.logs import RateLimitedLog

with warnings.catch_warnings():  # as in telcodecs.g711: audioop-lts on 3.13
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

if TYPE_CHECKING:
    from gateway.config import BargeInConfig
    from gateway.core.call import Call

log = logging.getLogger(__name__)

SPEECH_MODES = ("speech", "any")
DTMF_MODES = ("dtmf", "any")


class CallerSpeech:
    """One call's caller-side turn detection and barge-in (``Call.caller_speech``)."""

    def __init__(self, call: Call):
        self._call = call
        self._log = RateLimitedLog(log)
        fmt = call.caller_audio.format
        self._bytes_per_ms = fmt.sample_rate * (2 if fmt.encoding == "l16" else 1) / 1000
        self.rate = 8000 if fmt.sample_rate <= 8000 else 16000
        try:
            self._decoder: Transcoder | None = Transcoder(fmt.encoding, fmt.sample_rate,
                                                          "pcm_s16le", self.rate)
        except ValueError as exc:  # a format the resampler does not take: no VAD
            self._decoder = None
            self._log.warning("no vad", "call %s: no voice activity detection on %s/%d: %s",
                              call.id, fmt.encoding, fmt.sample_rate, exc)
        self._detector: SpeechDetector | None = None
        self._config: BargeInConfig | None = None  # what the detector was set up with
        self._watchers = 0
        self._heard_ms = 0.0  # caller audio since the stream began
        self._tasks: set[asyncio.Task] = set()
        out = call.media_format  # what the gateway plays: its level, cheaply
        self._out_level = _level_of(out.encoding)
        self._playout = call.playout  # both for the call's life (read on every frame)
        self._clock_now = call.services.clock.now
        self._unsubscribe = call.caller_audio.subscribe(self._on_frame)

    @property
    def active(self) -> bool:
        return self._decoder is not None and (
            self._watchers > 0 or self._call.barge_in.mode in SPEECH_MODES)

    @property
    def speaking(self) -> bool:
        """The caller is in a turn (as far as the detector, if it runs, knows)."""
        return self._detector is not None and self._detector.speaking

    def watch(self) -> Callable[[], None]:
        """Run the detector (and send its events) whatever the barge-in mode, until the
        returned function is called: for a bot that takes turns by them."""
        self._watchers += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._watchers -= 1

        return release

    def close(self) -> None:
        self._unsubscribe()
        self._detector = None

    # -- the media path ---------------------------------------------------------------

    def _on_frame(self, payload: bytes) -> None:
        start_ms = self._heard_ms
        self._heard_ms += len(payload) / self._bytes_per_ms
        decoder = self._decoder
        if decoder is None or not self.active:
            self._detector = None  # off: the next turn is detected afresh
            return
        config = self._call.barge_in
        detector = self._detector
        if detector is None:
            self._detector = detector = SpeechDetector(
                self.rate, min_speech_ms=config.min_speech_ms,
                min_silence_ms=config.min_silence_ms, start_ms=round(start_ms))
            self._config = config
        elif config is not self._config:
            detector.configure(min_speech_ms=config.min_speech_ms,
                               min_silence_ms=config.min_silence_ms)
            self._config = config
        self._note_playback(detector)
        for event in detector.feed(decoder.feed(payload)):
            if isinstance(event, SpeechStarted):
                self._call.events.emit("caller.speech_started", at_ms=event.at_ms)
                if config.mode in SPEECH_MODES:
                    self._barge_in("speech")
            else:
                self._call.events.emit("caller.speech_stopped", at_ms=event.at_ms,
                                       speech_ms=event.speech_ms)

    def _note_playback(self, detector: SpeechDetector) -> None:
        """What the gateway plays: the next frame its playout sends (a lead ahead of the
        caller's clock) and when all it sent has played."""
        playout = self._playout
        ahead_s = playout.next_play_time - self._clock_now()
        if ahead_s <= 0 or self._out_level is None:
            return
        queue = playout.queue
        frame = queue[0] if queue else None
        rms = self._out_level(frame) if isinstance(frame, bytes) else 0
        detector.note_playback(rms, detector.now_ms + round(ahead_s * 1000))

    def on_dtmf(self, digit: str) -> None:
        if self._call.barge_in.mode in DTMF_MODES:
            self._barge_in("dtmf")

    def _barge_in(self, cause: str) -> None:
        call = self._call
        if call.state != "active":
            return
        playing = call._unfinished()  # the first is playing or next
        if not playing or not playing[0].interruptible:
            return
        # interrupt() has no await before the carrier's clear: it runs on the next turn
        # of the loop, ahead of the next frame of the utterance
        task = asyncio.get_running_loop().create_task(call.interrupt(cause=cause),
                                                      name=f"barge-in-{call.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _level_of(encoding: str) -> Callable[[bytes], int] | None:
    """RMS of a frame the gateway plays, as 16-bit PCM."""
    if encoding in ("mulaw", "ulaw"):
        return lambda frame: audioop.rms(audioop.ulaw2lin(frame, 2), 2)
    if encoding in ("alaw",):
        return lambda frame: audioop.rms(audioop.alaw2lin(frame, 2), 2)
    if encoding in ("l16", "pcm_s16le", "linear16"):
        return lambda frame: audioop.rms(frame[: len(frame) // 2 * 2], 2)
    return None
