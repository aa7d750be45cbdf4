"""What the console shows besides the calls: the routes (for the call panel's picker) and
the latency histograms as JSON (for the latency plot). Both are under the control API's
guard (control_access.py): they reveal the configuration and the traffic.

``GET /v1/stats/latency`` gives each histogram's cumulative bucket counts with their count
and sum since the start, and p50/p95 estimated from the buckets; a client that polls plots
the rate of each window by differencing successive answers. Its size is bounded: providers
come from the configuration, carriers from the fixed set, buckets are fixed.
"""

from __future__ import annotations

import math
import time

from aiohttp import web

from gateway.carriers.registry import CARRIERS
from gateway.http.keys import CONFIG, METRICS

routes = web.RouteTableDef()


@routes.get("/v1/routes")
async def list_routes(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    return web.json_response({
        "default_route": config.default_route,
        "routes": [{"name": name, "provider": route.provider, "voice": route.voice,
                    "fallback": list(route.fallback), "flow": route.flow is not None,
                    "bot": route.bot is not None, "barge_in": route.barge_in.mode,
                    "greeting": route.greeting is not None, "token": route.token is not None}
                   for name, route in config.routes.items()],
        "carriers": [{"name": name, "transport": CARRIERS[name].transport}
                     for name in config.carriers],
    })


def histogram_series(metric, label: str) -> dict[str, dict]:
    """``{label value: {"count", "sum_ms", "le_ms", "cumulative", "p50_ms", "p95_ms"}}``
    for a histogram with one label, from its current samples."""
    series: dict[str, dict] = {}
    for family in metric.collect():
        for sample in family.samples:
            key = sample.labels.get(label)
            if key is None:
                continue
            entry = series.setdefault(key, {"count": 0, "sum_ms": 0.0, "le_ms": [],
                                            "cumulative": []})
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                entry["le_ms"].append(None if math.isinf(le) else round(le * 1000, 3))
                entry["cumulative"].append(int(sample.value))
            elif sample.name.endswith("_count"):
                entry["count"] = int(sample.value)
            elif sample.name.endswith("_sum"):
                entry["sum_ms"] = round(sample.value * 1000, 3)
    for entry in series.values():
        entry["p50_ms"] = quantile(0.5, entry["le_ms"], entry["cumulative"])
        entry["p95_ms"] = quantile(0.95, entry["le_ms"], entry["cumulative"])
    return series


def quantile(q: float, le_ms: list[float | None], cumulative: list[int]) -> float | None:
    """The ``q`` quantile estimated from cumulative buckets, interpolating linearly within
    the bucket it falls in (as Prometheus' histogram_quantile); None without samples. In
    the ``+Inf`` bucket it is the largest finite bound."""
    if not cumulative or cumulative[-1] == 0:
        return None
    rank = q * cumulative[-1]
    lower, below = 0.0, 0
    for bound, count in zip(le_ms, cumulative):
        if count >= rank:
            if bound is None:
                return lower
            inside = count - below
            share = (rank - below) / inside if inside else 1.0
            return round(lower + (bound - lower) * share, 3)
        lower, below = (bound if bound is not None else lower), count
    return lower


@routes.get("/v1/stats/latency")
async def latency(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    return web.json_response({
        "at": round(time.time(), 3),
        # text handed to a provider -> its first audio byte
        "first_audio": histogram_series(metrics.tts_first_chunk, "provider"),
        # speak request -> first frame of it sent to the carrier (what a caller waits)
        "first_frame": histogram_series(metrics.first_frame, "carrier"),
        # first provider byte in -> first carrier frame out: the gateway's own cost
        "gateway_added": histogram_series(metrics.gateway_added, "carrier"),
    })
