"""Settings declared once, read by one validator.

A section of ``gateway.yaml`` is a frozen dataclass whose fields say everything about a
key: its type (the annotation), its default, its bounds or allowed values (``setting``),
and whether it is a secret read from the environment (``secret``: the YAML key is
``<name>_env`` and names the variable). :func:`read` walks such a class over a YAML
mapping and collects every problem, each naming its key, instead of stopping at the
first; a section's own cross-field rules live in its ``problems(key)`` method.

Chosen over pydantic or msgspec: the sections are plain dataclasses already, the messages
are this project's own (``check-config`` prints them and tests hold them), and it adds no
dependency for ~100 lines.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def setting(default: Any = None, minimum: float | None = None, maximum: float | None = None, *,
            choices: Iterable[Any] | None = None, pattern: str | None = None,
            hint: str = "") -> Any:
    """A field of a settings class: its default and what values it accepts. ``pattern``
    is a regular expression a string must match (``hint`` says what it should look like)."""
    meta = {"minimum": minimum, "maximum": maximum,
            "choices": tuple(choices) if choices is not None else None,
            "pattern": pattern, "hint": hint}
    return dataclasses.field(default=default, metadata=meta)


def secret(*, required: bool = False, what: str = "") -> Any:
    """A secret: the YAML key ``<name>_env`` names the environment variable holding it.
    Never printed (``repr=False``)."""
    return dataclasses.field(default=None, repr=False,
                             metadata={"secret": True, "required": required, "what": what})


def computed(default: Any = None) -> Any:
    """A field set by the code, not read from the YAML section (e.g. the section's name)."""
    return dataclasses.field(default=default, metadata={"computed": True})


class Problems(list):
    """Every problem found, each naming its key, in the order found."""

    def mapping(self, value: Any, key: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.append(f"{key}: expected a mapping, got {type(value).__name__}")
            return {}
        return value

    def unknown(self, section: Mapping, key: str, allowed: Iterable[str]) -> None:
        allowed = set(allowed)
        for name in section:
            if name not in allowed:
                where = f"{key}.{name}" if key else str(name)
                self.append(f"{where}: unknown key (allowed: {', '.join(sorted(allowed))})")

    def value(self, section: Mapping, name: str, key: str, kind: type, default: Any, *,
              minimum: float | None = None, maximum: float | None = None,
              choices: tuple | None = None, pattern: str | None = None,
              hint: str = "") -> Any:
        """``section[name]`` checked against its type and bounds; the default (and a
        problem) when it is wrong."""
        value: Any = section.get(name, default)
        if value is None:
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        # (a flag, not an isinstance test in the if: that would narrow ``value`` to ``object``)
        wrong_kind = not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)
        if wrong_kind:
            self.append(f"{key}.{name}: expected {kind.__name__}, got {value!r}")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.append(f"{key}.{name}: {value!r} is outside {minimum}..{maximum}")
            return default
        if choices is not None and value not in choices:
            self.append(f"{key}.{name}: {value!r} is not one of {', '.join(map(str, choices))}")
            return default
        if pattern is not None and not re.match(pattern, value):
            self.append(f"{key}.{name}: {value!r} must be {hint or 'like ' + pattern}")
            return default
        return value

    def secret(self, section: Mapping, name: str, key: str,
               environ: Mapping[str, str]) -> str | None:
        """Read ``name`` (e.g. ``token_env``): the name of an environment variable."""
        var = section.get(name)
        if var is None:
            return None
        if not isinstance(var, str) or not _ENV_NAME.match(var):
            self.append(f"{key}.{name}: must name an environment variable, e.g. MY_TOKEN "
                        "(secrets are never written into gateway.yaml)")
            return None
        value = environ.get(var)
        if not value:
            self.append(f"{key}.{name}: environment variable {var} is not set")
            return None
        return value


def yaml_keys(cls: type) -> list[str]:
    """The keys a section of ``cls`` accepts."""
    return [f"{f.name}_env" if f.metadata.get("secret") else f.name
            for f in dataclasses.fields(cls) if not f.metadata.get("computed")]


def read(problems: Problems, cls: type[T], value: Any, key: str,
         environ: Mapping[str, str] | None = None, *, also_allowed: Iterable[str] = (),
         **computed_values: Any) -> T:
    """An instance of the settings class ``cls`` from the YAML ``value`` at ``key``:
    every field checked, unknown keys reported (``also_allowed``: keys the caller reads
    itself), defaults where a value is missing or wrong, then the class's own
    ``problems(key)``."""
    section = problems.mapping(value, key)
    problems.unknown(section, key, [*yaml_keys(cls), *also_allowed])
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = dict(computed_values)
    for f in dataclasses.fields(cls):
        if f.metadata.get("computed"):
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        else:
            factory = f.default_factory
            assert callable(factory), f"{cls.__name__}.{f.name} has no default"
            default = factory()
        kind = _plain_type(hints[f.name])
        if f.metadata.get("secret"):
            found = problems.secret(section, f"{f.name}_env", key, environ or {})
            if found is None and f.metadata.get("required") and f"{f.name}_env" not in section:
                problems.append(f"{key}.{f.name}_env: required: the environment variable "
                                f"holding {f.metadata.get('what') or 'the ' + f.name}")
            values[f.name] = found
        elif isinstance(kind, type) and dataclasses.is_dataclass(kind):
            if section.get(f.name) is None and default is None:
                values[f.name] = None  # an optional section left out
            else:
                values[f.name] = read(problems, kind, section.get(f.name), f"{key}.{f.name}",
                                      environ)
        else:
            meta = f.metadata
            values[f.name] = problems.value(
                section, f.name, key, kind, default, minimum=meta.get("minimum"),
                maximum=meta.get("maximum"), choices=meta.get("choices"),
                pattern=meta.get("pattern"), hint=meta.get("hint", ""))
    result = cls(**values)
    check = getattr(result, "problems", None)
    if check is not None:
        problems.extend(check(key))
    return result


def _plain_type(hint: Any) -> Any:
    """``int | None`` -> ``int``: a missing value is the default."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint
