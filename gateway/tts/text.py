"""Text handling shared by all providers: sentence segmentation of streamed text."""

from __future__ import annotations

import re

# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) and whitespace,
# or at a line break. Decimal numbers ("3.5") and "e.g." without a following space do not end one.
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Split complete text into sentences, keeping each one's punctuation."""
    parts = _BOUNDARY.split(text)
    return [p.strip() for p in parts if p and p.strip()]


def pack_sentences(text: str, limit: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` characters for a provider's per-message
    limit: whole sentences packed together where they fit, a sentence longer than the limit
    cut at its last space before it (or hard, if it has none). Pieces are stripped."""
    if limit < 1:
        raise ValueError("limit must be positive")
    pieces: list[str] = []
    current = ""
    for sentence in split_sentences(text):
        while len(sentence) > limit:
            cut = sentence.rfind(" ", 0, limit + 1)
            if cut <= 0:
                cut = limit
            head, sentence = sentence[:cut].rstrip(), sentence[cut:].lstrip()
            if current:
                pieces.append(current)
                current = ""
            pieces.append(head)
        if not sentence:
            continue
        if current and len(current) + 1 + len(sentence) <= limit:
            current += " " + sentence
        else:
            if current:
                pieces.append(current)
            current = sentence
    if current:
        pieces.append(current)
    return pieces


class SentenceBuffer:
    """Collect text streamed piece by piece (LLM tokens) and release whole sentences.

    ``push`` returns the sentences completed by the new piece; the incomplete tail stays
    until more text or ``flush`` arrives.
    """

    def __init__(self) -> None:
        self._pending = ""

    def push(self, piece: str) -> list[str]:
        self._pending += piece
        sentences: list[str] = []
        start = 0
        for match in _BOUNDARY.finditer(self._pending):
            sentence = self._pending[start:match.start()].strip()
            if sentence:
                sentences.append(sentence)
            start = match.end()
        self._pending = self._pending[start:]
        return sentences

    def flush(self) -> str | None:
        rest, self._pending = self._pending.strip(), ""
        return rest or None

    @property
    def pending(self) -> str:
        return self._pending
