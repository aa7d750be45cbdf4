"""A flow's ``webhook`` step: POST the call and its digits, read the answer's steps.

The answer is ``{"steps": [step, ...]}`` in the flow's own step syntax (say, play, gather,
menu, goto, hangup; not webhook or bot: a business's server says what the caller hears,
not where the gateway connects). Its targets (``next``, ``goto``, menu options, ``fail``)
name steps of the configured flow. Every failure is a :class:`WebhookFailed` whose
``reason`` is one of :data:`WEBHOOK_FAILURES` (a metric label).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import aiohttp

from gateway.flow.steps import FlowConfig, Step, check_flows, parse_step
from gateway.schema import Problems

WEBHOOK_FAILURES = ("timeout", "unreachable", "status", "too_large", "invalid")
ANSWER_VERBS = ("say", "play", "gather", "menu", "goto", "hangup")
MAX_ANSWER_STEPS = 20


class WebhookFailed(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


async def call_webhook(http: aiohttp.ClientSession, step: Step, payload: dict[str, Any]
                       ) -> bytes:
    """POST ``payload``; the answer's body (at most ``max_response_bytes``), within
    ``timeout_s`` for the whole exchange."""
    spec = step.webhook
    assert spec is not None  # a webhook step
    try:
        return await asyncio.wait_for(_post(http, spec.url, payload, spec.max_response_bytes),
                                      spec.timeout_s)
    except TimeoutError:
        raise WebhookFailed("timeout", f"no answer within {spec.timeout_s} s") from None
    except aiohttp.ClientError as exc:
        raise WebhookFailed("unreachable", f"{type(exc).__name__}: {exc}"[:200]) from None


async def _post(http: aiohttp.ClientSession, url: str, payload: dict, limit: int) -> bytes:
    async with http.post(url, json=payload, allow_redirects=False) as resp:
        if resp.status != 200:
            raise WebhookFailed("status", f"answered HTTP {resp.status}")
        if resp.content_length is not None and resp.content_length > limit:
            raise WebhookFailed("too_large", f"{resp.content_length} bytes, over {limit}")
        body = bytearray()
        async for chunk in resp.content.iter_chunked(16384):
            body += chunk
            if len(body) > limit:
                raise WebhookFailed("too_large", f"over {limit} bytes")
        return bytes(body)


def answer_steps(body: bytes, step: Step, flows: dict[str, FlowConfig], route: str,
                 providers: frozenset[str]) -> list[Step]:
    """The answer's steps, each named ``<step>#<index>`` (no configured step can be);
    WebhookFailed("invalid") says what is wrong with it."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookFailed("invalid", "the answer is not JSON") from None
    items = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(items, list) or len(items) > MAX_ANSWER_STEPS:
        raise WebhookFailed("invalid", f"the answer needs \"steps\": a list of at most "
                            f"{MAX_ANSWER_STEPS} steps")
    problems = Problems()
    steps = []
    for index, item in enumerate(items):
        key = f"steps[{index}]"
        if isinstance(item, dict) and not any(v in item for v in ANSWER_VERBS):
            problems.append(f"{key}: needs one of {', '.join(ANSWER_VERBS)}")
            continue
        parsed = parse_step(problems, item, key, f"{step.name}#{index}")
        if parsed is not None:
            steps.append(parsed)
    if not problems:  # its targets name steps of the flow as configured
        flow = flows[route]
        probe = dict(flows)
        probe[route] = replace(flow, steps={**flow.steps, **{s.name: s for s in steps}})
        # configured steps passed check-config already (bot steps included): what this
        # finds is about the answer's steps
        check_flows(problems, probe, "answer", bots=frozenset(flows), providers=providers)
    if problems:
        raise WebhookFailed("invalid", "; ".join(problems)[:300])
    return steps
