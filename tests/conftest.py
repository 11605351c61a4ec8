"""Shared fixtures: every behavioural test runs on asyncio's loop (the oracle) and on tidal's."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import tidal

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def _tidal_with_python_tasks() -> asyncio.AbstractEventLoop:
    return tidal.new_event_loop(tasks="python")


# "tidal" hosts CPython's C Future and Task (the default); "tidal-py" makes tidal's own Python
# Future and Task, the reference implementation, so both stay under the same parity tests.
LOOP_FACTORIES: dict[str, LoopFactory] = {
    "asyncio": asyncio.new_event_loop,
    "tidal": tidal.new_event_loop,
    "tidal-py": _tidal_with_python_tasks,
}


# TIDAL_TEST_LOOPS=tidal,tidal-py narrows the parity runs (scripts/test's compiled-build run).
_SELECTED = [
    name
    for name in os.environ.get("TIDAL_TEST_LOOPS", ",".join(LOOP_FACTORIES)).split(",")
    if name in LOOP_FACTORIES
]


@pytest.fixture(params=_SELECTED or sorted(LOOP_FACTORIES))
def loop_name(request: pytest.FixtureRequest) -> str:
    """'asyncio', 'tidal' or 'tidal-py': the loop this run of the test uses."""
    return str(request.param)


@pytest.fixture
def loop_factory(loop_name: str) -> LoopFactory:
    """A callable returning a new loop of the kind under test."""
    return LOOP_FACTORIES[loop_name]


@pytest.fixture
def loop(loop_factory: LoopFactory) -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh loop of the kind under test; closed afterwards with strict teardown.

    Teardown fails the test if the loop reported anything to its exception handler that the test
    did not collect itself (tests that expect reports install their own handler).
    """
    new_loop = loop_factory()
    unexpected: list[dict[str, Any]] = []
    new_loop.set_exception_handler(lambda _loop, context: unexpected.append(context))
    try:
        yield new_loop
    finally:
        if not new_loop.is_closed():
            new_loop.run_until_complete(new_loop.shutdown_asyncgens())
            new_loop.run_until_complete(new_loop.shutdown_default_executor())
            new_loop.close()
        gc.collect()
        assert not unexpected, f"unexpected exception-handler calls: {unexpected!r}"


@pytest.fixture
def run(loop: asyncio.AbstractEventLoop) -> Callable[..., Any]:
    """run(coro) -> result, on the loop under test."""
    return loop.run_until_complete
