"""Exotel's Voicebot (AgentStream): the protocol, the applet's answer, the Basic check, the
simulator."""

from gateway.carriers.auth import basic_media_check, basic_pair_problems
from gateway.carriers.exotel import answer, auth
from gateway.carriers.exotel.protocol import ExotelProtocol
from gateway.carriers.spec import CarrierSpec

SPEC = CarrierSpec(
    name="exotel",
    protocol=ExotelProtocol,
    simulator="gateway.carriers.exotel.sim:ExotelCall",
    options={"sample_rate": (int, 8000, (8000, 16000, 24000)), "username": (str, None, None)},
    secrets=("password_env",),
    check_options=basic_pair_problems,
    check_media=basic_media_check,
    check_answer=auth.check_answer,
    answer=answer.document,
    document_secrets=("password",),
)
