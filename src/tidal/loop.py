"""``tidal.EventLoop``: asyncio's whole event-loop API, one hop from each implementation.

Owns: the public class and the parts of the API that sit on top of the scheduler: futures and
tasks, ``run_until_complete``, the default executor, async-generator tracking, name resolution.
Not here: the turn of the loop and callback scheduling (core/scheduler.py), thread pools
(threads.py), coroutine stepping (tasks.py).

Anything asyncio defines and tidal does not implement yet is inherited from
``asyncio.AbstractEventLoop`` and raises ``NotImplementedError``: it never half-works.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import socket
import sys
import warnings
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator
from typing import Any, TypeVar

from . import threads
from .core.scheduler import Scheduler
from .futures import Future
from .tasks import Task

_T = TypeVar("_T")

# asyncio's own done callback for run_until_complete: anyio finds the root task by looking for
# exactly this function among the task's callbacks, so tidal uses it rather than a copy.
_run_until_complete_cb: Callable[[Any], None] = asyncio.base_events._run_until_complete_cb  # type: ignore[attr-defined]


class EventLoop(Scheduler, asyncio.AbstractEventLoop):
    """An asyncio event loop written from first principles in Python.

    Use it anywhere asyncio takes a loop: ``tidal.run(main())``,
    ``asyncio.Runner(loop_factory=tidal.new_event_loop)``, or ``tidal.install()``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._task_factory: Callable[..., Any] | None = None
        self._default_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_shutdown_called = False  # read and set by anyio, as on asyncio's loop
        self._asyncgens: weakref.WeakSet[AsyncGenerator[Any, Any]] = weakref.WeakSet()
        self._asyncgens_shutdown_called = False

    # -- futures and tasks -------------------------------------------------------------------

    def create_future(self) -> Future:
        """Return a new tidal Future bound to this loop."""
        return Future(loop=self)

    def create_task(
        self,
        coro: Coroutine[Any, Any, _T] | Generator[Any, None, _T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[_T]:
        """Wrap ``coro`` in a Task (or the task factory's product) and schedule it.

        Raises:
            RuntimeError: the loop is closed.
            TypeError: ``coro`` is not a coroutine.
        """
        if self._closed:
            self._raise_closed()
        factory = self._task_factory
        if factory is None:
            task = Task(coro, loop=self, name=name, context=context)  # type: ignore[arg-type]
            if task._source_traceback:
                del task._source_traceback[-1]
            return task
        task = factory(self, coro) if context is None else factory(self, coro, context=context)
        if name is not None:
            task.set_name(name)
        return task  # type: ignore[no-any-return]

    def set_task_factory(self, factory: Callable[..., Any] | None) -> None:
        """Make ``create_task`` call ``factory(loop, coro[, context=])``; None restores Task.

        Raises:
            TypeError: ``factory`` is neither callable nor None.
        """
        if factory is not None and not callable(factory):
            raise TypeError("task factory must be a callable or None")
        self._task_factory = factory

    def get_task_factory(self) -> Callable[..., Any] | None:
        return self._task_factory

    def run_until_complete(self, future: Generator[Any, None, _T] | Awaitable[_T]) -> _T:
        """Run until ``future`` (a coroutine is wrapped in a Task) is done; return its result.

        Raises:
            RuntimeError: the loop is closed or already running, or it was stopped before the
                future completed.
        """
        self._check_closed()
        self._check_running()
        new_task = not asyncio.isfuture(future)
        fut: Any = asyncio.ensure_future(future, loop=self)  # type: ignore[arg-type]
        if new_task:
            # Its exception is raised to our caller, so a pending-task report would be noise.
            fut._log_destroy_pending = False
        fut.add_done_callback(_run_until_complete_cb)
        try:
            self.run_forever()
        except BaseException:
            if new_task and fut.done() and not fut.cancelled():
                fut.exception()  # the caller has no handle on the task: mark it retrieved
            raise
        finally:
            fut.remove_done_callback(_run_until_complete_cb)
        if not fut.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return fut.result()  # type: ignore[no-any-return]

    # -- executors (threads.py does the work) -----------------------------------------------

    def run_in_executor(  # type: ignore[override]  # typeshed's TypeVarTuple form
        self, executor: concurrent.futures.Executor | None, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        """Run ``func(*args)`` in ``executor`` (the default thread pool if None)."""
        return threads.run_in_executor(self, executor, func, *args)

    def set_default_executor(self, executor: concurrent.futures.ThreadPoolExecutor) -> None:  # type: ignore[override]
        """Use ``executor`` for ``run_in_executor(None, ...)``; it must be a ThreadPoolExecutor."""
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("executor must be ThreadPoolExecutor")
        self._default_executor = executor

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        """Wait for the default executor's threads to finish (warn after ``timeout`` s)."""
        await threads.shutdown_default_executor(self, timeout)

    def close(self) -> None:
        """Close the loop and shut the default executor down without waiting.

        Raises:
            RuntimeError: the loop is running.
        """
        was_open = not self._closed
        super().close()  # raises the clear error if the loop is running
        if not was_open:
            return
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    # -- async generators ----------------------------------------------------------------------

    def _install_asyncgen_hooks(self) -> None:
        sys.set_asyncgen_hooks(
            firstiter=self._asyncgen_firstiter_hook, finalizer=self._asyncgen_finalizer_hook
        )

    def _asyncgen_firstiter_hook(self, agen: AsyncGenerator[Any, Any]) -> None:
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                f"loop.shutdown_asyncgens() call",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )
        self._asyncgens.add(agen)

    def _asyncgen_finalizer_hook(self, agen: AsyncGenerator[Any, Any]) -> None:
        self._asyncgens.discard(agen)
        if not self._closed:
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    async def shutdown_asyncgens(self) -> None:
        """Close every async generator this loop saw start and that is still suspended."""
        self._asyncgens_shutdown_called = True
        if not len(self._asyncgens):
            return
        closing = list(self._asyncgens)
        self._asyncgens.clear()
        results = await asyncio.gather(*[ag.aclose() for ag in closing], return_exceptions=True)
        for result, agen in zip(results, closing, strict=True):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": f"an error occurred during closing of "
                        f"asynchronous generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )

    # -- name resolution (blocking calls, so they run in the default executor) -------------

    async def getaddrinfo(
        self,
        host: bytes | str | None,
        port: bytes | str | int | None,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        """``socket.getaddrinfo`` without blocking the loop."""
        return await self.run_in_executor(
            None, socket.getaddrinfo, host, port, family, type, proto, flags
        )

    async def getnameinfo(self, sockaddr: Any, flags: int = 0) -> tuple[str, str]:
        """``socket.getnameinfo`` without blocking the loop."""
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)
