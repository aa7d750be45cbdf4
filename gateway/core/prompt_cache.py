"""Route prompts (greetings) repeat on every call: keep their frames, ready to send.

Entries are the carrier-format frames of one prompt, keyed by provider, voice, text,
media format and frame size (the carrier's media message), so a hit needs no synthesis and
no conversion. With the frames go where each sentence ends and the word timings, so a cut
greeting still tells what the caller heard. Only prompts that were synthesized to the end
are stored; the cache is bounded in bytes and evicts the least recently used prompt.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from gateway.carriers.events import MediaFormat

PromptKey = tuple[str, str, str, str, int, int]


@dataclass(frozen=True)
class RecordedPrompt:
    """A prompt's frames and its text on their timeline: ``texts[i]`` (a sentence) ends
    after ``ends[i]`` frames; ``words`` are (end in seconds, word) where the provider
    timed them."""

    frames: tuple[bytes, ...]
    texts: tuple[str, ...] = ()
    ends: tuple[int, ...] = ()
    words: tuple[tuple[float, str], ...] = ()

    @property
    def size(self) -> int:
        return sum(len(f) for f in self.frames)


class PromptCache:
    def __init__(self, max_bytes: int = 64 * 2**20):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[PromptKey, RecordedPrompt] = OrderedDict()
        self._bytes = 0

    @staticmethod
    def key(provider: str, voice: str | None, text: str, fmt: MediaFormat,
            chunk_bytes: int) -> PromptKey:
        return (provider, voice or "", text, fmt.encoding, fmt.sample_rate, chunk_bytes)

    def get(self, key: PromptKey) -> RecordedPrompt | None:
        prompt = self._entries.get(key)
        if prompt is not None:
            self._entries.move_to_end(key)
        return prompt

    def put(self, key: PromptKey, prompt: RecordedPrompt) -> None:
        size = prompt.size
        if not prompt.frames or size > self.max_bytes or key in self._entries:
            return
        self._entries[key] = prompt
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size

    def __len__(self) -> int:
        return len(self._entries)
