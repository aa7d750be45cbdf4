"""Asterisk's chan_websocket: the protocol, the Basic check, the simulator. Asterisk fetches
no answer document: its dialplan connects the call."""

from gateway.carriers.asterisk.protocol import FAULT_CODES, AsteriskProtocol
from gateway.carriers.auth import basic_media_check, basic_pair_problems
from gateway.carriers.spec import CarrierSpec

SPEC = CarrierSpec(
    name="asterisk",
    protocol=AsteriskProtocol,
    simulator="gateway.carriers.asterisk.sim:AsteriskCall",
    options={"username": (str, None, None)},
    secrets=("password_env",),
    check_options=basic_pair_problems,
    check_media=basic_media_check,
    fault_codes=FAULT_CODES,
)
