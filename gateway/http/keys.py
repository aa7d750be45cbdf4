"""Typed application keys shared by the HTTP handlers, and the JSON error shape."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from gateway.config import GatewayConfig
from gateway.core.call import Call, CallServices
from gateway.core.playout import MediaClock
from gateway.http.drain import Drain
from gateway.metrics import Metrics
from gateway.tts.base import TtsProvider

if TYPE_CHECKING:  # redis is imported only where cluster.redis_url is set
    from gateway.cluster.directory import CallDirectory

CONFIG = web.AppKey("config", GatewayConfig)
METRICS = web.AppKey("metrics", Metrics)
CLOCK = web.AppKey("clock", MediaClock)
PROVIDERS = web.AppKey("providers", dict[str, TtsProvider])
CALLS = web.AppKey("calls", dict[str, Call])
SERVICES = web.AppKey("services", CallServices)
HTTP = web.AppKey("http", aiohttp.ClientSession)
#: the listeners of the carriers that connect over plain TCP (AudioSocket), by carrier
TCP_LISTENERS = web.AppKey("tcp_listeners", dict[str, asyncio.AbstractServer])
#: set once the prompt cache is indexed (and warmed, with prompt_cache.warm_on_start)
PROMPTS_READY = web.AppKey("prompts_ready", asyncio.Event)
DRAIN = web.AppKey("drain", Drain)  # set at start-up; see gateway/http/drain.py
#: this process's number among ``serve --workers N`` (0 .. N-1); absent in a single process,
#: whose listeners then bind without SO_REUSEPORT, exactly as before (gateway/workers.py)
WORKER = web.AppKey("worker", int)
#: with cluster.redis_url: the call directory and instance registry (gateway/cluster/)
CLUSTER: web.AppKey[CallDirectory] = web.AppKey("cluster")


def json_error(status: int, message: str, **extra) -> web.Response:
    return web.json_response({"error": {"status": status, "message": message, **extra}},
                             status=status)
