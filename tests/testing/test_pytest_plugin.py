"""tidal's pytest plugin, driven through pytester: real pytest runs of small test files."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

# Each test runs pytest once or more in-process: over 0.25 s on this 2-core box.
pytestmark = pytest.mark.slow

# Every run disables pytest-asyncio unless the test turns it on, the cache, and Hypothesis'
# plugin (its session start alone costs seconds, and none of these runs uses it).
QUIET = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest"]
PLAIN = ["-p", "no:asyncio", *QUIET]


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*PLAIN, *args)


# -- inert unless asked -----------------------------------------------------------------------


def test_plugin_is_installed_and_inert(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio

        async def test_async():
            pass

        def test_sync():
            assert asyncio.get_event_loop_policy() is not None
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*async def functions are not natively supported*"])
    help_text = run(pytester, "--help")
    help_text.stdout.fnmatch_lines(["*--tidal *", "*--tidal-fuzz=N*", "*--tidal-strict*"])


# -- --tidal, tidal_mode, async fixtures --------------------------------------------------------

ASYNC_SUITE = """
import asyncio
import pytest
import tidal.testing

events = []

@pytest.fixture
async def resource():
    await asyncio.sleep(0)
    return "value"

@pytest.fixture
async def server():
    async def echo(reader, writer):
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    events.append(("setup", asyncio.get_running_loop()))
    yield srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    events.append(("teardown", asyncio.get_running_loop()))

async def test_runs_on_tidal(resource):
    assert isinstance(asyncio.get_running_loop(), tidal.testing.ControlledLoop)
    assert resource == "value"

async def test_fixture_shares_the_loop(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"ping")
    assert await reader.read() == b"ping"
    writer.close()
    await writer.wait_closed()
    assert events[-1] == ("setup", asyncio.get_running_loop())

def test_teardown_ran_on_the_same_loop():
    assert [kind for kind, _ in events] == ["setup", "teardown"]
    assert events[0][1] is events[1][1]
"""


def test_tidal_option_runs_async_tests_and_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(ASYNC_SUITE)
    run(pytester, "--tidal").assert_outcomes(passed=3)


def test_tidal_mode_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntidal_mode = true\n")
    pytester.makepyfile(ASYNC_SUITE)
    run(pytester).assert_outcomes(passed=3)


def test_marker_alone_asks_for_tidal(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio
        import pytest

        @pytest.mark.tidal
        async def test_marked():
            await asyncio.sleep(0)

        async def test_unmarked():
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_unmarked*"])


def test_wider_scoped_async_fixture_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture(scope="module")
        async def shared():
            return 1

        async def test_it(shared):
            pass
        """
    )
    result = run(pytester, "--tidal")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*must be function-scoped*"])


def test_bad_marker_arguments_are_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.tidal(virtual=True)
        async def test_it():
            pass
        """
    )
    result = run(pytester)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*unknown keyword(s) ?'virtual'?; it takes autojump*"])


# -- virtual time ---------------------------------------------------------------------------------


def test_virtual_time_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio
        import time
        import pytest

        @pytest.mark.tidal(virtual_time=True)
        async def test_an_hour():
            started = time.perf_counter()
            await asyncio.sleep(3600)
            assert asyncio.get_running_loop().time() == 3600.0
            assert time.perf_counter() - started < 0.5

        @pytest.mark.tidal(virtual_time=True, autojump=None)
        async def test_by_hand():
            loop = asyncio.get_running_loop()
            task = asyncio.ensure_future(asyncio.sleep(10))
            await asyncio.sleep(0)
            loop.advance(10)
            await task
            assert loop.time() == 10.0
        """
    )
    run(pytester).assert_outcomes(passed=2)


# -- fuzzing ------------------------------------------------------------------------------------

RACY = """
import asyncio
import pytest

async def racy():
    order = []

    async def first():
        await asyncio.sleep(1)
        order.append("first")

    async def second():
        await asyncio.sleep(1)
        order.append("second")

    await asyncio.gather(first(), second())
    assert order == ["first", "second"]

@pytest.mark.tidal(virtual_time=True{marker})
async def test_order():
    await racy()
"""


def test_fuzz_marker_reports_the_first_failing_seed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(RACY.format(marker=", fuzz=30"))
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*tidal: failed under seed * of 30)*replay exactly this schedule with: pytest*"]
    )
    line = next(s for s in result.stdout.lines if "tidal: failed under seed" in s)
    seed = int(line.split("failed under seed ")[1].split()[0])
    # The printed command replays that seed: it fails again; the seed before it passed.
    run(pytester, f"--tidal-seed={seed}").assert_outcomes(failed=1)
    if seed > 0:
        run(pytester, f"--tidal-seed={seed - 1}").assert_outcomes(passed=1)


def test_tidal_fuzz_option_covers_the_whole_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(RACY.format(marker=""))
    run(pytester).assert_outcomes(passed=1)  # the default schedule hides the race
    result = run(pytester, "--tidal-fuzz=30")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*tidal: failed under seed*"])


def test_fuzz_with_async_fixtures_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        async def value():
            return 1

        @pytest.mark.tidal(fuzz=3)
        async def test_it(value):
            pass
        """
    )
    result = run(pytester)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*fuzzing runs the test once per seed*"])


# -- the strict lifecycle ---------------------------------------------------------------------

LEAKY = """
import asyncio
import socket
import subprocess
import sys
import threading
import pytest

kept = []

async def test_clean():
    task = asyncio.create_task(asyncio.sleep(0))
    await task

async def test_pending_task():
    asyncio.create_task(asyncio.sleep(60))  # LINE pending

async def test_lost_error():
    async def boom():
        raise ValueError("nobody looked")
    asyncio.create_task(boom())  # LINE lost
    await asyncio.sleep(0.01)

async def test_never_awaited():
    async def work():
        pass
    work()  # LINE unawaited

async def test_open_server():
    kept.append(await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0))  # LINE server

async def test_open_descriptor():
    kept.append(socket.socket())

async def test_thread():
    stop = threading.Event()
    kept.append(stop)
    threading.Thread(target=stop.wait, args=(5,), name="left-behind").start()

async def test_child():
    kept.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"]))

def test_cleanup():
    for thing in kept:
        if isinstance(thing, threading.Event):
            thing.set()
        elif isinstance(thing, subprocess.Popen):
            thing.kill()
            thing.wait()
        else:
            thing.close()
"""


def _line(source: str, tag: str) -> int:
    return next(n for n, text in enumerate(source.splitlines(), 1) if f"# LINE {tag}" in text)


def test_strict_reports_each_leak_with_its_creation_site(pytester: pytest.Pytester) -> None:
    path = pytester.makepyfile(LEAKY)
    result = run(pytester, "--tidal-strict", "-p", "no:unraisableexception")
    result.assert_outcomes(passed=9, errors=7)
    name, source = path.name, path.read_text()
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_pending_task*",
            "task left pending: <Task pending*",
            f'*File "*{name}", line {_line(source, "pending")}, in test_pending_task',
            "*ERROR at teardown of test_lost_error*",
            "Task exception was never retrieved",
            "*ValueError: nobody looked",
            f'*File "*{name}", line {_line(source, "lost")}, in test_lost_error',
            "*ERROR at teardown of test_never_awaited*",
            "coroutine never awaited: coroutine 'test_never_awaited.<locals>.work' was never*",
            f'*File "*{name}", line {_line(source, "unawaited")}, in test_never_awaited',
            "*ERROR at teardown of test_open_server*",
            "server left open: <Server*",
            f'*File "*{name}", line {_line(source, "server")}, in test_open_server',
            "*ERROR at teardown of test_open_descriptor*",
            "descriptor * left open: socket:*",
            "*ERROR at teardown of test_thread*",
            "thread left running: 'left-behind', target Event.wait*",
            "*ERROR at teardown of test_child*",
            "child process left running: pid *-c import time; time.sleep(5)*",
        ]
    )
    for clean in ("test_clean", "test_cleanup"):
        assert f"ERROR at teardown of {clean}" not in result.stdout.str()


def test_without_strict_nothing_is_checked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio

        async def test_pending_task():
            asyncio.create_task(asyncio.sleep(60))
        """
    )
    run(pytester, "--tidal").assert_outcomes(passed=1)
    run(pytester, "--tidal-strict").assert_outcomes(passed=1, errors=1)


# -- pytest-asyncio ---------------------------------------------------------------------------

WITH_ASYNCIO = ["-p", "asyncio", *QUIET]
ASYNCIO_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n{extra}"


def test_pytest_asyncio_takes_its_loops_from_tidal(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_asyncio")
    pytester.makeini(ASYNCIO_INI.format(extra=""))
    pytester.makepyfile(
        """
        import asyncio
        import pytest
        import pytest_asyncio
        import tidal.testing

        @pytest_asyncio.fixture
        async def loop_seen():
            return asyncio.get_running_loop()

        @pytest.mark.asyncio
        async def test_on_tidal(loop_seen):
            assert isinstance(asyncio.get_running_loop(), tidal.testing.ControlledLoop)
            assert loop_seen is asyncio.get_running_loop()

        @pytest.mark.asyncio
        @pytest.mark.tidal(virtual_time=True)
        async def test_virtual():
            await asyncio.sleep(1000)
            assert asyncio.get_running_loop().time() == 1000.0

        @pytest.mark.asyncio
        @pytest.mark.tidal(fuzz=3)
        async def test_each_seed_is_a_test():
            assert asyncio.get_running_loop().seed in (0, 1, 2)

        async def test_unclaimed_runs_on_tidal_too():
            assert isinstance(asyncio.get_running_loop(), tidal.testing.ControlledLoop)
        """
    )
    result = pytester.runpytest(*WITH_ASYNCIO, "--tidal", "-v")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*test_each_seed_is_a_test?tidal-seed-2? PASSED*"])


def test_pytest_asyncio_without_tidal_mode_is_untouched(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_asyncio")
    pytester.makeini(ASYNCIO_INI.format(extra=""))
    pytester.makepyfile(
        """
        import asyncio
        import pytest
        import tidal.testing

        @pytest.mark.asyncio
        async def test_default_loop():
            assert not isinstance(asyncio.get_running_loop(), tidal.testing.ControlledLoop)

        @pytest.mark.asyncio
        @pytest.mark.tidal(virtual_time=True)
        async def test_marker_needs_tidal_mode():
            pass
        """
    )
    result = pytester.runpytest(*WITH_ASYNCIO)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*add --tidal (or tidal_mode = true in the ini file)*"])


def test_strict_checks_tests_pytest_asyncio_runs(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_asyncio")
    pytester.makeini(ASYNCIO_INI.format(extra="tidal_strict = true\n"))
    pytester.makepyfile(
        """
        import asyncio
        import pytest

        @pytest.mark.asyncio
        async def test_lost_error():
            async def boom():
                raise KeyError("unseen")
            asyncio.create_task(boom())
            await asyncio.sleep(0.01)

        @pytest.mark.asyncio
        async def test_clean():
            await asyncio.sleep(0)
        """
    )
    result = pytester.runpytest(*WITH_ASYNCIO, "--tidal")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_lost_error*", "Task exception was never retrieved"]
    )
