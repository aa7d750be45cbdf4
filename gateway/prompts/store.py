"""The prompt cache: prompts' carrier-format frames on disk, content-addressed, LRU by bytes.

Prompts (route greetings, flow steps, recorded files) repeat on every call, so their frames
are kept, ready to send: a hit needs no synthesis and no conversion. With the frames go
where each sentence ends and the word timings, so a cut prompt still tells what the caller
heard.

The key (:func:`prompt_key`) is a hash of everything that changes the audio: provider
type, model, voice, every voice option, the text (or a recorded file's content hash), the
output format and the frame size. A change of any of them is a miss, never stale audio.

Each entry is one file ``<key>.prompt`` under the cache folder, written to a temporary
file and renamed into place, so a crash leaves a whole entry or none. A file that is cut
short, corrupt or of another version is removed when it is found and counts as a miss.
The folder is bounded in bytes: the least recently used entries go first. Use is tracked
in memory and in each file's modification time, so a restart keeps the order.

:class:`Prompts` is the interface the gateway uses; :class:`PromptStore` implements it
on a folder; gateway/cluster/prompts.py ``SharedPrompts`` puts one in front of Redis
(``cluster.redis_url``), so that several gateways share their prompts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import struct
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gateway.logs import RateLimitedLog

log = logging.getLogger(__name__)

#: the version of the key's recipe and of the file layout; a change makes old entries misses
FORMAT_VERSION = 1
MAGIC = b"TTSGWPR1"
SUFFIX = ".prompt"
_HEAD = struct.Struct("!8sII")  # magic, header length, crc32 of header + frames
#: a header longer than this is not one of ours (the word timings of a long prompt fit)
MAX_HEADER_BYTES = 4 << 20
#: a temporary file older than this is a write that died with its process
STALE_TEMP_S = 600.0
DEFAULT_MAX_BYTES = 256 << 20
DEFAULT_MEMORY_BYTES = 32 << 20
#: a prompt played from memory gets its file's modification time (its last use, for the
#: order after a restart) set again at most this often
TOUCH_EVERY_S = 60.0


def default_dir() -> Path:
    """The user's cache folder: ``$XDG_CACHE_HOME`` (else ``~/.cache``)/tts-gateway/prompts."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tts-gateway" / "prompts"


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


def prompt_key(**parts: Any) -> str:
    """The cache key of a prompt: a hash of ``parts`` (JSON values), everything that
    changes its audio. Callers name the parts; :func:`tts_key` is the one for synthesis."""
    canonical = json.dumps({"v": FORMAT_VERSION, **parts}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def tts_key(provider, voice: str | None, text: str, media_format, frame_bytes: int) -> str:
    """The key of ``text`` synthesized by ``provider`` (a ProviderConfig) into frames of
    ``frame_bytes`` in ``media_format``."""
    return prompt_key(source="tts", provider_type=provider.type, model=provider.model,
                      voice=voice or provider.voice, options=provider.options, text=text,
                      encoding=media_format.encoding, sample_rate=media_format.sample_rate,
                      frame_bytes=frame_bytes)


class Prompts(Protocol):
    """What calls, the control API and the CLI need of a prompt cache."""

    @property
    def max_bytes(self) -> int: ...
    @property
    def dir(self) -> Path: ...  # where its entries are kept (in log lines)

    async def load(self) -> None: ...
    async def get(self, key: str, *, route: str | None = None) -> RecordedPrompt | None: ...
    async def put(self, key: str, prompt: RecordedPrompt, *,
                  route: str | None = None) -> bool: ...
    async def purge(self, route: str | None = None) -> dict[str, int]: ...
    def entries(self) -> list[dict[str, Any]]: ...
    def has(self, key: str) -> bool: ...
    def tag(self, key: str, route: str) -> None: ...
    # a store shared between gateways: fetch the prompt from it into this one (None: not
    # there), offer it one this one has, close its connections
    async def fetch(self, key: str, *, route: str | None = None
                    ) -> RecordedPrompt | None: ...
    def share(self, key: str) -> None: ...
    async def close(self) -> None: ...
    @property
    def bytes(self) -> int: ...
    def __len__(self) -> int: ...


class CorruptEntry(Exception):
    """A cache file that is not a whole entry of this version."""


def encode(key: str, prompt: RecordedPrompt, routes: tuple[str, ...] = ()) -> bytes:
    header = json.dumps({
        "key": key, "routes": list(routes), "sizes": [len(f) for f in prompt.frames],
        "texts": list(prompt.texts), "ends": list(prompt.ends),
        "words": [list(w) for w in prompt.words]}, ensure_ascii=False).encode()
    body = b"".join(prompt.frames)
    crc = zlib.crc32(body, zlib.crc32(header))
    return _HEAD.pack(MAGIC, len(header), crc) + header + body


def decode(key: str, data: bytes) -> tuple[RecordedPrompt, tuple[str, ...]]:
    """The prompt in ``data`` and the routes that wrote it; CorruptEntry if it is not a
    whole entry for ``key``."""
    if len(data) < _HEAD.size:
        raise CorruptEntry("shorter than its header")
    magic, header_len, crc = _HEAD.unpack_from(data)
    if magic != MAGIC or header_len > MAX_HEADER_BYTES:
        raise CorruptEntry("not a prompt cache entry of this version")
    header_end = _HEAD.size + header_len
    view = memoryview(data)
    if len(data) < header_end or zlib.crc32(view[header_end:],
                                            zlib.crc32(view[_HEAD.size:header_end])) != crc:
        raise CorruptEntry("cut short or corrupt (checksum)")
    try:
        meta = json.loads(data[_HEAD.size:header_end])
        sizes = meta["sizes"]
        if meta["key"] != key or sum(sizes) != len(data) - header_end:
            raise CorruptEntry("header does not match the entry")
        frames, at = [], header_end
        for size in sizes:
            frames.append(data[at:at + size])
            at += size
        prompt = RecordedPrompt(tuple(frames), tuple(meta["texts"]), tuple(meta["ends"]),
                                tuple((float(end), str(word)) for end, word in meta["words"]))
        return prompt, tuple(meta.get("routes", ()))
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptEntry(f"bad header: {exc}") from None


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def _routes_of(path: str) -> tuple[str, ...] | None:
    """The routes in an entry's header (None: no whole header); the frames are checked
    when the entry is read."""
    with open(path, "rb") as f:
        head = f.read(_HEAD.size)
        if len(head) < _HEAD.size:
            return None
        magic, header_len, _ = _HEAD.unpack(head)
        if magic != MAGIC or header_len > MAX_HEADER_BYTES:
            return None
        header = f.read(header_len)
    try:
        routes = json.loads(header)["routes"]
        return tuple(str(r) for r in routes)
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class _Entry:
    size: int
    used_at: float  # wall clock, for ``entries``
    routes: set[str]
    touched_at: float = 0.0  # monotonic: when its file's modification time was last set


class PromptStore:
    """Prompts on disk under ``directory``, at most ``max_bytes`` of files in all.

    ``get``/``put``/``purge`` do their file work in a thread: the event loop never waits
    on the disk. The most recently used prompts, up to ``memory_bytes``, are also kept in
    memory: a hit on one of them answers at once, with no thread hop (only a ``stat``, so
    that a file purged by another process is a miss). One process owns its folder's byte
    count; processes sharing a folder each bound what they wrote and read.
    """

    def __init__(self, directory: str | Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 metrics=None, *, memory_bytes: int = DEFAULT_MEMORY_BYTES):
        self.dir = Path(directory) if directory else default_dir()
        self.max_bytes = max_bytes
        self.memory_bytes = memory_bytes
        self.metrics = metrics
        self._index: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._bytes = 0
        self._hot: OrderedDict[str, RecordedPrompt] = OrderedDict()  # least recent first
        self._hot_bytes = 0
        self.loaded = False
        # a folder that cannot be written fails every put: a few lines, then a count
        self._log = RateLimitedLog(log, burst=3, interval=60.0)

    # ---- loading -------------------------------------------------------------------------

    async def load(self) -> None:
        """Index the folder (entries in the order of their last use); remove temporary
        files of writes that died. Runs at start, before the gateway is ready."""
        found = await asyncio.to_thread(self._scan)
        for key, size, mtime, routes in sorted(found, key=lambda f: f[2]):
            if key not in self._index:
                self._index[key] = _Entry(size, mtime, set(routes))
                self._bytes += size
        self.loaded = True
        await self._evict()
        preloaded, corrupt = await asyncio.to_thread(self._preload, list(self._index))
        for key, prompt in preloaded:
            if key in self._index:
                self._keep_hot(key, prompt)
        for key in corrupt:
            self._count_error("corrupt")
            self._forget(key)
        self._publish()

    def _preload(self, keys: list[str]
                 ) -> tuple[list[tuple[str, RecordedPrompt]], list[str]]:
        """The most recently used of ``keys`` (least recent first), read up to
        ``memory_bytes`` (oldest first, as they are to be kept), so the first calls after
        a start do not wait on their files either; and the keys whose files were corrupt
        (removed)."""
        budget, found, corrupt = self.memory_bytes, [], []
        for key in reversed(keys):
            if budget <= 0:
                break
            try:
                read = self._read(key, touch=False)
            except CorruptEntry as exc:
                log.warning("prompt cache: removed entry %s: %s", key[:16], exc)  # a thread
                corrupt.append(key)
                continue
            except OSError:
                continue  # a miss at its first use tells
            if read is None or read[0].size > budget:
                continue
            budget -= read[0].size
            found.append((key, read[0]))
        return found[::-1], corrupt

    def _scan(self) -> list[tuple[str, int, float, tuple[str, ...]]]:
        self.dir.mkdir(parents=True, exist_ok=True)
        found, now = [], time.time()
        with os.scandir(self.dir) as it:
            for item in it:
                try:
                    st = item.stat()
                    if item.name.startswith(".tmp-"):
                        if now - st.st_mtime > STALE_TEMP_S:
                            os.unlink(item.path)
                    elif item.name.endswith(SUFFIX) and item.is_file():
                        key = item.name[:-len(SUFFIX)]
                        routes = _routes_of(item.path)
                        if routes is None:
                            log.warning("prompt cache: removed entry %s: not a whole entry",
                                        key[:16])
                            os.unlink(item.path)
                            continue
                        found.append((key, st.st_size, st.st_mtime, routes))
                except OSError:
                    continue  # gone meanwhile
        return found

    # ---- use -------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.dir / (key + SUFFIX)

    async def get(self, key: str, *, route: str | None = None) -> RecordedPrompt | None:
        """The prompt stored under ``key``, or None (counted as a hit or a miss)."""
        prompt = self._hot_hit(key, route)
        if prompt is not None:
            return prompt
        try:
            found = await asyncio.to_thread(self._read, key)
        except CorruptEntry as exc:
            self._log.warning("corrupt", "prompt cache: removed entry %s: %s", key[:16], exc)
            self._count_error("corrupt")
            self._forget(key)
            found = None
        except OSError as exc:
            self._log.warning("read", "prompt cache: cannot read entry %s: %s", key[:16], exc)
            self._count_error("read")
            found = None
        if found is None:
            self._forget(key)
            self._count("miss")
            return None
        prompt, routes, size = found
        entry = self._index.get(key)
        if entry is None:  # written by another process sharing the folder
            entry = self._index[key] = _Entry(size, 0.0, set())
            self._bytes += size
        entry.used_at = time.time()
        entry.routes.update(routes)
        if route:
            entry.routes.add(route)
        entry.touched_at = time.monotonic()
        self._index.move_to_end(key)
        self._keep_hot(key, prompt)
        self._count("hit")
        self._publish()
        return prompt

    def _hot_hit(self, key: str, route: str | None) -> RecordedPrompt | None:
        prompt, entry = self._hot.get(key), self._index.get(key)
        if prompt is None or entry is None:
            return None
        path = self._path(key)
        try:
            path.stat()  # metadata only: purged by another process, it is a miss
        except OSError:
            self._forget(key)
            return None
        self._hot.move_to_end(key)
        self._index.move_to_end(key)
        entry.used_at = time.time()
        if route:
            entry.routes.add(route)
        now = time.monotonic()
        if now - entry.touched_at > TOUCH_EVERY_S:
            entry.touched_at = now
            asyncio.get_running_loop().run_in_executor(None, _touch, path)
        self._count("hit")
        return prompt

    def _keep_hot(self, key: str, prompt: RecordedPrompt) -> None:
        size = prompt.size
        if size > self.memory_bytes or key in self._hot:
            return
        self._hot[key] = prompt
        self._hot_bytes += size
        while self._hot_bytes > self.memory_bytes:
            _, cold = self._hot.popitem(last=False)
            self._hot_bytes -= cold.size

    def _drop_hot(self, key: str) -> None:
        prompt = self._hot.pop(key, None)
        if prompt is not None:
            self._hot_bytes -= prompt.size

    def _read(self, key: str, *, touch: bool = True
              ) -> tuple[RecordedPrompt, tuple[str, ...], int] | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            prompt, routes = decode(key, data)
        except CorruptEntry:
            path.unlink(missing_ok=True)
            raise
        if touch:
            _touch(path)  # its last use, for the order after a restart
        return prompt, routes, len(data)

    def entry_bytes(self, key: str) -> bytes | None:
        """The bytes of ``key``'s file as they are (None: no such file), for a shared
        store to copy; blocking (call it in a thread)."""
        try:
            return self._path(key).read_bytes()
        except OSError:
            return None

    async def put(self, key: str, prompt: RecordedPrompt, *, route: str | None = None) -> bool:
        """Store ``prompt`` under ``key`` (unless it is there, empty, or larger than the
        whole cache); the least recently used entries go until the bound holds."""
        if not prompt.frames or key in self._index:
            return False
        routes = (route,) if route else ()
        data = encode(key, prompt, routes)
        if len(data) > self.max_bytes:
            return False
        try:
            await asyncio.to_thread(self._write, key, data)
        except OSError as exc:
            self._log.warning("write", "prompt cache: cannot write entry %s: %s", key[:16],
                              exc)
            self._count_error("write")
            return False
        if key not in self._index:
            self._index[key] = _Entry(len(data), time.time(), set(routes), time.monotonic())
            self._bytes += len(data)
            self._keep_hot(key, prompt)
        await self._evict()
        self._publish()
        return True

    def _write(self, key: str, data: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        temp = self.dir / f".tmp-{key[:32]}-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            with open(temp, "wb") as f:
                f.write(data)
            os.replace(temp, self._path(key))
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    async def _evict(self) -> None:
        doomed = []
        while self._bytes > self.max_bytes and self._index:
            key, entry = self._index.popitem(last=False)
            self._bytes -= entry.size
            self._drop_hot(key)
            doomed.append(key)
        if doomed:
            await asyncio.to_thread(self._unlink, doomed)
            if self.metrics is not None:
                self.metrics.prompt_cache_evictions.inc(len(doomed))
            self._publish()

    def _unlink(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self._path(key).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("prompt cache: cannot remove entry %s: %s", key[:16], exc)

    def _forget(self, key: str) -> None:
        self._drop_hot(key)
        entry = self._index.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size
            self._publish()

    # ---- management ------------------------------------------------------------------------

    async def purge(self, route: str | None = None) -> dict[str, int]:
        """Remove every entry (also ones other processes wrote), or those ``route`` wrote
        or played; returns how many entries and bytes went."""
        if route is None:
            keys = [found[0] for found in await asyncio.to_thread(self._scan)]
            keys = list(dict.fromkeys([*keys, *self._index]))
        else:
            keys = [key for key, entry in self._index.items() if route in entry.routes]
        removed = sum(self._index[k].size for k in keys if k in self._index)
        for key in keys:
            self._forget(key)
        await asyncio.to_thread(self._unlink, keys)
        return {"entries": len(keys), "bytes": removed}

    def entries(self) -> list[dict[str, Any]]:
        """The entries this process knows, most recently used first."""
        return [{"key": key, "bytes": e.size, "routes": sorted(e.routes),
                 "used_at": round(e.used_at, 3)}
                for key, e in reversed(self._index.items())]

    def has(self, key: str) -> bool:
        return key in self._index

    def tag(self, key: str, route: str) -> None:
        """``route`` plays the entry too (``purge(route)`` removes it)."""
        entry = self._index.get(key)
        if entry is not None:
            entry.routes.add(route)

    # no store behind this one
    async def fetch(self, key: str, *, route: str | None = None) -> RecordedPrompt | None:
        return None

    def share(self, key: str) -> None:
        pass

    async def close(self) -> None:
        pass

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._index)

    # ---- metrics ---------------------------------------------------------------------------

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.prompt_cache.labels(result).inc()

    def _count_error(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.prompt_cache_errors.labels(kind).inc()

    def _publish(self) -> None:
        if self.metrics is not None:
            self.metrics.prompt_cache_bytes.set(self._bytes)
            self.metrics.prompt_cache_entries.set(len(self._index))
