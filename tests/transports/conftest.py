"""Fixtures for the networking tests: bounded runs and a descriptor-leak check per module."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import leakcheck

# Seconds any one test's coroutine may run before it is cancelled and the test fails.
TEST_TIMEOUT = 10.0


@pytest.fixture(autouse=True, scope="module")
def no_fd_leaks() -> Iterator[None]:
    """Fail the module if it ends with more open descriptors than it started with."""
    with leakcheck.no_fd_leaks():
        yield


@pytest.fixture
def arun(loop: asyncio.AbstractEventLoop) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """arun(coro) -> result: run on the loop under test, failing after TEST_TIMEOUT seconds."""

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        return loop.run_until_complete(asyncio.wait_for(coro, TEST_TIMEOUT))

    return run
