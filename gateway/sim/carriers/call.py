"""The asyncio half of a simulated carrier: one call into the gateway.

:class:`CarrierCall` connects like the carrier, sends the messages that start the stream,
streams caller audio on the carrier's cadence (absolute deadlines, no drift), feeds every
gateway message into the carrier's sans-I/O model, and sends what the model says when it
says it (mark echoes on the playout clock, acks, error frames, a close). A carrier module
subclasses it and supplies the wire form of its own messages.

All times are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

import asyncio
import math
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Self, TypeVar

import aiohttp
from telcodecs import Transcoder

from gateway.sim.carriers.formats import WireFormat, parse_format
from gateway.sim.carriers.model import CarrierModel, Echo, EndCall, Notice, Output
from gateway.sim.carriers.result import CarrierCallResult
from gateway.sim.carriers.transport import AiohttpTransport, Transport

with warnings.catch_warnings():  # as in telcodecs.g711: audioop-lts on 3.13
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

_T = TypeVar("_T")


class CallClosedError(ConnectionError):
    """The call ended (either side hung up) before the awaited thing happened, or a
    message was sent on an ended call."""


class CarrierCall:
    """One simulated call; ``async with`` connects and, on exit, hangs up.

    The call ends when the test calls :meth:`hangup` (the carrier's goodbye, then close),
    :meth:`drop` (the connection vanishes), when the gateway closes (``closed_by_gateway``;
    not an exception), or when the simulated carrier itself ends it (``carrier_hangup``
    says why). Audio still buffered then is not heard. Every wait is bounded; a wait that
    can no longer succeed because the call ended raises :class:`CallClosedError`.
    """

    carrier: ClassVar[str] = ""
    #: the media formats the carrier offers (``encoding/rate``); the first is the default
    formats: ClassVar[tuple[str, ...]] = ("mulaw/8000",)
    dtmf_digits: ClassVar[str] = "0123456789*#"
    #: seconds of caller audio per inbound media message
    frame_seconds: float = 0.020
    #: byte order of L16 on the wire (little-endian everywhere but, possibly, Telnyx)
    l16_byteorder: str = "little"
    has_marks: ClassVar[bool] = True
    has_clear: ClassVar[bool] = True
    #: the credential sets the carrier can present on the upgrade (docs/protocols/carriers.md §0.3)
    accepted_auth: ClassVar[tuple[frozenset[str], ...]] = ()

    @classmethod
    def signed_headers(cls, url: str, auth: dict[str, str]) -> dict[str, str]:
        """The upgrade headers of what this carrier signs or issues itself for ``auth``
        (one of :attr:`accepted_auth`; see :func:`gateway.sim.carriers.auth.auth_headers`)."""
        return {}

    def __init__(self, url: str, *, call_id: str | None = None, media_format: str | None = None,
                 headers: dict[str, str] | None = None,
                 custom_parameters: dict[str, str] | None = None,
                 inbound_audio: bytes | None = None, connect_timeout: float = 10.0,
                 underrun_tolerance: float = 0.001,
                 caller_audio: tuple[bytes, int] | None = None, caller_audio_at: float = 0.0,
                 line_echo_db: float | None = None) -> None:
        if inbound_audio is not None and not inbound_audio:
            raise ValueError("inbound_audio is empty; pass None to send silence")
        if caller_audio_at < 0:
            raise ValueError("caller_audio_at must be >= 0 seconds")
        self.url = url
        self.format: WireFormat = parse_format(media_format or self.formats[0], self.formats,
                                               l16_byteorder=self.l16_byteorder,
                                               carrier=self.carrier)
        #: the format of the caller audio the carrier streams (a carrier module may set
        #: it apart from :attr:`format`, what it plays of the gateway's)
        self.inbound_format: WireFormat = self.format
        self.call_id = call_id or self.new_call_id()
        self.stream_id = self.new_stream_id()
        self.headers = dict(headers or {})
        self.custom_parameters = dict(custom_parameters or {})
        self.inbound_audio = inbound_audio
        self.connect_timeout = connect_timeout
        self.underrun_tolerance = underrun_tolerance
        self.inbound_frame_bytes = round(self.format.bytes_per_second * self.frame_seconds)

        self._model = self.make_model(time.monotonic())
        self._transport: Transport | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._receiver: asyncio.Task[None] | None = None
        self._sequence = 0
        self._connected_at: float | None = None
        self._start_sent_at: float | None = None
        self._ended_at: float | None = None
        self._ended = False
        self._hung_up = False
        self._closed_by_gateway = False
        self._close_code: int | None = None
        self._carrier_hangup: str | None = None
        self._inbound_frames_sent = 0
        self._marks_sent_back: list[tuple[float, str]] = []
        self._notices_sent: list[tuple[float, str]] = []
        self._marks_returned = 0
        self._background_error: BaseException | None = None
        self._state_changed = asyncio.Event()
        self._wake_clock = asyncio.Event()
        # the caller's speech: (first frame index, wire bytes), played in order over the
        # silence or inbound_audio; each entry's send time goes into caller_speech_sent
        self._speech: deque[tuple[int, bytes]] = deque()
        self._speech_frames = 0  # frame index where the queued speech ends
        self.caller_speech_sent: list[float] = []
        self.line_echo_db = line_echo_db
        self._echo_from = 0  # bytes of the heard audio already echoed
        self._caller_audio = caller_audio  # queued at connect, in the inbound format then
        self._caller_audio_at = caller_audio_at

    # ---- what a carrier module supplies ------------------------------------------

    def new_call_id(self) -> str:
        raise NotImplementedError

    def new_stream_id(self) -> str:
        return self.call_id

    def make_model(self, now: float) -> CarrierModel:
        raise NotImplementedError

    async def open_transport(self) -> Transport:
        return await AiohttpTransport.open(self.url, self.headers)

    def hello(self) -> Sequence[str | bytes]:
        """The messages that start the stream, sent right after connecting."""
        raise NotImplementedError

    def media_messages(self, index: int, frame: bytes) -> Sequence[str | bytes]:
        """Inbound media message(s) for caller frame ``index`` (0-based)."""
        raise NotImplementedError

    def dtmf_messages(self, digit: str) -> Sequence[str | bytes]:
        raise NotImplementedError

    def echo_message(self, echo: Echo) -> str | bytes:
        raise NotImplementedError

    def notice_message(self, notice: Notice) -> str | bytes | None:
        return None

    def make_result(self, **recorded: Any) -> CarrierCallResult:
        """The :attr:`result` snapshot from what was ``recorded``."""
        return CarrierCallResult(self.carrier, self.call_id, self.stream_id, self.format,
                                 **recorded)

    def goodbye(self) -> Sequence[str | bytes]:
        """What the carrier sends before closing when the caller hangs up."""
        return []

    def next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    # ---- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await self.hangup()
        if exc_type is None and self._background_error is not None:
            raise self._background_error

    async def connect(self) -> None:
        """Open the connection, start the stream, start streaming caller audio."""
        if self._transport is not None or self._hung_up:
            raise RuntimeError(f"{type(self).__name__}.connect() called twice; one sim is one call")
        try:
            async with asyncio.timeout(self.connect_timeout):
                self._transport = await self.open_transport()
        except TimeoutError:
            raise TimeoutError(f"could not connect to {self.url} within "
                               f"{self.connect_timeout} s") from None
        self._connected_at = time.monotonic()
        for message in self.hello():
            await self._send(message)
        self._start_sent_at = time.monotonic()
        if self._caller_audio is not None:
            self._queue_speech(*self._caller_audio,
                               round(self._caller_audio_at / self.frame_seconds))
        self._receiver = asyncio.create_task(self._receive(), name=f"{self.carrier}-sim-receive")
        self._tasks = [
            self._receiver,
            asyncio.create_task(self._stream_inbound_media(), name=f"{self.carrier}-sim-media"),
            asyncio.create_task(self._run_playout_clock(), name=f"{self.carrier}-sim-clock"),
        ]

    async def hangup(self) -> None:
        """The caller hangs up: the carrier's goodbye (if any), then close. Idempotent."""
        if self._hung_up:
            return
        self._hung_up = True
        if self._transport is None:
            return
        if not self._ended:
            self._end(time.monotonic(), by_gateway=False)
            for message in self.goodbye():
                await self._send(message)
        await self._transport.close()
        await self._stop_tasks()

    async def drop(self) -> None:
        """The network drops the call: no goodbye, no close handshake."""
        if self._hung_up:
            return
        self._hung_up = True
        if not self._ended:
            self._end(time.monotonic(), by_gateway=False)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            await self._transport.abort()

    # ---- what the test does ----------------------------------------------------

    async def wait_for_media(self, frames: int = 1, timeout: float = 10.0) -> int:
        """Wait until ``frames`` media messages in total have come from the gateway."""

        def enough() -> int | None:
            count = len(self._model.arrivals)
            return count if count >= frames else None

        return await self._wait_until(enough, timeout, f"{frames} media message(s)")

    async def wait_for_mark(self, name: str | None = None, timeout: float = 10.0) -> str:
        """Wait for a mark echo sent back to the gateway and return its name: with
        ``name``, that one (at any time during the call); without, the next one not yet
        returned by an earlier ``wait_for_mark()``."""
        if not self.has_marks:
            raise NotImplementedError(f"{self.carrier} has no marks")

        def echoed() -> str | None:
            sent = self._marks_sent_back
            if name is not None:
                return name if any(n == name for _, n in sent) else None
            if self._marks_returned < len(sent):
                self._marks_returned += 1
                return sent[self._marks_returned - 1][1]
            return None

        what = f"echo of mark {name!r}" if name is not None else "mark echo"
        return await self._wait_until(echoed, timeout, what)

    async def wait_for_clear(self, timeout: float = 5.0) -> float:
        """Wait until the gateway has sent a clear; return when the last one arrived."""
        if not self.has_clear:
            raise NotImplementedError(f"{self.carrier} has no clear command")
        clears = self._model.clears
        return await self._wait_until(lambda: clears[-1] if clears else None, timeout, "clear")

    async def wait_idle(self, quiet: float = 0.5, timeout: float = 30.0) -> None:
        """Wait until no media has come for ``quiet`` s and nothing is playing (or the call
        has ended)."""

        def last_activity() -> float:
            arrivals = self._model.arrivals
            return arrivals[-1][0] if arrivals else (self._start_sent_at or time.monotonic())

        def idle() -> bool | None:
            if self._ended:
                return True
            quiet_for = time.monotonic() - last_activity()
            return True if quiet_for >= quiet and not self._model.playing else None

        def next_check() -> float:
            left = last_activity() + quiet - time.monotonic()
            return max(0.001, left) if left > 0 else math.inf

        await self._wait_until(idle, timeout, f"{quiet} s of quiet", next_check, allow_ended=True)

    async def wait_for(self, predicate: Callable[[CarrierCallResult], Any], timeout: float = 5.0,
                       what: str = "condition") -> None:
        """Wait until ``predicate(self.result)`` is true (checked when something happens,
        and every 50 ms)."""
        await self._wait_until(lambda: True if predicate(self.result) else None, timeout, what,
                               lambda: 0.05, allow_ended=True)

    async def wait_ended(self, timeout: float = 5.0) -> None:
        """Wait until the call has ended, whoever ended it."""
        await self._wait_until(lambda: True if self.ended else None, timeout, "end of call",
                               allow_ended=True)

    async def send_dtmf(self, digits: str) -> None:
        for digit in digits:
            if digit not in self.dtmf_digits:
                raise ValueError(f"{self.carrier} reports DTMF digits {self.dtmf_digits}, "
                                 f"not {digit!r}")
        for digit in digits:
            for message in self.dtmf_messages(digit):
                await self._send_or_raise(message)

    async def speak_as_caller(self, pcm16: bytes, rate: int, timeout: float = 5.0) -> float:
        """The caller starts saying ``pcm16`` (16-bit little-endian PCM at ``rate``) now,
        or after the speech already queued; returns when its first frame was sent
        (``time.monotonic()``)."""
        if self._ended:
            raise CallClosedError("the call has ended; the caller cannot speak")
        index = len(self.caller_speech_sent) + len(self._speech)
        self._queue_speech(pcm16, rate, self._inbound_frames_sent)
        return await self._wait_until(
            lambda: self.caller_speech_sent[index] if len(self.caller_speech_sent) > index
            else None, timeout, "the caller's speech to start")

    def _queue_speech(self, pcm16: bytes, rate: int, at_frame: int) -> None:
        if not pcm16:
            raise ValueError("the caller's speech is empty")
        fmt = self.inbound_format
        transcoder = Transcoder("pcm_s16le", rate, "pcm_s16le", fmt.sample_rate)
        pcm = transcoder.feed(bytes(pcm16)) + transcoder.flush()
        wire = fmt.from_pcm16(pcm[: len(pcm) // 2 * 2])
        start = max(at_frame, self._speech_frames)
        self._speech.append((start, wire))
        self._speech_frames = start + -(-len(wire) // self.inbound_frame_bytes)

    async def send_raw_text(self, text: str) -> None:
        """Send any text frame as is (to test the gateway's error handling)."""
        await self._send_or_raise(text)

    async def send_raw_bytes(self, data: bytes) -> None:
        """Send a binary frame (raw bytes on AudioSocket) as is."""
        await self._send_or_raise(bytes(data))

    @property
    def model(self) -> CarrierModel:
        """The live carrier model (read-only use)."""
        return self._model

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def result(self) -> CarrierCallResult:
        """A snapshot of everything recorded so far."""
        model = self._model
        return self.make_result(
            connected_at=self._connected_at, start_sent_at=self._start_sent_at,
            first_media_at=model.arrivals[0][0] if model.arrivals else None,
            ended_at=self._ended_at, frames=list(model.arrivals),
            utterance_starts=list(model.utterance_starts), heard=bytes(model.heard),
            heard_segments=model.heard_segments, marks_received=list(model.marks_received),
            marks_sent_back=list(self._marks_sent_back), marks_dropped=list(model.marks_dropped),
            clears=list(model.clears), notices_sent=list(self._notices_sent),
            violations=list(model.violations), underruns=model.underruns,
            underrun_gaps=list(model.underrun_gaps), bursts=list(model.bursts),
            gateway_dtmf=list(model.gateway_dtmf), cleared_bytes=model.cleared_bytes,
            dropped_bytes=model.dropped_bytes,
            discarded_at_close_bytes=model.discarded_at_close_bytes,
            inbound_frames_sent=self._inbound_frames_sent,
            closed_by_gateway=self._closed_by_gateway, close_code=self._close_code,
            carrier_hangup=self._carrier_hangup)

    # ---- background tasks ------------------------------------------------------

    async def _receive(self) -> None:
        transport = self._transport
        assert transport is not None
        model = self._model
        try:
            while (message := await transport.receive()) is not None:
                now = time.monotonic()
                data = message.data
                if message.type == "ping":
                    assert isinstance(data, bytes)  # a ping's payload is binary
                    await self._perform(model.receive_ping(data, now))
                    if not self._ended:
                        await transport.pong(data)
                else:
                    outputs = model.receive_fragmented(now) if message.fragmented else []
                    if isinstance(data, str):  # a text message
                        outputs += model.receive_text(data, now)
                    else:
                        outputs += model.receive_bytes(data, now)
                    await self._perform(outputs)
                self._wake_clock.set()
                self._notify()
        except (aiohttp.ClientError, ConnectionError):
            pass
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self._background_error = exc
            raise
        finally:
            if self._close_code is None:
                self._close_code = transport.close_code
            self._end(time.monotonic(), by_gateway=not self._hung_up)

    async def _stream_inbound_media(self) -> None:
        size = self.inbound_frame_bytes
        silence = self.inbound_format.silence(size)
        start = time.monotonic()
        index = 0
        try:
            while not self._ended:
                delay = start + index * self.frame_seconds - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._ended:
                    break
                frame = silence if self.inbound_audio is None else self._inbound_frame(index, size)
                frame = self._with_echo(self._with_speech(index, frame, silence))
                for message in self.media_messages(index, frame):
                    if not await self._send(message):
                        return
                index += 1
                self._inbound_frames_sent = index
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self._background_error = exc
            raise

    async def _run_playout_clock(self) -> None:
        try:
            while not self._ended:
                self._wake_clock.clear()
                await self._perform(self._model.advance(time.monotonic()))
                self._notify()
                deadline = self._model.next_deadline()
                # the 1 ms floor keeps a deadline left a hair unreached by float rounding
                # from becoming a busy loop
                delay = 0.1 if deadline is None else max(0.001, deadline - time.monotonic())
                try:
                    await asyncio.wait_for(self._wake_clock.wait(), delay)
                except TimeoutError:
                    pass
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self._background_error = exc
            raise

    # ---- helpers ---------------------------------------------------------------

    async def _perform(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, Echo):
                if await self._send(self.echo_message(output)):
                    self._marks_sent_back.append((time.monotonic(), output.name))
            elif isinstance(output, Notice):
                message = self.notice_message(output)
                if message is not None and await self._send(message):
                    code = output.detail.get("code")
                    label = output.kind if code is None else f"{output.kind} {code}"
                    self._notices_sent.append((time.monotonic(), label))
            elif isinstance(output, EndCall):
                await self._carrier_ends_call(output)

    async def _carrier_ends_call(self, end: EndCall) -> None:
        if not end.by_gateway:
            self._carrier_hangup = end.reason
        self._close_code = end.code
        self._end(time.monotonic(), by_gateway=end.by_gateway)
        assert self._transport is not None
        await self._transport.close(end.code, end.reason)

    def _end(self, now: float, *, by_gateway: bool) -> None:
        if self._ended:
            return
        self._ended = True
        self._ended_at = now
        self._closed_by_gateway = by_gateway
        self._model.close(now)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not self._receiver and task is not current:
                task.cancel()
        self._wake_clock.set()
        self._notify()

    async def _stop_tasks(self) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=3.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _notify(self) -> None:
        self._state_changed.set()
        self._state_changed = asyncio.Event()

    async def _wait_until(self, check: Callable[[], _T | None], timeout: float, what: str,
                          next_check: Callable[[], float] | None = None,
                          allow_ended: bool = False) -> _T:
        deadline = time.monotonic() + timeout
        while True:
            if self._background_error is not None:
                raise self._background_error
            value = check()
            if value is not None:
                return value
            if self._ended and not allow_ended:
                who = ("the gateway closed the connection" if self._closed_by_gateway
                       else f"the carrier hung up: {self._carrier_hangup}" if self._carrier_hangup
                       else "hung up")
                raise CallClosedError(f"call ended ({who}) before {what}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {what} within {timeout} s")
            wait = remaining if next_check is None else min(remaining, next_check())
            changed = self._state_changed
            try:
                await asyncio.wait_for(changed.wait(), wait)
            except TimeoutError:
                pass

    async def _send(self, message: str | bytes) -> bool:
        transport = self._transport
        if transport is None:
            return False
        try:
            await transport.send(message)
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            return False
        return True

    async def _send_or_raise(self, message: str | bytes) -> None:
        if self._ended:
            raise CallClosedError("the call has ended; cannot send")
        if not await self._send(message):
            raise CallClosedError("the connection closed while sending")

    def _with_speech(self, index: int, frame: bytes, silence: bytes) -> bytes:
        while self._speech:
            start, wire = self._speech[0]
            if index < start:
                return frame
            offset = (index - start) * len(frame)
            if offset < len(wire):
                if offset == 0:
                    self.caller_speech_sent.append(time.monotonic())
                    self._notify()
                part = wire[offset:offset + len(frame)]
                return part + silence[len(part):]
            self._speech.popleft()
        return frame

    def _with_echo(self, frame: bytes) -> bytes:
        """``frame`` with what the caller heard since the last frame mixed back in,
        ``line_echo_db`` weaker: a phone line's residual echo."""
        if self.line_echo_db is None:
            return frame
        heard = self._model.heard
        played, self._echo_from = heard[self._echo_from:], len(heard)
        if self.format.sample_rate != self.inbound_format.sample_rate or not played:
            return frame
        fmt = self.inbound_format
        echo = audioop.mul(self.format.to_pcm16(bytes(played)), 2,
                           10 ** (-self.line_echo_db / 20))
        pcm = fmt.to_pcm16(frame)
        echo = echo[:len(pcm)] + bytes(max(0, len(pcm) - len(echo)))
        return fmt.from_pcm16(audioop.add(pcm, echo, 2))

    def _inbound_frame(self, index: int, size: int) -> bytes:
        audio = self.inbound_audio
        assert audio is not None
        start = (index * size) % len(audio)
        frame = audio[start : start + size]
        while len(frame) < size:
            frame += audio[: size - len(frame)]
        return frame
