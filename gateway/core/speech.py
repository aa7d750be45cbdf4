"""Utterances: what a call has been asked to say, and their text as it streams in."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import NamedTuple

from gateway.config import LimitsConfig
from gateway.tts.base import MAX_WORD_CHARS
from gateway.tts.text import SentenceBuffer


def new_speech_id() -> str:
    return "sp_" + secrets.token_hex(8)


class SpeechRefused(Exception):
    """A limit on the speech one call may hold refused this text; the call and the speech
    it holds go on. ``kind`` is one of ``REFUSALS`` (a metric label)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


REFUSALS = ("queue_full", "utterance_text", "call_text")


def check_room(held: list[Utterance], limits: LimitsConfig, chars: int, *,
               into: Utterance | None = None) -> None:
    """Raise SpeechRefused unless ``chars`` more characters fit: into the open utterance
    ``into``, or else into a new utterance queued after the ``held`` ones not yet done."""
    if into is None and len(held) >= limits.max_queued_utterances:
        raise SpeechRefused("queue_full", f"{len(held)} utterances are queued on this call, "
                            "the most it takes (limits.max_queued_utterances); wait for a "
                            "speech.done or interrupt")
    utterance = (into.text_chars if into is not None else 0) + chars
    if utterance > limits.max_utterance_chars:
        raise SpeechRefused("utterance_text", f"the utterance would hold {utterance} characters, "
                            f"over the limit of {limits.max_utterance_chars} "
                            "(limits.max_utterance_chars); flush and start another")
    call = sum(u.text_chars for u in held if not u.done.is_set()) + chars
    if call > limits.max_call_text_chars:
        raise SpeechRefused("call_text", f"the call would hold {call} characters of speech not "
                            f"yet done, over the limit of {limits.max_call_text_chars} "
                            "(limits.max_call_text_chars); wait for a speech.done or interrupt")


class Recording(NamedTuple):
    """A recorded prompt to play: a file in prompts.dir or a URL (gateway/prompts/);
    ``cache`` false: its frames are not kept in the prompt store."""

    file: str | None = None
    url: str | None = None
    cache: bool = True


class Utterance:
    """One thing to say. Its text arrives whole (``speak``) or piece by piece (streaming).

    ``segments()`` yields text to synthesize: the whole text at once when it came whole
    (the provider segments it itself), or sentence by sentence as streamed pieces complete
    them, so the first sentence is spoken while the bot is still writing the next.
    """

    def __init__(self, speech_id: str | None = None, *, voice: str | None = None,
                 provider: str | None = None, source: str = "api",
                 interruptible: bool = True, cache: bool = False):
        self.id = speech_id or new_speech_id()
        self.voice = voice
        self.provider = provider
        self.source = source  # api, stream, greeting, prompt
        self.prompt: str | None = None  # a prompt's name (prompts.items), for its events
        self.recording: Recording | None = None  # a recorded prompt: frames, no synthesis
        # false: the caller's speech or keys do not cut it (a notice they must hear out);
        # an interrupt from the API still does
        self.interruptible = interruptible
        # a prompt that plays on every call (a route's greeting, a flow step): its frames
        # are kept in the prompt cache (gateway/prompts/store.py); never set for a bot's text
        self.cache = cache
        self.created_at = time.monotonic()
        self.first_audio_at: float | None = None  # first provider byte in
        self.first_frame_at: float | None = None  # first carrier frame out
        self.interrupted = False
        self.done = asyncio.Event()
        self.error: str | None = None
        self._sentences = SentenceBuffer()
        self._segments: asyncio.Queue[str | None] = asyncio.Queue()
        self._closed = False
        self._ended = False  # the end of the text was read
        self.text_chars = 0
        self.text: str | None = None  # the whole text, when it came whole
        self.heard = HeardLog()  # what of it reached the caller, for speech.done

    @classmethod
    def whole(cls, text: str, **kwargs) -> Utterance:
        utt = cls(**kwargs)
        utt.text = text
        utt.text_chars = len(text)
        utt._segments.put_nowait(text)
        utt._segments.put_nowait(None)
        utt._closed = True
        return utt

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, piece: str) -> None:
        if self._closed:
            raise ValueError(f"speech {self.id} is already flushed")
        self.text_chars += len(piece)
        for sentence in self._sentences.push(piece):
            self._segments.put_nowait(sentence)

    def close(self) -> None:
        """The text is complete (``flush``)."""
        if self._closed:
            return
        rest = self._sentences.flush()
        if rest:
            self._segments.put_nowait(rest)
        self._segments.put_nowait(None)
        self._closed = True

    async def segments(self):
        while (segment := await self.next_segment()) is not None:
            yield segment

    async def next_segment(self) -> str | None:
        """The next text segment, None once the text is complete. Safe to cancel: a
        segment is never lost by a cancelled wait (failover pulls segments this way)."""
        if self._ended:
            return None
        segment = await self._segments.get()
        if segment is None:
            self._ended = True
        return segment


#: Words with timings kept per utterance beyond its characters (a provider sending more is
#: cut off: each word has at least one character).
_WORD_SLACK = 64


class HeardLog:
    """Where an utterance's text lies on its audio timeline, and how far the caller heard it.

    The audio timeline counts the utterance's frames as queued (``s`` = seconds of audio
    from its start, gaps excluded). ``texts`` are its text segments (sentences, the
    failover ledger's list); ``ends[i]`` is where segment ``i``'s audio ends, known once
    the provider said all of its audio came; ``marked[i]`` says the carrier echoed the
    mark that followed it. ``words`` are (end on the timeline, word) where the provider
    gives word timings. The playout's cues note where the utterance's first and last
    frames went out (``start``/``end``: frames sent before, and the end's play time).
    """

    __slots__ = ("end_frames", "end_play_time", "ends", "marked", "start_frames", "texts",
                 "words")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.ends: list[float] = []
        self.marked: list[bool] = []
        self.words: list[tuple[float, str]] = []
        self.start_frames: int | None = None  # the playout's frames_sent before its first
        self.end_frames: int | None = None  # ... after its last
        self.end_play_time: float | None = None  # when its last frame plays (loop clock)

    def segment_ended(self, index: int, at_s: float) -> None:
        while len(self.ends) <= index:
            self.ends.append(at_s)
            self.marked.append(False)

    def add_word(self, end_s: float, word: str, limit: int) -> None:
        if len(self.words) < limit + _WORD_SLACK and word:
            self.words.append((end_s, word[:MAX_WORD_CHARS]))

    def drop_after(self, at_s: float) -> None:
        """A failover dropped the audio after ``at_s``: its word timings go too."""
        self.words = [w for w in self.words if w[0] <= at_s]

    def played_s(self, *, frames_sent: int, next_play_time: float, now: float,
                 frame_s: float) -> float:
        """Seconds of the utterance's audio played by ``now``, by the media clock: what
        was sent of it, less what the carrier still holds to play."""
        if self.start_frames is None:
            return 0.0
        if self.end_frames is not None and self.end_play_time is not None:  # set together
            sent, holds = self.end_frames - self.start_frames, self.end_play_time - now
        else:
            sent, holds = frames_sent - self.start_frames, next_play_time - now
        return max(0.0, sent * frame_s - max(0.0, holds))

    def result(self, played_s: float, *, by_marks: bool) -> tuple[float, str]:
        """(seconds played, the text heard): the segments heard out (their mark echoed,
        or, ``by_marks`` false, their end played by the clock), then the words of the next
        one whose audio played, where word timings came."""
        ends = self.ends
        done = 0
        while done < len(ends) and (self.marked[done] if by_marks
                                    else ends[done] <= played_s + 1e-6):
            done += 1
        start = ends[done - 1] if done else 0.0
        if by_marks:  # the marks tell where the carrier really was; the clock fills in
            played_s = max(played_s, start)
            if done < len(ends):
                played_s = min(played_s, ends[done])
        heard = self.texts[:done]
        if done < len(self.texts):
            partial = _prefix_spoken(self.texts[done], [
                word for end, word in self.words if start < end <= played_s + 1e-6])
            if partial:
                heard.append(partial)
        return played_s, " ".join(heard)


def _prefix_spoken(text: str, words: list[str]) -> str:
    """The start of ``text`` up to the last of ``words`` found in it, in order (a word the
    provider normalized, e.g. "$5" read as "five dollars", is skipped)."""
    lowered = text.lower()
    pos = 0
    for word in words:
        found = lowered.find(word.lower().strip(), pos)
        if found >= 0:
            pos = found + len(word.strip())
    return text[:pos].strip()
