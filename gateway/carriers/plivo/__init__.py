"""Plivo audio streams: the protocol, the Plivo XML answer, the V3 signature check, the
simulator."""

from collections.abc import Mapping
from typing import Any

from gateway.carriers.plivo import answer, auth
from gateway.carriers.plivo.protocol import PlivoProtocol
from gateway.carriers.spec import CarrierSpec


def _check_options(options: Mapping[str, Any], secrets: Mapping[str, str]
                   ) -> list[tuple[str | None, str]]:
    if options["content_type"] == "audio/x-mulaw" and options["sample_rate"] != 8000:
        return [("sample_rate", "audio/x-mulaw comes at 8000 Hz only")]
    return []


SPEC = CarrierSpec(
    name="plivo",
    protocol=PlivoProtocol,
    simulator="gateway.carriers.plivo.sim:PlivoCall",
    options={"content_type": (str, "audio/x-mulaw", ("audio/x-mulaw", "audio/x-l16")),
             "sample_rate": (int, 8000, (8000, 16000))},
    secrets=("auth_token_env",),
    check_options=_check_options,
    check_media=auth.check_media,
    check_answer=auth.check_answer,
    answer=answer.document,
)
