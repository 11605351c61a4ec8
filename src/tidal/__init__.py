"""tidal: an asyncio event loop written from first principles in Python.

Use it as a drop-in: ``tidal.run(main())``, ``asyncio.Runner(loop_factory=tidal.new_event_loop)``,
``tidal.install()`` (then ``asyncio.run`` uses tidal), or ``python -m tidal script.py``.
Seeing inside the loop: ``tidal.inspect`` (task tree) and ``tidal.trace`` (timelines), imported
on first use.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .futures import Future
from .loop import EventLoop
from .policy import EventLoopPolicy, install
from .runners import Runner, new_event_loop, run
from .tasks import Task, create_eager_task_factory, eager_task_factory

__all__ = [
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
