"""A route's ``flow:``, read from ``gateway.yaml`` (or a webhook's answer) and checked.

```yaml
flow:
  start: main            # the first step (default: the first one listed)
  fallback: sorry        # where a failed webhook goes on
  steps:
    main:
      menu:
        prompt: "For sales press 1, for support press 2."
        options: {"1": sales, "2": support}
        no_input: "Sorry, I did not hear a key."
        invalid: "That is not an option."
        retries: 2
        fail: goodbye
    sales: {say: "Sales is closed today.", next: goodbye}
    goodbye: {say: "Goodbye.", next: bye}
    bye: {hangup: {}}
```

Each step has one verb key and an optional ``next``; a step with no ``next`` ends the
flow (the call stays up, as after a greeting). A target is a step name, or
``route:<name>`` for the start of another route's flow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gateway.schema import Problems, read, setting

VERBS = ("say", "play", "gather", "menu", "goto", "bot", "webhook", "hangup")
#: steps that wait for the caller or another server: a cycle through one is not endless
INPUT_VERBS = ("gather", "menu", "webhook", "bot")
MAX_STEPS = 200  # in one flow, and in one webhook answer
MAX_TEXT_CHARS = 2000  # one prompt's text
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
ROUTE_PREFIX = "route:"
DIGITS = "0123456789*#ABCD"


@dataclass(frozen=True)
class Prompt:
    """What a step plays: ``text`` synthesized, or a recorded ``prompt`` (by name) or
    ``url`` (Call.play)."""

    text: str | None = None
    prompt: str | None = None
    url: str | None = None
    provider: str | None = None
    voice: str | None = None
    cache: bool = True

    @property
    def kind(self) -> str:
        return "say" if self.text is not None else "play"


@dataclass(frozen=True)
class GatherSpec:
    """``gather`` and ``menu``: keys from the caller."""

    max_digits: int = setting(1, 1, 64)
    min_digits: int = setting(1, 1, 64)
    finish_on_key: str = setting("#", choices=("#", "*", ""))
    timeout_s: float = setting(5.0, 0.1, 120)  # no key this long after the prompt
    inter_digit_timeout_s: float = setting(3.0, 0.1, 60)  # between keys
    retries: int = setting(2, 0, 10)  # more attempts after the first
    barge_in: bool = True  # a key cuts the prompt (a clear)

    def problems(self, key: str) -> list[str]:
        if self.min_digits > self.max_digits:
            return [f"{key}.min_digits: {self.min_digits} is more than max_digits "
                    f"{self.max_digits}"]
        return []


@dataclass(frozen=True)
class WebhookSpec:
    """``webhook``: POST the call and its digits; the answer's ``steps`` run next."""

    url: str = setting("", pattern=r"^https?://[^/\s]+", hint="an http(s) URL")
    timeout_s: float = setting(5.0, 0.1, 30)
    max_response_bytes: int = setting(65536, 256, 1 << 20)


@dataclass(frozen=True)
class Step:
    name: str
    verb: str
    next: str | None = None
    prompt: Prompt | None = None  # say, play; the prompt of gather and menu
    gather: GatherSpec | None = None
    no_input: Prompt | None = None
    invalid: Prompt | None = None
    options: dict[str, str] = field(default_factory=dict)  # menu: digits -> target
    fail: str | None = None  # gather, menu: the retries are used up
    target: str | None = None  # goto
    webhook: WebhookSpec | None = None
    fallback: str | None = None  # webhook: its own fallback (else the flow's)

    def prompts(self) -> list[Prompt]:
        """What the step may play: its prompt and, for a gather, the retry prompts."""
        return [p for p in (self.prompt, self.no_input, self.invalid) if p is not None]

    def targets(self) -> list[tuple[str, str]]:
        """``(key suffix, target)`` for every step this one may go on to."""
        found = [(".next", self.next), (f".{self.verb}.fail", self.fail),
                 (".goto", self.target), (".fallback", self.fallback)]
        found += [(f".{self.verb}.options.{d}", t) for d, t in self.options.items()]
        return [(k, t) for k, t in found if t]


@dataclass(frozen=True)
class FlowConfig:
    steps: dict[str, Step]
    start: str
    fallback: str | None = None


def parse_flow(problems: Problems, value: Any, key: str) -> FlowConfig | None:
    """``routes.<name>.flow``; targets are checked later (:func:`check_flows`), once every
    route's flow is read."""
    if value is None:
        return None
    section = problems.mapping(value, key)
    problems.unknown(section, key, ("start", "fallback", "steps"))
    raw = problems.mapping(section.get("steps"), f"{key}.steps")
    if not raw:
        problems.append(f"{key}.steps: at least one step is needed")
        return None
    if len(raw) > MAX_STEPS:
        problems.append(f"{key}.steps: {len(raw)} steps, at most {MAX_STEPS}")
        return None
    steps = {}
    for name, data in raw.items():
        skey = f"{key}.steps.{name}"
        if not isinstance(name, str) or not _is_name(name):
            problems.append(f"{skey}: a step name is 1 to 64 letters, digits, '_', '.', '-'")
            continue
        step = parse_step(problems, data, skey, name)
        if step is not None:
            steps[name] = step
    start = problems.value(section, "start", key, str, next(iter(raw)))
    fallback = problems.value(section, "fallback", key, str, None)
    return FlowConfig(steps=steps, start=start, fallback=fallback)


def parse_step(problems: Problems, data: Any, key: str, name: str) -> Step | None:
    if isinstance(data, str) and data == "hangup":
        return Step(name, "hangup")
    data = problems.mapping(data, key)
    verbs = [v for v in VERBS if v in data]
    if len(verbs) != 1:
        problems.append(f"{key}: needs exactly one of {', '.join(VERBS)}"
                        + (f" (has {', '.join(verbs)})" if verbs else ""))
        return None
    verb = verbs[0]
    allowed = {verb, "next"} | ({"fallback"} if verb == "webhook" else set())
    problems.unknown(data, key, allowed)
    body = data[verb]
    nxt = _target(problems, data.get("next"), f"{key}.next")
    vkey = f"{key}.{verb}"
    if verb in ("say", "play"):
        prompt = parse_prompt(problems, body, vkey, verb)
        return Step(name, verb, nxt, prompt=prompt) if prompt else None
    if verb in ("gather", "menu"):
        return _gather(problems, body, vkey, name, verb, nxt)
    if verb == "goto":
        target = _target(problems, body, vkey)
        return Step(name, verb, target=target) if target else None
    if verb == "webhook":
        body = {"url": body} if isinstance(body, str) else problems.mapping(body, vkey)
        spec = read(problems, WebhookSpec, body, vkey)
        if not body.get("url"):
            problems.append(f"{vkey}.url: required, the URL the call and its digits go to")
        return Step(name, verb, nxt, webhook=spec,
                    fallback=_target(problems, data.get("fallback"), f"{key}.fallback"))
    problems.unknown(problems.mapping(body, vkey), vkey, ())  # bot, hangup: nothing to set
    return Step(name, verb, nxt if verb == "bot" else None)


def parse_prompt(problems: Problems, value: Any, key: str, verb: str = "say") -> Prompt | None:
    """A prompt: text (``say``), a name (``play``), or a mapping with ``text``/``prompt``/
    ``url`` and ``provider``, ``voice``, ``cache``."""
    if isinstance(value, str):
        value = {"text": value} if verb == "say" else {"prompt": value}
    section = problems.mapping(value, key)
    problems.unknown(section, key, ("text", "prompt", "url", "provider", "voice", "cache"))
    sources = [s for s in ("text", "prompt", "url") if section.get(s) is not None]
    if len(sources) != 1:
        problems.append(f"{key}: needs one of text, prompt, url")
        return None
    text = problems.value(section, "text", key, str, None)
    if text is not None and not 0 < len(text) <= MAX_TEXT_CHARS:
        problems.append(f"{key}.text: 1 to {MAX_TEXT_CHARS} characters")
        return None
    return Prompt(text=text,
                  prompt=problems.value(section, "prompt", key, str, None, pattern=NAME_PATTERN,
                                        hint="a prompt name"),
                  url=problems.value(section, "url", key, str, None, pattern=r"^https?://",
                                     hint="an http(s) URL"),
                  provider=problems.value(section, "provider", key, str, None),
                  voice=problems.value(section, "voice", key, str, None),
                  cache=problems.value(section, "cache", key, bool, True))


def _gather(problems: Problems, body: Any, key: str, name: str, verb: str,
            nxt: str | None) -> Step:
    body = dict(problems.mapping(body, key))
    prompts = {p: body.pop(p, None) for p in ("prompt", "no_input", "invalid")}
    options = body.pop("options", None) if verb == "menu" else None
    fail = _target(problems, body.pop("fail", None), f"{key}.fail")
    spec = read(problems, GatherSpec, body, key)
    parsed = {p: parse_prompt(problems, v, f"{key}.{p}") if v is not None else None
              for p, v in prompts.items()}
    targets: dict[str, str] = {}
    if verb == "menu":
        for digits, target in problems.mapping(options, f"{key}.options").items():
            digits = str(digits)
            okey = f"{key}.options.{digits}"
            if not digits or len(digits) > spec.max_digits or set(digits) - set(DIGITS):
                problems.append(f"{okey}: keys are 1 to max_digits ({spec.max_digits}) of "
                                f"{DIGITS}")
            elif _target(problems, target, okey):
                targets[digits] = target
        if not targets:
            problems.append(f"{key}.options: at least one key and the step it goes to")
    return Step(name, verb, nxt, prompt=parsed["prompt"], gather=spec,
                no_input=parsed["no_input"], invalid=parsed["invalid"], options=targets,
                fail=fail)


def _target(problems: Problems, value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _is_name(value.removeprefix(ROUTE_PREFIX)):
        problems.append(f"{key}: {value!r} is not a step name (or route:<name>)")
        return None
    return value


def _is_name(name: str) -> bool:
    return re.match(NAME_PATTERN, name) is not None


def check_flows(problems: Problems, flows: dict[str, FlowConfig], routes_key: str = "routes",
                bots: frozenset[str] = frozenset(),
                providers: frozenset[str] | None = None) -> None:
    """Targets that name no step or no route with a flow, bot steps on routes without a
    bot, webhooks with no fallback, and cycles of steps that never wait for input: each
    problem names its key. ``bots`` holds the routes with a ``bot:`` section; ``providers``
    the configured providers a prompt may name."""
    for route, flow in flows.items():
        key = f"{routes_key}.{route}.flow"
        if flow.start not in flow.steps:
            problems.append(f"{key}.start: {flow.start!r} is not a step of this flow")
        if flow.fallback:
            _check_target(problems, flows, route, flow.fallback, f"{key}.fallback")
        for step in flow.steps.values():
            skey = f"{key}.steps.{step.name}"
            for suffix, target in step.targets():
                _check_target(problems, flows, route, target, skey + suffix)
            for which in ("prompt", "no_input", "invalid"):
                prompt = getattr(step, which)
                if providers is not None and prompt is not None and prompt.provider and (
                        prompt.provider not in providers):
                    where = f"{skey}.{step.verb}" + ("" if step.verb in ("say", "play")
                                                     else f".{which}")
                    problems.append(f"{where}.provider: {prompt.provider!r} is not a "
                                    "configured provider")
            if step.verb == "bot" and route not in bots:
                problems.append(f"{skey}.bot: the route has no bot: section to hand the "
                                "call to")
            if step.verb == "webhook" and not (step.fallback or flow.fallback):
                problems.append(f"{skey}.fallback: a webhook needs a fallback step (here or "
                                f"{key}.fallback) for when it fails")
    for cycle in _cycles_without_input(flows):
        route, name = cycle[0]
        path = " -> ".join(f"{r}.{n}" if r != route else n for r, n in cycle)
        problems.append(f"{routes_key}.{route}.flow.steps.{name}: the steps {path} loop "
                        "without waiting for the caller (add a gather or menu)")


def _check_target(problems: Problems, flows: dict[str, FlowConfig], route: str, target: str,
                  key: str) -> None:
    if target.startswith(ROUTE_PREFIX):
        if target[len(ROUTE_PREFIX):] not in flows:
            problems.append(f"{key}: {target!r} is not a route with a flow")
    elif target not in flows[route].steps:
        problems.append(f"{key}: {target!r} is not a step of this flow")


def resolve(flows: dict[str, FlowConfig], route: str, target: str) -> tuple[str, str]:
    """``(route, step)`` that ``target`` (a step, or ``route:<name>``) names from ``route``."""
    if target.startswith(ROUTE_PREFIX):
        route = target[len(ROUTE_PREFIX):]
        return route, flows[route].start
    return route, target


def _cycles_without_input(flows: dict[str, FlowConfig]) -> list[list[tuple[str, str]]]:
    """Each cycle (once) of steps that go on by themselves: every edge leaves a step that
    does not wait for input (a say or play does end, so it goes on by itself)."""
    graph: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for route, flow in flows.items():
        for step in flow.steps.values():
            if step.verb in INPUT_VERBS:
                continue
            edges = []
            for _, target in step.targets():
                node = _resolved(flows, route, target)
                if node is not None:
                    edges.append(node)
            graph[(route, step.name)] = edges
    cycles: list[list[tuple[str, str]]] = []
    done: set[tuple[str, str]] = set()
    for root in graph:
        if root in done:
            continue
        stack, on_path = [(root, iter(graph[root]))], [root]
        while stack:
            node, pending = stack[-1]
            nxt = next(pending, None)
            if nxt is None:
                stack.pop()
                on_path.pop()
                done.add(node)
            elif nxt in on_path:
                cycles.append([*on_path[on_path.index(nxt):], nxt])
            elif nxt in graph and nxt not in done:
                stack.append((nxt, iter(graph[nxt])))
                on_path.append(nxt)
    return cycles


def _resolved(flows: dict[str, FlowConfig], route: str, target: str) -> tuple[str, str] | None:
    if target.startswith(ROUTE_PREFIX) and target[len(ROUTE_PREFIX):] not in flows:
        return None
    route, name = resolve(flows, route, target)
    return (route, name) if name in flows[route].steps else None
