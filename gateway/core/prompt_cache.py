"""Route prompts (greetings) repeat on every call: keep their frames, ready to send.

Entries are the carrier-format frames of one prompt, keyed by provider, voice, text,
media format and frame size (the carrier's media message), so a hit needs no synthesis and no conversion. Only prompts that were
synthesized to the end are stored; the cache is bounded in bytes and evicts the least
recently used prompt.
"""

from __future__ import annotations

from collections import OrderedDict

from gateway.carriers.events import MediaFormat

PromptKey = tuple[str, str, str, str, int, int]


class PromptCache:
    def __init__(self, max_bytes: int = 64 * 2**20):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[PromptKey, tuple[bytes, ...]] = OrderedDict()
        self._bytes = 0

    @staticmethod
    def key(provider: str, voice: str | None, text: str, fmt: MediaFormat,
            chunk_bytes: int) -> PromptKey:
        return (provider, voice or "", text, fmt.encoding, fmt.sample_rate, chunk_bytes)

    def get(self, key: PromptKey) -> tuple[bytes, ...] | None:
        frames = self._entries.get(key)
        if frames is not None:
            self._entries.move_to_end(key)
        return frames

    def put(self, key: PromptKey, frames: list[bytes]) -> None:
        size = sum(len(f) for f in frames)
        if size > self.max_bytes or key in self._entries:
            return
        self._entries[key] = tuple(frames)
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= sum(len(f) for f in evicted)

    def __len__(self) -> int:
        return len(self._entries)
