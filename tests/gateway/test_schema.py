"""The settings validator (gateway/schema.py): every problem at once, each naming its key."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.schema import Problems, computed, read, secret, setting


@dataclass(frozen=True)
class Inner:
    mode: str = setting("off", choices=("off", "on"))


@dataclass(frozen=True)
class Section:
    name: str = computed("")
    port: int = setting(8080, 0, 65535)
    ratio: float = setting(1.0, 0.5)
    url: str | None = setting(pattern=r"^https?://", hint="an http(s) URL")
    enabled: bool = True
    token: str | None = secret()
    key: str | None = secret(required=True, what="the API key")
    inner: Inner = field(default_factory=Inner)
    optional: Inner | None = None

    def problems(self, key: str) -> list[str]:
        return [f"{key}.port: must not be 1"] if self.port == 1 else []


def test_a_valid_section_reads_with_its_defaults_and_secrets_from_the_environment():
    problems = Problems()
    got = read(problems, Section, {"ratio": 2, "key_env": "K", "inner": {"mode": "on"}}, "s",
               {"K": "v"}, name="x")
    assert problems == []
    assert got == Section(name="x", ratio=2.0, key="v", inner=Inner("on"))
    assert isinstance(got.ratio, float) and got.optional is None
    assert "v" not in repr(got)


def test_every_problem_is_reported_each_naming_its_key():
    problems = Problems()
    got = read(problems, Section, {"port": 70000, "ratio": "x", "url": "ftp://a",
                                   "enabled": 1, "token_env": "not a name", "bogus": 1,
                                   "name": "y", "inner": {"mode": "maybe"},
                                   "optional": {}}, "s", {})
    assert problems == [
        "s.bogus: unknown key (allowed: enabled, inner, key_env, optional, port, ratio, "
        "token_env, url)",
        "s.name: unknown key (allowed: enabled, inner, key_env, optional, port, ratio, "
        "token_env, url)",
        "s.port: 70000 is outside 0..65535",
        "s.ratio: expected float, got 'x'",
        "s.url: 'ftp://a' must be an http(s) URL",
        "s.enabled: expected bool, got 1",
        "s.token_env: must name an environment variable, e.g. MY_TOKEN (secrets are never "
        "written into gateway.yaml)",
        "s.key_env: required: the environment variable holding the API key",
        "s.inner.mode: 'maybe' is not one of off, on",
    ]
    assert got.port == 8080 and got.optional == Inner()


def test_a_section_checks_its_own_cross_field_rules_and_a_missing_variable_is_named():
    problems = Problems()
    read(problems, Section, {"port": 1, "key_env": "UNSET"}, "s", {})
    assert problems == ["s.key_env: environment variable UNSET is not set", "s.port: must not be 1"]


def test_a_section_that_is_not_a_mapping_is_one_problem():
    problems = Problems()
    assert read(problems, Inner, ["off"], "s") == Inner()
    assert problems == ["s: expected a mapping, got list"]


def test_keys_the_caller_reads_itself_are_allowed_and_named():
    problems = Problems()
    read(problems, Inner, {"mode": "on", "kind": "x", "bogus": 1}, "s", also_allowed=("kind",))
    assert problems == ["s.bogus: unknown key (allowed: kind, mode)"]
