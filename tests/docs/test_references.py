"""Every reference a comment makes to the protocol notes resolves from a clone: a
``docs/protocols/<doc>.md`` that exists, each ``§x.y`` after it a heading of that document,
and no path outside the repository."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "protocols"
_DOC = re.compile(r"(?P<prefix>docs/protocols/|(?<![\w/.-]))(?P<name>[\w-]+)\.md\b")
_SECTION = re.compile(r"§\s?(?P<a>\d+(?:\.\d+)*)(?:\s?[-–]\s?(?P<b>\d+(?:\.\d+)*))?")
# a section of something else: "RFC 6455 §5.1", "PROTOCOL.md §4.1"
_EXTERNAL = re.compile(r"(?:RFC\s?\d+|[A-Z][A-Z_]+\.md)\s*$")
_NOTES = ("carriers", "tts-providers")


def section_ids(doc: Path) -> set[str]:
    return {m.group(1) for line in doc.read_text(encoding="utf-8").splitlines()
            if (m := re.match(r"#{2,4}\s+(\d+(?:\.\d+)*)\.?\s", line))}


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files", "gateway", "codecs", "tests", "examples",
                            "deploy", "README.md", "CONTRIBUTING.md", "gateway.yaml"],
                           cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    return [ROOT / n for n in names if n.endswith((".py", ".md", ".yaml", ".yml"))]


def _where(rel: Path, text: str, pos: int) -> str:
    return f"{rel}:{text.count(chr(10), 0, pos) + 1}"


def unresolved_references() -> tuple[int, list[str]]:
    ids = {name: section_ids(DOCS / f"{name}.md") for name in _NOTES}
    checked, problems = 0, []
    for path in tracked_text_files():
        text = path.read_text(encoding="utf-8")
        where = functools.partial(_where, path.relative_to(ROOT), text)

        found = [m for m in _DOC.finditer(text) if m.group("name") in _NOTES]
        problems += [f"{where(m.start())}: {m.group('name')}.md outside docs/protocols/"
                     for m in found if not m.group("prefix")]
        docs = [(m.start(), m.group("name")) for m in found]
        for m in _SECTION.finditer(text):
            if _EXTERNAL.search(text[max(0, m.start() - 24):m.start()]):
                continue
            before = [name for pos, name in docs if pos < m.start()]
            if not before:
                problems.append(f"{where(m.start())}: {m.group(0)} names no document before it")
                continue
            for number in filter(None, (m.group("a"), m.group("b"))):
                checked += 1
                if number not in ids[before[-1]]:
                    problems.append(f"{where(m.start())}: {before[-1]}.md has no §{number}")
        problems += [f"{where(m.start())}: {m.group(0)} is outside the repository"
                     for m in re.finditer(r"/work/[\w./-]+", text)]
    return checked, problems


def test_every_protocol_reference_resolves_in_the_repository():
    checked, problems = unresolved_references()
    assert checked > 250  # the comments do cite the notes
    assert problems == []
