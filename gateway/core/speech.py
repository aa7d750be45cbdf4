"""Utterances: what a call has been asked to say, and their text as it streams in."""

from __future__ import annotations

import asyncio
import secrets
import time

from gateway.config import LimitsConfig
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


class Utterance:
    """One thing to say. Its text arrives whole (``speak``) or piece by piece (streaming).

    ``segments()`` yields text to synthesize: the whole text at once when it came whole
    (the provider segments it itself), or sentence by sentence as streamed pieces complete
    them, so the first sentence is spoken while the bot is still writing the next.
    """

    def __init__(self, speech_id: str | None = None, *, voice: str | None = None,
                 provider: str | None = None, source: str = "api",
                 interruptible: bool = True):
        self.id = speech_id or new_speech_id()
        self.voice = voice
        self.provider = provider
        self.source = source  # api, stream, greeting
        # false: the caller's speech or keys do not cut it (a notice they must hear out);
        # an interrupt from the API still does
        self.interruptible = interruptible
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
