"""SignalWire's cXML media streams (Twilio's wire protocol): the protocol, the cXML answer,
the bearer-token or signature check, the simulator."""

from gateway.carriers.signalwire import answer, auth
from gateway.carriers.signalwire.protocol import SignalWireProtocol
from gateway.carriers.spec import CarrierSpec

SPEC = CarrierSpec(
    name="signalwire",
    protocol=SignalWireProtocol,
    simulator="gateway.carriers.signalwire.sim:SignalWireCall",
    options={"codec": (str, "PCMU", ("PCMU", "PCMA", "L16@8000h", "L16@16000h"))},
    secrets=("auth_token_env", "bearer_token_env"),
    check_media=auth.check_media,
    check_answer=auth.check_answer,
    answer=answer.document,
    document_secrets=("bearer_token",),
    route_as_parameter=True,
)
