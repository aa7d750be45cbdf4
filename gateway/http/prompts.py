"""The prompt cache's control endpoints: ``GET /v1/prompts`` lists the entries,
``DELETE /v1/prompts`` empties the cache (``?route=NAME``: the entries that route wrote or
played). Guarded like the rest of the control API (gateway/http/control_access.py)."""

from __future__ import annotations

from aiohttp import web

from gateway.http.keys import CONFIG, METRICS, SERVICES, json_error

routes = web.RouteTableDef()

#: entries listed at most (the newest first); the count says how many there are
MAX_LISTED = 1000


@routes.get("/v1/prompts")
async def list_prompts(request: web.Request) -> web.Response:
    store = request.app[SERVICES].prompts
    return web.json_response({"entries": len(store), "bytes": store.bytes,
                              "max_bytes": store.max_bytes,
                              "prompts": store.entries()[:MAX_LISTED]})


@routes.delete("/v1/prompts")
async def purge_prompts(request: web.Request) -> web.Response:
    route = request.query.get("route")
    if route is not None and route not in request.app[CONFIG].routes:
        request.app[METRICS].control_errors.labels("bad_request").inc()
        return json_error(400, "route: not a configured route")
    removed = await request.app[SERVICES].prompts.purge(route)
    return web.json_response({"route": route, "removed": removed})
