"""Drive one call's flow engine through the Call's public methods.

One task per call: it waits for the next input (a key from ``Call.on_dtmf``, a prompt
played out, a webhook's answer) or the engine's deadline, hands it to the engine, and
carries out the actions: ``Call.speak`` (an Utterance, ``source: "flow"``), ``Call.play``
(recorded prompts), ``Call.interrupt`` (a key cut the prompt: a clear), ``request_hangup``,
the route's bot dialed, the webhook posted. Each step is a ``flow.step`` event and each
gather's end a ``flow.gather`` event on the call's events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, cast

from gateway.core.bargein import DTMF_MODES
from gateway.core.call import CallEnded
from gateway.core.speech import SpeechRefused, Utterance
from gateway.flow.engine import (Action, Bot, Ended, FlowEngine, Gathered, Hangup, Interrupt,
                                 Play, Say, StepStarted, Webhook)
from gateway.flow.steps import Prompt, Step
from gateway.flow.webhook import WebhookFailed, answer_steps, call_webhook
from gateway.logs import RateLimitedLog

if TYPE_CHECKING:
    from gateway.core.call import Call

log = logging.getLogger(__name__)
_log = RateLimitedLog(log, burst=5, interval=30.0)  # one webhook down fails every call

MAX_PENDING_INPUTS = 64  # keys a caller may press faster than the flow takes them


class FlowRunner:
    def __init__(self, call: Call):
        self.call = call
        config = call.services.config
        self.flows = {name: route.flow for name, route in config.routes.items()
                      if route.flow is not None}
        self.engine = FlowEngine(self.flows, call.route.name)
        self._inputs: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._watchers: set[asyncio.Task] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(),
                                                            name=f"flow-{self.call.id}")

    def on_dtmf(self, digit: str) -> None:
        self._put(("digit", digit))

    async def close(self) -> None:
        for task in (self._task, *self._watchers):
            if task is not None:
                task.cancel()
        for task in (self._task, *self._watchers):
            if task is not None:
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass

    def _put(self, item: tuple[str, object]) -> None:
        # keys beyond a bound are dropped; the ends of prompts and answers (one per action)
        # never are
        if item[0] != "digit" or self._inputs.qsize() < MAX_PENDING_INPUTS:
            self._inputs.put_nowait(item)

    async def _run(self) -> None:
        engine = self.engine
        try:
            await self._apply(engine.start(time.monotonic()))
            while engine.state != "ended":
                deadline = engine.deadline
                try:
                    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                    kind, value = await asyncio.wait_for(self._inputs.get(), timeout)
                except TimeoutError:
                    actions = engine.on_timeout(time.monotonic())
                else:
                    now = time.monotonic()
                    if kind == "digit":
                        actions = engine.on_digit(cast(str, value), now)
                    elif kind == "played":
                        actions = engine.on_playback_done(cast(int, value), now)
                    else:
                        actions = engine.on_webhook_answer(cast("list[Step] | None", value), now)
                await self._apply(actions)
        except CallEnded:
            pass
        except Exception:
            _log.log(logging.ERROR, "flow failed", "call %s: flow failed", self.call.id,
                     exc_info=True)

    async def _apply(self, actions: list[Action]) -> None:
        call = self.call
        for action in actions:
            if isinstance(action, StepStarted):
                call.events.emit("flow.step", route=action.route, step=action.name,
                                 verb=action.verb)
                call.metrics.flow_steps.labels(action.verb).inc()
            elif isinstance(action, Gathered):
                call.events.emit("flow.gather", step=action.step, outcome=action.outcome,
                                 digits=action.digits)
            elif isinstance(action, (Say, Play)):
                self._speak(action)
            elif isinstance(action, Interrupt):
                if call.barge_in.mode not in DTMF_MODES:  # else the call cut it already
                    await call.interrupt("dtmf")
            elif isinstance(action, Hangup):
                call.request_hangup()
            elif isinstance(action, Bot):
                self._hand_to_bot()
            elif isinstance(action, Webhook):
                self._watch(self._webhook(action))
            elif isinstance(action, Ended):
                log.info("call %s: flow ended (%s)", call.id, action.reason)

    def _speak(self, action: Say | Play) -> None:
        """Queue the prompt; its end (played or cut) comes back as a ``played`` input."""
        try:
            utt = self._queue_prompt(action.prompt)
        except SpeechRefused as exc:
            _log.warning("refused", "call %s: flow prompt refused: %s", self.call.id, exc)
            utt = None
        if utt is None:
            self._put(("played", action.id))
            return

        async def played() -> None:
            await utt.done.wait()
            self._put(("played", action.id))

        self._watch(played())

    def _queue_prompt(self, prompt: Prompt):
        call = self.call
        if prompt.text is not None:
            return call.speak(Utterance.whole(prompt.text, voice=prompt.voice,
                                              provider=prompt.provider, source="flow",
                                              cache=prompt.cache))
        play = getattr(call, "play", None)
        if play is None:  # recorded prompts (Call.play) are not in this build
            _log.warning("no play", "call %s: cannot play recorded prompt %r here", call.id,
                         prompt.prompt or prompt.url)
            return None
        return play(prompt=prompt.prompt) if prompt.prompt else play(url=prompt.url)

    def _hand_to_bot(self) -> None:
        call = self.call
        bot = call.services.config.routes[self.engine.route].bot
        if call.bot is None and bot is not None:
            from gateway.bot.dialer import BotDialer  # imports gateway.core.call

            dialer: Any = BotDialer(call, bot)
            call.bot = dialer
            dialer.start()

    async def _webhook(self, action: Webhook) -> None:
        call, step = self.call, action.step
        payload = {"call_id": call.id, "route": self.engine.route, "step": step.name,
                   "digits": action.digits, "carrier": call.carrier,
                   "caller": call.protocol.caller, "called": call.protocol.called}
        steps = None
        url = step.webhook.url.split("?")[0] if step.webhook else ""  # a query may hold a token
        try:
            http: Any = call.services.http
            if http is None:
                raise WebhookFailed("unreachable", "no HTTP client (the app is not running)")
            body = await call_webhook(http, step, payload)
            steps = answer_steps(body, step, self.flows, self.engine.route,
                                 frozenset(call.services.config.providers))
            outcome = "ok"
        except WebhookFailed as exc:
            outcome = exc.reason
            _log.warning(f"webhook {exc.reason}", "call %s: flow webhook %s (step %s) failed "
                         "(%s): %s; going on at the fallback step", call.id, url, step.name,
                         exc.reason, exc)
            call.events.emit("flow.webhook_failed", step=step.name, reason=exc.reason)
        call.metrics.flow_webhooks.labels(outcome).inc()
        self._put(("answer", steps))

    def _watch(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
