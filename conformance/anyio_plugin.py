"""pytest plugin that runs anyio's own test suite on the loop that anyio_run.py asks for.

Owns: choosing the event loops behind anyio's ``asyncio`` backend parameters while anyio's
test suite runs (``-p anyio_plugin``, with this directory on ``sys.path``), and writing one
outcome per test, as a JSON line appended when the test ends, to the file named by
``TIDAL_ANYIO_RESULTS``.
Not here: fetching the suite, running pytest, judging outcomes (anyio_run.py).

anyio's ``tests/conftest.py`` builds one list, ``asyncio_params``, of ``anyio_backend`` values
(asyncio's loop in debug mode, asyncio+uvloop, and from 3.12 asyncio with the eager task
factory). Its ``anyio_backend`` fixture is parametrized over a copy of that list plus the other
backends (trio), and several test modules parametrize ``anyio_backend`` with the list itself,
which they import from the conftest when they are collected. So, once the conftest is loaded and
before any test module is, this plugin rewrites that list in place and rebuilds the fixture
over it.

``TIDAL_ANYIO_LOOP=asyncio`` keeps asyncio's own loop; ``TIDAL_ANYIO_LOOP=tidal`` hands anyio a
tidal loop through the plugin's ``loop_factory`` option. Either way the parameter ids stay
``asyncio`` and ``asyncio+eager`` so that a test has the same node id on both loops; uvloop and
trio are left out (they are other loops, not the oracle). Every other option (``debug=True``)
is anyio's.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import pytest

LOOP = os.environ.get("TIDAL_ANYIO_LOOP", "tidal")
if LOOP not in ("asyncio", "tidal"):
    raise SystemExit(f"TIDAL_ANYIO_LOOP must be 'asyncio' or 'tidal', not {LOOP!r}")


def _base_factory() -> asyncio.AbstractEventLoop:
    if LOOP == "tidal":
        import tidal

        return tidal.new_event_loop()
    return asyncio.new_event_loop()


def _eager_factory() -> asyncio.AbstractEventLoop:
    # The same construction as anyio's own eager parameter: asyncio's eager task factory
    # installed on the loop under test.
    loop = _base_factory()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    return loop


def backend_params() -> list[Any]:
    options: dict[str, Any] = {"debug": True}
    if LOOP == "tidal":
        options["loop_factory"] = _base_factory
    params = [pytest.param(("asyncio", options), id="asyncio")]
    if sys.version_info >= (3, 12):
        params.append(
            pytest.param(
                ("asyncio", {"debug": True, "loop_factory": _eager_factory}), id="asyncio+eager"
            )
        )
    return params


@pytest.hookimpl(tryfirst=True)
def pytest_plugin_registered(plugin: object, manager: pytest.PytestPluginManager) -> None:
    # Runs before pytest reads the conftest's fixtures (tryfirst), and the test modules that
    # import ``asyncio_params`` are collected later still.
    if not hasattr(plugin, "asyncio_params") or not hasattr(plugin, "anyio_backend"):
        return
    params = backend_params()
    plugin.asyncio_params[:] = params
    if hasattr(plugin, "backend_params"):
        plugin.backend_params[:] = params

    @pytest.fixture(params=params)
    def anyio_backend(request: pytest.FixtureRequest) -> Any:
        return request.param

    plugin.anyio_backend = anyio_backend


# Outcome per node id, merged over the setup, call and teardown phases: the worst one wins.
_RANK = {"pass": 0, "skip": 1, "xfail": 1, "fail": 2, "error": 3}
_results: dict[str, dict[str, Any]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Under pytest-xdist the workers' reports reach the controller's hook too; only the
    # controller (or a run without xdist) writes the file (see pytest_configure).
    if report.passed:
        outcome = "pass"
    elif report.skipped:
        outcome = "xfail" if hasattr(report, "wasxfail") else "skip"
    elif report.when == "call" and not hasattr(report, "wasxfail"):
        outcome = "fail"
    else:
        outcome = "fail" if hasattr(report, "wasxfail") else "error"  # xpass(strict) or fixture
    record = _results.setdefault(report.nodeid, {"outcome": "pass", "seconds": 0.0, "detail": ""})
    record["seconds"] += report.duration
    if _RANK[outcome] > _RANK[record["outcome"]]:
        record["outcome"] = outcome
        if outcome == "skip" and isinstance(report.longrepr, tuple):
            record["detail"] = str(report.longrepr[2])
        else:
            record["detail"] = report.longreprtext[-1500:]
    if report.when == "teardown":
        _write(report.nodeid, record)


def _write(nodeid: str, record: dict[str, Any]) -> None:
    # One JSON line per finished test, appended as it finishes: a run killed for hanging
    # still leaves the results of every test that ended.
    path = os.environ.get("TIDAL_ANYIO_RESULTS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"id": nodeid, **record}) + "\n")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # only the controller (or a run without xdist) writes
        os.environ.pop("TIDAL_ANYIO_RESULTS", None)


def pytest_report_header() -> str:
    return f"anyio suite on {LOOP}'s loop (conformance/anyio_plugin.py)"
