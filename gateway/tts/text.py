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


_ENDS = ".!?"
_CLOSERS = "\"')]"
_BLANK = re.compile(r"\s")


class SentenceBuffer:
    """Collect text streamed piece by piece (LLM tokens) and release whole sentences.

    ``push`` returns the sentences completed by the new piece; the incomplete tail stays
    until more text or ``flush`` arrives. Each piece is scanned once: the text before it is
    never searched again (a bot streaming a long text without a sentence end must not cost
    the event loop time quadratic in its length). ``scanned`` counts the characters searched.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []  # the sentence in progress, as its pieces came
        # -1, or: the sentence in progress ends in . ! or ? and this many closing quotes
        # or brackets, where a boundary that the next piece completes may begin
        self._closers = -1
        self.scanned = 0

    def push(self, piece: str) -> list[str]:
        if not piece:
            return []
        self.scanned += len(piece)
        if _BLANK.search(piece) is None:  # every boundary has whitespace: none ends here
            self._append(piece)
            return []
        # The end of the text before the piece, as far as a boundary may begin in it: its
        # . ! ? and one closer for all of them (the pattern cannot tell them apart).
        prefix = "" if self._closers < 0 else "." + ('"' if self._closers else "")
        window = prefix + piece
        self.scanned += len(window)
        sentences: list[str] = []
        end = None  # where the last boundary found ends, in the window
        for match in _BOUNDARY.finditer(window):
            if end is None:  # the first sentence is the text before the piece and more
                before = "".join(self._parts)
                if match.start() < len(prefix):  # the boundary began at the old closers
                    sentence = before[:len(before) - self._closers]
                else:
                    sentence = before + window[len(prefix):match.start()]
            else:
                sentence = window[end:match.start()]
            sentence = sentence.strip()
            if sentence:
                sentences.append(sentence)
            end = match.end()
        if end is None:
            self._append(piece)
        else:
            self._parts, self._closers = [], -1
            if end < len(window):
                self._append(window[end:])
        return sentences

    def _append(self, piece: str) -> None:
        self._parts.append(piece)
        core = piece.rstrip(_CLOSERS)
        if core:
            self._closers = len(piece) - len(core) if core[-1] in _ENDS else -1
        elif self._closers >= 0:
            self._closers += len(piece)

    def flush(self) -> str | None:
        rest = "".join(self._parts).strip()
        self._parts, self._closers = [], -1
        return rest or None

    @property
    def pending(self) -> str:
        return "".join(self._parts)
