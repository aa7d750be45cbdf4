"""Every remote provider, by ``type``: the ``SPEC`` (:mod:`.spec`) of each folder of this
package, found by walking it, so adding a provider is adding its folder (``protocol.py``,
``driver.py``, ``fake.py`` and ``SPEC`` in ``__init__.py``) and nothing else here."""

from __future__ import annotations

import importlib
import pkgutil

import gateway.tts.providers as _package
from gateway.tts.providers.spec import ProviderSpec


def _discover() -> dict[str, ProviderSpec]:
    specs: dict[str, ProviderSpec] = {}
    for module in sorted(pkgutil.iter_modules(_package.__path__), key=lambda m: m.name):
        if not module.ispkg:
            continue
        spec = importlib.import_module(f"{_package.__name__}.{module.name}").SPEC
        if not isinstance(spec, ProviderSpec) or spec.type != module.name:
            raise ImportError(f"gateway.tts.providers.{module.name}: SPEC must be a "
                              f"ProviderSpec whose type is the folder's name")
        specs[spec.type] = spec
    return specs


#: Every remote provider by ``type``, in alphabetical order.
PROVIDERS: dict[str, ProviderSpec] = _discover()
