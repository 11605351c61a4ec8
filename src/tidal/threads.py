"""Thread bridges: running blocking calls in a pool and shutting the pool down.

Owns: ``run_in_executor`` and ``shutdown_default_executor`` for tidal's loop.
Not here: the cross-thread wake-up (core/wakeup.py); ``run_coroutine_threadsafe`` and
``to_thread`` are asyncio's own functions and work unchanged on top of these.

A pool job reports back through ``asyncio.wrap_future``, which completes the loop's future with
``call_soon_threadsafe``: the only door from another thread into the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .loop import EventLoop

_T = TypeVar("_T")

# The prefix asyncio gives its default pool's threads; tools filter thread dumps by it.
DEFAULT_THREAD_NAME_PREFIX = "asyncio"

# The thread pools tidal created itself (default executors). Only these may be handed a wrapped
# job when executor hooks listen; every other executor gets exactly what the caller passed.
_own_pools: weakref.WeakSet[concurrent.futures.Executor] = weakref.WeakSet()


def run_in_executor(
    loop: EventLoop,
    executor: concurrent.futures.Executor | None,
    func: Callable[..., _T],
    *args: Any,
) -> asyncio.Future[_T]:
    loop._check_closed()
    if loop._debug or not callable(func):
        loop._check_callback(func, "run_in_executor")
    if executor is None:
        if loop._executor_shutdown_called:
            raise RuntimeError(
                "Executor shutdown has been called; run_in_executor(None, ...) needs the "
                "default executor, which loop.shutdown_default_executor() has shut down"
            )
        executor = loop._default_executor
        if executor is None:
            executor = concurrent.futures.ThreadPoolExecutor(
                thread_name_prefix=DEFAULT_THREAD_NAME_PREFIX
            )
            _own_pools.add(executor)
            loop._default_executor = executor
    hooks = loop._hooks
    if hooks is not None and (hooks.executor_job_started or hooks.executor_job_finished):
        # Someone listens for executor jobs (observe/hooks.py). Only our own pools run func
        # inside a wrapper; any other executor gets func and args untouched (it may pickle
        # them, or look at them), and the job is observed through its done callback.
        if any(pool is executor for pool in _own_pools):  # identity: executors may be unhashable
            return asyncio.wrap_future(executor.submit(hooks.wrap_job(func, args)), loop=loop)
        return asyncio.wrap_future(hooks.submit_observed(executor, func, args), loop=loop)
    return asyncio.wrap_future(executor.submit(func, *args), loop=loop)


async def shutdown_default_executor(loop: EventLoop, timeout: float | None) -> None:
    """Join the default pool's threads from a helper thread so the loop keeps turning."""
    loop._executor_shutdown_called = True
    executor = loop._default_executor
    if executor is None:
        return
    done = loop.create_future()
    joiner = threading.Thread(target=_join_executor, args=(loop, executor, done))
    joiner.start()
    try:
        async with asyncio.timeout(timeout):
            await done
    except TimeoutError:
        warnings.warn(
            f"The executor did not finishing joining its threads within {timeout} seconds.",
            RuntimeWarning,
            stacklevel=2,
        )
        executor.shutdown(wait=False)
    else:
        joiner.join()


def _join_executor(
    loop: EventLoop, executor: concurrent.futures.ThreadPoolExecutor, done: asyncio.Future[None]
) -> None:
    try:
        executor.shutdown(wait=True)
        if not loop.is_closed():
            loop.call_soon_threadsafe(_set_result_unless_cancelled, done, None)
    except Exception as exc:
        if not loop.is_closed():
            loop.call_soon_threadsafe(_set_exception_unless_cancelled, done, exc)


def _set_result_unless_cancelled(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.cancelled():
        fut.set_result(result)


def _set_exception_unless_cancelled(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.cancelled():
        fut.set_exception(exc)
