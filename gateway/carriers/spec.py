"""What a carrier declares about itself, once: :class:`CarrierSpec`.

Each carrier's package (``gateway/carriers/<carrier>/__init__.py``) exports ``SPEC``; the
registry (``gateway/carriers/registry.py``) collects them, and the configuration, the
HTTP endpoints, the metrics, ``dial`` and the CLI read the carriers from there.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from gateway.carriers.answer import AnswerDocument
from gateway.carriers.auth import AnswerCheck, MediaCheck
from gateway.carriers.base import CarrierProtocol

if TYPE_CHECKING:
    from gateway.sim.carriers.call import CarrierCall

#: one ``carriers.<carrier>.<option>``: (type, default, the values allowed or None)
Option = tuple[type, Any, "tuple | None"]
#: ``check(options, secrets)``: problems across settings, as (option or None, message)
OptionsCheck = Callable[[Mapping[str, Any], Mapping[str, str]], list[tuple["str | None", str]]]
#: how the carrier reaches the gateway: ``/v1/media/{carrier}`` or its own TCP listener
#: (whose settings are then ``host``, ``port`` and ``route``)
Transport = Literal["websocket", "tcp"]


@dataclass(frozen=True)
class CarrierSpec:
    name: str
    #: the sans-I/O protocol of one stream (``protocol.py``)
    protocol: type[CarrierProtocol]
    #: the simulated carrier as ``module:Class`` (``sim.py``, a
    #: :class:`~gateway.sim.carriers.call.CarrierCall`), imported when a call is placed so
    #: the server never loads the simulators
    simulator: str
    #: its ``carriers.<carrier>`` settings
    options: Mapping[str, Option] = field(default_factory=dict)
    #: its secrets, as the ``*_env`` keys that name their environment variables; every check
    #: built on a secret is on when it is set
    secrets: tuple[str, ...] = ()
    check_options: OptionsCheck | None = None
    transport: Transport = "websocket"
    #: who may open a media stream (``auth.py``); None: only the route's token
    check_media: MediaCheck | None = None
    #: who may fetch the answer document; None: only the route's token
    check_answer: AnswerCheck | None = None
    #: the answer document (``answer.py``); None: the carrier fetches none (its dialplan
    #: connects the call)
    answer: AnswerDocument | None = None
    #: secrets the answer document carries only for a verified request
    document_secrets: tuple[str, ...] = ()
    #: the route may travel as the stream's ``route`` custom parameter instead of in the path
    route_as_parameter: bool = False
    #: the codes its errors (``CarrierFault.code``) may carry: the metric's label values
    fault_codes: frozenset[str] = frozenset()

    @property
    def display_name(self) -> str:
        return self.protocol.display_name

    def new_protocol(self, options: Mapping[str, Any]) -> CarrierProtocol:
        """The protocol for one stream, set up from the carrier's ``carriers:`` settings
        (what the gateway's answer document told the carrier, where that matters)."""
        return self.protocol.from_options(options)

    def simulator_class(self) -> type[CarrierCall]:
        module, name = self.simulator.split(":")
        return getattr(importlib.import_module(module), name)
