"""Fixtures for the networking tests: bounded runs and a descriptor-leak check per module."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

# Seconds any one test's coroutine may run before it is cancelled and the test fails.
TEST_TIMEOUT = 10.0


def open_fds() -> set[int]:
    """The descriptors this process has open right now."""
    return {int(name) for name in os.listdir("/proc/self/fd")}


@pytest.fixture(autouse=True, scope="module")
def no_fd_leaks() -> Iterator[None]:
    """Fail the module if it ends with more open descriptors than it started with."""
    gc.collect()
    before = open_fds()
    yield
    gc.collect()
    leaked = open_fds() - before
    details = {fd: _describe(fd) for fd in leaked}
    assert not leaked, f"descriptors leaked by this module: {details}"


def _describe(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


@pytest.fixture
def arun(loop: asyncio.AbstractEventLoop) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """arun(coro) -> result: run on the loop under test, failing after TEST_TIMEOUT seconds."""

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        return loop.run_until_complete(asyncio.wait_for(coro, TEST_TIMEOUT))

    return run
