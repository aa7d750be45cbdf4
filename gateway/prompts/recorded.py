"""Recorded prompts: audio files from ``prompts.dir`` and ``https://`` URLs, decoded (WAV:
PCM 8 to 48 kHz, μ-law, A-law; MP3; FLAC; Ogg Vorbis, all by miniaudio), converted with
telcodecs to a call's carrier format and cut into its frames.

A source (a file's path, size and modification time, or a URL) is read or fetched once,
bounded in bytes and time, and known after by its content hash: its frames are stored under
that hash and the carrier format (the prompt store, or a memo in memory), so the next call
plays them as they are; decoding runs in a worker thread, never on the event loop.
Whatever goes wrong is a :class:`PromptError` whose ``kind`` (one of
``settings.PROMPT_ERROR_KINDS``) is the metric label and whose message says why, never
showing a URL's query (a signed URL's secret).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import aiohttp
import miniaudio
from aiohttp.abc import AbstractResolver, ResolveResult
from telcodecs import Framer, Transcoder, silence_byte
from telcodecs.resample import SUPPORTED_INPUT_RATES

from gateway.carriers.events import MediaFormat
from gateway.prompts.store import RecordedPrompt, prompt_key
from gateway.prompts import settings
from gateway.prompts.settings import PromptsConfig, file_problem, url_problem

#: A file at a rate telcodecs does not resample from (11025, 32000 Hz ...) is decoded to this.
DECODE_RATE = 48000
MAX_REDIRECTS = 3
#: Decoded audio kept in memory, all sources together (5 min at 48 kHz is 28 MiB).
SOURCE_MEMO_BYTES = 64 << 20
#: Carrier frames kept in memory when no prompt store keeps them (gateway/prompts/store.py).
FRAMES_MEMO_BYTES = 64 << 20
MAX_SOURCES = 4096  # sources whose content hash is known without reading them
MAX_LOADS = 4  # reads, downloads and decodes at once, all calls together


class PromptError(Exception):
    """A prompt that cannot be played; the call goes on. ``kind`` is one of
    ``settings.PROMPT_ERROR_KINDS``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class DecodedAudio:
    """A recording as 16-bit mono PCM (little-endian) at ``sample_rate``."""

    pcm: bytes
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate


# ---- decoding (sans I/O; run in a thread) --------------------------------------------------


def _container(data: bytes) -> str | None:
    """The container ``data`` starts like, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"OggS":
        return "vorbis"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


_INFO = {"wav": miniaudio.wav_get_info, "flac": miniaudio.flac_get_info,
         "vorbis": miniaudio.vorbis_get_info, "mp3": miniaudio.mp3_get_info}


def decode_audio(data: bytes, max_seconds: float) -> DecodedAudio:
    """``data`` (a whole file) as 16-bit mono PCM; PromptError ``not_audio`` for what is
    no audio container, ``corrupt`` for one that does not decode, ``too_long`` past
    ``max_seconds`` (checked from the header before decoding where the header tells)."""
    container = _container(data)
    if container is None:
        raise PromptError("not_audio", "not an audio file (WAV, MP3, FLAC or Ogg Vorbis)")
    try:
        info = _INFO[container](data)
    except miniaudio.MiniaudioError:
        raise PromptError("corrupt", f"a damaged or unsupported {container} file") from None
    if info.duration > max_seconds:
        raise PromptError("too_long", f"{info.duration:.1f} s of audio, over the limit of "
                          f"{max_seconds:g} s (prompts.max_seconds)")
    rate = info.sample_rate if info.sample_rate in SUPPORTED_INPUT_RATES else DECODE_RATE
    try:
        decoded = miniaudio.decode(data, output_format=miniaudio.SampleFormat.SIGNED16,
                                   nchannels=1, sample_rate=rate)
    except miniaudio.MiniaudioError:
        raise PromptError("corrupt", f"a damaged or unsupported {container} file") from None
    audio = DecodedAudio(decoded.samples.tobytes(), rate)
    if not audio.pcm:
        raise PromptError("corrupt", f"a {container} file without audio")
    if audio.seconds > max_seconds:
        raise PromptError("too_long", f"{audio.seconds:.1f} s of audio, over the limit of "
                          f"{max_seconds:g} s (prompts.max_seconds)")
    return audio


def to_frames(audio: DecodedAudio, fmt: MediaFormat, chunk_bytes: int) -> tuple[bytes, ...]:
    """The recording in the carrier's format, cut into its media messages' frames (the last
    one padded with silence)."""
    transcoder = Transcoder("pcm_s16le", audio.sample_rate, fmt.encoding, fmt.sample_rate)
    framer = Framer(chunk_bytes, silence_byte(fmt.encoding))
    frames = framer.push(transcoder.feed(audio.pcm))
    frames += framer.push(transcoder.flush())
    last = framer.flush()
    if last:
        frames.append(last)
    return tuple(frames)


# ---- loading ---------------------------------------------------------------------------------


def shown_url(url: str) -> str:
    """A URL as logs and errors show it: no query or fragment (a signed URL's secret)."""
    parts = urlsplit(url)
    text = f"{parts.scheme}://{parts.netloc}{parts.path}"
    return text if len(text) <= 100 else text[:97] + "..."


class _Memo:
    """Least recently used entries, bounded by their total size in bytes."""

    def __init__(self, max_bytes: int, size: Callable[[Any], int]):
        self.max_bytes = max_bytes
        self._size = size
        self._entries: OrderedDict[Any, Any] = OrderedDict()
        self._bytes = 0

    def get(self, key: Any) -> Any:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        size = self._size(value)
        if key in self._entries:
            self._bytes -= self._size(self._entries.pop(key))
        if size > self.max_bytes:
            return
        self._entries[key] = value
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= self._size(evicted)


class FrameStore(Protocol):
    """Where converted prompts are kept between calls: the prompt store
    (gateway/prompts/store.py, on disk) or :class:`MemoryFrames`."""

    async def get(self, key: str, *, route: str | None = None) -> RecordedPrompt | None: ...

    async def put(self, key: str, prompt: RecordedPrompt, *,
                  route: str | None = None) -> bool: ...


class MemoryFrames:
    """A :class:`FrameStore` in memory, bounded in bytes (least recently used go first)."""

    def __init__(self, max_bytes: int = FRAMES_MEMO_BYTES):
        self._memo = _Memo(max_bytes, lambda prompt: prompt.size)

    async def get(self, key: str, *, route: str | None = None) -> RecordedPrompt | None:
        return self._memo.get(key)

    async def put(self, key: str, prompt: RecordedPrompt, *, route: str | None = None) -> bool:
        self._memo.put(key, prompt)
        return True


def recorded_key(content_sha256: str, fmt: MediaFormat, frame_bytes: int) -> str:
    """The store key of a recording's frames: its content and the carrier format (what
    changes the frames); a new file under the same name is a new key, never stale audio."""
    return prompt_key(source="recorded", content_sha256=content_sha256,
                      encoding=fmt.encoding, sample_rate=fmt.sample_rate,
                      frame_bytes=frame_bytes)


class RecordedPrompts:
    """Recorded prompts for every call of the process. ``load`` gives a source's frames in
    a carrier format: a source is read (fetched) once and known after by its content hash,
    under which its frames are stored (``store``) and its decoded audio kept in memory;
    callers asking for the same source meanwhile wait for that one load, and at most
    ``MAX_LOADS`` loads run at once (each holds up to a file and its decoded audio)."""

    def __init__(self, config: PromptsConfig, store: FrameStore | None = None):
        self.config = config
        self.store: FrameStore = store if store is not None else MemoryFrames()
        self._hashes = _Memo(MAX_SOURCES, lambda sha: 1)  # source -> content hash
        self._audio = _Memo(SOURCE_MEMO_BYTES, lambda audio: len(audio.pcm))  # by hash
        self._loading: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._loads = asyncio.Semaphore(MAX_LOADS)

    async def load(self, *, fmt: MediaFormat, chunk_bytes: int, file: str | None = None,
                   url: str | None = None, route: str | None = None,
                   cache: bool = True) -> RecordedPrompt:
        """The frames of ``file`` (in prompts.dir) or of ``url``; raises PromptError.
        ``cache`` false: the frames are not looked up in nor written to the store."""
        if file is not None:
            path, source = await asyncio.to_thread(self._locate, file)
            read: Callable[[], Awaitable[bytes]] = partial(self._read, path)
        elif url is not None:
            if problem := url_problem(url):
                raise PromptError("bad_source", f"url: must be {problem}")
            source, read = "url " + url, partial(self._fetch, url)
        else:
            raise PromptError("bad_source", "a prompt needs a file or a URL")
        data = None
        sha = self._hashes.get(source)
        if sha is None:
            data, sha = await self._once("read", source, partial(self._content, source, read))
        key = recorded_key(sha, fmt, chunk_bytes)
        if cache and (prompt := await self.store.get(key, route=route)) is not None:
            return prompt
        audio = self._audio.get(sha)
        if audio is None and data is None and ("decode", sha) not in self._loading:
            # its decoded audio was dropped: read it again (unless a caller ahead decodes it)
            data, sha = await self._once("read", source, partial(self._content, source, read))
            key = recorded_key(sha, fmt, chunk_bytes)
            audio = self._audio.get(sha)
        if audio is None:  # (data is None only while sha's decode runs: this joins it)
            audio = await self._once("decode", sha, partial(self._decode, sha, data or b""))
        prompt = RecordedPrompt(await asyncio.to_thread(to_frames, audio, fmt, chunk_bytes))
        if cache:
            await self.store.put(key, prompt, route=route)
        return prompt

    # What a shared load finds out is noted before its waiters resume: one who comes after
    # finds it noted, never a load to start again.

    async def _content(self, source: str,
                       read: Callable[[], Awaitable[bytes]]) -> tuple[bytes, str]:
        data = await read()
        sha = await asyncio.to_thread(_sha256, data)  # 10 MiB: tens of ms, off the loop
        self._hashes.put(source, sha)
        return data, sha

    async def _decode(self, sha: str, data: bytes) -> DecodedAudio:
        audio = await asyncio.to_thread(decode_audio, data, self.config.max_seconds)
        self._audio.put(sha, audio)
        return audio

    async def _once(self, step: str, what: str, run: Callable[[], Awaitable[Any]]) -> Any:
        """``run()`` once for all who ask for the same ``(step, what)`` meanwhile."""
        future = self._loading.get((step, what))
        if future is None:
            future = asyncio.ensure_future(self._bounded(run))
            future.add_done_callback(_retrieve)
            self._loading[step, what] = future
            future.add_done_callback(lambda _: self._loading.pop((step, what), None))
        # one caller cut off (its speech interrupted) does not cancel the others' load
        return await asyncio.shield(future)

    async def _bounded(self, run: Callable[[], Awaitable[Any]]) -> Any:
        async with self._loads:
            return await run()

    def _locate(self, file: str) -> tuple[Path, str]:
        """The file's path inside prompts.dir, and the source it is (path, size, time).
        Touches the disk: run in a thread."""
        if not self.config.dir:
            raise PromptError("bad_source", "prompts.dir is not configured")
        if problem := file_problem(file):
            raise PromptError("bad_source", f"file: must be {problem}")
        root = Path(self.config.dir).resolve()
        path = (root / file).resolve()
        if not path.is_relative_to(root):  # a link pointing out of the folder
            raise PromptError("bad_source", f"file {file!r} is outside prompts.dir")
        try:
            stat = path.stat()
        except OSError:
            raise PromptError("not_found", f"no file {file!r} in prompts.dir") from None
        return path, f"file {path} {stat.st_size} {stat.st_mtime_ns}"

    async def _read(self, path: Path) -> bytes:
        limit = self.config.max_download_bytes

        def read() -> bytes:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
            return data

        try:
            data = await asyncio.to_thread(read)
        except OSError as exc:
            raise PromptError("not_found", f"cannot read {path.name}: {exc.strerror}") from None
        if len(data) > limit:
            raise PromptError("too_large", f"{path.name} is over {limit} bytes "
                              "(prompts.max_download_bytes)")
        return data

    async def _fetch(self, url: str) -> bytes:
        """GET ``url`` (following a few redirects, each to an allowed URL), at most
        ``max_download_bytes`` within ``download_timeout_s`` in all. Its own session (a
        URL is fetched once): one whose resolver gives only public addresses."""
        limit = self.config.max_download_bytes
        seconds = self.config.download_timeout_s
        private = self.config.allow_private_urls
        self._check_host(url)
        connector = aiohttp.TCPConnector(resolver=_PublicResolver(private), limit=1)
        try:
            async with asyncio.timeout(seconds), aiohttp.ClientSession(connector=connector) as http:
                for _ in range(MAX_REDIRECTS + 1):
                    async with http.get(url, allow_redirects=False) as resp:
                        if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                            url = urljoin(url, resp.headers["Location"])
                            if problem := url_problem(url):
                                raise PromptError("bad_source", f"redirected to "
                                                  f"{shown_url(url)}: must be {problem}")
                            self._check_host(url)
                            continue
                        if resp.status != 200:
                            raise PromptError("http_status", f"{shown_url(url)} answered "
                                              f"HTTP {resp.status}")
                        return await _read_body(resp, limit, url)
                raise PromptError("http_status", f"{shown_url(url)}: more than "
                                  f"{MAX_REDIRECTS} redirects")
        except TimeoutError:
            raise PromptError("timeout", f"{shown_url(url)} did not send the file within "
                              f"{seconds:g} s (prompts.download_timeout_s)") from None
        except aiohttp.ClientConnectorError as exc:
            raise PromptError("unreachable", f"{shown_url(url)} cannot be reached: "
                              f"{str(exc.os_error)[:120]}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise PromptError("unreachable", f"{shown_url(url)} cannot be reached: "
                              f"{type(exc).__name__}") from None

    def _check_host(self, url: str) -> None:
        """A URL naming a private address (aiohttp connects to an address without asking
        the resolver) is refused unless ``prompts.allow_private_urls``."""
        host = urlsplit(url).hostname or ""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        if not _allowed(address, self.config.allow_private_urls):
            raise PromptError("bad_source", f"{shown_url(url)} names a private address "
                              "(prompts.allow_private_urls)")


def check_files(config: PromptsConfig) -> list[str]:
    """Each ``file`` prompt that would not play (missing, outside the folder, over a limit,
    not audio), named by its key: for ``check-config``, which may block. URLs are not
    fetched here."""
    prompts = RecordedPrompts(config)
    problems = []
    for name, item in config.items.items():
        if item.file is None:
            continue
        try:
            path, _ = prompts._locate(item.file)
            with open(path, "rb") as f:
                data = f.read(config.max_download_bytes + 1)
            if len(data) > config.max_download_bytes:
                raise PromptError("too_large", f"over {config.max_download_bytes} bytes "
                                  "(prompts.max_download_bytes)")
            decode_audio(data, config.max_seconds)
        except PromptError as exc:
            problems.append(f"prompts.items.{name}.file: {exc}")
        except OSError as exc:
            problems.append(f"prompts.items.{name}.file: cannot read it: {exc.strerror}")
    return problems


def _allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, private: bool) -> bool:
    if address.is_global or (private and not address.is_unspecified):
        return True
    return settings.ALLOW_LOOPBACK_HTTP and address.is_loopback


class _PublicResolver(AbstractResolver):
    """Host names resolved as usual, then only their public addresses kept (a prompt URL
    from a bot is no way into the gateway's own network)."""

    def __init__(self, private: bool):
        self._inner = aiohttp.ThreadedResolver()
        self._private = private

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [r for r in found if _allowed(ipaddress.ip_address(r["host"]), self._private)]
        if not public:
            raise OSError(f"{host[:60]} has no public address (prompts.allow_private_urls)")
        return public

    async def close(self) -> None:
        await self._inner.close()


async def _read_body(resp: aiohttp.ClientResponse, limit: int, url: str) -> bytes:
    too_large = PromptError("too_large", f"{shown_url(url)} is over {limit} bytes "
                            "(prompts.max_download_bytes)")
    if resp.content_length is not None and resp.content_length > limit:
        raise too_large
    body = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # raised to every waiter; not "never retrieved"

