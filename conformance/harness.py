"""Put tidal under CPython's own test_asyncio: loop substitution and tidal twins of test cases.

Owns: ``install_tidal()``, which makes every way the test modules obtain a loop hand out a tidal
loop, and ``add_tidal_cases()``, which adds to a test module the test cases that re-run its
scenarios with tidal's own Future and Task classes.
Not here: running the tests (worker.py), choosing them and judging results (run.py,
exclusions.toml), the virtual-clock loop (testloop.py).

How the test modules get their loops, and what this module does about each (read from
``Lib/test/test_asyncio`` of 3.11-3.13):

- ``asyncio.new_event_loop()``, ``asyncio.run()``, ``asyncio.Runner()`` and
  ``unittest.IsolatedAsyncioTestCase`` ask the current policy: a tidal ``EventLoopPolicy`` is
  installed. Many modules reset the policy with ``set_event_loop_policy(None)`` in tearDown or
  tearDownModule; asyncio then builds a new one from ``asyncio.DefaultEventLoopPolicy``, which
  is therefore pointed at tidal's policy class too.
- ``asyncio.SelectorEventLoop(selector)`` (test_events, test_base_events) builds a
  ``TidalSelectorEventLoop``: tidal's loop polling through the selector the test chose. The
  names ``asyncio.SelectorEventLoop`` and (3.13) ``asyncio.EventLoop`` are rebound, so a test
  that checks ``isinstance(loop, asyncio.SelectorEventLoop)`` checks for that class.
- ``asyncio.BaseEventLoop()`` (test_runners, test_pep492 build their loops so, then stub out
  its ``_selector``, ``_process_events`` and ``_write_to_self`` so that it never blocks) builds
  a tidal loop too. The stubs become unused attributes: tidal polls its own poller, so those
  tests run on a real tidal loop. Only the package attribute is rebound; asyncio's modules use
  ``base_events.BaseEventLoop``, which stays asyncio's.
- ``test_utils.TestLoop`` (the virtual-clock loop behind ``new_test_loop()``) becomes
  ``testloop.TidalTestLoop``.
- ``base_events.BaseEventLoop()`` and ``selector_events.BaseSelectorEventLoop()`` are asyncio's
  own classes, built directly: they cannot be substituted without breaking asyncio itself, so
  those test classes get tidal twins here where their tests are about loop behaviour, and
  the originals are listed in exclusions.toml.

The tidal twins subclass the CPython test classes and change only where the loop or the
Future/Task class comes from, so every scenario is CPython's, run against tidal's objects.
"""

from __future__ import annotations

import asyncio
import selectors
import unittest
from types import ModuleType
from typing import Any, ClassVar

import tidal
from testloop import TidalTestLoop
from tidal import EventLoop


class TidalSelectorEventLoop(EventLoop):
    """tidal's loop, polling through the selector a test passes to ``SelectorEventLoop()``."""

    def __init__(self, selector: selectors.BaseSelector | None = None) -> None:
        super().__init__()
        if selector is not None:
            wakeup_fd = self._wakeup.fileno()
            default = self._poller
            default.unregister(wakeup_fd)
            default.close()
            selector.register(wakeup_fd, selectors.EVENT_READ, None)
            self._poller = selector


class LoopCensus:
    """Counts the event loops built, by kind, so each test's result says what it ran on.

    ``install()`` wraps the constructors of tidal's EventLoop and asyncio's ``BaseEventLoop``
    (the base of every asyncio loop class); the worker reads and resets ``counts`` around each
    test. A test on the tidal run that built only asyncio loops did not test tidal.
    """

    counts: ClassVar[dict[str, int]] = {"tidal": 0, "asyncio": 0}

    @classmethod
    def install(cls) -> None:
        from asyncio import base_events

        # tidal.EventLoop, not core's Scheduler: in the compiled build Scheduler is an
        # extension type, whose methods cannot be replaced; every tidal loop is an EventLoop.
        for kind, klass in (("tidal", tidal.EventLoop), ("asyncio", base_events.BaseEventLoop)):
            original = klass.__init__

            def counting_init(
                self: Any, *args: Any, _original: Any = original, _kind: str = kind, **kw: Any
            ) -> None:
                cls.counts[_kind] += 1
                _original(self, *args, **kw)

            klass.__init__ = counting_init  # type: ignore[method-assign]

    @classmethod
    def take(cls) -> dict[str, int]:
        """Return the counts since the last call and start again from zero."""
        taken = dict(cls.counts)
        cls.counts.update(tidal=0, asyncio=0)
        return taken


def install_tidal() -> None:
    """Make asyncio, and CPython's test helpers, hand out tidal loops (see module doc)."""
    asyncio_module: Any = asyncio
    asyncio_module.DefaultEventLoopPolicy = tidal.EventLoopPolicy
    asyncio_module.SelectorEventLoop = TidalSelectorEventLoop
    asyncio_module.BaseEventLoop = TidalSelectorEventLoop
    if hasattr(asyncio, "EventLoop"):  # 3.13+
        asyncio_module.EventLoop = TidalSelectorEventLoop
    asyncio.set_event_loop_policy(tidal.EventLoopPolicy())

    from test.test_asyncio import utils as test_utils

    test_utils_module: Any = test_utils
    test_utils_module.TestLoop = TidalTestLoop


# -- tidal twins of CPython's test cases --------------------------------------------------------


def _twin(module: ModuleType, name: str, bases: tuple[type, ...], **attrs: Any) -> None:
    """Define test class ``name`` in ``module`` so that the unittest loader finds it."""
    attrs.setdefault("__module__", module.__name__)
    attrs.setdefault("__qualname__", name)
    setattr(module, name, type(name, bases, attrs))


def _futures_cases(mod: ModuleType) -> None:
    test_case = mod.test_utils.TestCase
    _twin(mod, "TidalFutureTests", (mod.BaseFutureTests, test_case), cls=tidal.Future)

    def new_future(self: Any) -> tidal.Future:
        return tidal.Future(loop=self.loop)

    _twin(
        mod,
        "TidalFutureDoneCallbackTests",
        (mod.BaseFutureDoneCallbackTests, test_case),
        _new_future=new_future,
    )
    _twin(
        mod,
        "TidalFutureInheritanceTests",
        (mod.BaseFutureInheritanceTests, test_case),
        _get_future_cls=lambda self: tidal.Future,
    )


def _futures2_cases(mod: ModuleType) -> None:
    _twin(
        mod, "TidalFutureTests", (mod.FutureTests, unittest.IsolatedAsyncioTestCase), cls=tidal.Task
    )


def _tasks_cases(mod: ModuleType) -> None:
    test_case = mod.test_utils.TestCase
    _twin(
        mod,
        "TidalTask_TidalFuture_Tests",
        (mod.BaseTaskTests, mod.SetMethodsTest, test_case),
        Task=tidal.Task,
        Future=tidal.Future,
    )
    # tidal's Task parked on asyncio's C Future: the foreign-future path of Task._park.
    _twin(
        mod,
        "TidalTask_CFuture_Tests",
        (mod.BaseTaskTests, test_case),
        Task=tidal.Task,
        Future=asyncio.Future,
    )
    subclass_tests = type(
        "TidalTask_TidalFuture_SubclassTests",
        (mod.BaseTaskTests, test_case),
        {
            "Task": tidal.Task,
            "Future": tidal.Future,
            "__module__": mod.__name__,
            "__qualname__": "TidalTask_TidalFuture_SubclassTests",
        },
    )
    mod.TidalTask_TidalFuture_SubclassTests = mod.add_subclass_tests(subclass_tests)

    def new_task(self: Any, coro: Any) -> tidal.Task:
        return tidal.Task(coro, loop=self.loop)

    _twin(
        mod,
        "TidalCurrentLoopTests",
        (mod.BaseCurrentLoopTests, test_case),
        current_task=staticmethod(asyncio.current_task),
        new_task=new_task,
    )


def _base_events_cases(mod: ModuleType) -> None:
    def set_up(self: Any) -> None:
        mod.test_utils.TestCase.setUp(self)
        self.loop = tidal.new_event_loop()
        self.set_event_loop(self.loop)

    _twin(mod, "TidalBaseEventLoopTests", (mod.BaseEventLoopTests,), setUp=set_up)


def _events_cases(mod: ModuleType) -> None:
    # The EPoll/Poll/Select classes of test_events run tidal's loop on the selector they name
    # (TidalSelectorEventLoop), with the Unix and subprocess mixins; this twin runs the
    # EventLoopTestsMixin tests on tidal.EventLoop as users get it, with its default poller.
    _twin(
        mod,
        "TidalEventLoopTests",
        (mod.EventLoopTestsMixin, mod.test_utils.TestCase),
        create_event_loop=lambda self: tidal.new_event_loop(),
    )


def _eager_task_factory_cases(mod: ModuleType) -> None:
    test_case = mod.test_utils.TestCase
    _twin(
        mod,
        "TidalEagerTaskFactoryLoopTests",
        (mod.EagerTaskFactoryLoopTests, test_case),
        Task=tidal.Task,
    )
    _twin(mod, "TidalNonEagerTests", (mod.BaseNonEagerTaskFactoryTests, test_case), Task=tidal.Task)
    _twin(mod, "TidalEagerTests", (mod.BaseEagerTaskFactoryTests, test_case), Task=tidal.Task)


_CASES = {
    "test_futures": _futures_cases,
    "test_futures2": _futures2_cases,
    "test_tasks": _tasks_cases,
    "test_base_events": _base_events_cases,
    "test_events": _events_cases,
    "test_eager_task_factory": _eager_task_factory_cases,
}


def add_tidal_cases(module_name: str, module: ModuleType) -> None:
    """Add the tidal twins of ``module``'s test classes to it (no-op for other modules)."""
    add = _CASES.get(module_name)
    if add is not None:
        add(module)
