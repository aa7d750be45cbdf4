"""Cut a byte stream into the fixed-size frames a carrier expects (e.g. 160 B = 20 ms μ-law).

Contract: :meth:`Framer.push` returns only whole frames of exactly ``frame_bytes`` and
keeps the remainder for the next call; nothing is padded mid-stream. Only
:meth:`Framer.flush`, at the end of an utterance, pads the remainder with the
encoding's silence byte into one last whole frame.
"""

from __future__ import annotations

__all__ = ["Framer"]


class Framer:
    """Re-chunk bytes into frames of ``frame_bytes``.

    ``silence`` is a single byte value (0..255) repeated to pad the final frame:
    0xFF for μ-law, 0xD5 for A-law, 0x00 for 16-bit PCM (whose silent sample is
    ``b"\\x00\\x00"``). Keep ``frame_bytes`` a whole number of samples.
    """

    def __init__(self, frame_bytes: int, silence: int) -> None:
        if frame_bytes <= 0:
            raise ValueError(f"frame_bytes must be positive, got {frame_bytes}")
        if not 0 <= silence <= 0xFF:
            raise ValueError(f"silence must be a byte value 0..255, got {silence}")
        self.frame_bytes = frame_bytes
        self.silence = silence
        self._remainder = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back, always fewer than ``frame_bytes``."""
        return len(self._remainder)

    def push(self, data: bytes) -> list[bytes]:
        """Append ``data``; return every whole frame now available, oldest first."""
        size = self.frame_bytes
        if not self._remainder and type(data) is bytes:
            # Provider chunks are mostly whole frames: slice them without a copy through
            # the remainder buffer.
            whole = len(data) - len(data) % size
            if whole < len(data):
                self._remainder += data[whole:]
            return [data[start : start + size] for start in range(0, whole, size)]
        self._remainder += data
        whole = len(self._remainder) - len(self._remainder) % self.frame_bytes
        with memoryview(self._remainder) as view:
            frames = [
                bytes(view[start : start + self.frame_bytes])
                for start in range(0, whole, self.frame_bytes)
            ]
        del self._remainder[:whole]
        return frames

    def flush(self) -> bytes | None:
        """Return the held remainder padded with silence to one frame, or None if empty."""
        if not self._remainder:
            return None
        padding = bytes([self.silence]) * (self.frame_bytes - len(self._remainder))
        frame = bytes(self._remainder) + padding
        self._remainder.clear()
        return frame

    def clear(self) -> None:
        """Drop the held remainder (e.g. on barge-in) without emitting it."""
        self._remainder.clear()


def whole_samples(pending: bytes, data: bytes, width: int = 2) -> tuple[bytes, bytes]:
    """Join ``pending`` and ``data`` and split off a trailing partial sample.

    Returns ``(whole, pending)``: ``whole`` holds only complete ``width``-byte samples, the
    rest waits for the next chunk. Streams that cut PCM at odd byte counts (seen with
    several providers) stay aligned; zero-padding instead would shift every later sample.
    """
    if pending:
        data = pending + data
    cut = len(data) - len(data) % width
    return data[:cut], data[cut:]
