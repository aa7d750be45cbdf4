"""Test audio for recorded prompts: tones written as WAV files, and how to tell which tone
a caller heard and for how long."""

from __future__ import annotations

import struct

import numpy as np
from telcodecs import g711


def tone_pcm16(freq: float, seconds: float, rate: int, *, channels: int = 1,
               amplitude: float = 0.5) -> bytes:
    """A sine tone as 16-bit little-endian PCM (channels interleaved, all the same)."""
    t = np.arange(round(seconds * rate)) / rate
    samples = (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    if channels > 1:
        samples = np.repeat(samples, channels)
    return samples.tobytes()


def wav_bytes(payload: bytes, rate: int, *, format_tag: int = 1, bits: int = 16,
              channels: int = 1) -> bytes:
    """A RIFF/WAVE file: PCM (tag 1), A-law (6) or μ-law (7)."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, rate * block, block, bits)
    if format_tag != 1:
        fmt += struct.pack("<H", 0)  # cbSize: G.711 files carry the extended header
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def tone_wav(freq: float, seconds: float, rate: int, encoding: str = "pcm",
             channels: int = 1) -> bytes:
    pcm = tone_pcm16(freq, seconds, rate, channels=channels)
    if encoding == "mulaw":
        return wav_bytes(g711.ulaw_encode(pcm), rate, format_tag=7, bits=8, channels=channels)
    if encoding == "alaw":
        return wav_bytes(g711.alaw_encode(pcm), rate, format_tag=6, bits=8, channels=channels)
    return wav_bytes(pcm, rate, channels=channels)


def dominant_hz(pcm16: bytes, rate: int) -> float:
    """The strongest frequency in the audio (its loud part)."""
    samples = np.frombuffer(pcm16, "<i2").astype(np.float64)
    loud_at = np.flatnonzero(np.abs(samples) > 1000)
    loud = samples[loud_at[0]:loud_at[-1] + 1] if loud_at.size else samples
    spectrum = np.abs(np.fft.rfft(loud * np.hanning(loud.size)))
    return float(np.argmax(spectrum) * rate / loud.size)


def sounding_seconds(pcm16: bytes, rate: int, threshold: int = 1000) -> float:
    """From the first to the last sample louder than ``threshold``."""
    samples = np.abs(np.frombuffer(pcm16, "<i2").astype(np.int32))
    loud = np.flatnonzero(samples > threshold)
    if loud.size == 0:
        return 0.0
    return (loud[-1] - loud[0] + 1) / rate
