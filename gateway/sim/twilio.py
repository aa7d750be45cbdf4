"""The fake Twilio under its original import path.

Twilio is one simulated carrier among the others: the model, the call and the result live
in :mod:`gateway.sim.carriers.twilio` on the shared base (playout, call driver, result).
This module keeps the names tests, benchmarks and ``dial`` import from here.
"""

from gateway.sim.carriers.twilio import (BYTES_PER_SECOND, CallClosedError, FrameTiming,
                                         TwilioCallResult, TwilioCallSim, TwilioPlayoutModel,
                                         twilio_signature)

__all__ = [
    "BYTES_PER_SECOND",
    "CallClosedError",
    "FrameTiming",
    "TwilioCallResult",
    "TwilioCallSim",
    "TwilioPlayoutModel",
    "twilio_signature",
]
