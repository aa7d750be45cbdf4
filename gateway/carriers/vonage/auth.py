"""Vonage's check of who is calling: ``Authorization: Bearer <HS256 JWT>`` signed with the
account's signature secret, on the stream (the NCCO's ``authorization: {"type": "vonage"}``)
and on the answer webhook."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jwt

from gateway.carriers.auth import CarrierRequest, Refusal, bearer

JWT_LEEWAY_S = 30
# Vonage honours a JWT without ``exp`` for 15 minutes after ``iat`` (Vonage API support,
# "How long is my JSON Web Token valid for?"); we hold its tokens to the same bound.
JWT_MAX_AGE_S = 15 * 60


def vonage_jwt_problem(signature_secret: str, authorization: str | None,
                       now: float | None = None) -> str | None:
    """Why Vonage's JWT is not acceptable, or ``None`` if it is.

    HS256 only (so ``alg: none`` and every other algorithm are refused), signed with the
    account signature secret, as Vonage's own SDK verifies it (vonage-python-sdk
    ``vonage_jwt/verify_jwt.py``: ``jwt.decode(token, secret, algorithms='HS256')``).
    ``iat`` is required and may not be in the future; ``exp`` is honoured when present;
    either way a token older than ``JWT_MAX_AGE_S`` is refused. ``payload_hash`` is not
    checked: Vonage says it is needed only over plain HTTP, and carriers reach us over TLS.
    """
    token = bearer(authorization)
    if token is None:
        return "Authorization: Bearer <JWT> is missing"
    now = time.time() if now is None else now
    try:
        claims = jwt.decode(token, signature_secret, algorithms=["HS256"],
                            options={"require": ["iat"]}, leeway=JWT_LEEWAY_S)
        # PyJWT checks iat against the wall clock; ``now`` is for tests and replay bounds
        if claims["iat"] > now + JWT_LEEWAY_S:
            return "the JWT is issued in the future"
        if now - claims["iat"] > JWT_MAX_AGE_S + JWT_LEEWAY_S:
            return "the JWT is too old"
    except jwt.ExpiredSignatureError:
        return "the JWT has expired"
    except jwt.ImmatureSignatureError:
        return "the JWT is not valid yet"
    except jwt.MissingRequiredClaimError:
        return "the JWT has no iat claim"
    except jwt.InvalidAlgorithmError:
        return "the JWT is not signed with HS256"
    except jwt.InvalidSignatureError:
        return "the JWT signature does not match"
    except jwt.InvalidTokenError as exc:
        return f"the JWT is malformed ({type(exc).__name__})"
    return None


def check_media(request: CarrierRequest, options: Mapping[str, Any],
                secrets: Mapping[str, str]) -> Refusal | None:
    if "signature_secret" not in secrets:
        return None
    problem = vonage_jwt_problem(secrets["signature_secret"], request.headers.get("Authorization"))
    return Refusal("jwt", problem) if problem else None


async def check_answer(request: CarrierRequest, options: Mapping[str, Any],
                       secrets: Mapping[str, str]) -> tuple[Refusal | None, bool]:
    if "signature_secret" not in secrets:
        return None, False
    # "Voice API ... support[s] signed callbacks by default" (Vonage Voice API webhook
    # reference): the answer webhook carries the same kind of JWT as the stream
    refusal = check_media(request, options, secrets)
    return refusal, refusal is None
