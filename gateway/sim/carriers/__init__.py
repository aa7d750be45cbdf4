"""Simulated carriers: the client side of each carrier's media stream, for tests and ``dial``.

``make_call(carrier, base_url, ...)`` returns a call object with one API for every
carrier (see :class:`~gateway.sim.carriers.call.CarrierCall`): ``async with`` connects and
hangs up; ``wait_for_media``, ``wait_for_mark``, ``wait_for_clear``, ``wait_idle``,
``send_dtmf``, ``hangup``, ``drop``; ``result`` is a
:class:`~gateway.sim.carriers.result.CarrierCallResult`.

What every simulated carrier shares lives here (the call driver, the playout model, the
transports, the result); each carrier's own simulator is ``gateway/carriers/<carrier>/sim.py``
(named by its ``SPEC``): a sans-I/O model of what the carrier does with the gateway's
messages (``XxxModel``) and the asyncio call that speaks its wire protocol (``XxxCall``).
"""

from __future__ import annotations

from typing import Any

from gateway.carriers.registry import CARRIERS
from gateway.sim.carriers.auth import auth_headers
from gateway.sim.carriers.call import CallClosedError, CarrierCall
from gateway.sim.carriers.formats import WireFormat
from gateway.sim.carriers.result import CarrierCallResult

__all__ = ["CallClosedError", "CarrierCall", "CarrierCallResult", "WireFormat", "make_call",
           "media_url"]


def media_url(carrier: str, base_url: str, route: str | None = None,
              token: str | None = None) -> str:
    """``{base}/v1/media/{carrier}[/{route}][/{token}]`` with a ws(s):// scheme."""
    base = base_url.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[4:]
    url = f"{base}/v1/media/{carrier}"
    for part in (route, token):
        if part:
            url += f"/{part}"
    return url


def make_call(carrier: str, base_url: str, *, route: str | None = None, token: str | None = None,
              media_format: str | None = None, headers: dict[str, str] | None = None,
              auth: dict[str, str] | None = None, **options: Any) -> CarrierCall:
    """A simulated call from ``carrier`` into the gateway at ``base_url``.

    ``base_url`` is the gateway's ``ws://host:port`` (AudioSocket: ``tcp://host:port``,
    which takes no route or token: the gateway maps it to its default route).
    ``media_format`` is the format the carrier announces (``"mulaw/8000"``,
    ``"l16/16000"``...; each carrier's ``formats`` lists what it offers, the first is the
    default). ``headers`` are extra upgrade headers; ``auth`` the carrier's credentials
    (see :func:`~gateway.sim.carriers.auth.auth_headers`). Other options go to the call
    class: ``call_id``, ``custom_parameters``, ``inbound_audio`` (wire format, looped),
    ``caller_audio=(pcm16, rate)`` with ``caller_audio_at`` (seconds: real speech said then,
    over the silence or ``inbound_audio``; later speech: ``await call.speak_as_caller(pcm16,
    rate)``), ``line_echo_db`` (what the caller hears comes back that much weaker),
    ``connect_timeout``, ``underrun_tolerance``, and carrier-specific ones.
    """
    try:
        spec = CARRIERS[carrier]
    except KeyError:
        raise ValueError(f"unknown carrier {carrier!r}; choose one of "
                         f"{', '.join(CARRIERS)}") from None
    cls = spec.simulator_class()
    if spec.transport == "tcp":
        if route or token:
            raise ValueError(f"{spec.display_name} has no URL: the gateway maps its calls to "
                             "the default route, so route and token cannot be chosen")
        url = base_url
    else:
        url = media_url(carrier, base_url, route, token)
    all_headers = {**(headers or {}), **auth_headers(carrier, url, auth)}
    return cls(url, media_format=media_format, headers=all_headers, **options)
