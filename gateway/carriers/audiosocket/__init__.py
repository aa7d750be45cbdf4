"""Asterisk's AudioSocket, over plain TCP: the protocol, the simulator. It carries no
credentials and fetches no answer document; the gateway's listener maps every call to one
route."""

from collections.abc import Mapping
from typing import Any

from gateway.carriers.audiosocket.protocol import FAULT_CODES, AudioSocketProtocol
from gateway.carriers.spec import CarrierSpec


def _check_options(options: Mapping[str, Any], secrets: Mapping[str, str]
                   ) -> list[tuple[str | None, str]]:
    if not 0 <= options["port"] <= 65535:
        return [("port", f"{options['port']} is not a TCP port")]
    return []


SPEC = CarrierSpec(
    name="audiosocket",
    protocol=AudioSocketProtocol,
    simulator="gateway.carriers.audiosocket.sim:AudioSocketCall",
    options={"host": (str, "127.0.0.1", None), "port": (int, 9092, None),
             "route": (str, None, None)},
    check_options=_check_options,
    transport="tcp",
    fault_codes=FAULT_CODES,
)
