"""Telnyx media streaming: the protocol, the TeXML answer, the simulator. Telnyx signs no
stream: a route's token is the check."""

from gateway.carriers.spec import CarrierSpec
from gateway.carriers.telnyx import answer
from gateway.carriers.telnyx.protocol import FAULT_CODES, TelnyxProtocol

SPEC = CarrierSpec(
    name="telnyx",
    protocol=TelnyxProtocol,
    simulator="gateway.carriers.telnyx.sim:TelnyxCall",
    options={"codec": (str, "PCMU", ("PCMU", "PCMA", "L16")),
             "sample_rate": (int, 8000, (8000, 16000))},
    answer=answer.document,
    fault_codes=FAULT_CODES,
)
