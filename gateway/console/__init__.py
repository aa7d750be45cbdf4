"""The browser console (``GET /``): plain HTML, CSS and JavaScript modules, no build step.

The files in ``static/`` are served as they are, from memory: they are read at start, and
only those names are served (no path from the request reaches the file system), each with
a content type chosen by its suffix, ``no-cache`` (the page is small; a deploy must not
leave tabs on old modules) and a content security policy that allows this origin only.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
          ".svg": "image/svg+xml"}
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # 'self' covers ws:/wss: to this host in CSP level 3; media only from this page's worklets
    "Content-Security-Policy": ("default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                                "style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
                                "base-uri 'none'; form-action 'none'"),
}


def _files() -> dict[str, tuple[bytes, str]]:
    """Every console file's bytes and content type, read once at import: a request never
    touches the disk (the files are a few kB each and do not change while running)."""
    return {p.name: (p.read_bytes(), _TYPES[p.suffix])
            for p in STATIC.iterdir() if p.is_file() and p.suffix in _TYPES}


FILES = _files()
routes = web.RouteTableDef()


def _serve(name: str) -> web.StreamResponse:
    found = FILES.get(name)
    if found is None:
        raise web.HTTPNotFound(text="no such console file")
    body, content_type = found
    return web.Response(body=body, content_type=content_type, charset="utf-8",
                        headers=_HEADERS)


@routes.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    return _serve("index.html")


@routes.get("/console/{name}")
async def static_file(request: web.Request) -> web.StreamResponse:
    return _serve(request.match_info["name"])
