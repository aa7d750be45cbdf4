"""What differs between providers, in one place: how a turn is opened, fed, ended and
cancelled on each sans-I/O protocol, and each provider's connection rules.

A *turn* is one context (Inworld, Together) or one request (Smallest) on a connection.
Drivers build messages and read protocol state; they never do I/O. The pool and the
session (:mod:`gateway.tts.remote.pool`, :mod:`gateway.tts.remote.session`) are the same
for every provider.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from gateway.carriers.events import MediaFormat
from gateway.tts.providers import inworld, smallest, together
from gateway.tts.providers.events import ProviderEvent, ProviderReady


@dataclass(frozen=True)
class RemoteSettings:
    """A remote provider's settings from ``gateway.yaml`` (secrets already resolved)."""

    name: str
    type: str
    api_key: str
    voice: str
    endpoint: str
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


ANY_OPTION: frozenset[str] = frozenset({"*"})


class Driver:
    """Base: one connection serves one turn at a time per call; no handshake message."""

    type = ""
    #: Each text segment is its own turn, run one after the other (one request at a time).
    turn_per_segment = False
    #: Wait for a :class:`ProviderReady` frame before the connection counts as open.
    await_ready = False
    #: Contexts one socket may hold at once; the pool shares a socket between calls only
    #: within it (a call may hold two briefly: a cancelled turn draining, a new one).
    max_contexts = 1
    #: Send :meth:`keepalive` for an open turn that waits this long for more text.
    keepalive_s: float | None = None
    #: The server closes a socket idle this long (the pool refreshes idle ones before).
    default_idle_timeout_s: float | None = None

    #: ``options`` keys this provider understands (anything else is a config error).
    option_keys: frozenset[str] = frozenset()

    def __init__(self, settings: RemoteSettings):
        unknown = set(settings.options) - self.option_keys
        if unknown and self.option_keys is not ANY_OPTION:
            raise ValueError(f"unknown {self.type} options {sorted(unknown)} (known: "
                             f"{', '.join(sorted(self.option_keys)) or 'none'})")
        self.settings = settings

    def pool_key(self, output: MediaFormat) -> Hashable:
        """Connections are interchangeable between calls with the same key."""
        return None

    def connect(self, key: Hashable) -> tuple[str, dict[str, str]]:
        raise NotImplementedError

    def new_protocol(self, key: Hashable):
        raise NotImplementedError

    def connection_made(self, proto) -> list[ProviderEvent]:
        return [] if self.await_ready else [ProviderReady()]

    def connection_lost(self, proto) -> list[ProviderEvent]:
        return []

    def begin(self, proto, cid: str, voice: str | None, output: MediaFormat) -> list[str]:
        return []

    def send(self, proto, cid: str, text: str, voice: str | None = None) -> list[str]:
        raise NotImplementedError

    def end(self, proto, cid: str) -> list[str]:
        return []

    def cancel(self, proto, cid: str) -> list[str]:
        return []

    def keepalive(self, proto, cid: str) -> list[str]:
        return []

    def is_done(self, proto, cid: str) -> bool:
        """The turn ended without a done frame still to come."""
        return False

    def has_room(self, proto) -> bool:
        return True

    def reusable(self, proto) -> bool:
        """Clean: no open turn, no pending audio, nothing that forbids reuse."""
        return proto.is_clean()

    def must_replace(self, proto) -> bool:
        """The socket cannot serve another turn (e.g. audio of a cancelled request is
        still coming and the provider has no cancel): the call needs a fresh one."""
        return False

    def is_cancelled(self, proto, cid: str) -> bool:
        return proto.is_cancelled(cid)


class InworldDriver(Driver):
    """§1: contexts (≤5 per socket); create, send_text (+flush per segment), close."""

    type = "inworld"
    option_keys = ANY_OPTION  # extra ``create`` fields (temperature, autoMode, ...) [§1.2]
    max_contexts = inworld.MAX_CONTEXTS
    # Contexts expire after ~60 s without text (§1.4 [O]); an empty send_text keeps a
    # context that waits for streamed text alive (pipecat sends one every 60 s).
    keepalive_s = 30.0
    default_idle_timeout_s = 600.0  # session closed after 10 min idle [C]

    def pool_key(self, output: MediaFormat) -> Hashable:
        return None  # the audio format is chosen per context (create)

    def connect(self, key):
        s = self.settings
        return inworld.connect_params(s.api_key, endpoint=s.endpoint,
                                      model=s.model or inworld.DEFAULT_MODEL, voice=s.voice)

    def new_protocol(self, key):
        s = self.settings
        return inworld.InworldProtocol(voice=s.voice, model=s.model or inworld.DEFAULT_MODEL,
                                       create_options=s.options)

    def begin(self, proto, cid, voice, output):
        encoding, rate = inworld.choose_audio_format(output.encoding, output.sample_rate)
        return [proto.create_message(cid, voice=voice, encoding=encoding, sample_rate=rate)[1]]

    def send(self, proto, cid, text, voice=None):
        pieces = inworld.split_text(text)
        return [proto.send_text_message(cid, piece, flush=i == len(pieces) - 1)
                for i, piece in enumerate(pieces)]

    def end(self, proto, cid):
        return [proto.close_message(cid)]

    def cancel(self, proto, cid):
        if proto.context_state(cid) is None and not proto.is_cancelled(cid):
            return []  # already done (or never created): nothing to stop upstream
        message = proto.cancel_message(cid)
        return [message] if message else []

    def keepalive(self, proto, cid):
        if proto.context_state(cid) in ("open", "flushed"):
            return [json.dumps({"send_text": {"text": ""}, "contextId": cid})]
        return []

    def is_done(self, proto, cid):
        return proto.context_state(cid) is None

    def has_room(self, proto):
        return proto.open_contexts <= self.max_contexts - 2


class SmallestDriver(Driver):
    """§2: one request per synthesis, one at a time, no cancel (replace the socket)."""

    type = "smallest"
    option_keys = frozenset({"timeout_s", "language", "speed", "complete_backoff_ms",
                             "max_buffer_flush_ms"})
    turn_per_segment = True
    replace_after_cancel = True

    def __init__(self, settings: RemoteSettings):
        super().__init__(settings)
        self.timeout_s = int(settings.options.get("timeout_s", 60))
        self.default_idle_timeout_s = float(self.timeout_s)

    def pool_key(self, output: MediaFormat) -> Hashable:
        return smallest.choose_format(output.encoding, output.sample_rate)

    def connect(self, key):
        s = self.settings
        return smallest.connect_params(s.endpoint, s.api_key, timeout_s=self.timeout_s)

    def new_protocol(self, key):
        s = self.settings
        output_format, rate = key
        extra = {k: v for k, v in s.options.items() if k != "timeout_s"}
        return smallest.SmallestProtocol(s.voice, model=s.model or "lightning_v3.1",
                                         output_format=output_format, sample_rate=rate, **extra)

    def send(self, proto, cid, text, voice=None):
        return proto.speak(cid, text, voice=voice)

    def cancel(self, proto, cid):
        proto.cancel(cid)
        return []

    def is_done(self, proto, cid):
        return proto.state(cid) == "done"

    def connection_lost(self, proto):
        return proto.connection_lost()

    def reusable(self, proto):
        return proto.reusable()

    def must_replace(self, proto):
        return proto.needs_replacement  # after a barge-in (no cancel verb) or a fatal error


class TogetherDriver(Driver):
    """§3: realtime-style events, contexts (≤100), 24 kHz PCM, ``session.created`` first."""

    type = "together"
    option_keys = frozenset({"sample_rate", "speed", "language"})
    await_ready = True
    max_contexts = together.MAX_CONTEXTS
    default_idle_timeout_s = 60.0  # undocumented; the fake's default [I]

    def pool_key(self, output: MediaFormat) -> Hashable:
        return int(self.settings.options.get("sample_rate", together.DEFAULT_SAMPLE_RATE))

    def connect(self, key):
        s = self.settings
        extra = {k: v for k, v in s.options.items() if k != "sample_rate"}
        return together.connect_params(s.api_key, endpoint=s.endpoint,
                                       model=s.model or together.DEFAULT_MODEL, voice=s.voice,
                                       sample_rate=key, **extra)

    def new_protocol(self, key):
        return together.TogetherProtocol(sample_rate=key)

    def begin(self, proto, cid, voice, output):
        proto.open_context(cid)
        if voice and voice != self.settings.voice:
            return [proto.update_session(cid, voice=voice)]
        return []

    def send(self, proto, cid, text, voice=None):
        return proto.append(cid, text) + proto.commit(cid)

    def end(self, proto, cid):
        return proto.finish(cid)

    def cancel(self, proto, cid):
        if proto.state(cid) in (None, "done", "cancelled"):
            return []
        return proto.cancel(cid)

    def is_done(self, proto, cid):
        return proto.state(cid) in ("done", "cancelled")

    def has_room(self, proto):
        return proto.contexts_left > 1 and len(proto.live_contexts) <= self.max_contexts - 2

    def reusable(self, proto):
        return proto.is_clean() and proto.contexts_left > 0


DRIVERS: dict[str, type[Driver]] = {
    d.type: d for d in (InworldDriver, SmallestDriver, TogetherDriver)
}
DEFAULT_ENDPOINTS = {
    "inworld": inworld.DEFAULT_ENDPOINT,
    "smallest": smallest.DEFAULT_ENDPOINT,
    "together": together.DEFAULT_ENDPOINT,
}
