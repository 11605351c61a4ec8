"""tidal: an asyncio event loop written from first principles in Python.

Use it as a drop-in: ``tidal.run(main())``, ``asyncio.Runner(loop_factory=tidal.new_event_loop)``,
``tidal.install()`` (then ``asyncio.run`` uses tidal), or ``python -m tidal script.py``.
Seeing inside the loop: ``tidal.inspect`` (task tree) and ``tidal.trace`` (timelines), imported
on first use.

``tidal.COMPILED`` says which build runs: True when the loop's hot modules are the compiled ones
(Cython, from the same sources), False for pure Python (no compiler at install, or
``TIDAL_PURE=1`` in the environment).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from . import _build

_build.install_finder()  # before any submodule import: TIDAL_PURE=1 must see them all

from .core import scheduler as _scheduler  # noqa: E402
from .futures import Future  # noqa: E402
from .loop import EventLoop  # noqa: E402
from .policy import EventLoopPolicy, install  # noqa: E402
from .runners import Runner, new_event_loop, run  # noqa: E402
from .tasks import Task, create_eager_task_factory, eager_task_factory  # noqa: E402

COMPILED: bool = _build.compiled(_scheduler)

__all__ = [
    "COMPILED",
    "EventLoop",
    "EventLoopPolicy",
    "Future",
    "Runner",
    "Task",
    "create_eager_task_factory",
    "eager_task_factory",
    "install",
    "new_event_loop",
    "run",
]

__version__ = "0.1.0.dev0"

_LAZY_SUBMODULES = frozenset({"inspect", "observe", "trace"})


def __getattr__(name: str) -> ModuleType:
    # ``tidal.trace.record(...)`` and ``tidal.inspect.snapshot()`` work after a bare
    # ``import tidal`` without making every program import the observability modules.
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
