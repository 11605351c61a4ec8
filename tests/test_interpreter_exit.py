"""A loop that is never closed says nothing at interpreter exit, as asyncio's (issue 10, A3).

The common script shape ``loop = asyncio.get_event_loop(); loop.run_until_complete(main())``
leaves the loop to the policy until the interpreter tears its modules down; only then is it
collected, when module globals may already be None and no thread can start. Each script runs in
a fresh interpreter; its stderr must be empty on every loop, and it must exit promptly.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Makes the loop under test the one asyncio's entry points create: "asyncio" changes nothing.
INSTALL = {
    "asyncio": "",
    "tidal": "import tidal; tidal.install()",
    "tidal-py": textwrap.dedent(
        """
        import tidal
        class Policy(tidal.EventLoopPolicy):
            def new_event_loop(self):
                return tidal.new_event_loop(tasks="python")
        asyncio.set_event_loop_policy(Policy())
        """
    ),
}

GET_EVENT_LOOP = """
async def main():
    await asyncio.sleep(0)

loop = asyncio.get_event_loop()
loop.run_until_complete(main())
"""

# The loop is left holding everything a program may leave behind at exit: a signal handler, a
# child still running, a server, a connection, a pending future and a pending task.
EVERYTHING_LEFT_OPEN = """
import signal

kept = []

async def main():
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, print)
    kept.append(await asyncio.create_subprocess_exec("sleep", "1"))
    server = await asyncio.start_server(lambda r, w: kept.append(w), "127.0.0.1", 0)
    kept.append(server)
    port = server.sockets[0].getsockname()[1]
    kept.append(await asyncio.open_connection("127.0.0.1", port))
    await asyncio.sleep(0.05)
    kept.append(loop.create_future())
    kept.append(asyncio.ensure_future(asyncio.sleep(10)))

loop = asyncio.get_event_loop()
loop.run_until_complete(main())
"""

NEW_LOOP_NEVER_CLOSED = """
import signal

kept = []

async def main():
    kept.append(await asyncio.create_subprocess_exec("sleep", "1"))

loop = asyncio.new_event_loop()
loop.run_until_complete(main())
"""


def run_script(loop_name: str, body: str, *flags: str) -> subprocess.CompletedProcess[str]:
    source = "import asyncio\n" + INSTALL[loop_name] + "\n" + body
    return subprocess.run(
        # get_event_loop() without a current loop is deprecated on 3.12+ (on every loop alike).
        [sys.executable, *flags, "-W", "ignore::DeprecationWarning", "-c", source],
        capture_output=True,
        text=True,
        timeout=30,
    )


SCRIPTS = pytest.mark.parametrize(
    "body",
    [GET_EVENT_LOOP, EVERYTHING_LEFT_OPEN, NEW_LOOP_NEVER_CLOSED],
    ids=["get_event_loop", "everything_left_open", "new_loop_never_closed"],
)


@pytest.mark.slow
@SCRIPTS
def test_a_loop_left_open_is_quiet_at_exit(loop_name: str, body: str) -> None:
    result = run_script(loop_name, body)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.slow
@SCRIPTS
@pytest.mark.parametrize("loop_name", ["tidal", "tidal-py"])
def test_no_finalizer_of_the_loop_fails_at_exit_in_dev_mode(loop_name: str, body: str) -> None:
    # Beyond asyncio: in development mode (ResourceWarnings shown) whether a loop left open is
    # collected, and warns, before the interpreter ends depends on the version and on reference
    # cycles; asyncio's own loop then fails in its finalizer on 3.13 ("Exception ignored in
    # BaseEventLoop.__del__" with a child left running). tidal's finalizers never fail.
    result = run_script(loop_name, body, "-X", "dev")
    assert result.returncode == 0, result.stderr
    assert "Exception ignored" not in result.stderr
    assert "Traceback" not in result.stderr
