"""gunicorn worker classes that run uvicorn on a chosen loop: tidal's, asyncio's or uvloop.

A recipe module (see docs/recipes.md, "Every core"), kept under benchmarks/ because
benchmarks/scale.py uses it; copy it into your project, it needs only uvicorn and gunicorn.

Why it exists: gunicorn's ``-k`` option takes a worker class, not options for it. uvicorn's
worker class (``uvicorn_worker.UvicornWorker``, or the deprecated ``uvicorn.workers`` copy)
builds its uvicorn Config from the class attribute ``CONFIG_KWARGS``, which says
``loop="auto"`` (uvloop if installed, else asyncio's loop). So the way to pick a loop is a
subclass that overrides ``CONFIG_KWARGS``; uvicorn (0.36 and later) takes any
``"module:factory"`` string as ``loop``, calls ``factory()`` for each worker's loop, and runs
the server with ``asyncio.Runner(loop_factory=...)``:

    gunicorn -w 2 -k benchmarks.uvicorn_workers.TidalUvicornWorker app:app

Each gunicorn worker process then serves on its own tidal loop. ``TIDAL_PURE=1`` in gunicorn's
environment selects tidal's pure-Python build in every worker.
"""

from __future__ import annotations

import warnings
from typing import Any

try:
    from uvicorn_worker import UvicornWorker
except ImportError:  # the older copy inside uvicorn warns that it is deprecated on import
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from uvicorn.workers import UvicornWorker


class TidalUvicornWorker(UvicornWorker):  # type: ignore[misc]
    """uvicorn with httptools on a tidal loop (``tidal.new_event_loop``) in each worker."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "tidal:new_event_loop", "http": "httptools"}


class AsyncioUvicornWorker(UvicornWorker):  # type: ignore[misc]
    """uvicorn with httptools on asyncio's own loop in each worker (the baseline)."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "asyncio:new_event_loop", "http": "httptools"}


class UvloopUvicornWorker(UvicornWorker):  # type: ignore[misc]
    """uvicorn with httptools on uvloop in each worker."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "uvloop:new_event_loop", "http": "httptools"}
