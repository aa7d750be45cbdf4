import subprocess
import sys
import textwrap

import pytest

from gateway.config import ConfigError, load_config, parse_config
from gateway.http.app import build_providers

from tests.conftest import ROOT, base_config


def test_committed_config_is_valid_and_offline():
    config = load_config(ROOT / "gateway.yaml", environ={})
    assert config.providers["local"].type == "piper"
    assert "twilio" in config.carriers
    demo = config.routes["demo"]
    assert demo.provider == "local"
    assert demo.greeting and 2 <= demo.greeting.count(".") <= 4


def problems_of(data, environ=None):
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ or {})
    return info.value.problems


def test_each_problem_names_its_key():
    data = base_config()
    data["routes"]["demo"]["provider"] = "nope"
    data["playout"]["lead_ms"] = 5
    data["server"]["port"] = "eighty"
    data["limits"]["bogus"] = 1
    problems = problems_of(data)
    assert any(p.startswith("routes.demo.provider:") and "'nope'" in p for p in problems)
    assert any(p.startswith("playout.lead_ms:") for p in problems)
    assert any(p.startswith("server.port:") for p in problems)
    assert any(p.startswith("limits.bogus: unknown key") for p in problems)
    assert len(problems) == 4


def test_secret_comes_from_the_named_environment_variable():
    data = base_config()
    data["auth"] = {"control_token_env": "GW_TOKEN"}
    assert parse_config(data, {"GW_TOKEN": "s3cret"}).control_token == "s3cret"
    problems = problems_of(data, {})
    assert problems == ["auth.control_token_env: environment variable GW_TOKEN is not set"]
    data["auth"] = {"control_token_env": "not a name!"}
    assert "must name an environment variable" in problems_of(data)[0]


def test_unknown_default_route_and_provider_type():
    data = base_config()
    data["default_route"] = "missing"
    data["providers"]["x"] = {"type": "mp3-magic"}
    problems = problems_of(data)
    assert any(p.startswith("default_route:") for p in problems)
    assert any(p.startswith("providers.x.type:") for p in problems)


def test_missing_local_extra_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "piper", None)  # makes `import piper` raise ImportError
    config = parse_config(base_config(), {})
    with pytest.raises(ConfigError) as info:
        build_providers(config)
    (problem,) = info.value.problems
    assert problem.startswith("providers.local:")
    assert "pip install 'tts-gateway[local]'" in problem


def test_check_config_cli(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", "--config",
                         str(ROOT / "gateway.yaml")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""
        providers:
          local: {type: piper}
        routes:
          demo: {provider: elsewhere}
        playout: {lead_ms: 1}
    """))
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", "--config", str(bad)],
        capture_output=True, text=True)
    assert out.returncode == 2
    assert "routes.demo.provider" in out.stderr and "playout.lead_ms" in out.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("routes: [unclosed")
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", "--config",
                          str(broken)], capture_output=True, text=True)
    assert out.returncode == 2 and "not valid YAML" in out.stderr


def remote_config(kind: str, **provider) -> dict:
    data = base_config()
    data["providers"]["tts"] = {"type": kind, "api_key_env": "TTS_KEY",
                                "voice": {"inworld": "Ashley", "smallest": "meher",
                                          "together": "af_alloy"}[kind], **provider}
    data["routes"]["demo"]["provider"] = "tts"
    return data


@pytest.mark.parametrize("kind", ["inworld", "smallest", "together"])
def test_remote_provider_reads_its_key_from_the_environment_and_has_pool_defaults(kind):
    config = parse_config(remote_config(kind), {"TTS_KEY": "s3cret-value"})
    pc = config.providers["tts"]
    assert pc.api_key == "s3cret-value" and "s3cret-value" not in repr(pc)
    assert pc.endpoint.startswith("wss://")
    assert pc.pool.min_idle == 2 and pc.pool.max == 50
    assert pc.pool.calls_per_connection == 1


def test_remote_provider_problems_name_their_keys_and_never_the_secret():
    env = {"TTS_KEY": "s3cret-value"}
    assert problems_of(remote_config("inworld", api_key_env="MISSING_VAR"), env) == [
        "providers.tts.api_key_env: environment variable MISSING_VAR is not set"]
    data = remote_config("smallest", endpoint="https://api.example/ws", model="lightning_v9",
                         options={"timeout_s": 60, "colour": "blue"},
                         pool={"min_idle": 9, "max": 3, "calls_per_connection": 2})
    problems = problems_of(data, env)
    assert any(p.startswith("providers.tts.endpoint:") and "ws://" in p for p in problems)
    assert any(p.startswith("providers.tts.pool.calls_per_connection:") for p in problems)
    assert any(p.startswith("providers.tts.pool.min_idle:") for p in problems)
    assert not any("s3cret" in p for p in problems)
    # the provider's own protocol module judges model and options
    data = remote_config("smallest", model="lightning_v9")
    [problem] = problems_of(data, env)
    assert problem.startswith("providers.tts:") and "lightning_v9" in problem
    [problem] = problems_of(remote_config("together", options={"colour": "blue"}), env)
    assert problem.startswith("providers.tts:") and "colour" in problem
    del data["providers"]["tts"]["api_key_env"]
    assert any(p.startswith("providers.tts.api_key_env: required") for p in problems_of(data, env))


def test_check_config_accepts_a_remote_provider_with_its_key_set(tmp_path):
    import yaml

    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(remote_config("together")))
    cmd = [sys.executable, "-m", "gateway.cli", "check-config", "--config", str(path)]
    ok = subprocess.run(cmd, capture_output=True, text=True, env={"TTS_KEY": "k", "PATH": ""})
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(cmd, capture_output=True, text=True, env={"PATH": ""})
    assert bad.returncode != 0 and "TTS_KEY" in bad.stdout + bad.stderr


def test_carriers_as_a_list_take_each_carriers_defaults():
    data = base_config()
    data["carriers"] = ["twilio", "vonage", "exotel"]
    config = parse_config(data, {})
    assert list(config.carriers) == ["twilio", "vonage", "exotel"]
    assert config.carriers["vonage"].options == {"sample_rate": 16000}
    assert config.carriers["twilio"].secrets == {} and config.carriers["twilio"].lead_ms is None


def test_carrier_settings_read_secrets_from_the_environment_and_never_print_them():
    data = base_config()
    data["routes"]["demo"]["token_env"] = "DEMO_TOKEN"
    data["carriers"] = {
        "twilio": {"auth_token_env": "TWILIO_AUTH_TOKEN"},
        "plivo": {"auth_token_env": "PLIVO_AUTH_TOKEN", "content_type": "audio/x-l16",
                  "sample_rate": 16000},
        "exotel": {"username": "bot", "password_env": "EXOTEL_PASSWORD", "sample_rate": 16000},
        "audiosocket": {"port": 0, "route": "demo", "lead_ms": 0},
    }
    env = {"TWILIO_AUTH_TOKEN": "tw-secret-1", "PLIVO_AUTH_TOKEN": "pl-secret-2",
           "EXOTEL_PASSWORD": "ex-secret-3", "DEMO_TOKEN": "route-secret-4"}
    config = parse_config(data, env)
    assert config.carriers["twilio"].secrets == {"auth_token": "tw-secret-1"}
    assert config.carriers["plivo"].options == {"content_type": "audio/x-l16", "sample_rate": 16000}
    assert config.carriers["exotel"].secrets["password"] == "ex-secret-3"
    assert config.carriers["audiosocket"].lead_ms == 0
    assert config.routes["demo"].token == "route-secret-4"
    printed = repr(config)
    assert not any(secret in printed for secret in env.values())


def test_bad_carrier_settings_are_named():
    data = base_config()
    data["carriers"] = {
        "skype": {},
        "vonage": {"sample_rate": 11025},
        "plivo": {"content_type": "audio/x-mulaw", "sample_rate": 16000},
        "exotel": {"username": "bot"},  # no password_env
        "twilio": {"auth_token_env": "UNSET_VARIABLE", "bogus": 1},
        "audiosocket": {"route": "nowhere"},
    }
    problems = problems_of(data)
    assert any(p.startswith("carriers.skype: unknown carrier") for p in problems)
    assert any(p.startswith("carriers.vonage.sample_rate: 11025") for p in problems)
    assert any(p.startswith("carriers.plivo.sample_rate: audio/x-mulaw") for p in problems)
    assert any(p.startswith("carriers.exotel: basic auth needs both") for p in problems)
    assert any("UNSET_VARIABLE is not set" in p for p in problems)
    assert any(p.startswith("carriers.twilio.bogus: unknown key") for p in problems)
    assert any(p.startswith("carriers.audiosocket.route: 'nowhere'") for p in problems)
    assert len(problems) == 7


def test_a_routes_unknown_key_names_every_key_a_route_takes():
    data = base_config()
    data["routes"]["demo"]["bogus"] = 1
    [problem] = problems_of(data)
    assert problem.startswith("routes.demo.bogus: unknown key (allowed: ")
    for allowed in ("provider", "fallback", "flow", "greeting", "barge_in", "token_env"):
        assert allowed in problem
