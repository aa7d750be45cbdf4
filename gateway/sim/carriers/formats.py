"""Audio formats on a simulated carrier's wire, and the decoding of what the caller heard."""

from __future__ import annotations

from dataclasses import dataclass

from telcodecs import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

_SILENCE_SAMPLE = {"mulaw": b"\xff", "alaw": b"\xd5", "l16": b"\x00\x00"}


@dataclass(frozen=True, slots=True)
class WireFormat:
    """``encoding`` is ``mulaw``, ``alaw`` or ``l16`` (16-bit signed PCM, ``byteorder``)."""

    encoding: str
    sample_rate: int
    byteorder: str = "little"

    def __post_init__(self) -> None:
        if self.encoding not in _SILENCE_SAMPLE:
            raise ValueError(f"unknown encoding {self.encoding!r}: mulaw, alaw or l16")
        if self.byteorder not in ("little", "big"):
            raise ValueError(f"byteorder must be 'little' or 'big', not {self.byteorder!r}")
        if self.encoding != "l16":  # one byte per sample: no byte order
            object.__setattr__(self, "byteorder", "little")

    @property
    def name(self) -> str:
        return f"{self.encoding}/{self.sample_rate}"

    @property
    def sample_width(self) -> int:
        return 2 if self.encoding == "l16" else 1

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.sample_width

    @property
    def frame_bytes(self) -> int:
        """Bytes in 20 ms."""
        return self.bytes_per_second // 50

    def silence(self, nbytes: int) -> bytes:
        sample = _SILENCE_SAMPLE[self.encoding]
        return sample * (nbytes // len(sample))

    def to_pcm16(self, data: bytes) -> bytes:
        """Wire bytes -> 16-bit little-endian PCM at ``sample_rate`` (an odd byte of L16
        is dropped)."""
        if self.encoding == "mulaw":
            return ulaw_decode(data)
        if self.encoding == "alaw":
            return alaw_decode(data)
        data = bytes(data[: len(data) // 2 * 2])
        return _swap16(data) if self.byteorder != "little" else data

    def from_pcm16(self, pcm: bytes) -> bytes:
        """16-bit little-endian PCM -> wire bytes (for caller audio)."""
        if self.encoding == "mulaw":
            return ulaw_encode(pcm)
        if self.encoding == "alaw":
            return alaw_encode(pcm)
        return _swap16(pcm) if self.byteorder != "little" else bytes(pcm)


def _swap16(data: bytes) -> bytes:
    swapped = bytearray(len(data))
    swapped[0::2] = data[1::2]
    swapped[1::2] = data[0::2]
    return bytes(swapped)


def parse_format(text: str, allowed: tuple[str, ...], *, l16_byteorder: str = "little",
                 carrier: str = "") -> WireFormat:
    """``"mulaw/8000"`` (also ``ulaw``, ``pcmu``, ``pcma``, ``slin``...) -> :class:`WireFormat`,
    if the carrier offers it (``allowed`` holds canonical names like ``"l16/16000"``)."""
    encoding, _, rate = text.strip().lower().partition("/")
    encoding = {"ulaw": "mulaw", "pcmu": "mulaw", "pcma": "alaw", "pcm": "l16",
                "slin": "l16", "linear16": "l16"}.get(encoding, encoding)
    name = f"{encoding}/{rate}"
    if name not in allowed:
        who = f"{carrier} " if carrier else ""
        raise ValueError(f"{who}does not offer {text!r}; choose one of {', '.join(allowed)}")
    return WireFormat(encoding, int(rate), l16_byteorder)

