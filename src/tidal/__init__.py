"""tidal: an asyncio event loop written from first principles in Python.

Use it as a drop-in: ``tidal.run(main())``, ``asyncio.Runner(loop_factory=tidal.new_event_loop)``,
``tidal.install()`` (then ``asyncio.run`` uses tidal), or ``python -m tidal script.py``.
"""

from __future__ import annotations

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
