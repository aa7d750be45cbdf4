"""IVR menus through the real server and the carrier simulators: keys from the caller's
side of the line, prompts on a fast fake provider, what the gateway did read from the
call's events (replayed to a control socket) and from what the carrier received."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from gateway.sim.carriers import make_call
from tests.conftest import base_config, running_gateway
from tests.e2e.test_twilio_call import metric_value, open_control

pytestmark = pytest.mark.asyncio(loop_scope="module")

FAST = {"type": "fake", "handshake_ms": 0, "first_audio_ms": 20, "chars_per_second": 40}
LONG_PROMPT = ("Welcome to the test line. " * 8).strip()

MENU = {
    "start": "main",
    "steps": {
        "main": {"menu": {"prompt": "Press 1 or 2.", "options": {"1": "one", "2": "two"},
                          "no_input": "I did not hear a key.", "invalid": "Not an option.",
                          "timeout_s": 0.6, "retries": 1, "fail": "goodbye"}},
        "one": {"say": "Branch one.", "next": "goodbye"},
        "two": {"menu": {"prompt": "Branch two. Press 1 for more.", "options": {"1": "more"},
                         "timeout_s": 0.6, "retries": 0, "fail": "goodbye"}},
        "more": {"say": "More of branch two.", "next": "goodbye"},
        "goodbye": {"say": "Goodbye.", "next": "bye"},
        "bye": {"hangup": {}},
    },
}
CUT = {"steps": {
    "main": {"menu": {"prompt": LONG_PROMPT, "options": {"1": "wait"}}},
    "wait": {"gather": {"timeout_s": 30}},
}}
PIN = {"steps": {
    "pin": {"gather": {"prompt": "Your PIN.", "max_digits": 4, "inter_digit_timeout_s": 0.5,
                       "timeout_s": 10}, "next": "thanks"},
    "thanks": {"say": "Thanks.", "next": "wait"},
    "wait": {"gather": {"timeout_s": 30}},
}}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gw():
    data = base_config()
    data["providers"]["fast"] = FAST
    data["routes"] = {"ivr": {"provider": "fast", "flow": MENU},
                      "cut": {"provider": "fast", "flow": CUT},
                      "cut_by_route": {"provider": "fast", "flow": CUT,
                                       "barge_in": {"mode": "dtmf"}},
                      "pin": {"provider": "fast", "flow": PIN}}
    data["default_route"] = "ivr"
    async with running_gateway(data) as gateway:
        yield gateway


async def step_played(control, step: str) -> dict:
    """Wait for ``step`` to start and its speech to play out; its speech.done."""
    await control.next_event("flow.step", step=step)
    started = await control.next_event("speech.started", source="flow")
    return await control.next_event("speech.done", speech_id=started["speech_id"])


@pytest.mark.parametrize("carrier,fmt", [("twilio", None), ("vonage", "l16/16000"),
                                         ("telnyx", None), ("plivo", None),
                                         ("asterisk", None), ("exotel", None)])
async def test_pressing_2_goes_to_branch_two_and_its_submenu(gw, carrier, fmt):
    async with make_call(carrier, gw.ws_url, route="ivr", media_format=fmt) as sim:
        control = await open_control(gw, sim.call_id)
        assert (await step_played(control, "main"))["interrupted"] is False
        frames_before = len(sim.result.frames)
        await sim.send_dtmf("2")
        gathered = await control.next_event("flow.gather", step="main")
        assert gathered["outcome"] == "digits" and gathered["digits"] == "2"
        assert (await step_played(control, "two"))["interrupted"] is False
        assert len(sim.result.frames) > frames_before  # branch two was heard
        await sim.send_dtmf("1")
        assert (await step_played(control, "more"))["interrupted"] is False
        await step_played(control, "goodbye")
        await sim.wait_ended(timeout=10)
        assert sim.result.closed_by_gateway
        assert not [e for e in control.events if e["type"] == "flow.step"
                    and e["step"] == "one"]


async def test_no_key_plays_the_no_input_prompt_then_after_the_retries_goodbye(gw):
    async with make_call("twilio", gw.ws_url, route="ivr") as sim:
        control = await open_control(gw, sim.call_id)
        await step_played(control, "main")
        first = await control.next_event("flow.gather", step="main")
        assert first["outcome"] == "no_input"
        # the no-input prompt, then the menu's prompt again, both played out
        for _ in range(2):
            started = await control.next_event("speech.started", source="flow")
            done = await control.next_event("speech.done", speech_id=started["speech_id"])
            assert done["interrupted"] is False
        second = await control.next_event("flow.gather", step="main")
        assert second["outcome"] == "no_input"  # retries: 1, used up
        await step_played(control, "goodbye")
        await sim.wait_ended(timeout=10)
        assert sim.result.closed_by_gateway
    metrics = await gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_flow_steps_total", verb="hangup") >= 1


async def test_an_invalid_key_plays_the_invalid_prompt_and_the_menu_again(gw):
    async with make_call("twilio", gw.ws_url, route="ivr") as sim:
        control = await open_control(gw, sim.call_id)
        await step_played(control, "main")
        await sim.send_dtmf("7")
        gathered = await control.next_event("flow.gather", step="main")
        assert gathered == {**gathered, "outcome": "invalid", "digits": "7"}
        spoken = []
        for _ in range(2):  # the invalid prompt, then the menu's prompt
            started = await control.next_event("speech.started", source="flow")
            spoken.append(await control.next_event("speech.done",
                                                   speech_id=started["speech_id"]))
        assert [d["interrupted"] for d in spoken] == [False, False]
        await sim.send_dtmf("1")
        await step_played(control, "one")


@pytest.mark.parametrize("route", ["cut", "cut_by_route"])
async def test_a_key_during_the_prompt_cuts_it_with_a_clear_and_no_frame_after(gw, route):
    """``cut``: the flow's own barge-in (the route's barge_in is off); ``cut_by_route``:
    the route's barge_in mode dtmf does it, and the flow sends no second clear."""
    async with make_call("twilio", gw.ws_url, route=route) as sim:
        control = await open_control(gw, sim.call_id)
        await control.next_event("flow.step", step="main")
        started = await control.next_event("speech.started", source="flow")
        await control.next_event("speech.first_audio", speech_id=started["speech_id"])
        await asyncio.sleep(0.3)
        await sim.send_dtmf("1")
        done = await control.next_event("speech.done", speech_id=started["speech_id"])
        assert done["interrupted"] is True and done["cause"] == "dtmf"
        clear_at = await sim.wait_for_clear()
        await control.next_event("flow.step", step="wait")
        await asyncio.sleep(0.5)  # a late frame of the cut prompt would arrive by now
        late = [t for t, _ in sim.result.frames if t > clear_at]
        assert late == [], f"{len(late)} frames after the clear"
        assert len(sim.result.clears) == 1


async def test_digits_split_by_a_long_pause_end_the_gather(gw):
    async with make_call("twilio", gw.ws_url, route="pin") as sim:
        control = await open_control(gw, sim.call_id)
        await step_played(control, "pin")
        await sim.send_dtmf("1")
        await asyncio.sleep(0.1)
        await sim.send_dtmf("2")
        await asyncio.sleep(1.2)  # over inter_digit_timeout_s (0.5 s)
        await sim.send_dtmf("3")
        gathered = await control.next_event("flow.gather", step="pin")
        assert gathered["outcome"] == "digits" and gathered["digits"] == "12"
        await control.next_event("flow.step", step="thanks")


async def test_dial_presses_digits_at_their_seconds(gw):
    from gateway.sim.dial import dial_and_report

    def steps(text: str, verb: str) -> float:
        return metric_value(text, "tts_gateway_flow_steps_total", verb=verb)

    before = await gw.metrics_text()
    report = await dial_and_report(base_url=gw.ws_url, route="ivr", digits="2@0.9,1@1.5",
                                   quiet_seconds=1.0, max_seconds=20)
    after = await gw.metrics_text()
    assert report["digits_sent"] == ["2@0.9", "1@1.5"]
    assert report["closed_by_gateway"] and report["heard_seconds"] > 1.0
    # main, two (menus); more, goodbye (says); bye: the keys took the call down branch two
    assert steps(after, "menu") - steps(before, "menu") == 2
    assert steps(after, "say") - steps(before, "say") == 2
    assert steps(after, "hangup") - steps(before, "hangup") == 1

