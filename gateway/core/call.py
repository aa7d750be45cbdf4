"""A call: its speech queue, its TTS session, its playout, its events.

The media endpoint feeds carrier events in (``on_mark``, ``on_dtmf``, ...); the control
API and the route's greeting feed utterances in (``speak``); the call turns each
utterance into carrier frames on its playout and ends it with a mark. The echo of that
mark, not the end of synthesis, is what makes ``speech.done`` fire.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import aiohttp
from telcodecs import Framer, Transcoder, silence_byte

from gateway.bot.protocol import started_fields
from gateway.carriers.base import CarrierProtocol
from gateway.carriers.events import MediaFormat
from gateway.config import (BARGE_IN_BOUNDS, BARGE_IN_MODES, BargeInConfig, GatewayConfig,
                            RouteConfig)
from gateway.core.bargein import CallerSpeech
from gateway.core.caller import CallerAudio
from gateway.core.events import EventHub
from gateway.core.failover import NO_AUDIO, SegmentLedger, failover_reason, provider_plan
from gateway.core.playout import FRAME_SECONDS, Cue, MediaClock, Playout
from gateway.core.speech import Recording, Utterance, check_room
from gateway.logs import RateLimitedLog
from gateway.metrics import TTS_ERROR_KINDS, Metrics, bounded
from gateway.prompts.recorded import PromptError, RecordedPrompts
from gateway.prompts.settings import PROMPT_ERROR_KINDS, url_problem
from gateway.prompts.store import Prompts, RecordedPrompt, tts_key
from gateway.tts.base import TtsError, TtsProvider, TtsSession

if TYPE_CHECKING:
    from gateway.bot.dialer import BotDialer  # imports this module
    from gateway.flow.runtime import FlowRunner  # imports this module

log = logging.getLogger(__name__)

#: frames the voice activity detector took are added to its metric in batches (5 s of a
#: call's audio), not one by one on the media path
VAD_FRAMES_COUNTED_EVERY = 250


@dataclass
class CallServices:
    """What every call shares with the rest of the process."""

    config: GatewayConfig
    metrics: Metrics
    clock: MediaClock
    providers: dict[str, TtsProvider]
    prompts: Prompts  # the prompt cache (gateway/prompts/store.py)
    http: aiohttp.ClientSession | None = None  # for events_url, once the app has started
    recorded: RecordedPrompts = field(init=False)  # recorded prompts (prompts.items, URLs)

    def __post_init__(self) -> None:
        self.recorded = RecordedPrompts(self.config.prompts, store=self.prompts)


class CallEnded(Exception):
    """The call is over (or hanging up) and takes no more speech."""


class _FailedOn(TtsError):
    """A :class:`TtsError` that names the provider of the last attempt."""

    def __init__(self, kind: str, message: str, provider: str):
        super().__init__(kind, message)
        self.provider = provider


#: where a call is in its life: taking speech, hanging up (its speech plays out), closed by
#: the gateway (the transport is closing), ended
CallState = Literal["active", "hanging_up", "closed_by_gateway", "ended"]

class Call:
    def __init__(self, services: CallServices, *, call_id: str, stream_id: str, carrier: str,
                 route: RouteConfig, protocol: CarrierProtocol, media_format: MediaFormat,
                 sink, close_transport: Callable[[], Awaitable[None]],
                 details: dict[str, str] | None = None,
                 inbound_format: MediaFormat | None = None):
        self.services = services
        self.id = call_id
        self.stream_id = stream_id
        self.carrier = carrier
        self.route = route
        self.protocol = protocol
        self.media_format = media_format
        self.details = dict(details or {})  # from the carrier: Asterisk's channel name, ...
        self.started_at = time.time()
        #: the latest utterance's speak request -> its first frame sent, in ms
        self.first_audio_ms: float | None = None
        self._sink = sink
        self._close_transport = close_transport
        self.metrics = services.metrics
        self._log = RateLimitedLog(log)  # per-call warnings: a few of a kind, then a count
        self.metrics.utterances.labels(carrier, "failed")  # a series at 0 before the first
        lead = self._lead(services.config, carrier, protocol)
        # Batching frames into one write needs a lead that covers the batch; a carrier
        # that cannot buffer (lead 0) or takes long chunks (Exotel) gets one per write.
        per_write = services.config.playout.frames_per_write
        if protocol.frames_per_message > 1 or lead < FRAME_SECONDS * (per_write + 1):
            per_write = 1
        self.chunk_bytes = media_format.bytes_per_20ms * protocol.frames_per_message
        self.playout = Playout(services.clock, sink.write, sink.backlog,
                               protocol.media_message, lead=lead, carrier=carrier,
                               on_error=self._on_send_error, frames_per_write=per_write,
                               frame_seconds=FRAME_SECONDS * protocol.frames_per_message)
        self.events = EventHub(call_id, events_url=route.events_url, http=services.http,
                               on_webhook_error=lambda: self.metrics.control_errors.labels(
                                   "events_url").inc())
        self._queue: asyncio.Queue[Utterance] = asyncio.Queue()
        self._queued: list[Utterance] = []
        self.current: Utterance | None = None
        self._speaking: asyncio.Task | None = None
        self._speaker: asyncio.Task | None = None
        self._sessions: dict[str, asyncio.Future[TtsSession]] = {}
        self._discarding: set[asyncio.Task] = set()  # sessions given back after a failure
        self._route_provider = route.provider  # where utterances start (moves on failover)
        self._awaiting_echo: dict[str, Utterance] = {}  # mark name -> utterance
        self._cleared_marks: set[str] = set()
        self._sentence_marks: dict[str, tuple[Utterance, int]] = {}  # sent, echo awaited
        self._local_echoes: dict[str, asyncio.TimerHandle] = {}  # carriers without marks
        self._streaming: Utterance | None = None  # open utterance of the control socket
        self.state: CallState = "active"
        # what the carrier streams to us (Telnyx may stream another format than it plays)
        self.caller_audio = CallerAudio(inbound_format or media_format)
        # what from the caller interrupts speech; a bot may change it during the call
        self.barge_in: BargeInConfig = route.barge_in
        self.caller_speech = CallerSpeech(self)  # turns, and barge-in by voice and keys
        self._vad_frames = 0  # handed to the detector, not yet counted in the metric
        self.dtmf: list[str] = []
        self._hangup_task: asyncio.Task | None = None
        self.bot: BotDialer | None = None  # when the route has a bot
        self.flow: FlowRunner | None = None  # when the route has a flow
        self._idle = asyncio.Event()
        self._idle.set()

    @staticmethod
    def _lead(config: GatewayConfig, carrier: str, protocol: CarrierProtocol) -> float:
        """Seconds sent ahead of real time: the operator's per-carrier setting, else what
        the carrier can take (0 where it has no buffer), else the global lead."""
        carrier_config = config.carriers.get(carrier)
        if carrier_config is not None and carrier_config.lead_ms is not None:
            return carrier_config.lead_ms / 1000
        if protocol.lead_s is not None:
            return protocol.lead_s
        return config.playout.lead_ms / 1000

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._speaker = asyncio.get_running_loop().create_task(self._speaker_loop(),
                                                               name=f"speaker-{self.id}")
        inbound = self.caller_audio.format
        self.events.emit("call.started", **started_fields(
            carrier=self.carrier, route=self.route.name, stream_id=self.stream_id,
            caller=self.protocol.caller, called=self.protocol.called,
            custom_parameters=self.protocol.custom_parameters,
            encoding=inbound.encoding, sample_rate=inbound.sample_rate))
        self._session(self.route.provider)
        if self.route.greeting:
            self.speak(Utterance.whole(self.route.greeting, source="greeting",
                                       cache=self.route.cache_greeting))
        if self.route.flow is not None:  # an IVR flow; its bot step dials the bot
            from gateway.flow.runtime import FlowRunner  # imports this module

            self.flow = FlowRunner(self)
            self.flow.start()
        elif self.route.bot is not None:  # the gateway dials the route's bot
            from gateway.bot.dialer import BotDialer  # imports this module

            self.bot = BotDialer(self, self.route.bot)
            self.bot.start()

    async def end(self, outcome: str) -> None:
        """The carrier stream is gone: stop everything and account for the call."""
        if self.state == "ended":
            return
        self.state = "ended"
        if self.flow is not None:
            await self.flow.close()
        self.caller_speech.close()
        self._count_vad_frames()
        self.playout.close()
        self._cancel_local_echoes()
        for utt in self._unfinished():
            self._finish(utt, interrupted=True)
        for task in (self._speaking, self._speaker):
            if task:
                task.cancel()
        for task in (self._speaking, self._speaker):
            if task:
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        for future in self._sessions.values():
            try:
                session = await future
            except asyncio.CancelledError:
                continue
            except Exception:
                continue  # never opened; its error was reported to the utterance
            try:
                await session.release()
            except Exception as exc:
                log.warning("call %s: releasing TTS session failed: %s", self.id, exc)
        if self._discarding:
            await asyncio.gather(*self._discarding, return_exceptions=True)
        self._log.flush(f"call {self.id}")
        self.events.emit("call.ended", outcome=outcome, frames_sent=self.playout.frames_sent,
                         underruns=self.playout.underruns)
        await self.events.close()
        if self.bot is not None:
            await self.bot.close()

    # -- speech -----------------------------------------------------------------------------

    def speak(self, utt: Utterance, *, interrupt: bool = False) -> Utterance:
        """Queue an utterance; raise CallEnded, or SpeechRefused when a limit (``limits.*``)
        refuses it (the route's greeting is the operator's, never refused)."""
        if self.state != "active":
            raise CallEnded(f"call {self.id} is {self.state}; it takes no more speech")
        if interrupt:
            self.interrupt_now()
        if utt.source != "greeting":
            check_room(self._queued, self.services.config.limits, utt.text_chars)
        self._queued.append(utt)
        self._idle.clear()
        self._queue.put_nowait(utt)
        return utt

    def play(self, *, prompt: str | None = None, url: str | None = None,
             interrupt: bool = False, interruptible: bool = True,
             cache: bool = True) -> Utterance:
        """Queue a prompt like an utterance: one of ``prompts.items`` by name (a recording,
        or text to synthesize) or the recording at ``url``. Raises CallEnded, SpeechRefused,
        or PromptError (``unknown_prompt``, ``bad_source``) for what cannot be queued; a
        recording that cannot be loaded fails later, in its ``speech.done``. ``cache``
        false: a recording's frames are not kept in the prompt store."""
        item = None
        if prompt is not None:
            item = self.services.config.prompts.items.get(prompt)
            if item is None:
                raise PromptError("unknown_prompt", f"no prompt named {prompt[:64]!r} in "
                                  "prompts.items")
        elif problem := url_problem(url):
            raise PromptError("bad_source", f"url: must be {problem}")
        if item is not None and item.text is not None:
            utt = Utterance.whole(item.text, voice=item.voice, provider=item.provider,
                                  source="prompt", interruptible=interruptible)
        else:
            utt = Utterance(source="prompt", interruptible=interruptible)
            utt.close()
            utt.recording = (Recording(item.file, item.url, cache) if item is not None
                             else Recording(url=url, cache=cache))
        utt.prompt = prompt
        return self.speak(utt, interrupt=interrupt)

    def stream_text(self, text: str, *, flush: bool, voice: str | None = None,
                    provider: str | None = None, interruptible: bool = True) -> Utterance | None:
        """Text from a bot's socket: pieces accumulate in one utterance until ``flush``; the
        first piece's ``voice``, ``provider`` and ``interruptible`` are the utterance's.
        A piece a limit refuses (SpeechRefused) is dropped; the utterance stays open."""
        utt = self._streaming
        if text and self.state == "active":
            check_room(self._queued, self.services.config.limits, len(text), into=utt)
        if utt is None and text:
            utt = self.speak(Utterance(voice=voice, provider=provider, source="stream",
                                       interruptible=interruptible))
            self._streaming = utt
        if utt is not None:
            if text:
                utt.append(text)
            if flush:
                utt.close()
                self._streaming = None
        return utt

    async def _speaker_loop(self) -> None:
        while True:
            utt = await self._queue.get()
            if utt.done.is_set():
                continue
            self.current = utt
            self._speaking = asyncio.get_running_loop().create_task(self._speak(utt))
            try:
                await self._speaking
            except asyncio.CancelledError:
                task = asyncio.current_task()
                assert task is not None  # a coroutine runs in a task
                if task.cancelling():
                    raise
            except Exception:  # _speak reports synthesis failures itself: a bug
                self._log.log(logging.ERROR, "unexpected failure",
                              "call %s speech %s: unexpected failure", self.id, utt.id,
                              exc_info=True)
                utt.error = utt.error or "internal error"
                self.playout.end_utterance()
                self._finish(utt, interrupted=False)
            finally:
                self._speaking = None
                self.current = None

    def _session(self, provider_name: str) -> asyncio.Future:
        """The call's session with a provider, opened once (at call start for the route's
        provider: a pooled provider leases the call's connection then)."""
        future = self._sessions.get(provider_name)
        if future is None or (future.done() and (future.cancelled() or future.exception())):
            provider = self.services.providers[provider_name]
            future = asyncio.ensure_future(provider.open_session(self.media_format))
            future.add_done_callback(_retrieve_exception)
            self._sessions[provider_name] = future
        return future

    def _discard_session(self, provider_name: str) -> None:
        """Stop using the call's session with a provider that failed: it goes back to
        its pool (not reused) and the next utterance that needs the provider leases anew."""
        future = self._sessions.pop(provider_name, None)
        if future is None:
            return

        async def discard() -> None:
            try:
                session = await future
            except (asyncio.CancelledError, Exception):
                return  # never opened
            await session.discard()

        task = asyncio.get_running_loop().create_task(discard())
        self._discarding.add(task)
        task.add_done_callback(self._discarding.discard)

    async def _speak(self, utt: Utterance) -> None:
        plan = provider_plan(self.route, utt, self._route_provider)
        provider_name, voice = plan[0]
        playout = self.playout
        playout.begin_utterance()
        self.events.emit("speech.started", **{"speech_id": utt.id, "source": utt.source,
                                              **_prompt_fields(utt)})
        prompts = self.services.prompts
        key = None
        if utt.cache and utt.text:
            key = tts_key(self.services.config.providers[provider_name], voice, utt.text,
                          self.media_format, self.chunk_bytes)
        cached = await prompts.get(key, route=self.route.name) if key else None
        if utt.recording is not None:
            await self._play_recording(utt)
        elif cached:
            self.metrics.prompt_chars_saved.labels(provider_name).inc(len(utt.text or ""))
            utt.first_audio_at = time.monotonic()
            self._play_recorded(utt, cached)
        else:
            try:
                recorded = await self._synthesize(utt, plan, record=key is not None)
            except TtsError as exc:
                self._synthesis_failed(utt, exc)
            except Exception:
                self._log.log(logging.ERROR, "unexpected failure",
                              "call %s speech %s: unexpected failure", self.id, utt.id,
                              exc_info=True)
                utt.error = "internal error"
            else:
                if key and recorded:
                    await prompts.put(key, recorded, route=self.route.name)
        # The end of the utterance follows whatever audio was queued, also after a failure:
        # speech.done (with the error, if any) fires once the caller has heard that audio.
        mark = self.protocol.mark_message(utt.id)
        if mark is not None:
            end = Cue(mark, lambda now: self._await_echo(utt))
        else:  # no marks on this carrier: the end is when our own clock says it has played
            end = Cue(None, lambda now: self._echo_when_played(utt))
        reached = end.on_reached

        def on_end(now: float, end=end, utt=utt) -> None:
            if utt.heard.start_frames is not None:
                utt.heard.end_frames, utt.heard.end_play_time = end.frames, end.play_time
            reached(now)

        end.on_reached = on_end
        playout.enqueue(end)
        playout.end_utterance()
        playout.kick()

    async def _play_recording(self, utt: Utterance) -> None:
        """A recorded prompt's frames into the playout; one that cannot be loaded ends
        the utterance with its error (counted, logged) and the call goes on."""
        recording = utt.recording or Recording()
        try:
            prompt = await self.services.recorded.load(
                fmt=self.media_format, chunk_bytes=self.chunk_bytes, file=recording.file,
                url=recording.url, route=self.route.name, cache=recording.cache)
        except PromptError as exc:
            self.metrics.prompt_errors.labels(exc.kind).inc()
            self._log.warning(f"prompt {bounded(exc.kind, PROMPT_ERROR_KINDS)}",
                              "call %s speech %s: prompt %s cannot play: %s", self.id, utt.id,
                              utt.prompt or "(url)", exc)
            utt.error = f"prompt: {exc}"
            return
        utt.first_audio_at = time.monotonic()
        self._play_recorded(utt, prompt)

    def _synthesis_failed(self, utt: Utterance, exc: TtsError) -> None:
        provider = ((exc.provider if isinstance(exc, _FailedOn) else None) or utt.provider
                    or self.route.provider)
        self.metrics.tts_errors.labels(provider, exc.kind).inc()
        self._log.warning(f"tts {bounded(exc.kind, TTS_ERROR_KINDS)}",
                          "call %s speech %s: TTS failed (%s): %s", self.id, utt.id, exc.kind,
                          exc)
        utt.error = str(exc)

    async def _synthesize(self, utt: Utterance, plan: list[tuple[str, str | None]], *,
                          record: bool) -> RecordedPrompt | None:
        """Stream the utterance's audio into the playout, converted to the carrier's format,
        from the first provider of ``plan`` that does not fail (gateway/core/failover.py).

        Returns the recording when ``record`` is set (for the prompt cache), unless a
        failover mixed providers. When every provider failed, the audio that came stays
        queued (the caller hears it) and the last failure is raised.
        """
        failover = len(plan) > 1
        # Sentence by sentence where the provider tells when each one's audio is all in
        # within one turn, so that speech.done can say which sentences the caller heard.
        by_sentence = failover or getattr(self.services.providers[plan[0][0]],
                                             "tracks_sentences", False)
        ledger = SegmentLedger(utt, by_sentence=by_sentence)
        utt.heard.texts = ledger.texts
        out = _AudioOut(self, utt, ledger, record=record)
        errors: list[str] = []
        for index, (name, voice) in enumerate(plan):
            try:
                await self._attempt(utt, name, voice, ledger, out, track_segments=by_sentence)
                break
            except TtsError as exc:
                errors.append(str(exc) if str(exc).startswith(name) else f"{name}: {exc}")
                if failover and ledger.complete:  # it failed once all its audio was in
                    self.metrics.tts_errors.labels(name, exc.kind).inc()
                    self._discard_session(name)
                    break
                if index + 1 == len(plan):
                    message = ("every provider failed: " + "; ".join(errors) if failover
                               else str(exc))
                    out.finish()
                    raise _FailedOn(exc.kind, message, name) from exc
                self.metrics.tts_errors.labels(name, exc.kind).inc()
                self._fail_over(utt, name, plan[index + 1][0], exc, ledger, out)
        return out.finish()

    async def _attempt(self, utt: Utterance, name: str, voice: str | None,
                       ledger: SegmentLedger, out: _AudioOut, *, track_segments: bool) -> None:
        """The utterance (from the first segment not done) on one provider."""
        provider = self.services.providers[name]
        session = await self._session(name)
        timeout_ms = self.route.first_audio_timeout_ms
        handed_at: list[float] = []  # when the provider took its first segment
        heard = False
        deadline: asyncio.Timeout | None = None  # armed from the text until the first audio
        loop = asyncio.get_running_loop()

        def handed() -> None:
            if not handed_at:
                handed_at.append(time.monotonic())
                if timeout_ms and not heard and deadline is not None:
                    deadline.reschedule(loop.time() + timeout_ms / 1000)

        on_done = None
        if track_segments:
            note = ledger.completed(ledger.done)

            def on_done(count: int) -> None:
                note(count)
                out.segments_done()

        stream = session.stream(ledger.feed(handed), voice, on_segments_done=on_done)
        out.turn_started()
        playout = self.playout
        ahead_s = self.services.config.limits.max_buffered_audio_s
        timer = asyncio.timeout(None)
        try:
            async with timer, aclosing(stream) as chunks:
                deadline = timer
                async for chunk in chunks:
                    if not chunk.data:  # word timings only
                        out.push(chunk)
                        continue
                    if not heard:
                        heard = True
                        timer.reschedule(None)
                        now = time.monotonic()
                        if utt.first_audio_at is None:
                            utt.first_audio_at = now
                        if handed_at:
                            self.metrics.tts_first_chunk.labels(provider.name).observe(
                                now - handed_at[0])
                    out.push(chunk)
                    if playout.queued_seconds() > ahead_s:  # back-pressure: pull no more
                        await playout.room(ahead_s)
        except TimeoutError:
            if not timer.expired():
                raise
            raise TtsError(NO_AUDIO, f"{name}: no audio within {timeout_ms} ms of the "
                           "text") from None
        finally:
            deadline = None

    def _fail_over(self, utt: Utterance, failed: str, to: str, exc: TtsError,
                   ledger: SegmentLedger, out: _AudioOut) -> None:
        reason = failover_reason(exc)
        self._log.warning(f"failover {reason}",
                          "call %s speech %s: %s failed (%s: %s); %s takes over at sentence %d",
                          self.id, utt.id, failed, reason, exc, to, ledger.done + 1)
        out.rewind()
        self._discard_session(failed)
        if not utt.provider:
            self._route_provider = to
        self.metrics.failovers.labels(failed, to, reason).inc()
        self.events.emit("speech.failover", speech_id=utt.id, from_provider=failed,
                         to_provider=to, reason=reason, error=str(exc),
                         segments_done=ledger.done)

    def _enqueue_frames(self, utt: Utterance, frames, first: bool) -> None:
        playout = self.playout
        if first:
            playout.enqueue(frames[0])
            cue = Cue(None, lambda now: None)
            cue.on_reached = lambda now: self._first_frame_sent(utt, cue)
            playout.enqueue(cue)
            playout.extend(frames[1:])
        else:
            playout.extend(frames)

    def _play_recorded(self, utt: Utterance, prompt: RecordedPrompt) -> None:
        """A cached prompt into the playout, with a mark after each sentence as when it
        was synthesized, so that a cut one still tells what the caller heard."""
        heard, frames = utt.heard, prompt.frames
        heard.texts, heard.words = list(prompt.texts), list(prompt.words)
        start = 0
        for index, end in enumerate(prompt.ends):
            if end > start:
                self._enqueue_frames(utt, frames[start:end], first=start == 0)
                start = end
            heard.segment_ended(index, end * self.playout.frame_seconds)
            if index < len(prompt.ends) - 1:
                self._enqueue_sentence_mark(utt, index)
        if start < len(frames):
            self._enqueue_frames(utt, frames[start:], first=start == 0)

    def _enqueue_sentence_mark(self, utt: Utterance, index: int) -> bool:
        """A mark after sentence ``index`` of ``utt``, where the carrier has marks."""
        name = f"{utt.id}.{index + 1}"
        message = self.protocol.mark_message(name)
        if message is None:
            return False
        self.playout.enqueue(Cue(message, lambda now: self._sentence_mark_sent(name, utt, index)))
        return True

    def _await_echo(self, utt: Utterance) -> None:
        self._awaiting_echo[utt.id] = utt

    def _echo_when_played(self, utt: Utterance) -> None:
        self._awaiting_echo[utt.id] = utt
        loop = asyncio.get_running_loop()
        self._local_echoes[utt.id] = loop.call_at(self.playout.next_play_time,
                                                  self._local_echo, utt.id)

    def _local_echo(self, name: str) -> None:
        self._local_echoes.pop(name, None)
        self.on_mark(name)

    def _cancel_local_echoes(self) -> None:
        for handle in self._local_echoes.values():
            handle.cancel()
        self._local_echoes.clear()

    def _first_frame_sent(self, utt: Utterance, cue: Cue) -> None:
        utt.heard.start_frames = cue.frames - self.protocol.frames_per_message
        utt.first_frame_at = now = time.monotonic()
        self.metrics.first_frame.labels(self.carrier).observe(now - utt.created_at)
        if utt.first_audio_at is not None:
            self.metrics.gateway_added.labels(self.carrier).observe(now - utt.first_audio_at)
        self.first_audio_ms = round((now - utt.created_at) * 1000, 1)
        self.events.emit("speech.first_audio", speech_id=utt.id, latency_ms=self.first_audio_ms)

    def _finish(self, utt: Utterance, *, interrupted: bool, cause: str | None = None) -> None:
        """``speech.done``; ``cause`` says what interrupted it (``api``, ``speech``,
        ``dtmf``)."""
        if utt.done.is_set():
            return
        utt.interrupted = interrupted
        utt.done.set()
        if utt in self._queued:
            self._queued.remove(utt)
        if not self._queued:
            self._idle.set()
        outcome = "failed" if utt.error else "interrupted" if interrupted else "played"
        self.metrics.utterances.labels(self.carrier, outcome).inc()
        fields = {"speech_id": utt.id, "interrupted": interrupted}
        if interrupted and cause:
            fields["cause"] = cause
        if interrupted:
            played_s, heard_text = self._heard(utt)
            fields["played_ms"] = round(played_s * 1000)
            fields["heard_text"] = heard_text
        if utt.error:
            fields["error"] = utt.error
        self.events.emit("speech.done", **fields, **_prompt_fields(utt))

    def _heard(self, utt: Utterance) -> tuple[float, str]:
        """How much of ``utt`` the caller heard before it was cut: seconds of its audio
        by the media clock, and its text to the sentence (by the marks after each, where
        the carrier has marks) and to the word (where the provider gave word timings)."""
        playout = self.playout
        played = utt.heard.played_s(frames_sent=playout.frames_sent,
                                    next_play_time=playout.next_play_time,
                                    now=self.services.clock.now(), frame_s=FRAME_SECONDS)
        return utt.heard.result(played, by_marks=self.protocol.mark_message(utt.id) is not None)

    def _sentence_mark_sent(self, name: str, utt: Utterance, index: int) -> None:
        if not utt.done.is_set():
            self._sentence_marks[name] = (utt, index)

    def _unfinished(self) -> list[Utterance]:
        return [utt for utt in self._queued if not utt.done.is_set()]

    # -- barge-in and hang-up ---------------------------------------------------------------

    def interrupt_now(self, cause: str = "api") -> int:
        """Stop speaking at once: empty the queue, stop synthesis, drop late audio.

        Returns how many utterances were cut. The carrier's clear is sent by ``interrupt``;
        this synchronous part is what ``speak(..., interrupt=True)`` needs. ``cause``
        (``api``, ``speech``, ``dtmf``) goes into ``speech.done`` and the barge-in metric.
        """
        cut = self._unfinished()
        if self._speaking:
            self._speaking.cancel()
        if self._streaming:
            self._streaming.close()
            self._streaming = None
        self.playout.clear()
        self._cancel_local_echoes()
        for utt in cut:
            self._finish(utt, interrupted=True, cause=cause)
        if self.protocol.marks_cleared_on_clear:  # their echoes will come, meaning "cut"
            self._cleared_marks.update(self._awaiting_echo)
            self._cleared_marks.update(self._sentence_marks)
        self._awaiting_echo.clear()
        self._sentence_marks.clear()
        if cut:
            self.metrics.barge_ins.labels(self.carrier, cause).inc()
        return len(cut)

    def set_barge_in(self, **changes) -> BargeInConfig:
        """Change what interrupts this call's speech (the bot protocol's ``barge_in``):
        ``mode``, ``min_speech_ms``, ``min_silence_ms``; ValueError names a bad one."""
        unknown = set(changes) - {"mode", "min_speech_ms", "min_silence_ms"}
        if unknown:
            raise ValueError(f"barge_in: unknown setting(s) {', '.join(sorted(unknown))}")
        if "mode" in changes and changes["mode"] not in BARGE_IN_MODES:
            raise ValueError(f"barge_in.mode: one of {', '.join(BARGE_IN_MODES)}")
        for name, (low, high) in BARGE_IN_BOUNDS.items():
            value = changes.get(name)
            if value is not None and (type(value) is not int or not low <= value <= high):
                raise ValueError(f"barge_in.{name}: an integer from {low} to {high}")
        self.barge_in = dataclasses.replace(self.barge_in, **changes)
        return self.barge_in

    async def interrupt(self, cause: str = "api") -> int:
        cut = self.interrupt_now(cause)
        # Always clear: the carrier may still hold audio we consider played (pitfall:
        # "interrupt is a no-op once everything was sent").
        clear = self.protocol.clear_message()
        if clear is not None:
            self._send_now(clear)
        return cut

    def request_hangup(self) -> None:
        if self._hangup_task is None:
            self._hangup_task = asyncio.get_running_loop().create_task(self.hangup())

    async def hangup(self) -> None:
        """Let accepted speech finish playing (bounded), then close the carrier stream."""
        if self.state != "active":
            return
        self.state = "hanging_up"
        if self._streaming:
            self._streaming.close()
            self._streaming = None
        timeout = self.services.config.playout.hangup_mark_timeout_s
        asked_at = time.monotonic()
        while not self._idle.is_set():
            since_activity = time.monotonic() - max(self.playout.last_activity_monotonic, asked_at)
            remaining = timeout - since_activity
            if remaining <= 0:
                log.info("call %s: hang-up did not see the last mark within %.1f s",
                         self.id, timeout)
                break
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=min(remaining, 0.5))
            except TimeoutError:
                pass
        goodbye = self.protocol.hangup_message()
        if goodbye is not None:
            self._send_now(goodbye)
        await self._close_transport()

    def _send_now(self, message: bytes) -> None:
        if self.state == "ended":
            return
        try:
            self._sink.write([message])
        except Exception as exc:
            self._on_send_error(exc)

    def _on_send_error(self, exc: BaseException) -> None:
        self._log.log(logging.INFO, "send failed", "call %s: carrier socket write failed: %s",
                      self.id, exc)

    # -- carrier events ---------------------------------------------------------------------

    def on_audio(self, payload: bytes) -> None:
        if self.caller_speech.active:  # the detector takes this frame
            self._vad_frames += 1
            if self._vad_frames >= VAD_FRAMES_COUNTED_EVERY:
                self._count_vad_frames()
        self.caller_audio.feed(payload)

    def _count_vad_frames(self) -> None:
        self.metrics.vad_frames.labels(self.carrier).inc(self._vad_frames)
        self._vad_frames = 0

    def on_flow_control(self, paused: bool) -> None:
        self.playout.pause(paused)

    def on_dtmf(self, digit: str) -> None:
        self.dtmf.append(digit)
        self.events.emit("dtmf", digit=digit)
        self.caller_speech.on_dtmf(digit)
        if self.flow is not None:
            self.flow.on_dtmf(digit)

    def on_mark(self, name: str) -> None:
        if name in self._cleared_marks:
            self._cleared_marks.discard(name)  # echoed by our clear: not played
            return
        sentence = self._sentence_marks.pop(name, None)
        if sentence is not None:  # the caller heard that sentence out (not a bot's event)
            heard_utt, index = sentence
            heard_utt.heard.marked[index] = True
            return
        utt = self._awaiting_echo.pop(name, None)
        self.events.emit("mark", name=name)
        if utt is not None:
            if self._sentence_marks:  # echoes a carrier never sent: not kept past the end
                self._sentence_marks = {k: v for k, v in self._sentence_marks.items()
                                        if v[0] is not utt}
            self._finish(utt, interrupted=False)

    def summary(self) -> dict:
        return {
            "id": self.id,
            "carrier": self.carrier,
            "route": self.route.name,
            "stream_id": self.stream_id,
            "state": self.state,
            "started_at": round(self.started_at, 3),
            "duration_s": round(time.time() - self.started_at, 1),
            "speaking": self.current.id if self.current else None,
            "first_audio_ms": self.first_audio_ms,
            "queued": [u.id for u in self._queued],
            "frames_sent": self.playout.frames_sent,
            "underruns": self.playout.underruns,
            "inbound_frames": self.caller_audio.frames,
            "media_format": {"encoding": self.media_format.encoding,
                             "sample_rate": self.media_format.sample_rate},
            "details": self.details,
        }


class _AudioOut:
    """Provider audio of one utterance into the call's playout: decoded, resampled and
    encoded to the carrier's format, cut into frames. It remembers where the last complete
    segment's audio ends, so that a failover can drop the audio after it (``rewind``), and
    notes on the utterance's ``heard`` log where each segment (and each timed word) ends
    on the utterance's audio timeline; a carrier with marks gets one after each sentence."""

    def __init__(self, call: Call, utt: Utterance, ledger: SegmentLedger, *, record: bool):
        self._call = call
        self._utt = utt
        self._ledger = ledger
        self._format = call.media_format
        self._frame_s = call.playout.frame_seconds
        self.recorded: list[bytes] | None = [] if record else None
        self._first = True  # the next frames are the utterance's first
        self._queued = 0  # playout entries queued for the utterance
        self._boundary = 0  # ... of which belong to complete segments
        self._frames = 0  # audio frames queued for the utterance
        self._boundary_frames = 0  # ... of which belong to complete segments
        self._turn_s = 0.0  # where the provider's current turn starts on the timeline
        self._reset()

    def _reset(self) -> None:
        self._framer = Framer(self._call.chunk_bytes, silence_byte(self._format.encoding))
        self._transcoder: Transcoder | None = None
        self._source: tuple[str, int] | None = None

    def turn_started(self) -> None:
        """A provider starts (again) at the first segment not done: its word timings
        count from here."""
        self._turn_s = self._frames * self._frame_s

    def push(self, chunk) -> None:
        if chunk.words:
            heard, limit = self._utt.heard, self._utt.text_chars
            for word in chunk.words:
                heard.add_word(self._turn_s + word.end_s, word.text, limit)
        if not chunk.data:
            return
        fmt = self._format
        if (chunk.encoding, chunk.sample_rate) != self._source:
            if self._transcoder is not None:
                self._framer.push(self._transcoder.flush())
            self._source = (chunk.encoding, chunk.sample_rate)
            self._transcoder = Transcoder(chunk.encoding, chunk.sample_rate,
                                          fmt.encoding, fmt.sample_rate)
        assert self._transcoder is not None  # made for the first chunk's format
        frames = self._framer.push(self._transcoder.feed(chunk.data))
        if frames:
            # Only a playout that ran out of audio needs sending now; one that still holds
            # frames releases the new ones on the clock as usual.
            playout = self._call.playout
            starving = not playout.queue
            self._enqueue(frames)
            if starving:
                playout.kick()

    def _enqueue(self, frames: list[bytes]) -> None:
        self._call._enqueue_frames(self._utt, frames, self._first)
        self._queued += len(frames) + self._first  # the first frames come with a cue
        self._frames += len(frames)
        self._first = False
        if self.recorded is not None:
            self.recorded += frames

    def segments_done(self) -> None:
        """The provider said the audio of the ledger's first ``done`` segments is all in:
        each newly done one ends here; a mark follows it where the carrier has marks
        (not after the utterance's last sentence: the utterance's own mark ends that)."""
        heard, ledger, call = self._utt.heard, self._ledger, self._call
        at_s = self._frames * self._frame_s
        for index in range(len(heard.ends), ledger.done):
            heard.segment_ended(index, at_s)
            if ledger.complete and index == len(ledger.texts) - 1:
                break
            self._queued += call._enqueue_sentence_mark(self._utt, index)
        self._boundary = self._queued
        self._boundary_frames = self._frames

    def rewind(self) -> None:
        """Drop what is still queued of the segment being cut, and start afresh (the next
        provider's format). The few milliseconds the framer and resampler held of the
        segment before it go too."""
        dropped = self._call.playout.drop_tail(self._queued - self._boundary)
        if dropped:  # the first-frame cue: it comes with the next provider's first frames
            self._first = True
        self._queued = self._boundary
        self._frames = self._boundary_frames
        self._utt.heard.drop_after(self._frames * self._frame_s)
        self.recorded = None  # mixed providers: not a prompt to cache
        self._reset()

    def finish(self) -> RecordedPrompt | None:
        tail = self._framer.push(self._transcoder.flush()) if self._transcoder else []
        last = self._framer.flush()
        if last:
            tail.append(last)
        if tail:
            self._enqueue(tail)
        if self.recorded is None:
            return None
        heard = self._utt.heard
        return RecordedPrompt(
            tuple(self.recorded), tuple(heard.texts[:len(heard.ends)]),
            tuple(round(end / self._frame_s) for end in heard.ends), tuple(heard.words))


def _prompt_fields(utt: Utterance) -> dict[str, str]:
    """What ``speech.started`` and ``speech.done`` of a prompt add: its source and name."""
    if utt.source != "prompt":
        return {}
    return {"source": "prompt", "prompt": utt.prompt} if utt.prompt else {"source": "prompt"}


def _retrieve_exception(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # reported where the session is awaited; not "never retrieved"
