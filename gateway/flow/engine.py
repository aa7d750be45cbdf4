"""The flow engine, sans I/O: inputs in, actions out.

Inputs: ``start``, ``on_digit``, ``on_playback_done`` (a Say or Play it asked for has
played out, or was cut), ``on_timeout`` (called once ``now`` reaches ``deadline``) and
``on_webhook_answer`` (the answer's steps, or None when the webhook failed). Every input
takes ``now`` (seconds, any monotonic clock) and returns the actions to carry out, in
order. The engine never sleeps, sends or reads: gateway/flow/runtime.py does, and the
unit tests drive it with made-up times.

A gather's ``timeout_s`` counts from the end of its prompt (a key pressed during the
prompt counts; with ``barge_in`` it cuts the prompt), ``inter_digit_timeout_s`` from the
last key. Keys outside a gather are not kept.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from gateway.flow.steps import FlowConfig, GatherSpec, Prompt, Step, resolve

#: steps run in a row with no input before the flow is stopped (configured flows cannot
#: loop, a webhook's answer is finite: this is a guard, not a rule anyone should meet)
MAX_STEPS_WITHOUT_INPUT = 100


@dataclass(frozen=True)
class Say:
    id: int
    prompt: Prompt


@dataclass(frozen=True)
class Play:
    id: int
    prompt: Prompt


@dataclass(frozen=True)
class Interrupt:
    """Cut what plays now (a key during a gather's prompt, with barge-in)."""


@dataclass(frozen=True)
class Hangup:
    pass


@dataclass(frozen=True)
class Bot:
    """Hand the call to the route's bot."""


@dataclass(frozen=True)
class Webhook:
    step: Step
    digits: str


@dataclass(frozen=True)
class StepStarted:
    """For events and logs."""

    route: str
    name: str
    verb: str


@dataclass(frozen=True)
class Gathered:
    """A gather ended: ``outcome`` is ``digits``, ``no_input``, ``invalid``."""

    step: str
    outcome: str
    digits: str


@dataclass(frozen=True)
class Ended:
    """The flow is over; ``reason`` says why (``end``, ``hangup``, ``bot``, ``loop``)."""

    reason: str


Action = Say | Play | Interrupt | Hangup | Bot | Webhook | StepStarted | Gathered | Ended


@dataclass
class _Gathering:
    step: Step
    spec: GatherSpec
    attempt: int = 0
    digits: str = ""
    prompt_id: int | None = None  # the last speech of this attempt, not yet played out
    keys_seen: bool = False  # a key came during this attempt's prompts


@dataclass
class FlowEngine:
    flows: dict[str, FlowConfig]
    route: str
    digits: str = ""  # the last digits gathered (what a webhook gets)
    deadline: float | None = None
    state: str = "idle"  # idle, playing, gathering, webhook, ended
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _playing: int | None = None  # the Say/Play a say or play step waits for
    _step: Step | None = None
    _gathering: _Gathering | None = None
    _answer: dict[str, Step] = field(default_factory=dict)  # a webhook answer's steps
    _run_without_input: int = 0

    @property
    def step(self) -> Step | None:
        """The step running now."""
        return self._step

    def start(self, now: float) -> list[Action]:
        return self._run(self.flows[self.route].start, now)

    # -- inputs -------------------------------------------------------------------------

    def on_digit(self, digit: str, now: float) -> list[Action]:
        g = self._gathering
        if g is None or self.state != "gathering":
            return []
        self._run_without_input = 0
        spec = g.spec
        actions: list[Action] = []
        if g.prompt_id is not None:  # the prompt still plays
            if spec.barge_in:
                actions.append(Interrupt())
            g.prompt_id = None
        if spec.finish_on_key and digit == spec.finish_on_key:
            return actions + self._end_gather(g, now)
        g.digits += digit
        if len(g.digits) >= spec.max_digits:
            return actions + self._end_gather(g, now)
        self.deadline = now + spec.inter_digit_timeout_s
        return actions

    def on_playback_done(self, speech_id: int, now: float) -> list[Action]:
        step = self._step
        if self.state == "playing" and speech_id == self._playing and step is not None:
            self._playing = None
            return self._go(step.next, now)
        g = self._gathering
        if self.state == "gathering" and g is not None and speech_id == g.prompt_id:
            g.prompt_id = None
            if not g.digits:
                self.deadline = now + g.spec.timeout_s
        return []

    def on_timeout(self, now: float) -> list[Action]:
        if self.deadline is None or now < self.deadline:
            return []
        self.deadline = None
        if self.state == "gathering" and self._gathering is not None:
            return self._end_gather(self._gathering, now)
        return []

    def on_webhook_answer(self, steps: list[Step] | None, now: float) -> list[Action]:
        """The answer's steps (already read and checked), run in order; None: the webhook
        failed and the flow goes on at the fallback step."""
        step = self._step
        if self.state != "webhook" or step is None:
            return []
        self._run_without_input = 0
        if steps is None:
            return self._go(step.fallback or self.flows[self.route].fallback, now)
        if not steps:
            return self._go(step.next, now)
        chained = {}
        for index, answer in enumerate(steps):
            following = steps[index + 1].name if index + 1 < len(steps) else step.next
            chained[answer.name] = _with_next(answer, following)
        self._answer = chained
        return self._run(steps[0].name, now)

    # -- stepping -----------------------------------------------------------------------

    def _go(self, target: str | None, now: float) -> list[Action]:
        if target is None:
            return self._end("end")
        if target in self._answer:
            return self._run(target, now)
        self.route, name = resolve(self.flows, self.route, target)
        return self._run(name, now)

    def _run(self, name: str, now: float) -> list[Action]:
        actions: list[Action] = []
        while True:
            self._run_without_input += 1
            if self._run_without_input > MAX_STEPS_WITHOUT_INPUT:
                return [*actions, Hangup(), *self._end("loop")]
            step = self._answer.get(name) or self.flows[self.route].steps[name]
            self._step = step
            self._gathering = None
            self.deadline = None
            actions.append(StepStarted(self.route, step.name, step.verb))
            if step.verb in ("say", "play"):
                self.state = "playing"
                assert step.prompt is not None  # read so by parse_step
                speech = self._speech(step.prompt)
                self._playing = speech.id
                return [*actions, speech]
            if step.verb in ("gather", "menu"):
                self.state = "gathering"
                assert step.gather is not None  # read so by parse_step
                g = self._gathering = _Gathering(step, step.gather)
                return actions + self._prompt_attempt(g, None, now)
            if step.verb == "webhook":
                self.state = "webhook"
                return [*actions, Webhook(step, self.digits)]
            if step.verb == "hangup":
                return [*actions, Hangup(), *self._end("hangup")]
            if step.verb == "bot":
                return [*actions, Bot(), *self._end("bot")]
            target = step.target  # goto
            assert target is not None  # read so by parse_step
            if target in self._answer:
                name = target
                continue
            self.route, name = resolve(self.flows, self.route, target)

    def _speech(self, prompt: Prompt) -> Say | Play:
        kind = Say if prompt.kind == "say" else Play
        return kind(next(self._ids), prompt)

    def _prompt_attempt(self, g: _Gathering, before: Prompt | None, now: float
                        ) -> list[Action]:
        """A gather's attempt: ``before`` (the no-input or invalid prompt), then its
        prompt; its timeout starts when the last of them has played (at once if none)."""
        g.digits = ""
        speeches = [self._speech(p) for p in (before, g.step.prompt) if p is not None]
        if speeches:
            g.prompt_id = speeches[-1].id
        else:
            g.prompt_id = None
            self.deadline = now + g.spec.timeout_s
        return list(speeches)

    def _end_gather(self, g: _Gathering, now: float) -> list[Action]:
        step, digits = g.step, g.digits
        self.deadline = None
        if not digits:
            outcome, again = "no_input", step.no_input
        elif len(digits) < g.spec.min_digits or (step.verb == "menu" and (
                digits not in step.options)):
            outcome, again = "invalid", step.invalid
        else:
            self.digits = digits
            self._gathering = None
            target = step.options[digits] if step.verb == "menu" else step.next
            return [Gathered(step.name, "digits", digits), *self._go(target, now)]
        done: list[Action] = [Gathered(step.name, outcome, digits)]
        g.attempt += 1
        if g.attempt > g.spec.retries:
            self._gathering = None
            if step.fail is None:
                return [*done, Hangup(), *self._end("hangup")]
            return done + self._go(step.fail, now)
        return done + self._prompt_attempt(g, again, now)

    def _end(self, reason: str) -> list[Action]:
        self.state = "ended"
        self.deadline = None
        self._gathering = None
        return [Ended(reason)]


def _with_next(step: Step, following: str | None) -> Step:
    """A webhook answer's step goes on to the one after it unless it names its own."""
    if step.verb in ("say", "play", "gather") and step.next is None:
        return replace(step, next=following)
    return step
