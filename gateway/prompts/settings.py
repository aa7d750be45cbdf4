"""``prompts:`` in gateway.yaml: named prompts (a recorded file, a URL, or text to
synthesize) and the bounds on loading recorded audio (gateway/prompts/recorded.py).

Kept apart from the decoder so that reading the configuration needs no audio library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from gateway.schema import Problems, computed, read, setting

#: A prompt's name: what a flow step, ``POST /v1/calls/{id}/play`` and the bot protocol's
#: ``play`` name it by.
PROMPT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_URL_CHARS = 2048
#: Why a prompt could not be played (``recorded.PromptError.kind``): the ``kind`` label of
#: ``tts_gateway_prompt_errors_total``.
PROMPT_ERROR_KINDS = ("unknown_prompt", "bad_source", "not_found", "too_large", "too_long",
                      "not_audio", "corrupt", "unreachable", "timeout", "http_status")

#: Tests only: also allow ``http://127.0.0.1`` URLs (a loopback test server). Production
#: fetches prompts over https only.
ALLOW_LOOPBACK_HTTP = False


def url_problem(url: object) -> str | None:
    """Why ``url`` may not be fetched as a prompt, or None."""
    if type(url) is not str or len(url) > MAX_URL_CHARS:
        return f"a URL of at most {MAX_URL_CHARS} characters"
    if re.match(r"^https://[^/\s]+", url) and not re.search(r"\s", url):
        return None
    if ALLOW_LOOPBACK_HTTP and re.match(r"^http://127\.0\.0\.1(:\d+)?/", url):
        return None
    return "an https:// URL"


def file_problem(path: object) -> str | None:
    """Why ``path`` cannot name a file in the prompts folder, or None (the resolved path is
    checked again when the file is read: a symbolic link may still point out)."""
    if type(path) is not str or not path or len(path) > 1024 or "\0" in path:
        return "a file name in prompts.dir"
    parts = PurePosixPath(path.replace("\\", "/"))
    if parts.is_absolute() or ".." in parts.parts or re.match(r"^[A-Za-z]:", path):
        return "a path inside prompts.dir (no absolute path, no ..)"
    return None


@dataclass(frozen=True)
class PromptItem:
    """``prompts.items.<name>``: exactly one of ``file``, ``url``, ``text``."""

    name: str = computed("")
    file: str | None = None  # in prompts.dir
    url: str | None = None  # https://
    text: str | None = None  # synthesized, by ``provider`` (else the route's) and ``voice``
    provider: str | None = None
    voice: str | None = None

    @property
    def recorded(self) -> bool:
        return self.text is None

    def problems(self, key: str) -> list[str]:
        given = [k for k in ("file", "url", "text") if getattr(self, k) is not None]
        if len(given) != 1:
            return [f"{key}: give exactly one of file, url, text (got "
                    f"{', '.join(given) or 'none'})"]
        found = []
        if self.file is not None and (problem := file_problem(self.file)):
            found.append(f"{key}.file: {self.file!r} must be {problem}")
        if self.url is not None and (problem := url_problem(self.url)):
            found.append(f"{key}.url: must be {problem}")
        if self.text is not None and not self.text.strip():
            found.append(f"{key}.text: must not be empty")
        if self.text is None and (self.provider or self.voice):
            found.append(f"{key}: provider and voice are for text prompts only")
        return found


@dataclass(frozen=True)
class PromptsConfig:
    """Where recorded prompts come from and what bounds loading one."""

    dir: str | None = None  # the folder ``file`` prompts are read from
    max_download_bytes: int = setting(10 << 20, 1024, 1 << 30)  # a file or a download
    download_timeout_s: float = setting(10.0, 0.1, 300)
    max_seconds: float = setting(300.0, 1, 3600)  # a recorded prompt's length
    # fetch URLs whose host is (or resolves to) a private, loopback or link-local address
    allow_private_urls: bool = False
    items: dict[str, PromptItem] = field(default_factory=dict, metadata={"computed": True})


def read_prompts(problems: Problems, value: Any, providers: dict[str, Any]) -> PromptsConfig:
    """The ``prompts:`` section; every problem named by its key."""
    section = problems.mapping(value, "prompts")
    items: dict[str, PromptItem] = {}
    for name, item in problems.mapping(section.get("items"), "prompts.items").items():
        key = f"prompts.items.{name}"
        if type(name) is not str or not PROMPT_NAME.match(name):
            problems.append(f"{key}: a prompt name is 1 to 64 of A-Z a-z 0-9 _ . -")
            continue
        prompt = read(problems, PromptItem, item, key, name=name)
        if prompt.provider is not None and prompt.provider not in providers:
            problems.append(f"{key}.provider: {prompt.provider!r} is not a configured "
                            f"provider (configured: {', '.join(providers) or 'none'})")
        items[name] = prompt
    config = read(problems, PromptsConfig, {k: v for k, v in section.items() if k != "items"},
                  "prompts", items=items)
    if any(p.file is not None for p in items.values()) and not config.dir:
        problems.append("prompts.dir: required when a prompt names a file")
    return config
