"""``routes.<name>.flow`` in gateway.yaml: read, and every problem named by its key."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from gateway.config import ConfigError, load_config, parse_config
from tests.conftest import ROOT, base_config


def with_flow(flow, **route) -> dict:
    data = base_config()
    data["routes"]["ivr"] = {"provider": "local", "flow": flow, **route}
    return data


def problems_of(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    return info.value.problems


def test_the_committed_menu_route_is_a_valid_flow():
    config = load_config(ROOT / "gateway.yaml", environ={})
    flow = config.routes["menu"].flow
    assert flow is not None and flow.steps[flow.start].verb == "menu"


def test_a_flow_is_read_with_defaults():
    config = parse_config(with_flow({"steps": {
        "ask": {"gather": {"prompt": "Your PIN.", "max_digits": 4}, "next": "bye"},
        "bye": {"hangup": {}}}}), {})
    flow = config.routes["ivr"].flow
    assert flow.start == "ask"
    ask = flow.steps["ask"]
    assert ask.gather.max_digits == 4 and ask.gather.finish_on_key == "#"
    assert ask.gather.timeout_s == 5.0 and ask.gather.retries == 2
    assert ask.prompt.text == "Your PIN."


def test_unknown_steps_missing_targets_and_bad_settings_name_their_keys():
    problems = problems_of(with_flow({"start": "nowhere", "steps": {
        "a": {"shout": "hi"},
        "b": {"say": "Hi.", "next": "missing"},
        "c": {"menu": {"options": {"1": "gone", "x": "b"}, "timeout_s": -1}},
        "d": {"goto": "route:nope"},
        "e": {"gather": {"max_digits": 2, "min_digits": 3}},
        "f": {"say": {"text": "Hi.", "provider": "nobody"}},
        "g": {"bot": {}},
        "h": {"webhook": {"url": "ftp://x"}},
    }}))
    key = "routes.ivr.flow"
    expected = [
        f"{key}.start: 'nowhere' is not a step",
        f"{key}.steps.a: needs exactly one of",
        f"{key}.steps.b.next: 'missing' is not a step",
        f"{key}.steps.c.menu.options.1: 'gone' is not a step",
        f"{key}.steps.c.menu.options.x: keys are",
        f"{key}.steps.c.menu.timeout_s:",
        f"{key}.steps.d.goto: 'route:nope' is not a route with a flow",
        f"{key}.steps.e.gather.min_digits: 3 is more than max_digits 2",
        f"{key}.steps.f.say.provider: 'nobody' is not a configured provider",
        f"{key}.steps.g.bot: the route has no bot:",
        f"{key}.steps.h.webhook.url:",
        f"{key}.steps.h.fallback: a webhook needs a fallback step",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)
    assert len(problems) == len(expected), problems


def test_a_cycle_without_input_is_refused_and_one_through_a_menu_is_not():
    problems = problems_of(with_flow({"steps": {
        "a": {"say": "A.", "next": "b"},
        "b": {"goto": "c"},
        "c": {"play": "tone", "next": "a"}}}))
    assert problems == ["routes.ivr.flow.steps.a: the steps a -> b -> c -> a loop without "
                        "waiting for the caller (add a gather or menu)"]
    parse_config(with_flow({"steps": {
        "a": {"say": "A.", "next": "m"},
        "m": {"menu": {"options": {"1": "a"}}}}}), {})


def test_a_cycle_across_routes_is_found():
    data = with_flow({"steps": {"a": {"goto": "route:other"}}})
    data["routes"]["other"] = {"provider": "local",
                               "flow": {"steps": {"b": {"say": "B.", "next": "route:ivr"}}}}
    problems = problems_of(data)
    assert len(problems) == 1 and "loop without waiting" in problems[0], problems


def test_check_config_prints_flow_problems(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(with_flow({"steps": {"a": {"say": "A.", "next": "z"}}})))
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", "--config",
                           str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "routes.ivr.flow.steps.a.next: 'z' is not a step" in done.stdout + done.stderr
