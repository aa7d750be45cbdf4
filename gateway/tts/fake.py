"""A stand-in provider with a realistic timing profile, for benchmarks and load tests.

It behaves like a remote streaming TTS seen from the gateway: a session costs a
handshake, each text waits ``first_audio_ms`` before its first chunk, then audio comes in
bursts faster than real time (``burst_factor``) until it is ``max_ahead_s`` ahead of real
time, as a provider fed by a streaming LLM is; after that it keeps pace. The audio is a
voiced, syllable-like signal at ``sample_rate`` (24 kHz by default, like Cartesia or Together),
long in proportion to the text, so the resampler and framer do real work. It never touches the
network; remote providers and their faithful fakes come with the provider pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import numpy as np
from telcodecs import ulaw_encode

from gateway.carriers.events import MediaFormat
from gateway.tts.base import AudioChunk, TtsProvider, TtsSession

CHUNK_SECONDS = 0.1


def speechlike_pcm(seconds: float, rate: int) -> bytes:
    """Harmonics of a 120 Hz voice, gated at a syllable rate of 4 Hz, about -18 dBFS."""
    t = np.arange(int(seconds * rate)) / rate
    voiced = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 25))
    gate = 0.5 - 0.5 * np.cos(2 * np.pi * 4 * t)
    return (voiced * gate * 3000).astype("<i2").tobytes()


class FakeProvider(TtsProvider):
    def __init__(self, name: str, *, handshake_ms: float = 250, first_audio_ms: float = 200,
                 burst_factor: float = 4.0, sample_rate: int = 24000,
                 chars_per_second: float = 15.0, max_ahead_s: float = 3.0,
                 encoding: str = "pcm_s16le"):
        if encoding not in ("pcm_s16le", "mulaw"):
            raise ValueError(f"encoding {encoding!r}: the fake speaks pcm_s16le or mulaw")
        if encoding == "mulaw" and sample_rate != 8000:
            raise ValueError("mulaw comes at 8000 Hz only")
        self.name = name
        self.voice = "fake"
        self.handshake = handshake_ms / 1000
        self.first_audio = first_audio_ms / 1000
        self.burst_factor = burst_factor
        self.sample_rate = sample_rate
        self.chars_per_second = chars_per_second
        self.max_ahead = max_ahead_s
        self.encoding = encoding
        self.bytes_per_sample = 1 if encoding == "mulaw" else 2
        self._audio = b""
        self._ready = False

    async def start(self) -> None:
        audio = speechlike_pcm(10.0, self.sample_rate)  # looped for longer texts
        # like the providers that send the carrier's own format (Inworld MULAW, ElevenLabs
        # ulaw_8000)
        self._audio = ulaw_encode(audio) if self.encoding == "mulaw" else audio
        self._ready = True

    @property
    def ready(self) -> bool:
        return self._ready

    async def open_session(self, output: MediaFormat) -> TtsSession:
        await asyncio.sleep(self.handshake)
        return FakeSession(self)


class FakeSession(TtsSession):
    def __init__(self, provider: FakeProvider):
        self._p = provider

    async def synthesize(self, text: str, voice: str | None = None
                         ) -> AsyncGenerator[AudioChunk, None]:
        p = self._p
        width = p.bytes_per_sample
        total = int(len(text) / p.chars_per_second * p.sample_rate) * width
        chunk = int(CHUNK_SECONDS * p.sample_rate) * width
        audio, rate, encoding = p._audio, p.sample_rate, p.encoding
        loop = asyncio.get_running_loop()
        await asyncio.sleep(p.first_audio)
        began = loop.time()
        sent = 0
        while sent < total:
            n = min(chunk, total - sent)
            start = sent % len(audio)
            piece = audio[start:start + n]
            if len(piece) < n:
                piece += audio[: n - len(piece)]
            sent += n
            yield AudioChunk(piece, encoding, rate)
            if sent < total:
                ahead = sent / width / rate - (loop.time() - began)
                await asyncio.sleep(max(CHUNK_SECONDS / p.burst_factor, ahead - p.max_ahead))
