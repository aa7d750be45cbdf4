"""The prompt cache through the real server: a route's greeting synthesized by a provider's
faithful fake (Cartesia, over loopback), heard through carrier simulators, kept on disk
(gateway/prompts/store.py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.http.keys import SERVICES
from gateway.http.loopback import serve_on_loopback
from gateway.sim.carriers import make_call
from gateway.tts.providers.cartesia import fake as cartesia
from tests.conftest import ROOT, base_config, running_gateway
from tests.e2e.remote_setup import KEY_ENV, fake_provider_config
from tests.e2e.test_twilio_call import metric_value, open_control

GREETING = "Thanks for calling, press one for sales."  # one sentence: one synthesis
ENTRY = 40_000  # bytes of about one greeting's entry on a μ-law carrier, header included


class Fake:
    """The Cartesia fake on loopback; ``fake["log"]`` has an entry per synthesis."""

    def __init__(self, app, port: int):
        self.app, self.port = app, port

    def __getitem__(self, key: str):
        return self.app[key]


@pytest.fixture
async def fake():
    app = cartesia.make_app()
    runner, port = await serve_on_loopback(app)
    yield Fake(app, port)
    await runner.cleanup()


def config(fake, cache_dir: Path, *, routes: dict | None = None, options: dict | None = None,
           model: str | None = None, voice: str | None = None,
           carriers: tuple[str, ...] = ("twilio", "plivo", "vonage"), **prompt_cache) -> dict:
    data = base_config()
    provider = fake_provider_config("cartesia", fake.port, options=options)
    if model:
        provider["model"] = model
    if voice:
        provider["voice"] = voice
    data["providers"] = {"cartesia": provider}
    data["routes"] = routes or {"ivr": {"provider": "cartesia", "greeting": GREETING}}
    data["default_route"] = next(iter(data["routes"]))
    data["carriers"] = {name: {} for name in carriers}
    data["prompt_cache"] = {"dir": str(cache_dir), **prompt_cache}
    return data


async def greet(gw, route: str = "ivr", carrier: str = "twilio", fmt: str | None = None
                ) -> bytes:
    """One call on ``route`` that hears its greeting out; what the caller heard."""
    async with make_call(carrier, gw.ws_url, route=route, media_format=fmt) as call:
        control = await open_control(gw, call.call_id)
        done = await control.next_event("speech.done", timeout=30)
        assert done["interrupted"] is False and "error" not in done, done
        await control.ws.close()
    return call.result.heard


def entries(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.prompt"))


async def test_second_call_on_a_route_plays_from_the_cache_with_no_provider_request(
        fake, tmp_path):
    async with running_gateway(config(fake, tmp_path), KEY_ENV) as gw:
        first = await greet(gw)
        assert len(fake["log"]) == 1 and len(entries(tmp_path)) == 1
        second = await greet(gw)
        assert len(fake["log"]) == 1  # no provider request for the second call
        assert second == first  # the same frames, byte for byte
        metrics = await gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_prompt_cache_total", result="miss") == 1
    assert metric_value(metrics, "tts_gateway_prompt_cache_total", result="hit") == 1
    assert metric_value(metrics, "tts_gateway_prompt_cache_chars_saved_total",
                        provider="cartesia") == len(GREETING)
    assert metric_value(metrics, "tts_gateway_prompt_cache_entries") == 1
    assert metric_value(metrics, "tts_gateway_prompt_cache_bytes") == \
        entries(tmp_path)[0].stat().st_size


async def test_the_cache_survives_a_restart_of_the_gateway(fake, tmp_path):
    data = config(fake, tmp_path)
    async with running_gateway(data, KEY_ENV) as gw:
        first = await greet(gw)
    async with running_gateway(data, KEY_ENV) as gw:  # a new app on the same folder
        assert len(gw.app[SERVICES].prompts) == 1
        assert await greet(gw) == first
        metrics = await gw.metrics_text()
    assert len(fake["log"]) == 1
    assert metric_value(metrics, "tts_gateway_prompt_cache_total", result="hit") == 1


@pytest.mark.parametrize("change", [
    {"model": "sonic-3"},
    {"voice": "b7d50908-b17c-442d-ad8d-810c63997ed9"},
    {"options": {"language": "fr"}},
    {"fmt": "l16/16000"},
    {"greeting": "Thanks for calling, press two for support."},
], ids=["model", "voice", "option", "format", "text"])
async def test_a_change_of_what_makes_the_audio_is_a_miss(fake, tmp_path, change):
    fmt = change.pop("fmt", None)
    greeting = change.pop("greeting", GREETING)
    async with running_gateway(config(fake, tmp_path), KEY_ENV) as gw:
        await greet(gw, carrier="plivo", fmt="mulaw/8000")
    routes = {"ivr": {"provider": "cartesia", "greeting": greeting}}
    async with running_gateway(config(fake, tmp_path, routes=routes, **change), KEY_ENV) as gw:
        await greet(gw, carrier="plivo", fmt=fmt or "mulaw/8000")
        metrics = await gw.metrics_text()
    assert len(fake["log"]) == 2  # synthesized again, never the old audio
    assert metric_value(metrics, "tts_gateway_prompt_cache_total", result="miss") == 1
    assert len(entries(tmp_path)) == 2


async def test_the_same_settings_after_a_restart_are_a_hit(fake, tmp_path):
    """The control for the test above: only a change makes the second gateway synthesize."""
    for _ in range(2):
        async with running_gateway(config(fake, tmp_path), KEY_ENV) as gw:
            await greet(gw, carrier="plivo", fmt="mulaw/8000")
    assert len(fake["log"]) == 1 and len(entries(tmp_path)) == 1


async def test_cache_false_writes_nothing(fake, tmp_path):
    routes = {"ivr": {"provider": "cartesia", "greeting": GREETING, "cache_greeting": False}}
    async with running_gateway(config(fake, tmp_path, routes=routes), KEY_ENV) as gw:
        await greet(gw)
        await greet(gw)
        metrics = await gw.metrics_text()
    assert len(fake["log"]) == 2
    assert os.listdir(tmp_path) == []
    assert metric_value(metrics, "tts_gateway_prompt_cache_total", result="miss") == 0


async def test_the_byte_limit_holds_under_many_distinct_prompts(fake, tmp_path):
    # warm_on_start writes every route's greeting before /readyz turns ready; the limit
    # holds about three of them, so the least recently used go
    routes = {f"r{i}": {"provider": "cartesia", "greeting": f"Menu {i}, " + GREETING}
              for i in range(12)}
    async with running_gateway(config(fake, tmp_path, routes=routes, max_bytes=3 * ENTRY,
                                      warm_on_start=True, carriers=("twilio",)),
                               KEY_ENV) as gw:
        store = gw.app[SERVICES].prompts
        on_disk = sum(p.stat().st_size for p in entries(tmp_path))
        assert on_disk == store.bytes <= store.max_bytes
        assert 2 <= len(entries(tmp_path)) < 12
        assert len(fake["log"]) == 12
        kept = {r for e in store.entries() for r in e["routes"]}
        assert "r11" in kept and "r0" not in kept  # the newest stay
        await greet(gw, route="r11")  # a hit
        assert len(fake["log"]) == 12
        await greet(gw, route="r0")  # evicted: synthesized again
        assert len(fake["log"]) == 13
        metrics = await gw.metrics_text()
        assert sum(p.stat().st_size for p in entries(tmp_path)) <= store.max_bytes
    assert metric_value(metrics, "tts_gateway_prompt_cache_evictions_total") >= 12 - 3


async def test_a_corrupt_or_cut_entry_is_removed_and_synthesized_again(fake, tmp_path):
    data = config(fake, tmp_path)
    async with running_gateway(data, KEY_ENV) as gw:
        first = await greet(gw)
    [entry] = entries(tmp_path)
    entry.write_bytes(entry.read_bytes()[:-100])  # a write cut short, as by a full disk
    (tmp_path / ("0" * 64 + ".prompt")).write_bytes(b"not a prompt")
    async with running_gateway(data, KEY_ENV) as gw:
        assert await greet(gw) == first
        metrics = await gw.metrics_text()
    assert len(fake["log"]) == 2
    assert metric_value(metrics, "tts_gateway_prompt_cache_errors_total", kind="corrupt") == 1
    assert entries(tmp_path) == [entry]  # the garbage removed at start, the entry rewritten
    assert len(entry.read_bytes()) > 100


async def test_purge_over_http_empties_the_cache_all_or_one_routes(fake, tmp_path):
    routes = {"a": {"provider": "cartesia", "greeting": "Route A, " + GREETING},
              "b": {"provider": "cartesia", "greeting": "Route B, " + GREETING}}
    async with running_gateway(config(fake, tmp_path, routes=routes), KEY_ENV) as gw:
        await greet(gw, route="a")
        await greet(gw, route="b")
        status, body = await gw.get_json("/v1/prompts")
        assert status == 200 and body["entries"] == 2
        async with gw.session.delete(gw.http_url + "/v1/prompts?route=nope") as resp:
            assert resp.status == 400
        async with gw.session.delete(gw.http_url + "/v1/prompts?route=a") as resp:
            assert resp.status == 200
            assert (await resp.json())["removed"]["entries"] == 1
        assert len(entries(tmp_path)) == 1
        await greet(gw, route="b")  # still cached
        assert len(fake["log"]) == 2
        async with gw.session.delete(gw.http_url + "/v1/prompts") as resp:
            assert resp.status == 200
        assert entries(tmp_path) == []
        await greet(gw, route="b")  # synthesized again
        assert len(fake["log"]) == 3
        metrics = await gw.metrics_text()
    assert metric_value(metrics, "tts_gateway_prompt_cache_entries") == 1


async def test_purge_needs_the_control_token_when_one_is_set(fake, tmp_path):
    data = config(fake, tmp_path)
    data["auth"] = {"control_token_env": "CONTROL_TOKEN"}
    async with running_gateway(data, {**KEY_ENV, "CONTROL_TOKEN": "s3cret"}) as gw:
        await greet_with_token(gw)
        async with gw.session.delete(gw.http_url + "/v1/prompts") as resp:
            assert resp.status == 401
        assert len(entries(tmp_path)) == 1
        async with gw.session.delete(gw.http_url + "/v1/prompts",
                                     headers={"Authorization": "Bearer s3cret"}) as resp:
            assert resp.status == 200
        assert entries(tmp_path) == []


async def greet_with_token(gw) -> None:
    async with make_call("twilio", gw.ws_url, route="ivr") as call:
        while len(gw.app[SERVICES].prompts) == 0:
            await call.wait_for_mark(timeout=30)


def run_cli(*args: str, config_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **KEY_ENV,
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "codecs")])}
    return subprocess.run([sys.executable, "-m", "gateway.cli", "prompts", *args,
                           "--config", str(config_path)], env=env, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


async def test_cli_warm_list_and_purge(fake, tmp_path):
    cache = tmp_path / "cache"
    data = config(fake, cache)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    with contextlib.chdir(tmp_path):
        warmed = await _in_thread(run_cli, "warm", config_path=path)
    assert warmed.returncode == 0, warmed.stderr
    assert "2 synthesized" in warmed.stdout  # μ-law 8 kHz (Twilio, Plivo), Vonage's L16 16 kHz
    assert len(entries(cache)) == 2 and len(fake["log"]) == 2
    async with running_gateway(data, KEY_ENV) as gw:
        await greet(gw)  # warmed: no provider request
    assert len(fake["log"]) == 2
    listed = await _in_thread(run_cli, "list", config_path=path)
    assert listed.returncode == 0 and "2 prompt(s)" in listed.stdout and " ivr" in listed.stdout
    purged = await _in_thread(run_cli, "purge", config_path=path)
    assert purged.returncode == 0 and "removed 2 prompt(s)" in purged.stdout
    assert entries(cache) == []


async def _in_thread(fn, *args, **kwargs):
    import asyncio

    return await asyncio.to_thread(fn, *args, **kwargs)


async def test_an_unusable_cache_folder_loses_no_call(fake, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    async with running_gateway(config(fake, blocked / "prompts"), KEY_ENV) as gw:
        first = await greet(gw)
        assert await greet(gw) == first  # heard both times, synthesized both times
        metrics = await gw.metrics_text()
    assert len(fake["log"]) == 2
    assert metric_value(metrics, "tts_gateway_prompt_cache_errors_total", kind="write") == 2
    assert metric_value(metrics, "tts_gateway_prompt_cache_total", result="miss") == 2


def test_prompt_cache_settings_are_checked_by_key():
    from gateway.config import ConfigError, parse_config

    data = base_config()
    data["prompt_cache"] = {"max_bytes": -1, "warm_on_start": "soon", "size": 3}
    with pytest.raises(ConfigError) as err:
        parse_config(data, {})
    text = "; ".join(err.value.problems)
    for key in ("prompt_cache.max_bytes", "prompt_cache.warm_on_start", "prompt_cache.size"):
        assert key in text


MENU = "For sales press one, for support press two."


def flow_route(cache: bool = True) -> dict:
    """A route whose flow says one sentence and waits for a key."""
    return {"menu": {"provider": "cartesia", "flow": {"start": "main", "steps": {
        "main": {"gather": {"prompt": {"text": MENU, "cache": cache}, "max_digits": 1,
                            "timeout_s": 30}}}}}}


async def hear_the_menu(gw) -> None:
    async with make_call("twilio", gw.ws_url, route="menu") as call:
        control = await open_control(gw, call.call_id)
        done = await control.next_event("speech.done", timeout=30)
        assert done["interrupted"] is False and "error" not in done, done
        await control.ws.close()


async def test_a_flows_prompts_are_cached_and_warmed_like_a_greeting(fake, tmp_path):
    async with running_gateway(config(fake, tmp_path, routes=flow_route()), KEY_ENV) as gw:
        await hear_the_menu(gw)
        await hear_the_menu(gw)
        assert len(fake["log"]) == 1  # the second call's menu came from the cache
    from gateway.config import parse_config
    from gateway.prompts.warm import prompt_texts

    env = {**os.environ, **KEY_ENV}
    texts = prompt_texts(parse_config(config(fake, tmp_path, routes=flow_route()), env))
    assert [(t.route, t.text) for t in texts] == [("menu", MENU)]
    assert prompt_texts(parse_config(config(fake, tmp_path, routes=flow_route(cache=False)),
                                     env)) == []


async def test_a_flow_prompt_with_cache_false_writes_nothing(fake, tmp_path):
    async with running_gateway(config(fake, tmp_path, routes=flow_route(cache=False)),
                               KEY_ENV) as gw:
        await hear_the_menu(gw)
        await hear_the_menu(gw)
    assert len(fake["log"]) == 2 and entries(tmp_path) == []
