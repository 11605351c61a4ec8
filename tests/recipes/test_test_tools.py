"""Recipes (docs/recipes.md) for running code and tests on tidal through the libraries people
test with: pytest-asyncio's loop-factory hook, anyio (``anyio.run`` and its pytest plugin) and
Starlette's TestClient. Each asserts, inside the code under test, that the running loop is
tidal's, and does some real work there (tasks, timers, threads, streams, an app's lifespan).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import tidal

TIMEOUT = 120  # seconds for the inner pytest run

PYTEST_ASYNCIO_CONFTEST = """
import tidal


def pytest_asyncio_loop_factories(config, item):
    return {"tidal": tidal.new_event_loop}
"""

PYTEST_ASYNCIO_TESTS = """
import asyncio

import pytest
import pytest_asyncio


@pytest_asyncio.fixture
async def started_loop():
    await asyncio.sleep(0)
    return asyncio.get_running_loop()


@pytest.mark.asyncio
async def test_runs_on_tidal(started_loop):
    loop = asyncio.get_running_loop()
    assert type(loop).__module__ == "tidal.loop"
    assert loop is started_loop  # the async fixture ran on the same tidal loop


@pytest.mark.asyncio
async def test_tasks_timers_and_threads():
    async def double(x):
        await asyncio.sleep(0.01)
        return 2 * x

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(double(x)) for x in range(3)]
    assert [t.result() for t in tasks] == [0, 2, 4]
    assert await asyncio.to_thread(sum, [1, 2]) == 3
"""


@pytest.mark.slow
def test_pytest_asyncio_loop_factories_hook(tmp_path: Path) -> None:
    pytest.importorskip("pytest_asyncio")
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    (tmp_path / "conftest.py").write_text(textwrap.dedent(PYTEST_ASYNCIO_CONFTEST))
    (tmp_path / "test_on_tidal.py").write_text(textwrap.dedent(PYTEST_ASYNCIO_TESTS))
    # Only pytest-asyncio: the other plugins installed here would just slow the start.
    command = [sys.executable, "-m", "pytest", "-p", "pytest_asyncio.plugin", "-q"]
    result = subprocess.run(
        [*command, "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("2 passed"), result.stdout


# -- anyio -------------------------------------------------------------------------------------


async def _anyio_work() -> dict[str, Any]:
    import anyio

    send, receive = anyio.create_memory_object_stream[int](10)
    results: list[int] = []

    async def produce() -> None:
        async with send:
            for n in range(5):
                await anyio.sleep(0.001)
                await send.send(n)

    async def consume() -> None:
        async with receive:
            async for n in receive:
                results.append(n)

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        tg.start_soon(consume)
    with anyio.move_on_after(0.01) as scope:
        await anyio.sleep(10)
    return {
        "loop": type(asyncio.get_running_loop()).__module__,
        "received": results,
        "timed_out": scope.cancelled_caught,
        "thread": await anyio.to_thread.run_sync(sum, [1, 2, 3]),
    }


def test_anyio_run_with_a_tidal_loop_factory() -> None:
    anyio = pytest.importorskip("anyio")
    outcome = anyio.run(
        _anyio_work, backend="asyncio", backend_options={"loop_factory": tidal.new_event_loop}
    )
    assert outcome == {
        "loop": "tidal.loop",
        "received": [0, 1, 2, 3, 4],
        "timed_out": True,
        "thread": 6,
    }


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """anyio's pytest plugin runs the tests marked ``anyio`` with this backend."""
    return ("asyncio", {"loop_factory": tidal.new_event_loop})


@pytest.mark.anyio
async def test_anyio_pytest_plugin_on_tidal() -> None:
    outcome = await _anyio_work()
    assert outcome["loop"] == "tidal.loop"
    assert outcome["received"] == [0, 1, 2, 3, 4] and outcome["timed_out"]


# -- Starlette ---------------------------------------------------------------------------------


@pytest.mark.slow  # importing Starlette and its HTTP client
def test_starlette_testclient_with_backend_options() -> None:
    pytest.importorskip("starlette")
    pytest.importorskip("httpx2")  # the client Starlette's TestClient uses
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    lifespan_loops: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        lifespan_loops.append(type(asyncio.get_running_loop()).__module__)
        yield

    async def where(request: Request) -> JSONResponse:
        await asyncio.sleep(0)
        return JSONResponse({"loop": type(asyncio.get_running_loop()).__module__})

    app = Starlette(routes=[Route("/", where)], lifespan=lifespan)
    from starlette.testclient import TestClient

    options = {"loop_factory": tidal.new_event_loop}
    with TestClient(app, backend_options=options) as client:
        assert client.get("/").json() == {"loop": "tidal.loop"}
    assert lifespan_loops == ["tidal.loop"]
