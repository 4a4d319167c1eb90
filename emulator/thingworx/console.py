"""The stand-in's web console: one static page that browses bound Things and runs their services.

The page (``static/console.html`` with ``console.css`` and ``console.js``, vanilla JS, no build
step) talks only to the stand-in's own REST convention (``GET /Thingworx/Things``,
``GET /Thingworx/Things/{thing}/ServiceDefinitions``,
``POST /Thingworx/Things/{thing}/Services/{service}``) with the application key the user types
once (or passes as ``#appKey=...`` in the URL). docs/console.md describes it.

Rules:
- Only the three files in :data:`CONSOLE_ASSETS` are served, read from the installed package
  (``importlib.resources``), so no request path ever reaches the file system.
- The page is served without the application key (it holds no data); every data request it makes
  carries the key and is checked by the REST routes.
- Every answer carries a Content-Security-Policy that allows nothing but this origin: the console
  never loads anything from the internet.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

__all__ = [
    "ASSET_PREFIX",
    "CONSOLE_ASSETS",
    "CONSOLE_PATHS",
    "CONTENT_SECURITY_POLICY",
    "add_console_routes",
    "console_asset",
]

CONSOLE_PATHS = ("/", "/Thingworx/Console", "/Thingworx/Console/")
"""Where the page is served."""

ASSET_PREFIX = "/Thingworx/static"
"""URL prefix of the page's stylesheet and script (the page names them absolutely)."""

CONSOLE_ASSETS: dict[str, str] = {
    "console.html": "text/html",
    "console.css": "text/css",
    "console.js": "text/javascript",
}
"""File name → content type of every file the console serves."""

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Same origin only: the page fetches nothing from anywhere else."""

_PACKAGE = "emulator.thingworx"


def console_asset(name: str) -> bytes:
    """The bytes of one console file, from the installed package.

    Args:
        name: a key of :data:`CONSOLE_ASSETS`.

    Returns:
        The file's content.

    Raises:
        KeyError: ``name`` is not a console file.
        FileNotFoundError: the package was installed without its static files.
    """
    if name not in CONSOLE_ASSETS:
        raise KeyError(name)
    return resources.files(_PACKAGE).joinpath("static", name).read_bytes()


def _response(name: str) -> web.Response:
    return web.Response(
        body=console_asset(name),
        content_type=CONSOLE_ASSETS[name],
        charset="utf-8",
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


async def _page(request: web.Request) -> web.StreamResponse:
    return _response("console.html")


async def _asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in CONSOLE_ASSETS:
        raise web.HTTPNotFound(text=f"no console file {name!r}\n")
    return _response(name)


def add_console_routes(app: web.Application) -> None:
    """Serve the console on ``app``: the page at :data:`CONSOLE_PATHS`, its files under
    :data:`ASSET_PREFIX`.

    Args:
        app: the stand-in's aiohttp application (before it is started).

    Raises:
        RuntimeError: ``app`` already routes one of these paths (aiohttp refuses the duplicate).
    """
    routes = [web.get(path, _page) for path in CONSOLE_PATHS]
    routes.append(web.get(ASSET_PREFIX + "/{name}", _asset))
    app.add_routes(routes)
