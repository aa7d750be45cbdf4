"""Utterances: what a call has been asked to say, and their text as it streams in."""

from __future__ import annotations

import asyncio
import secrets
import time

from gateway.tts.text import SentenceBuffer


def new_speech_id() -> str:
    return "sp_" + secrets.token_hex(8)


class Utterance:
    """One thing to say. Its text arrives whole (``speak``) or piece by piece (streaming).

    ``segments()`` yields text to synthesize: the whole text at once when it came whole
    (the provider segments it itself), or sentence by sentence as streamed pieces complete
    them, so the first sentence is spoken while the bot is still writing the next.
    """

    def __init__(self, speech_id: str | None = None, *, voice: str | None = None,
                 provider: str | None = None, source: str = "api"):
        self.id = speech_id or new_speech_id()
        self.voice = voice
        self.provider = provider
        self.source = source  # api, stream, greeting
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
