"""Failover between a route's providers, without losing text.

A route lists providers in order (``provider``, then ``fallback`` in ``gateway.yaml``).
An utterance is spoken by the first; when that one fails, the utterance goes on with the
next at once. A provider fails when the call gets no session from it (connect or lease
error), when it sends an error frame or loses its connection, or when it has not started
the audio of text it was handed within ``first_audio_timeout_ms``.

What is spoken after a failover is decided per text segment (a sentence):

* :class:`SegmentLedger` keeps the utterance's segments (a whole text is cut into
  sentences on a route with fallbacks; streamed text already comes sentence by sentence)
  and how many of them are *done*: their audio has all arrived. The session says so
  through ``TtsSession.stream(..., on_segments_done=...)``, from the provider's own
  per-segment signal where it has one, else by giving each segment a turn of its own.
* The next provider starts at the first segment not done. Audio of that cut segment
  still queued for the caller is dropped first (``Playout.drop_tail``), so the caller
  hears at most the part of that one sentence that had already played, then the sentence
  again from its start: no text is lost, and nothing is garbled.

Once a call has failed over, its later utterances start with the provider that took
over (the caller keeps one voice; a provider that hangs costs the timeout once per call,
not once per utterance), and the route's other providers follow in the route's order,
wrapping around. Each provider is tried at most once per utterance.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from gateway.config import RouteConfig
from gateway.core.speech import Utterance
from gateway.tts.base import TtsError
from gateway.tts.text import split_sentences

#: The ``reason`` label of ``tts_gateway_failovers_total`` and of ``speech.failover``.
FAILOVER_REASONS = ("connect", "error", "closed", "timeout")
#: ``TtsError.kind`` of a provider that did not start its audio in time.
NO_AUDIO = "no_audio"
_CONNECT_KINDS = frozenset({"connect", "handshake", "pool_exhausted", "pool_closed",
                            "not_started"})


def failover_reason(exc: TtsError) -> str:
    """The bounded reason for a provider failure: ``connect`` (no session or connection),
    ``closed`` (the connection was lost), ``timeout`` (no audio in time) or ``error``
    (an error frame, or anything else the provider got wrong)."""
    if exc.kind in _CONNECT_KINDS:
        return "connect"
    if exc.kind == "connection_closed":
        return "closed"
    if exc.kind == NO_AUDIO:
        return "timeout"
    return "error"


def provider_plan(route: RouteConfig, utt: Utterance, preferred: str | None
                  ) -> list[tuple[str, str | None]]:
    """The providers to try for ``utt``, in order, each with the voice to ask it for.

    The utterance's own provider if it names one, else the call's ``preferred`` one (the
    route's provider until a failover moved the call on), then the rest of the route's
    providers. The requested voice (the utterance's, else the route's) goes to the first
    provider only: a voice id means nothing to another provider, so fallbacks speak with
    the voice configured for them. A route without fallbacks gets no failover at all.
    """
    voice = utt.voice or route.voice
    if utt.provider:
        first = utt.provider
        rest = [p for p in route.providers if p != first] if route.fallback else []
        return [(first, voice), *((p, None) for p in rest)]
    chain = route.providers
    start = chain.index(preferred) if preferred in chain else 0
    order = chain[start:] + chain[:start]
    return [(p, voice if p == route.provider else None) for p in order]


class SegmentLedger:
    """An utterance's text segments, and how many of them a provider has fully spoken.

    ``by_sentence`` cuts a whole text into sentences (for failover); otherwise the
    segments are exactly the utterance's. Segments are pulled from the utterance once and
    kept, so each provider's :meth:`feed` can start again at the first one not ``done``.
    """

    def __init__(self, utt: Utterance, *, by_sentence: bool):
        self._utt = utt
        self.texts: list[str] = []
        self.done = 0
        self._ended = False
        if by_sentence and utt.text is not None:
            self.texts = split_sentences(utt.text)
            self._ended = True

    @property
    def complete(self) -> bool:
        """The whole text is known and every segment of it is done."""
        return self._ended and self.done >= len(self.texts)

    async def feed(self, on_handed: Callable[[], None]) -> AsyncIterator[str]:
        """The segments from the first one not done, then the rest as the text arrives;
        ``on_handed()`` runs each time the provider takes one."""
        index = self.done
        while True:
            if index == len(self.texts):
                if self._ended:
                    return
                segment = await self._utt.next_segment()  # safe to cancel: nothing is lost
                if segment is None:
                    self._ended = True
                    return
                self.texts.append(segment)
            segment = self.texts[index]
            index += 1
            on_handed()
            yield segment

    def completed(self, start: int) -> Callable[[int], None]:
        """The ``on_segments_done`` callback for a feed that started at segment ``start``."""
        def on_segments_done(count: int) -> None:
            self.done = max(self.done, start + count)
        return on_segments_done
