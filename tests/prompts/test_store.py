"""PromptStore on its own folder: the file layout, the key, the order kept across restarts.
(The cache through the real server: test_prompt_cache.py.)"""

from __future__ import annotations

import os
import time

import pytest

from gateway.carriers.events import MediaFormat
from gateway.config import ProviderConfig
from gateway.metrics import Metrics
from gateway.prompts.store import (STALE_TEMP_S, CorruptEntry, PromptStore, RecordedPrompt,
                                   decode, encode, tts_key)

PROMPT = RecordedPrompt(frames=(b"\x01" * 160, b"\x02" * 160, b"\x03" * 80),
                        texts=("Hello there.", "Press one."), ends=(2, 3),
                        words=((0.2, "Hello"), (0.38, "there."), (0.55, "Press")))


def test_an_entry_keeps_frames_sentence_ends_and_word_timings():
    prompt, routes = decode("k", encode("k", PROMPT, ("ivr",)))
    assert prompt == PROMPT and routes == ("ivr",)


@pytest.mark.parametrize("damage", [
    lambda data: data[:-1], lambda data: data[:10], lambda data: b"",
    lambda data: data[:-5] + b"XXXXX", lambda data: b"TTSGWPR9" + data[8:]],
    ids=["cut", "header_only", "empty", "flipped", "version"])
def test_a_damaged_entry_is_refused(damage):
    with pytest.raises(CorruptEntry):
        decode("k", damage(encode("k", PROMPT)))
    with pytest.raises(CorruptEntry):  # a file renamed to another key
        decode("other", encode("k", PROMPT))


def test_the_key_changes_with_everything_that_changes_the_audio():
    provider = ProviderConfig("c", "cartesia", "v1", {"language": "en"}, model="sonic-3.5")
    ulaw = MediaFormat("mulaw", 8000)
    base = tts_key(provider, None, "Hi.", ulaw, 160)
    assert base == tts_key(provider, "v1", "Hi.", ulaw, 160)  # the provider's own voice
    assert base == tts_key(ProviderConfig("renamed", "cartesia", "v1", {"language": "en"},
                                          model="sonic-3.5", endpoint="wss://eu"),
                           None, "Hi.", ulaw, 160)
    changed = [
        tts_key(ProviderConfig("c", "elevenlabs", "v1", {"language": "en"},
                               model="sonic-3.5"), None, "Hi.", ulaw, 160),
        tts_key(ProviderConfig("c", "cartesia", "v1", {"language": "en"}, model="sonic-3"),
                None, "Hi.", ulaw, 160),
        tts_key(provider, "v2", "Hi.", ulaw, 160),
        tts_key(ProviderConfig("c", "cartesia", "v1", {"language": "fr"}, model="sonic-3.5"),
                None, "Hi.", ulaw, 160),
        tts_key(provider, None, "Hi!", ulaw, 160),
        tts_key(provider, None, "Hi.", MediaFormat("alaw", 8000), 160),
        tts_key(provider, None, "Hi.", MediaFormat("l16", 8000), 320),
        tts_key(provider, None, "Hi.", ulaw, 480),
    ]
    assert len({base, *changed}) == 1 + len(changed)


async def test_least_recently_used_goes_first_also_after_a_restart(tmp_path):
    size = len(encode("a" * 64, PROMPT, ("r",)))
    store = PromptStore(tmp_path, max_bytes=3 * size, memory_bytes=0)  # hits read the files
    await store.load()
    keys = [c * 64 for c in "abc"]
    for age, key in zip((30, 20, 10), keys):  # written in this order, a while ago
        await store.put(key, PROMPT, route="r")
        then = time.time() - age
        os.utime(tmp_path / f"{key}.prompt", (then, then))
    assert await store.get(keys[0]) == PROMPT  # a is now the most recently used
    restarted = PromptStore(tmp_path, max_bytes=3 * size, metrics=Metrics())
    await restarted.load()
    assert [e["key"] for e in restarted.entries()] == [keys[0], keys[2], keys[1]]
    await restarted.put("d" * 64, PROMPT, route="r")
    assert not (tmp_path / f"{keys[1]}.prompt").exists()  # b was the least recently used
    assert len(restarted) == 3 and restarted.bytes <= restarted.max_bytes
    assert restarted.metrics.prompt_cache_evictions._value.get() == 1


async def test_a_prompt_larger_than_the_cache_or_empty_is_not_written(tmp_path):
    store = PromptStore(tmp_path, max_bytes=100)
    await store.load()
    assert not await store.put("a" * 64, PROMPT)
    assert not await store.put("b" * 64, RecordedPrompt(()))
    assert os.listdir(tmp_path) == []


async def test_load_removes_stale_temporary_files_and_broken_entries(tmp_path):
    stale, fresh = tmp_path / ".tmp-aaaa-1-ff", tmp_path / ".tmp-bbbb-2-ff"
    stale.write_bytes(b"half a write")
    fresh.write_bytes(b"a write in progress")  # another process's
    old = time.time() - STALE_TEMP_S - 1
    os.utime(stale, (old, old))
    (tmp_path / ("c" * 64 + ".prompt")).write_bytes(b"garbage")
    store = PromptStore(tmp_path)
    await store.load()
    assert sorted(os.listdir(tmp_path)) == [fresh.name]
    assert len(store) == 0


async def test_a_prompt_kept_in_memory_is_a_miss_once_another_process_purged_its_file(tmp_path):
    store = PromptStore(tmp_path, metrics=Metrics())
    await store.load()
    await store.put("a" * 64, PROMPT, route="r")
    assert await store.get("a" * 64) is PROMPT  # from memory
    other = PromptStore(tmp_path)  # e.g. ``tts-gateway prompts purge``
    await other.load()
    assert (await other.purge())["entries"] == 1
    assert await store.get("a" * 64) is None
    assert len(store) == 0 and store.bytes == 0
    hits = store.metrics.prompt_cache.labels("hit")._value.get()
    misses = store.metrics.prompt_cache.labels("miss")._value.get()
    assert (hits, misses) == (1, 1)


async def test_a_start_reads_the_most_recently_used_into_memory_within_its_budget(tmp_path):
    size = PROMPT.size
    first = PromptStore(tmp_path, memory_bytes=0)
    await first.load()
    for age, key in zip((30, 20, 10), ("a" * 64, "b" * 64, "c" * 64)):
        await first.put(key, PROMPT)
        os.utime(tmp_path / f"{key}.prompt", (time.time() - age,) * 2)
    mtimes = sorted(p.stat().st_mtime for p in tmp_path.iterdir())
    restarted = PromptStore(tmp_path, memory_bytes=2 * size)
    await restarted.load()
    assert list(restarted._hot) == ["b" * 64, "c" * 64]  # the two newest, oldest first
    assert sorted(p.stat().st_mtime for p in tmp_path.iterdir()) == mtimes  # not reordered
