"""The flow engine without I/O: inputs in, actions out, time made up."""

from __future__ import annotations

import pytest

from gateway.flow.engine import (Bot, Ended, FlowEngine, Gathered, Hangup, Interrupt, Play,
                                 Say, StepStarted, Webhook)
from gateway.flow.steps import parse_flow, parse_step
from gateway.schema import Problems

MENU = {
    "start": "main",
    "fallback": "sorry",
    "steps": {
        "main": {"menu": {"prompt": "Press 1 or 2.", "options": {"1": "one", "2": "two"},
                          "no_input": "I did not hear a key.", "invalid": "Not an option.",
                          "retries": 1, "timeout_s": 5, "fail": "goodbye"}},
        "one": {"say": "Branch one.", "next": "goodbye"},
        "two": {"menu": {"prompt": "Level two: press 1.", "options": {"1": "deep"},
                         "fail": "goodbye"}},
        "deep": {"play": "deep_prompt", "next": "goodbye"},
        "goodbye": {"say": "Goodbye.", "next": "bye"},
        "bye": "hangup",
        "sorry": {"say": "Sorry.", "next": "bye"},
        "hook": {"webhook": {"url": "http://127.0.0.1:9/next"}, "next": "goodbye"},
        "ask": {"gather": {"max_digits": 4, "min_digits": 2, "inter_digit_timeout_s": 2,
                           "timeout_s": 5}, "next": "hook"},
        "agent": {"bot": {}},
    },
}


def engine(data=MENU, route="menu") -> FlowEngine:
    problems = Problems()
    flow = parse_flow(problems, data, "flow")
    assert problems == []
    return FlowEngine({route: flow}, route)


def texts(actions) -> list[str]:
    return [a.prompt.text or a.prompt.prompt for a in actions if isinstance(a, (Say, Play))]


def speech(actions) -> Say | Play:
    return [a for a in actions if isinstance(a, (Say, Play))][-1]


def test_a_menu_plays_its_prompt_and_waits_for_it_before_the_timeout_runs():
    e = engine()
    actions = e.start(0.0)
    assert actions[0] == StepStarted("menu", "main", "menu")
    assert texts(actions) == ["Press 1 or 2."]
    assert e.deadline is None  # the prompt still plays
    assert e.on_timeout(100.0) == []
    e.on_playback_done(speech(actions).id, 3.0)
    assert e.deadline == 8.0


def test_a_key_goes_to_its_branch_and_the_branch_plays_then_goes_on():
    e = engine()
    e.on_playback_done(speech(e.start(0.0)).id, 1.0)
    actions = e.on_digit("1", 2.0)
    assert Gathered("main", "digits", "1") in actions
    assert texts(actions) == ["Branch one."]
    actions = e.on_playback_done(speech(actions).id, 3.0)
    assert texts(actions) == ["Goodbye."]
    actions = e.on_playback_done(speech(actions).id, 4.0)
    assert actions[-2:] == [Hangup(), Ended("hangup")]


def test_two_levels_and_a_recorded_prompt():
    e = engine()
    e.start(0.0)
    actions = e.on_digit("2", 1.0)
    assert Interrupt() in actions  # pressed during the prompt: barge-in
    assert texts(actions) == ["Level two: press 1."]
    actions = e.on_digit("1", 2.0)
    assert isinstance(speech(actions), Play) and texts(actions) == ["deep_prompt"]


def test_no_input_then_retries_then_the_fail_step():
    e = engine()
    e.on_playback_done(speech(e.start(0.0)).id, 1.0)
    actions = e.on_timeout(6.0)
    assert Gathered("main", "no_input", "") in actions
    assert texts(actions) == ["I did not hear a key.", "Press 1 or 2."]
    assert e.deadline is None
    e.on_playback_done(speech(actions).id, 8.0)
    assert e.on_timeout(12.9) == []
    actions = e.on_timeout(13.0)  # retries: 1, used up
    assert texts(actions) == ["Goodbye."]


def test_an_invalid_key_plays_the_invalid_prompt_and_asks_again():
    e = engine()
    e.on_playback_done(speech(e.start(0.0)).id, 1.0)
    actions = e.on_digit("7", 2.0)
    assert Gathered("main", "invalid", "7") in actions
    assert texts(actions) == ["Not an option.", "Press 1 or 2."]
    assert Interrupt() not in actions  # nothing was playing


def test_a_played_out_prompt_is_not_cut_by_a_key_and_without_barge_in_none_is():
    data = {"steps": {"g": {"gather": {"prompt": "Enter.", "barge_in": False,
                                       "max_digits": 2}, "next": "g2"},
                      "g2": "hangup"}}
    e = engine(data)
    e.start(0.0)
    actions = e.on_digit("5", 0.5)
    assert Interrupt() not in actions
    assert e.deadline == 3.5  # the inter-digit timeout runs from the key


def test_inter_digit_timeout_ends_the_gather_with_the_keys_so_far():
    e = engine()
    e.route = "menu"
    actions = e._run("ask", 0.0)
    assert e.deadline == 5.0  # no prompt: the timeout runs at once
    e.on_digit("4", 1.0)
    e.on_digit("2", 2.0)
    assert e.deadline == 4.0
    actions = e.on_timeout(4.0)
    assert Gathered("ask", "digits", "42") in actions
    assert actions[-1] == Webhook(e.step, "42")


def test_finish_on_key_and_max_digits_end_a_gather():
    e = engine()
    e._run("ask", 0.0)
    e.on_digit("1", 1.0)
    e.on_digit("2", 1.5)
    actions = e.on_digit("#", 2.0)
    assert Gathered("ask", "digits", "12") in actions
    e._run("ask", 3.0)
    for d in "123":
        assert e.on_digit(d, 4.0) == []
    assert Gathered("ask", "digits", "1234") in e.on_digit("4", 4.0)


def test_too_few_digits_are_invalid():
    e = engine()
    e._run("ask", 0.0)
    e.on_digit("1", 1.0)
    assert Gathered("ask", "invalid", "1") in e.on_timeout(3.0)


def test_a_webhook_answer_runs_its_steps_then_the_steps_next():
    e = engine()
    actions = e._run("hook", 0.0)
    assert isinstance(actions[-1], Webhook)
    problems = Problems()
    steps = [parse_step(problems, {"say": "From the server."}, "answer.0", "hook.0"),
             parse_step(problems, {"say": "And more."}, "answer.1", "hook.1")]
    actions = e.on_webhook_answer(steps, 1.0)
    assert texts(actions) == ["From the server."]
    actions = e.on_playback_done(speech(actions).id, 2.0)
    assert texts(actions) == ["And more."]
    actions = e.on_playback_done(speech(actions).id, 3.0)
    assert texts(actions) == ["Goodbye."]  # the webhook step's next


def test_a_failed_webhook_goes_to_the_fallback_step():
    e = engine()
    e._run("hook", 0.0)
    assert texts(e.on_webhook_answer(None, 1.0)) == ["Sorry."]


def test_bot_and_hangup_end_the_flow():
    e = engine()
    assert e._run("agent", 0.0)[-2:] == [Bot(), Ended("bot")]
    assert e.on_digit("1", 1.0) == []


def test_a_step_with_no_next_ends_the_flow_and_the_call_stays():
    e = engine({"steps": {"hi": {"say": "Hello."}}})
    actions = e.on_playback_done(speech(e.start(0.0)).id, 1.0)
    assert actions == [Ended("end")]


def test_route_targets_switch_flows():
    problems = Problems()
    a = parse_flow(problems, {"steps": {"m": {"menu": {"options": {"9": "route:b"}}}}}, "a")
    b = parse_flow(problems, {"steps": {"hi": {"say": "Route b."}}}, "b")
    e = FlowEngine({"a": a, "b": b}, "a")
    e.start(0.0)
    actions = e.on_digit("9", 1.0)
    assert StepStarted("b", "hi", "say") in actions and e.route == "b"


@pytest.mark.parametrize("digit", ["1", "#"])
def test_keys_outside_a_gather_are_ignored(digit):
    e = engine({"steps": {"hi": {"say": "Hello."}}})
    e.start(0.0)
    assert e.on_digit(digit, 0.5) == []


@pytest.mark.parametrize("spec", ["2", "2@", "@3", "2@x", "2@99", "2@-1"])
def test_dial_digits_that_are_not_keys_at_seconds_are_refused(spec):
    from gateway.sim.dial import parse_digits

    with pytest.raises(ValueError, match="--digits"):
        parse_digits(spec, max_seconds=60)
