"""Twilio Media Streams: the protocol, the TwiML answer, the signature check, the simulator."""

from gateway.carriers.spec import CarrierSpec
from gateway.carriers.twilio import answer, auth
from gateway.carriers.twilio.protocol import TwilioProtocol

SPEC = CarrierSpec(
    name="twilio",
    protocol=TwilioProtocol,
    simulator="gateway.carriers.twilio.sim:TwilioCall",
    secrets=("auth_token_env",),
    check_media=auth.check_media,
    check_answer=auth.check_answer,
    answer=answer.document,
    # Twilio forbids query strings in stream URLs: the route may ride as a <Parameter>
    route_as_parameter=True,
)
