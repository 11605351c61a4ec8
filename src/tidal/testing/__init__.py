"""Deterministic tests of asyncio code on tidal: virtual time, schedule fuzzing, strict teardown.

Owns: the public testing API: ``new_event_loop``, ``loop_factory``, ``run`` and ``fuzz``.
Not here: the loop that does the work (testing/loop.py), the leak checks
(testing/lifecycle.py), the pytest plugin (testing/pytest_plugin.py), the race catalogue
(testing/races.py). docs/testing.md is the guide.

Options shared by every function here:
- ``virtual_time``: ``loop.time()`` starts at 0 and jumps to the next timer when nothing else
  can happen first, so ``await asyncio.sleep(3600)`` returns at once, at loop time 3600.0.
- ``autojump``: real idle seconds before the clock jumps (0, the default: at once); None: the
  clock moves only through ``loop.advance(seconds)``.
- ``seed``: perturb, reproducibly, the order asyncio does not promise.

Importing this package changes nothing: ``tidal.EventLoop`` and ``tidal.new_event_loop`` stay
exactly as they are, so the machinery costs nothing when it is not asked for.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from .loop import ControlledLoop, check_options

__all__ = [
    "ControlledLoop",
    "FuzzFailure",
    "fuzz",
    "loop_factory",
    "new_event_loop",
    "run",
]

_T = TypeVar("_T")


def new_event_loop(
    *, virtual_time: bool = False, autojump: float | None = 0.0, seed: int | None = None
) -> ControlledLoop:
    """Return a new tidal loop with the given clock and schedule (not set as current).

    Args:
        virtual_time: use a virtual clock that starts at 0 and jumps over idle time.
        autojump: real idle seconds before a jump (0: at once); None: only ``loop.advance()``
            moves the clock.
        seed: perturb the schedule with this seed; the same seed gives the same schedule.

    Raises:
        TypeError: an option has the wrong type.
        ValueError: ``autojump`` is negative or given without ``virtual_time``.
    """
    return ControlledLoop(virtual_time=virtual_time, autojump=autojump, seed=seed)


def loop_factory(
    *, virtual_time: bool = False, autojump: float | None = 0.0, seed: int | None = None
) -> Callable[[], ControlledLoop]:
    """A zero-argument loop factory with these options.

    For ``asyncio.Runner(loop_factory=...)``, pytest-asyncio's loop factories and anyio's
    ``backend_options={"loop_factory": ...}``. Options are checked here, not at first use.
    """
    check_options(virtual_time=virtual_time, autojump=autojump, seed=seed)
    return functools.partial(
        ControlledLoop, virtual_time=virtual_time, autojump=autojump, seed=seed
    )


def run(
    main: Coroutine[Any, Any, _T],
    *,
    virtual_time: bool = False,
    autojump: float | None = 0.0,
    seed: int | None = None,
    debug: bool | None = None,
    context: contextvars.Context | None = None,
) -> _T:
    """``tidal.run(main)`` on a loop with these options; returns ``main``'s result.

    Raises:
        RuntimeError: called while an event loop is running in this thread.
        ValueError: ``main`` is not a coroutine, or an option is out of range.
    """
    factory = loop_factory(virtual_time=virtual_time, autojump=autojump, seed=seed)
    if asyncio.events._get_running_loop() is not None:
        main.close()
        raise RuntimeError(
            "tidal.testing.run() cannot be called from a running event loop; await the "
            "coroutine instead"
        )
    with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
        return runner.run(main, context=context)


class FuzzFailure(AssertionError):
    """A coroutine failed under one seed; ``seed`` replays the schedule that broke it."""

    def __init__(self, seed: int, error: BaseException, rerun: str) -> None:
        super().__init__(
            f"failed under seed {seed}: {type(error).__name__}: {error}\n"
            f"re-run exactly this schedule with: {rerun}"
        )
        self.seed = seed
        self.error = error


def fuzz(
    main: Callable[[], Coroutine[Any, Any, object]],
    *,
    seeds: Iterable[int] = range(50),
    virtual_time: bool = True,
    autojump: float | None = 0.0,
) -> int:
    """Run ``main()`` once per seed, each on a fresh loop; return how many seeds passed.

    Args:
        main: makes the coroutine to run (a new one per seed).
        seeds: the seeds to try, in order.
        virtual_time, autojump: as for ``new_event_loop`` (virtual time is on by default:
            fuzzing code that sleeps is then fast).

    Raises:
        FuzzFailure: at the first seed under which ``main()`` raised; the original exception
            is its ``__cause__`` and its message says how to re-run that seed.
    """
    passed = 0
    name = getattr(main, "__qualname__", repr(main))
    for seed in seeds:
        try:
            run(main(), virtual_time=virtual_time, autojump=autojump, seed=seed)
        except Exception as exc:
            rerun = f"tidal.testing.run({name}(), seed={seed}, virtual_time={virtual_time}" + (
                f", autojump={autojump!r})" if autojump != 0.0 else ")"
            )
            raise FuzzFailure(seed, exc, rerun) from exc
        passed += 1
    return passed
