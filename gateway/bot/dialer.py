"""The gateway dials the bot: when a call starts on a route with ``bot:``, the process
holding the call opens a WebSocket to the bot's URL and speaks the bot protocol over it
(gateway/bot/channel.py), so the bot needs no webhook and no idea which instance took
the call.

The upgrade is signed (:func:`signature_headers`): HMAC-SHA256 with the route's secret
over ``f"{timestamp}.{url}"``; a bot checks it with examples/verify_signature.py. A bot
that cannot be reached within ``connect_timeout_ms`` makes the call say ``failure_text``
and then hang up or go on (``on_failure``). A socket that drops mid-call is redialed with
jittered exponential backoff for at most ``reconnect_s``; the new socket gets the events
after the last one sent (``since_seq``). Caller audio meanwhile is counted, not kept.
Nothing here runs on the media path: the dialer is one task per call.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time

import aiohttp
from yarl import URL

from gateway.bot.channel import serve_bot_socket
from gateway.bot.protocol import MessageLimits
from gateway.config import BotConfig
from gateway.core.call import CallEnded
from gateway.core.speech import SpeechRefused, Utterance
from gateway.logs import RateLimitedLog

log = logging.getLogger(__name__)
# one log for every call's dialer: a bot that is down fails every call, and the lines
# about it must not flood the log
_log = RateLimitedLog(log, burst=5, interval=30.0)

CALL_ID_HEADER = "X-TTS-Gateway-Call-Id"
TIMESTAMP_HEADER = "X-TTS-Gateway-Timestamp"
SIGNATURE_HEADER = "X-TTS-Gateway-Signature"

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 2.0
#: how long the end of a call waits for the bot's socket to take ``call.ended`` and close
CLOSE_WAIT_S = 2.0
#: a bot that does not answer our close frame is not waited for longer than this
WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_WAIT_S)
#: a socket up this long dropped by accident; one that drops sooner is a flapping bot
STABLE_S = 5.0


def signature(secret: str, timestamp: int, url: str) -> str:
    """``v1=<hex HMAC-SHA256(secret, f"{timestamp}.{url}")>``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.{url}".encode(), hashlib.sha256)
    return "v1=" + digest.hexdigest()


def signature_headers(bot: BotConfig, call_id: str, now: float | None = None) -> dict[str, str]:
    """The upgrade's headers: the call id, the time, and (with a secret) the signature."""
    timestamp = int(time.time() if now is None else now)
    headers = {CALL_ID_HEADER: call_id, TIMESTAMP_HEADER: str(timestamp)}
    if bot.secret:
        headers[SIGNATURE_HEADER] = signature(bot.secret, timestamp, bot.url)
    return headers


def backoff_delays(first: float = BACKOFF_FIRST_S, cap: float = BACKOFF_MAX_S):
    """Waits between attempts: doubling from ``first`` up to ``cap``, each jittered to
    between half and all of it (a bot back from an outage is not hit by every call at
    once)."""
    delay = first
    while True:
        yield delay * random.uniform(0.5, 1.0)
        delay = min(cap, delay * 2)


def _shown_url(url: str) -> str:
    """The bot's URL as a log line may show it: without its query (it may hold a token)."""
    try:
        return str(URL(url).with_query(None).with_fragment(None))
    except ValueError:
        return "<bad url>"


class BotDialer:
    """One call's socket to its route's bot: ``start()`` when the call starts, ``await
    close()`` when it has ended."""

    def __init__(self, call, bot: BotConfig):
        self.call = call
        self.bot = bot
        self.metrics = call.metrics
        self.last_seq: int | None = None  # of the last event the bot's socket took
        self.connections = 0
        self.undelivered_bytes = 0  # caller audio while no socket was open
        self._bytes_per_second = _bytes_per_second(call.caller_audio.format)
        self._stop_counting = None
        self._task: asyncio.Task | None = None
        self._serving = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(),
                                                            name=f"bot-{self.call.id}")

    async def close(self) -> None:
        """The call has ended: let the socket deliver ``call.ended`` (bounded), then stop."""
        task = self._task
        if task is None:
            return
        if self._serving:
            await asyncio.wait({task}, timeout=CLOSE_WAIT_S)
        task.cancel()  # dialing, waiting to redial, or a socket that would not close
        await asyncio.gather(task, return_exceptions=True)
        self._count_undelivered(False)

    @property
    def _call_over(self) -> bool:
        return self.call.state == "ended"

    async def _run(self) -> None:
        bot = self.bot
        self._count_undelivered(True)  # until the first socket is open, audio is not heard
        delays = backoff_delays()
        deadline = time.monotonic() + bot.connect_timeout_ms / 1000
        wait_first = False
        redial_until: float | None = None  # the end of the current redial window
        while not self._call_over:
            ws = await self._dial_until(deadline, delays, wait_first=wait_first)
            if ws is None:
                self._count("unreachable" if self.connections == 0 else "gave_up")
                self._count_undelivered(False)
                self._failed()
                return
            self._count("connected" if self.connections == 0 else "reconnected")
            self.connections += 1
            self._count_undelivered(False)
            opened = time.monotonic()
            await self._serve(ws)
            if self._call_over:
                return
            self._count("dropped")
            _log.warning("dropped", "call %s: the bot's socket (%s) dropped; redialing for "
                         "up to %.1f s", self.call.id, _shown_url(bot.url), bot.reconnect_s)
            self._count_undelivered(True)
            # A socket that stayed up a while earns a fresh window and backoff; one that
            # dropped soon after opening (a bot that accepts and closes) does not, so a
            # flapping bot is given up on after reconnect_s as an absent one is.
            stable = time.monotonic() - opened >= STABLE_S
            if stable or redial_until is None:
                delays = backoff_delays()
                redial_until = time.monotonic() + bot.reconnect_s
            wait_first = not stable
            deadline = redial_until

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._serving = True
        try:
            self.last_seq = await serve_bot_socket(
                self.call, ws, audio=self.bot.audio, packet_ms=self.bot.audio_packet_ms,
                since_seq=self.last_seq)
        except Exception as exc:  # the channel's bug must not end the call
            _log.log(logging.ERROR, "serve failed", "call %s: bot socket failed: %s",
                     self.call.id, exc, exc_info=True)
        finally:
            self._serving = False
            if not ws.closed:
                await ws.close()

    async def _dial_until(self, deadline: float, delays, *, wait_first: bool
                          ) -> aiohttp.ClientWebSocketResponse | None:
        """A socket to the bot, tried with backoff (``delays``) until ``deadline``; None if
        none opened in time."""
        while not self._call_over:
            if wait_first:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                await asyncio.sleep(min(next(delays), left))
            wait_first = True
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ws = await self._dial(min(left, self.bot.connect_timeout_ms / 1000))
            if ws is not None:
                return ws
        return None

    async def _dial(self, timeout: float) -> aiohttp.ClientWebSocketResponse | None:
        bot = self.bot
        config = self.call.services.config
        try:
            async with asyncio.timeout(timeout):
                return await self.call.services.http.ws_connect(
                    bot.url, headers=signature_headers(bot, self.call.id), heartbeat=30,
                    max_msg_size=4 * MessageLimits.from_config(config).max_message_bytes,
                    timeout=WS_TIMEOUT)
        except TimeoutError:
            why = f"no upgrade within {timeout * 1000:.0f} ms"
        except aiohttp.WSServerHandshakeError as exc:
            why = f"upgrade refused: HTTP {exc.status}"
        except aiohttp.InvalidURL:
            why = "invalid URL"  # its text would be the URL, query (a token?) and all
        except (aiohttp.ClientError, OSError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        _log.warning("dial failed", "call %s: cannot reach the bot at %s: %s", self.call.id,
                     _shown_url(bot.url), why)
        return None

    def _failed(self) -> None:
        """No bot: say ``failure_text``, then hang up once it has played (``hangup``) or go
        on without a bot (``continue``)."""
        call, bot = self.call, self.bot
        if call.state != "active":
            return
        if bot.failure_text:
            try:
                call.speak(Utterance.whole(bot.failure_text, source="bot_failure"))
            except (CallEnded, SpeechRefused) as exc:
                log.info("call %s: failure_text not spoken: %s", call.id, exc)
        if bot.on_failure == "hangup":
            call.request_hangup()

    def _count(self, outcome: str) -> None:
        self.metrics.bot_connections.labels(outcome).inc()

    def _count_undelivered(self, on: bool) -> None:
        """Count (``on``) or stop counting the caller audio no socket takes."""
        if self._stop_counting is not None:
            self._stop_counting()
            self._stop_counting = None
        if on and not self._call_over:
            self._stop_counting = self.call.caller_audio.subscribe(self._undelivered)

    def _undelivered(self, payload: bytes) -> None:
        self.undelivered_bytes += len(payload)
        self.metrics.bot_audio_dropped.labels("disconnected").inc(
            len(payload) / self._bytes_per_second)


def _bytes_per_second(media_format) -> int:
    width = 2 if media_format.encoding == "l16" else 1
    return media_format.sample_rate * width
