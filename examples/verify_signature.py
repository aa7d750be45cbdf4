"""Check that a WebSocket upgrade came from your tts-gateway (the README's snippet).

The gateway signs each call's upgrade to ``routes.<name>.bot.url`` with the route's secret:
``X-TTS-Gateway-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.{url}")>``, where
``timestamp`` is the ``X-TTS-Gateway-Timestamp`` header (unix seconds) and ``url`` is the
bot URL exactly as written in gateway.yaml. Standard library only.
"""

import hashlib
import hmac
import time


def verify_gateway_signature(headers, url: str, secret: str, *, window_s: int = 300,
                             now: float | None = None) -> bool:
    """True if ``headers`` (any case-insensitive mapping, e.g. aiohttp's request.headers)
    carry a valid signature of ``url`` made less than ``window_s`` seconds ago."""
    timestamp = headers.get("X-TTS-Gateway-Timestamp", "")
    signature = headers.get("X-TTS-Gateway-Signature", "")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > window_s:
        return False  # too old (a replayed upgrade) or from a clock far off
    expected = hmac.new(secret.encode(), f"{timestamp}.{url}".encode(), hashlib.sha256)
    return hmac.compare_digest(("v1=" + expected.hexdigest()).encode(),
                               signature.encode("utf-8", "replace"))
