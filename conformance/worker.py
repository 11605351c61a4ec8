"""One test module, one loop, one process: the worker that run.py starts for each job.

Owns: importing ``test.test_asyncio.<module>`` from the running interpreter, putting tidal in
place (``--loop tidal``), running the module's tests with unittest, and streaming one JSON line
per test to the file descriptor run.py passes (``--results-fd``).
Not here: choosing the tests to leave out, watching for hangs from outside, relaunching after
one, and judging outcomes (run.py).

Protocol (one JSON object per line on the results descriptor):

    {"event": "start", "id": "test_tasks.Class.test_x"}
    {"event": "end", "id": ..., "outcome": "pass"|"fail"|"error"|"skip"|"xfail"|"xpass",
     "seconds": 0.01, "detail": "last lines of the traceback, or the skip reason",
     "loops": {"tidal": 1, "asyncio": 0}}   loops built during the test (tidal runs only)
    {"event": "listed", "id": ...}          with --list: the ids it would run, nothing run
    {"event": "done"}                       after the last test

A class or module fixture that fails (setUpClass, tearDownModule) gets an "end" record of its
own, under unittest's id for it ("setUpClass (test_x.Class)").

Network confinement: a test may only reach this machine. ``confine_network()`` makes
``socket.socket.connect``, ``connect_ex`` and ``sendto`` refuse any address that is not a
loopback, unspecified (0.0.0.0, ::) or Unix-domain address, with ``OSError(ENETUNREACH)`` as on
a machine without a route, and ``socket.getaddrinfo`` refuse any host name but "localhost"
(numeric addresses resolve as usual), with ``socket.gaierror(EAI_NONAME)``; each refusal is
recorded in the test's "end" record (``"blocked": [...]``). Some CPython tests name outside
addresses that only their mocks were meant to see; on tidal those mocks are not in the path
(see exclusions.toml), and this guard keeps such a test from ever reaching the network,
whatever the exclusion list says.

In-process watchdog: before each test, ``faulthandler.dump_traceback_later(limit, exit=True)``
is armed; a test that runs past the limit gets every thread's stack dumped to stderr and the
process exits. run.py sees a "start" without its "end", records the test as a hang, and starts
a new worker for the tests that had not run yet.
"""

from __future__ import annotations

import argparse
import errno
import faulthandler
import fnmatch
import importlib
import ipaddress
import json
import os
import socket
import sys
import time
import traceback
import unittest
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

# Test ids are reported without this prefix: "test_tasks.Class.test_x".
PACKAGE_PREFIX = "test.test_asyncio."
# Characters of traceback kept per failing test; enough for the assertion and a few frames.
DETAIL_CHARS = 1500


# Addresses a test tried to reach off this machine since the last stopTest (see the module doc).
BLOCKED: list[str] = []


def _is_local(family: int, address: Any) -> bool:
    """True for an address on this machine: Unix-domain, loopback, unspecified or localhost."""
    if family == getattr(socket, "AF_UNIX", None):
        return True
    if family not in (socket.AF_INET, socket.AF_INET6):
        return False
    if not isinstance(address, tuple) or not address:
        return False
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host in ("", "localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # another host name: it would need the resolver, and is not local
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def confine_network() -> None:
    """Make real sockets refuse to reach any address off this machine (see the module doc)."""
    klass: Any = socket.socket

    def check(sock: socket.socket, address: Any, what: str) -> None:
        if not _is_local(sock.family, address):
            BLOCKED.append(f"{what} {address!r}")
            raise OSError(
                errno.ENETUNREACH,
                f"conformance worker: {what} to {address!r} refused (loopback only)",
            )

    original_connect = klass.connect
    original_connect_ex = klass.connect_ex
    original_sendto = klass.sendto

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address, "connect")
        original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address, "connect_ex")
        return int(original_connect_ex(self, address))

    def sendto(self: socket.socket, data: Any, *args: Any) -> int:
        check(self, args[-1] if args else None, "sendto")
        return int(original_sendto(self, data, *args))

    original_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode("ascii", "replace") if isinstance(host, bytes) else host
        if isinstance(name, str) and name not in ("", "localhost"):
            try:
                ipaddress.ip_address(name.split("%", 1)[0])
            except ValueError:
                BLOCKED.append(f"getaddrinfo {host!r}")
                raise socket.gaierror(
                    socket.EAI_NONAME,
                    f"conformance worker: looking up {host!r} refused (no name service)",
                ) from None
        return original_getaddrinfo(host, *args, **kwargs)

    klass.connect = connect
    klass.connect_ex = connect_ex
    klass.sendto = sendto
    socket.getaddrinfo = getaddrinfo


def _short_id(test: unittest.TestCase) -> str:
    test_id = test.id()
    if test_id.startswith(PACKAGE_PREFIX):
        return test_id[len(PACKAGE_PREFIX) :]
    # Class or module fixtures that failed: "setUpClass (test.test_asyncio.test_x.Class)".
    return test_id.replace(PACKAGE_PREFIX, "")


def _iter_tests(suite: unittest.TestSuite | unittest.TestCase) -> Iterator[unittest.TestCase]:
    if isinstance(suite, unittest.TestCase):
        yield suite
        return
    for item in suite:
        yield from _iter_tests(item)


class StreamingResult(unittest.TestResult):
    """A TestResult that writes each test's outcome as a JSON line, as soon as it is known."""

    def __init__(self, out: TextIO, per_test_timeout: float, census: Any = None) -> None:
        super().__init__()
        self._census = census  # harness.LoopCensus on the tidal run: loops built per test
        self.buffer = True  # keep the tests' own prints out of the protocol and the log
        self._out = out
        self._timeout = per_test_timeout
        self._outcome: dict[str, Any] = {}
        self._started = 0.0

    def _emit(self, record: dict[str, Any]) -> None:
        self._out.write(json.dumps(record) + "\n")
        self._out.flush()

    def startTest(self, test: unittest.TestCase) -> None:
        super().startTest(test)
        self._outcome = {"id": _short_id(test), "outcome": "pass", "detail": ""}
        self._emit({"event": "start", "id": self._outcome["id"]})
        if self._census is not None:
            self._census.take()
        self._started = time.perf_counter()
        faulthandler.dump_traceback_later(self._timeout, exit=True, file=sys.__stderr__)

    def stopTest(self, test: unittest.TestCase) -> None:
        faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)
        if self._outcome.get("id") != _short_id(test):
            # Python 3.12 calls stopTest, but not startTest, for a test of a skipped class;
            # addSkip has already reported it.
            return
        record = {"event": "end", **self._outcome}
        self._outcome = {}
        record["seconds"] = round(time.perf_counter() - self._started, 4)
        if self._census is not None:
            record["loops"] = self._census.take()
        if BLOCKED:
            record["blocked"] = BLOCKED[:]
            BLOCKED.clear()
        self._emit(record)

    def _set(self, outcome: str, detail: str) -> None:
        # The first failure wins; a later subtest failure does not overwrite it.
        if self._outcome.get("outcome") in (None, "pass"):
            self._outcome["outcome"] = outcome
            self._outcome["detail"] = detail[-DETAIL_CHARS:]

    def _format(self, err: Any) -> str:
        return "".join(traceback.format_exception(*err))

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        super().addError(test, err)
        if not self._outcome or _short_id(test) != self._outcome.get("id"):
            # A class or module fixture failed outside any test: report it on its own.
            self._emit(
                {
                    "event": "end",
                    "id": _short_id(test),
                    "outcome": "error",
                    "seconds": 0.0,
                    "detail": self._format(err)[-DETAIL_CHARS:],
                }
            )
            return
        self._set("error", self._format(err))

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._set("fail", self._format(err))

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        if _short_id(test) != self._outcome.get("id"):
            # A whole class skipped by a decorator: unittest never calls startTest.
            self._emit(
                {
                    "event": "end",
                    "id": _short_id(test),
                    "outcome": "skip",
                    "seconds": 0.0,
                    "detail": reason,
                }
            )
            return
        self._set("skip", reason)

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._set("xfail", self._format(err))

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._set("xpass", "unexpected success")

    def addSubTest(self, test: unittest.TestCase, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._set("fail" if failed else "error", f"{subtest}\n{self._format(err)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", required=True, help="e.g. test_tasks")
    parser.add_argument("--loop", choices=["asyncio", "tidal"], required=True)
    parser.add_argument("--results-fd", type=int, required=True)
    parser.add_argument("--skip-file", help="JSON list of test ids or fnmatch patterns not to run")
    parser.add_argument("--only-file", help="JSON list of test ids to run (default: all)")
    parser.add_argument("--list", action="store_true", help="report the test ids, run nothing")
    parser.add_argument("--per-test-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    out = os.fdopen(args.results_fd, "w", buffering=1)
    skip_ids: set[str] = set()
    skip_patterns: list[str] = []
    if args.skip_file:
        with open(args.skip_file) as f:
            for entry in json.load(f):
                if any(c in entry for c in "*?["):
                    skip_patterns.append(entry)
                else:
                    skip_ids.add(entry)
    only: set[str] | None = None
    if args.only_file:
        with open(args.only_file) as f:
            only = set(json.load(f))

    # The tests expect the warnings configuration of CPython's own test runner.
    warnings.simplefilter("default")
    confine_network()
    if args.loop == "tidal":
        import harness

        harness.install_tidal()
    module_name = f"{PACKAGE_PREFIX}{args.module}"
    try:
        module = importlib.import_module(module_name)
    except (unittest.SkipTest, ModuleNotFoundError) as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name != module_name:
            raise  # a broken import inside the module, not a module this Python lacks
        # A SkipTest at import time, or a module this Python does not have yet.
        out.write(
            json.dumps(
                {
                    "event": "end",
                    "id": f"{args.module}.<import>",
                    "outcome": "skip",
                    "seconds": 0.0,
                    "detail": str(exc),
                }
            )
            + "\n"
        )
        out.write(json.dumps({"event": "done"}) + "\n")
        return 0
    if args.loop == "tidal":
        harness.add_tidal_cases(args.module, module)

    suite = unittest.defaultTestLoader.loadTestsFromModule(module)

    def wanted(test_id: str) -> bool:
        if test_id in skip_ids or any(fnmatch.fnmatchcase(test_id, p) for p in skip_patterns):
            return False
        return only is None or test_id in only

    chosen = [test for test in _iter_tests(suite) if wanted(_short_id(test))]
    if args.list:
        for test in chosen:
            out.write(json.dumps({"event": "listed", "id": _short_id(test)}) + "\n")
        out.write(json.dumps({"event": "done"}) + "\n")
        return 0

    census = None
    if args.loop == "tidal":
        census = harness.LoopCensus
        census.install()
    result = StreamingResult(out, args.per_test_timeout, census)
    unittest.TestSuite(chosen).run(result)
    out.write(json.dumps({"event": "done"}) + "\n")
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
