"""Exotel's check of who is calling: HTTP Basic credentials, which Exotel takes from the
userinfo of the Voicebot applet's stream URL (``wss://user:pass@host``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.carriers.auth import CarrierRequest, Refusal, check_basic


async def check_answer(request: CarrierRequest, options: Mapping[str, Any],
                       secrets: Mapping[str, str]) -> tuple[Refusal | None, bool]:
    # optional: an applet URL with user:pass@ proves itself; one without is answered
    # with a stream URL that carries no credentials
    authorization = request.headers.get("Authorization")
    if "password" not in secrets or not authorization:
        return None, False
    if check_basic(options["username"], secrets["password"], authorization):
        return None, True
    return Refusal("basic", "HTTP Basic credentials do not match"), False
