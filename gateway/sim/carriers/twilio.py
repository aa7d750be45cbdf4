"""Twilio and SignalWire behind the common call API.

Both reuse :class:`gateway.sim.twilio.TwilioCallSim` unchanged (SignalWire's cXML
``<Connect><Stream>`` speaks Twilio's wire protocol, carriers.md §6.1); this module only
adds the common surface: ``call_id``, ``format``, a :class:`CarrierCallResult`.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, ClassVar

from gateway.sim.carriers.call import ResultWaits
from gateway.sim.carriers.formats import WireFormat, parse_format
from gateway.sim.carriers.result import CarrierCallResult
from gateway.sim.twilio import TwilioCallResult, TwilioCallSim

_RENAMED = {"call_sid": "call_id", "stream_sid": "stream_id"}
_COMMON_FIELDS = {f.name for f in fields(CarrierCallResult)}


class TwilioCall(ResultWaits, TwilioCallSim):
    carrier: ClassVar[str] = "twilio"
    formats: ClassVar[tuple[str, ...]] = ("mulaw/8000",)
    has_marks: ClassVar[bool] = True
    has_clear: ClassVar[bool] = True

    def __init__(self, url: str, *, call_id: str | None = None, media_format: str | None = None,
                 underrun_tolerance: float | None = None, **options: Any) -> None:
        self.format: WireFormat = parse_format(media_format or self.formats[0], self.formats,
                                               carrier=self.carrier)
        super().__init__(url, call_sid=call_id, **options)
        if underrun_tolerance is not None:
            self.model.underrun_tolerance = underrun_tolerance

    @property
    def call_id(self) -> str:
        return self.call_sid

    @property
    def stream_id(self) -> str:
        return self.stream_sid

    @property
    def result(self) -> CarrierCallResult:  # type: ignore[override]
        base: TwilioCallResult = super().result
        values = {_RENAMED.get(f.name, f.name): getattr(base, f.name) for f in fields(base)
                  if _RENAMED.get(f.name, f.name) in _COMMON_FIELDS}
        values.update(marks_dropped=[], notices_sent=[], bursts=[], gateway_dtmf=[])
        return CarrierCallResult(carrier=self.carrier, format=self.format, **values)


class SignalWireCall(TwilioCall):
    """SignalWire's media stream: Twilio's messages, at ``/v1/media/signalwire``."""

    carrier = "signalwire"
