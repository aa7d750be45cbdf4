"""Loading recorded prompts: the ``prompts:`` section's checks, the folder no path leaves,
the bounds on a file, each source read and decoded once, and the event loop kept free."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from gateway.carriers.events import MediaFormat
from gateway.config import ConfigError, parse_config
from gateway.prompts import recorded
from gateway.prompts.recorded import PromptError, RecordedPrompts
from gateway.prompts.settings import PromptsConfig
from tests.conftest import base_config
from tests.prompts.tones import dominant_hz, tone_wav

MULAW = MediaFormat("mulaw", 8000)


def config_problems(prompts: dict) -> list[str]:
    data = base_config()
    data["prompts"] = prompts
    try:
        parse_config(data, {})
    except ConfigError as exc:
        return exc.problems
    return []


def test_the_prompts_section_names_each_problem_by_its_key():
    problems = config_problems({"dir": "prompts", "max_seconds": 0, "items": {
        "up": {"file": "../secret.wav"}, "abs": {"file": "/etc/passwd"},
        "plain": {"url": "http://cdn.example.com/a.wav"}, "both": {"file": "a.wav", "text": "Hi"},
        "none": {}, "who": {"text": "Hi", "provider": "nobody"}, "bad name!": {"text": "Hi"},
        "odd": {"file": "a.wav", "voice": "x"}, "extra": {"file": "a.wav", "loop": True}}})
    for expected in ["prompts.items.up.file: '../secret.wav' must be a path inside prompts.dir",
                     "prompts.items.abs.file: '/etc/passwd' must be a path inside prompts.dir",
                     "prompts.items.plain.url: must be an https:// URL",
                     "prompts.items.both: give exactly one of file, url, text (got file, text)",
                     "prompts.items.none: give exactly one of file, url, text (got none)",
                     "prompts.items.who.provider: 'nobody' is not a configured provider",
                     "prompts.items.bad name!: a prompt name is 1 to 64 of",
                     "prompts.items.odd: provider and voice are for text prompts only",
                     "prompts.items.extra.loop: unknown key",
                     "prompts.max_seconds: 0.0 is outside 1..3600"]:
        assert any(p.startswith(expected) for p in problems), (expected, problems)
    assert config_problems({"items": {"a": {"file": "a.wav"}}}) == [
        "prompts.dir: required when a prompt names a file"]
    fine = {"a": {"file": "sub/a.wav"}, "b": {"url": "https://cdn.example.com/b.mp3"},
            "c": {"text": "Hello", "provider": "local"}}
    assert config_problems({"dir": "p", "items": fine}) == []


async def load(prompts: RecordedPrompts, **source) -> bytes:
    prompt = await prompts.load(fmt=MULAW, chunk_bytes=160, **source)
    return b"".join(prompt.frames)


async def test_no_path_leaves_the_prompts_folder(tmp_path):
    folder = tmp_path / "prompts"
    folder.mkdir()
    (tmp_path / "outside.wav").write_bytes(tone_wav(440, 0.2, 8000))
    (folder / "link.wav").symlink_to(tmp_path / "outside.wav")
    prompts = RecordedPrompts(PromptsConfig(dir=str(folder)))
    for file in ("link.wav", "../outside.wav", str(tmp_path / "outside.wav")):
        with pytest.raises(PromptError) as caught:
            await load(prompts, file=file)
        assert caught.value.kind == "bad_source", file
    with pytest.raises(PromptError) as caught:
        await load(RecordedPrompts(PromptsConfig()), file="a.wav")
    assert "prompts.dir is not configured" in str(caught.value)


async def test_a_file_over_the_byte_or_time_limit_is_refused(tmp_path):
    (tmp_path / "long.wav").write_bytes(tone_wav(440, 3.0, 8000))
    small = RecordedPrompts(PromptsConfig(dir=str(tmp_path), max_download_bytes=4096))
    with pytest.raises(PromptError) as caught:
        await load(small, file="long.wav")
    assert caught.value.kind == "too_large" and "over 4096 bytes" in str(caught.value)
    short = RecordedPrompts(PromptsConfig(dir=str(tmp_path), max_seconds=2))
    with pytest.raises(PromptError) as caught:
        await load(short, file="long.wav")
    assert caught.value.kind == "too_long" and "3.0 s of audio" in str(caught.value)


def test_audio_whose_header_tells_no_length_is_held_to_the_limit_once_decoded(monkeypatch):
    """The header's length is checked before decoding (cheap); a stream whose header says
    nothing (duration 0) is checked on what decoded."""
    real = recorded._INFO["wav"]

    def no_length(data):
        info = real(data)
        info.duration = 0.0
        return info

    monkeypatch.setitem(recorded._INFO, "wav", no_length)
    with pytest.raises(PromptError) as caught:
        recorded.decode_audio(tone_wav(440, 3.0, 8000), max_seconds=2)
    assert caught.value.kind == "too_long" and "3.0 s of audio" in str(caught.value)


async def test_each_source_is_read_and_decoded_once_and_an_edited_file_anew(tmp_path,
                                                                          monkeypatch):
    decodes = []
    real = recorded.decode_audio

    def counting(data, max_seconds):
        decodes.append(len(data))
        return real(data, max_seconds)

    monkeypatch.setattr(recorded, "decode_audio", counting)
    path = tmp_path / "menu.wav"
    path.write_bytes(tone_wav(440, 0.5, 16000))
    prompts = RecordedPrompts(PromptsConfig(dir=str(tmp_path)))
    heard = await asyncio.gather(*(load(prompts, file="menu.wav") for _ in range(10)))
    assert len(decodes) == 1 and len(set(heard)) == 1
    await prompts.load(fmt=MediaFormat("l16", 16000), chunk_bytes=640, file="menu.wav")
    assert len(decodes) == 1, "another carrier format converts the decoded audio again"
    path.write_bytes(tone_wav(880, 0.7, 16000))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    from telcodecs import ulaw_decode

    again = await load(prompts, file="menu.wav")
    assert len(decodes) == 2 and abs(dominant_hz(ulaw_decode(again), 8000) - 880) < 10


async def test_a_cancelled_waiter_does_not_cancel_the_others_load(tmp_path):
    (tmp_path / "a.wav").write_bytes(tone_wav(440, 2.0, 48000))
    prompts = RecordedPrompts(PromptsConfig(dir=str(tmp_path)))
    first = asyncio.ensure_future(load(prompts, file="a.wav"))
    second = asyncio.ensure_future(load(prompts, file="a.wav"))
    await asyncio.sleep(0)
    first.cancel()
    assert abs(len(await second) - 2 * 8000) <= 2 * 160


async def test_decoding_a_long_file_leaves_the_event_loop_free(tmp_path):
    """A 2-minute 48 kHz file (11 MB) decodes and converts in worker threads."""
    (tmp_path / "long.wav").write_bytes(tone_wav(440, 120.0, 48000))
    prompts = RecordedPrompts(PromptsConfig(dir=str(tmp_path), max_download_bytes=32 << 20))
    gaps = []

    async def tick():
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.ensure_future(tick())
    started = time.monotonic()
    frames = await load(prompts, file="long.wav")
    took = time.monotonic() - started
    ticker.cancel()
    print(f"2 min at 48 kHz loaded in {took * 1000:.0f} ms; longest loop gap "
          f"{max(gaps) * 1000:.1f} ms over {len(gaps)} ticks")
    assert abs(len(frames) - 120 * 8000) <= 2 * 160  # the resampler's tail: a frame
    assert max(gaps) < 0.5  # generous: a blocked loop would stall for the whole decode


def test_every_error_kind_is_a_declared_metric_label():
    from gateway.metrics import LABEL_VALUES
    from gateway.prompts.settings import PROMPT_ERROR_KINDS

    assert set(LABEL_VALUES["prompt_errors"]["kind"]) == set(PROMPT_ERROR_KINDS)
    source = Path(recorded.__file__).read_text()
    import re

    raised = set(re.findall(r'PromptError\("(\w+)"', source))
    assert raised <= set(PROMPT_ERROR_KINDS), raised - set(PROMPT_ERROR_KINDS)


class DictStore:
    """A FrameStore that remembers what was asked of it."""

    def __init__(self):
        self.entries: dict[str, object] = {}
        self.puts: list[tuple[str, str | None]] = []

    async def get(self, key, *, route=None):
        return self.entries.get(key)

    async def put(self, key, prompt, *, route=None):
        self.puts.append((key, route))
        self.entries[key] = prompt
        return True


async def test_frames_go_to_the_store_by_content_and_format_and_a_restart_decodes_nothing(
        tmp_path, monkeypatch):
    decodes = []
    real = recorded.decode_audio
    monkeypatch.setattr(recorded, "decode_audio",
                        lambda data, limit: decodes.append(1) or real(data, limit))
    (tmp_path / "a.wav").write_bytes(tone_wav(440, 0.4, 16000))
    (tmp_path / "same.wav").write_bytes(tone_wav(440, 0.4, 16000))
    store = DictStore()
    config = PromptsConfig(dir=str(tmp_path))
    first = RecordedPrompts(config, store)
    await first.load(fmt=MULAW, chunk_bytes=160, file="a.wav", route="ivr")
    await first.load(fmt=MediaFormat("l16", 16000), chunk_bytes=640, file="a.wav")
    assert len(store.puts) == 2 and store.puts[0][1] == "ivr", "one entry per format"
    await first.load(fmt=MULAW, chunk_bytes=160, file="same.wav")
    assert len(store.puts) == 2, "another file with the same content is the same entry"
    restarted = RecordedPrompts(config, store)
    decodes.clear()
    await restarted.load(fmt=MULAW, chunk_bytes=160, file="a.wav")
    assert decodes == [] and len(store.puts) == 2


async def test_a_prompt_that_opts_out_of_the_cache_writes_nothing(tmp_path):
    (tmp_path / "a.wav").write_bytes(tone_wav(440, 0.4, 16000))
    store = DictStore()
    prompts = RecordedPrompts(PromptsConfig(dir=str(tmp_path)), store)
    prompt = await prompts.load(fmt=MULAW, chunk_bytes=160, file="a.wav", cache=False)
    assert prompt.frames and store.puts == []


@pytest.mark.parametrize("url, allow_private, kind, says", [
    ("https://10.1.2.3/a.wav", False, "bad_source", "names a private address"),
    ("https://[::1]:9/a.wav", False, "bad_source", "names a private address"),
    ("https://169.254.169.254/latest/meta-data", False, "bad_source", "names a private"),
    ("https://localhost:9/a.wav", False, "unreachable", "localhost has no public address"),
    ("https://127.0.0.1:9/a.wav", True, "unreachable", "cannot be reached"),
])
async def test_a_url_into_the_gateways_own_network_is_refused(url, allow_private, kind, says):
    prompts = RecordedPrompts(PromptsConfig(allow_private_urls=allow_private,
                                            download_timeout_s=5))
    with pytest.raises(PromptError) as caught:
        await load(prompts, url=url)
    assert caught.value.kind == kind and says in str(caught.value), str(caught.value)


def test_check_config_names_each_prompt_file_that_would_not_play(tmp_path, capsys):
    import yaml

    from gateway.cli import main

    (tmp_path / "good.wav").write_bytes(tone_wav(440, 0.3, 8000))
    (tmp_path / "text.wav").write_bytes(b"not audio at all" * 10)
    (tmp_path / "long.wav").write_bytes(tone_wav(440, 2.5, 8000))
    data = base_config()
    data["prompts"] = {"dir": str(tmp_path), "max_seconds": 2, "items": {
        "good": {"file": "good.wav"}, "text": {"file": "text.wav"},
        "long": {"file": "long.wav"}, "gone": {"file": "gone.wav"},
        "remote": {"url": "https://cdn.example.com/never-fetched.wav"}}}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "4 problem(s)" not in err and "3 problem(s)" in err, err
    assert "prompts.items.text.file: not an audio file" in err
    assert "prompts.items.long.file: 2.5 s of audio, over the limit of 2 s" in err
    assert "prompts.items.gone.file: no file 'gone.wav' in prompts.dir" in err
