"""The TTS side of a call: providers hand out sessions that stream audio chunks.

A provider is configured once per process; a call opens one session at its start and
keeps it for its whole life (every utterance of the call goes over it), then releases it.
Remote providers lease sessions from a pool of warm connections; the embedded voice
needs none.
"""

from __future__ import annotations

import abc
from contextlib import aclosing
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from gateway.carriers.events import MediaFormat


#: A word's text is cut to this many characters (a provider's word is bounded).
MAX_WORD_CHARS = 64


@dataclass(frozen=True, slots=True)
class WordTiming:
    """A word the provider says it spoke, in seconds from the start of its turn's audio."""

    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Provider audio with an explicit format: ``encoding`` is ``pcm_s16le``, ``mulaw`` or
    ``alaw``. ``words``: timings of words the provider sent with (or since) the audio
    before it, where it sends any; ``data`` may then be empty."""

    data: bytes
    encoding: str
    sample_rate: int
    words: tuple[WordTiming, ...] = ()


class TtsError(Exception):
    """A provider failed; ``kind`` is a bounded metric label (``connect``, ``synthesis``, ...)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        #: The configured provider that failed, where the call that caught it says so.
        self.provider: str | None = None


class TtsSession(abc.ABC):
    """One call's channel to a provider."""

    @abc.abstractmethod
    def synthesize(self, text: str, voice: str | None = None) -> AsyncGenerator[AudioChunk, None]:
        """Stream the audio for ``text``.

        Closing the iterator early (``aclose()``, or cancelling the task consuming it)
        cancels the synthesis: no further chunk of it is produced.
        """

    async def stream(self, segments: AsyncIterator[str], voice: str | None = None, *,
                     on_segments_done: Callable[[int], None] | None = None
                     ) -> AsyncGenerator[AudioChunk, None]:
        """Stream the audio of one utterance whose text arrives segment by segment.

        Providers with contexts override this to send every segment into one turn as it
        arrives; by default each segment is synthesized in turn.

        ``on_segments_done(n)``, if given, is called once the audio of the first ``n``
        segments has all been yielded (``n`` grows; it is called between chunks, so every
        chunk yielded before belongs to those segments). Failover uses it to know where a
        failed provider left off.
        """
        done = 0
        async for segment in segments:
            async with aclosing(self.synthesize(segment, voice)) as chunks:
                async for chunk in chunks:
                    yield chunk
            done += 1
            if on_segments_done is not None:
                on_segments_done(done)

    async def release(self) -> None:  # noqa: B027 (a hook: by default nothing to give back)
        """Give the session back at the end of the call."""

    async def discard(self) -> None:
        """Give the session back after it failed: whatever it holds is not reused."""
        await self.release()


class TtsProvider(abc.ABC):
    name: str
    voice: str

    @property
    def tracks_sentences(self) -> bool:
        """A whole text may be handed to its sessions sentence by sentence, in one turn, and
        they say when each sentence's audio is all in (``stream(on_segments_done=...)``) at
        no cost: the call then knows which sentences a caller heard out."""
        return False

    @abc.abstractmethod
    async def start(self) -> None:
        """Load or connect what is needed before the first call (readiness waits on it)."""

    @property
    @abc.abstractmethod
    def ready(self) -> bool: ...

    @abc.abstractmethod
    async def open_session(self, output: MediaFormat) -> TtsSession:
        """A session for one call whose carrier wants ``output`` (to ask for it directly
        where possible)."""

    def use_metrics(self, metrics) -> None:  # noqa: B027 (a hook: most report none)
        """The application's metrics, for providers that report their own (pools)."""

    async def close(self) -> None:  # noqa: B027 (a hook: most hold nothing)
        """Release everything at shutdown."""
