"""The carrier registry: every carrier's SPEC is whole and agrees with its own package."""

from __future__ import annotations

import inspect

import pytest

from gateway.carriers.base import ByteStreamCarrierProtocol, CarrierProtocol
from gateway.carriers.registry import CARRIERS


def _members(protocol: type) -> set[str]:
    """What a structural interface declares: its methods, properties and annotations."""
    names = set()
    for cls in protocol.__mro__:
        if cls is object or cls.__module__ == "typing":
            continue
        names |= {name for name in vars(cls) if not name.startswith("_")}
        names |= set(getattr(cls, "__annotations__", {}))
    return names


@pytest.mark.parametrize("name", CARRIERS)
def test_each_carrier_speaks_the_carrier_protocol(name):
    spec = CARRIERS[name]
    interface = ByteStreamCarrierProtocol if spec.transport == "tcp" else CarrierProtocol
    protocol = spec.new_protocol({option: default for option, (_, default, _) in
                                  spec.options.items()})
    missing = sorted(member for member in _members(interface) if not hasattr(protocol, member))
    assert not missing, f"{name}'s protocol lacks {missing}"
    assert protocol.carrier == name == spec.name


@pytest.mark.parametrize("name", CARRIERS)
def test_each_carrier_names_its_own_simulator_and_settings(name):
    spec = CARRIERS[name]
    assert spec.simulator_class().carrier == name
    assert spec.simulator.startswith(f"gateway.carriers.{name}.")
    assert all(secret.endswith("_env") for secret in spec.secrets)
    for option, (kind, default, allowed) in spec.options.items():
        assert default is None or isinstance(default, kind), option
        assert allowed is None or default in allowed, option
    if spec.transport == "tcp":  # the gateway's listener for it reads these
        assert {"host", "port", "route"} <= set(spec.options)
    for check in (spec.check_media, spec.check_answer, spec.answer):
        assert check is None or inspect.getmodule(check).__name__.startswith(
            ("gateway.carriers.auth", f"gateway.carriers.{name}."))


def test_only_a_document_carrier_keeps_secrets_out_of_unverified_documents():
    for spec in CARRIERS.values():
        assert set(spec.document_secrets) <= {s.removesuffix("_env") for s in spec.secrets}
        if spec.document_secrets:
            assert spec.answer is not None and spec.check_answer is not None
