"""Vonage's WebSocket endpoint: the protocol, the NCCO answer, the JWT check, the simulator."""

from gateway.carriers.spec import CarrierSpec
from gateway.carriers.vonage import answer, auth
from gateway.carriers.vonage.protocol import VonageProtocol

SPEC = CarrierSpec(
    name="vonage",
    protocol=VonageProtocol,
    simulator="gateway.carriers.vonage.sim:VonageCall",
    options={"sample_rate": (int, 16000, (8000, 16000, 24000))},
    secrets=("signature_secret_env",),
    check_media=auth.check_media,
    check_answer=auth.check_answer,
    answer=answer.document,
)
