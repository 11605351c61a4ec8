"""The HTTP apps the server benchmarks serve, and a command that serves one on a chosen loop.

Owns: ``asgi_app`` (a bare ASGI app for uvicorn with httptools, no framework), ``aiohttp_app``
(an aiohttp ``web.Application``), both answering ``GET /`` with a short plain-text body and
``GET /loop`` with a JSON description of the loop serving it; ``LOOP_SPECS``, the loop names the
benchmarks use and the ``module:factory`` string each stands for; and ``main``, which serves one
app on one loop in this process (``python -m benchmarks.server_apps --app uvicorn --loop tidal``).
Not here: load generation and statistics (benchmarks/httpload.py), the benchmarks
(benchmarks/servers.py, benchmarks/scale.py), gunicorn worker classes
(benchmarks/uvicorn_workers.py).

Invariants:
- ``GET /loop`` answers from inside the serving loop, so what it reports (the loop class's
  module, the process id, whether tidal's compiled build is in use) is what served the load.
- Importing this module imports neither aiohttp nor uvicorn: uvicorn's workers import
  ``asgi_app`` from here, and the benchmarks import ``LOOP_SPECS`` without either package.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final

# Loop name -> the "module:factory" string uvicorn's --loop takes (a zero-argument callable
# returning a new loop). "tidal" is either build: TIDAL_PURE=1 in the environment picks pure.
LOOP_SPECS: Final = {
    "asyncio": "asyncio:new_event_loop",
    "uvloop": "uvloop:new_event_loop",
    "tidal": "tidal:new_event_loop",
}

BODY: Final = b"Hello, World!"


def loop_description() -> dict[str, Any]:
    """What is serving this request: loop class module and name, pid, tidal's build."""
    loop = asyncio.get_running_loop()
    tidal = sys.modules.get("tidal")
    return {
        "loop": type(loop).__module__,
        "loop_class": type(loop).__qualname__,
        "pid": os.getpid(),
        "tidal_compiled": getattr(tidal, "COMPILED", None) if tidal is not None else None,
        "python": sys.version.split()[0],
    }


# -- a bare ASGI app (uvicorn + httptools) -----------------------------------------------------

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_TEXT_HEADERS: Final = [(b"content-type", b"text/plain"), (b"content-length", b"13")]


async def asgi_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """``GET /``: "Hello, World!"; ``GET /loop``: the JSON of ``loop_description()``."""
    if scope["type"] != "http":  # lifespan: nothing to set up
        return
    if scope["path"] == "/loop":
        body = json.dumps(loop_description()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    else:
        body, headers = BODY, _TEXT_HEADERS
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- aiohttp ---------------------------------------------------------------------------------


def aiohttp_app() -> Any:
    """An aiohttp ``web.Application`` with the same two routes as ``asgi_app``."""
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="text/plain")

    async def which_loop(request: web.Request) -> web.Response:
        return web.json_response(loop_description())

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/loop", which_loop)
    return app


def _new_loop(name: str) -> asyncio.AbstractEventLoop:
    module_name, _, attribute = LOOP_SPECS[name].partition(":")
    module = __import__(module_name)
    loop: asyncio.AbstractEventLoop = getattr(module, attribute)()
    return loop


def serve(app: str, loop: str, host: str, port: int) -> None:
    """Serve ``app`` ("aiohttp" or "uvicorn") on a new ``loop`` until SIGINT or SIGTERM."""
    if app == "aiohttp":
        from aiohttp import web

        web.run_app(
            aiohttp_app(), host=host, port=port, loop=_new_loop(loop), access_log=None, print=None
        )
    else:
        import uvicorn

        config = uvicorn.Config(
            asgi_app,
            host=host,
            port=port,
            loop=LOOP_SPECS[loop],
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
        )
        uvicorn.Server(config).run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve one benchmark app on one loop.")
    parser.add_argument("--app", choices=("aiohttp", "uvicorn"), required=True)
    parser.add_argument("--loop", choices=sorted(LOOP_SPECS), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.app, args.loop, args.host, args.port)


if __name__ == "__main__":
    main()
