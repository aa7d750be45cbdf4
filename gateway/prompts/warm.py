"""Warm the prompt cache: synthesize every route's prompts for every configured carrier's
format before a caller needs them (``tts-gateway prompts warm``, ``prompt_cache.
warm_on_start``).

:data:`PROMPT_SOURCES` lists where prompt texts come from (a route's greeting today); a
part of the gateway with more (a flow's steps) adds a function there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass

from telcodecs import Framer, Transcoder, silence_byte

from gateway.carriers.events import MediaFormat
from gateway.carriers.registry import CARRIERS
from gateway.config import GatewayConfig
from gateway.prompts.store import Prompts, RecordedPrompt, tts_key
from gateway.tts.base import TtsError, TtsProvider

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptText:
    """A text a route plays on its calls, and who says it."""

    route: str
    provider: str
    voice: str | None
    text: str


def greetings(config: GatewayConfig) -> Iterable[PromptText]:
    for route in config.routes.values():
        if route.greeting and route.cache_greeting:
            yield PromptText(route.name, route.provider, route.voice, route.greeting)


def flow_prompts(config: GatewayConfig) -> Iterable[PromptText]:
    """The texts every route's IVR flow says (its steps' prompts, retries included)."""
    for route in config.routes.values():
        if route.flow is None:
            continue
        for step in route.flow.steps.values():
            for prompt in step.prompts():
                if prompt.text and prompt.cache:
                    # the voice as the call asks for it (core/failover.provider_plan)
                    yield PromptText(route.name, prompt.provider or route.provider,
                                     prompt.voice or route.voice, prompt.text)


#: functions listing the cacheable prompt texts of a configuration
PROMPT_SOURCES: list[Callable[[GatewayConfig], Iterable[PromptText]]] = [greetings,
                                                                        flow_prompts]


def prompt_texts(config: GatewayConfig) -> list[PromptText]:
    """Every cacheable prompt text of ``config``, once each."""
    return list(dict.fromkeys(p for source in PROMPT_SOURCES for p in source(config)))


def carrier_formats(config: GatewayConfig) -> list[tuple[MediaFormat, int]]:
    """(format, frame bytes) the configured carriers play, as their settings ask for it."""
    found = []
    for name, carrier in config.carriers.items():
        protocol = CARRIERS[name].new_protocol(carrier.options)
        fmt = getattr(protocol, "played_format", None) or protocol.media_format
        found.append((fmt, fmt.bytes_per_20ms * protocol.frames_per_message))
    return list(dict.fromkeys(found))


async def synthesize(provider: TtsProvider, voice: str | None, text: str, fmt: MediaFormat,
                     frame_bytes: int) -> RecordedPrompt:
    """``text`` in frames of ``frame_bytes`` in ``fmt``, as one sentence."""
    session = await provider.open_session(fmt)
    framer = Framer(frame_bytes, silence_byte(fmt.encoding))
    transcoder: Transcoder | None = None
    source: tuple[str, int] | None = None
    frames: list[bytes] = []
    words: list[tuple[float, str]] = []
    try:
        async with aclosing(session.synthesize(text, voice)) as chunks:
            async for chunk in chunks:
                words += [(round(w.end_s, 3), w.text) for w in chunk.words]
                if not chunk.data:
                    continue
                if transcoder is None or (chunk.encoding, chunk.sample_rate) != source:
                    if transcoder is not None:
                        frames += framer.push(transcoder.flush())
                    source = (chunk.encoding, chunk.sample_rate)
                    transcoder = Transcoder(chunk.encoding, chunk.sample_rate,
                                            fmt.encoding, fmt.sample_rate)
                frames += framer.push(transcoder.feed(chunk.data))
    except BaseException:
        await session.discard()
        raise
    await session.release()
    if transcoder is not None:
        frames += framer.push(transcoder.flush())
    last = framer.flush()
    if last:
        frames.append(last)
    return RecordedPrompt(tuple(frames), (text,), (len(frames),), tuple(words))


async def warm(config: GatewayConfig, providers: dict[str, TtsProvider], store: Prompts,
               *, progress: Callable[[str], None] | None = None) -> dict[str, int]:
    """Synthesize what is not cached yet; returns counts of ``cached`` (already there),
    ``shared`` (copied from the store shared between instances), ``synthesized`` (and
    offered to the shared store) and ``failed``. A failure is logged and the rest goes on."""
    counts = {"cached": 0, "shared": 0, "synthesized": 0, "failed": 0}
    for prompt in prompt_texts(config):
        provider_config = config.providers[prompt.provider]
        for fmt, frame_bytes in carrier_formats(config):
            key = tts_key(provider_config, prompt.voice, prompt.text, fmt, frame_bytes)
            if store.has(key):
                store.tag(key, prompt.route)
                store.share(key)  # a shared store that lost it (restarted) gets it again
                counts["cached"] += 1
                continue
            if await store.fetch(key, route=prompt.route) is not None:
                counts["shared"] += 1  # another instance synthesized it
                continue
            where = f"route {prompt.route} ({fmt.encoding}/{fmt.sample_rate})"
            try:
                recorded = await synthesize(providers[prompt.provider], prompt.voice,
                                            prompt.text, fmt, frame_bytes)
            except (TtsError, OSError, ValueError) as exc:
                log.warning("prompt cache: cannot warm %s: %s", where, exc)
                counts["failed"] += 1
                continue
            await store.put(key, recorded, route=prompt.route)
            counts["synthesized"] += 1
            if progress is not None:
                progress(f"synthesized {where}: {recorded.size} bytes")
    return counts
