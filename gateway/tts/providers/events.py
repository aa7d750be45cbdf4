"""What a provider's wire messages mean, whatever the provider."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.tts.base import WordTiming


@dataclass(frozen=True, slots=True)
class ProviderAudio:
    """Audio for one request/context: raw bytes (base64 already decoded, no WAV header)."""

    context_id: str
    data: bytes
    encoding: str  # pcm_s16le, mulaw, alaw
    sample_rate: int


@dataclass(frozen=True, slots=True)
class ProviderWords:
    """Word timings for one request/context, in seconds from the start of its audio."""

    context_id: str
    words: tuple[WordTiming, ...]


@dataclass(frozen=True, slots=True)
class ProviderDone:
    """The provider finished the request/context: no more audio for it."""

    context_id: str


@dataclass(frozen=True, slots=True)
class ProviderReady:
    """The session is set up (handshake or session-updated message)."""


@dataclass(frozen=True, slots=True)
class ProviderError:
    """An error frame. ``context_id`` is None when it concerns the whole connection;
    ``fatal`` means the connection must be replaced. ``kind`` is a bounded metric label."""

    context_id: str | None
    kind: str
    message: str
    fatal: bool = False


ProviderEvent = ProviderAudio | ProviderWords | ProviderDone | ProviderReady | ProviderError


class ProviderProtocolError(ValueError):
    """A provider message that cannot be understood (bad JSON, missing field, bad base64)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
