"""Run CPython's own test_asyncio modules against tidal (and against asyncio, the oracle).

Owns: the command line, the module set, one worker process per (Python, loop, module) job, the
watchdog that survives hangs, the exclusion list (exclusions.toml), the verdict, the JSON
results and the generated docs/conformance.md.
Not here: what happens inside a worker (worker.py), how tidal is put in place (harness.py).

Usage::

    python conformance/run.py --loop tidal --ci          # the CI gate: one line, exit status
    python conformance/run.py --loop both -m test_locks  # compare the loops on one module
    python conformance/run.py --write-docs               # both loops, 3.11-3.13, the docs page

Verdict: a tidal test that no entry of exclusions.toml covers *fails the gate* when its
outcome is fail, error, hang or crash (or an unexpected success), or when it built only
asyncio loops (the worker counts the loops each test builds: tidal was not in place). With
``--loop both`` asyncio is the oracle: a tidal failure on a test that fails on asyncio's loop
too is reported but does not fail the gate (the test is broken in this environment), and a
tidal skip of a test that asyncio's loop passed does fail it (a skip must not hide a gap).
``--ci`` runs tidal only, leaves out the entries marked ``ci_run = false``, and prints one line
(preceded by one line per gate failure, and a ``NETWORK`` line for each test whose attempt to
reach off this machine the worker refused; see worker.py).

Watchdog: each worker arms faulthandler for every test (``--per-test-timeout``), so a hung test
dumps all stacks and ends its process; this side also kills a silent worker after the same
limit plus a grace period. Either way the test is recorded as a hang and a fresh worker
carries on with the tests that had not run. ``--module-timeout`` bounds a whole module.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import fnmatch
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKER = HERE / "worker.py"
EXCLUSIONS_FILE = HERE / "exclusions.toml"
DOCS_FILE = ROOT / "docs" / "conformance.md"

# The module set of issue 2, item 6, in the order the docs list them.
CORE_MODULES = (
    "test_futures",
    "test_futures2",
    "test_tasks",
    "test_locks",
    "test_queues",
    "test_taskgroups",
    "test_timeouts",
    "test_runners",
    "test_waitfor",
    "test_threads",
    "test_context",
    "test_pep492",
    "test_base_events",
    "test_events",
    # Not in the list, but eager tasks are tidal's own code and the module is fast;
    # it exists from Python 3.12 (on 3.11 its one record is a skip).
    "test_eager_task_factory",
    # asyncio.staggered.staggered_race on tidal's tasks; the module exists from 3.13.
    "test_staggered",
)
# The I/O modules of issue 3 (test_events and test_base_events, above, hold I/O tests too).
IO_MODULES = (
    "test_sock_lowlevel",
    "test_streams",
    "test_server",
    "test_sendfile",
    "test_ssl",
    "test_sslproto",
    "test_subprocess",
    "test_unix_events",
    "test_buffered_proto",
    "test_protocols",
    "test_transports",
)
DEFAULT_MODULES = CORE_MODULES + IO_MODULES
# test_asyncio modules that are not run, and why (listed in the docs).
MODULES_NOT_RUN = {
    "test_selector_events": "unit tests of asyncio's own selector loop and transport classes "
    "(BaseSelectorEventLoop built directly, _SelectorSocketTransport and "
    "_SelectorDatagramTransport driven through their private methods on a mock loop); "
    "nothing in them goes through a loop that could be tidal's",
    "test_proactor_events": "asyncio's Windows proactor loop and its transports",
    "test_windows_events": "Windows only",
    "test_windows_utils": "Windows only",
}
PYTHONS = ("3.11", "3.12", "3.13")
LOOPS = ("asyncio", "tidal")

# Outcomes a worker reports, plus the two this side infers when a worker dies mid-test.
PASSING = frozenset({"pass", "xfail"})
FAILING = frozenset({"fail", "error", "hang", "crash", "xpass"})

# Seconds a silent worker gets beyond the per-test limit before it is killed from here
# (the in-process faulthandler watchdog should have ended it first).
KILL_GRACE = 15.0
# A module whose workers hang this many times is abandoned: the rest is recorded as not run.
MAX_RELAUNCHES = 25


# -- exclusions -----------------------------------------------------------------------------------

# The categories an exclusion may have, with the meaning the docs give them.
CATEGORIES = {
    "internals": "the test inspects or mocks asyncio's private machinery (private methods and "
    "attributes, or the modules asyncio imports, patched inside asyncio), which a tidal loop "
    "does not have or use",
    "asyncio-classes": "the test exercises asyncio's own Future, Task, loop or transport "
    "classes rather than the loop it runs on; where a tidal twin exists it runs the same "
    "scenarios on tidal's classes",
    "design": "tidal deliberately differs from asyncio here; the reason says why",
}


@dataclasses.dataclass(frozen=True)
class Exclusion:
    """One entry of exclusions.toml: tests tidal is not judged on, and why."""

    title: str  # a short heading for the docs
    category: str  # a key of CATEGORIES
    reason: str
    tests: tuple[str, ...]  # fnmatch patterns over ids like "test_tasks.Class.test_x"
    pythons: tuple[str, ...]  # empty: every Python
    run: bool  # False: not even run (it hangs or cannot run on tidal)
    ci_run: bool  # False: run, but not under --ci (too slow for the CI budget)

    def applies(self, test_id: str, python: str) -> bool:
        if self.pythons and python not in self.pythons:
            return False
        return any(fnmatch.fnmatchcase(test_id, pattern) for pattern in self.tests)


def load_exclusions(path: Path) -> list[Exclusion]:
    with path.open("rb") as f:
        data = tomllib.load(f)
    entries = []
    for raw in data.get("exclude", []):
        unknown = set(raw) - {"title", "category", "reason", "tests", "pythons", "run", "ci_run"}
        if unknown:
            raise SystemExit(f"{path}: unknown keys {sorted(unknown)} in entry {raw!r}")
        if raw["category"] not in CATEGORIES:
            raise SystemExit(
                f"{path}: category {raw['category']!r} of {raw['title']!r} is not one of "
                f"{sorted(CATEGORIES)}"
            )
        if not " ".join(raw["reason"].split()):
            raise SystemExit(f"{path}: entry {raw['title']!r} has no reason")
        entries.append(
            Exclusion(
                title=raw["title"],
                category=raw["category"],
                reason=" ".join(raw["reason"].split()),
                tests=tuple(raw["tests"]),
                pythons=tuple(raw.get("pythons", ())),
                run=raw.get("run", True),
                ci_run=raw.get("ci_run", True),
            )
        )
    return entries


def find_exclusion(exclusions: Iterable[Exclusion], test_id: str, python: str) -> Exclusion | None:
    for entry in exclusions:
        if entry.applies(test_id, python):
            return entry
    return None


# -- running one job ------------------------------------------------------------------------------


@dataclasses.dataclass
class Job:
    python: str  # "3.12"
    interpreter: str  # path of that Python
    loop: str  # "asyncio" or "tidal"
    module: str  # "test_tasks"
    skip: list[str]  # ids/patterns the worker must not run
    per_test_timeout: float
    module_timeout: float
    results: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    relaunches: int = 0
    log: str = ""  # the workers' stderr, kept when something went wrong


def run_job(job: Job) -> Job:
    """Run one module on one loop, relaunching the worker after each hang or crash."""
    started = time.monotonic()
    deadline = started + job.module_timeout
    with tempfile.TemporaryDirectory(prefix="tidal-conformance-") as tmp:
        while True:
            skip_file = Path(tmp) / "skip.json"
            skip_file.write_text(json.dumps(job.skip + sorted(job.results)))
            finished, running, stderr = _run_worker(job, skip_file, deadline)
            if finished:
                break
            if running is None:
                # The worker died outside any test (import error, crash at exit...).
                job.results[f"{job.module}.<worker>"] = {
                    "outcome": "crash",
                    "seconds": 0.0,
                    "detail": stderr[-3000:],
                }
                job.log += stderr
                break
            timed_out = "Timeout (" in stderr or "killed by the runner" in stderr
            job.results[running] = {
                "outcome": "hang" if timed_out else "crash",
                "seconds": job.per_test_timeout if timed_out else 0.0,
                "detail": stderr[-3000:],
            }
            job.log += stderr
            job.relaunches += 1
            if job.relaunches >= MAX_RELAUNCHES or time.monotonic() >= deadline:
                job.results[f"{job.module}.<rest>"] = {
                    "outcome": "crash",
                    "seconds": 0.0,
                    "detail": "module abandoned: too many hangs or past --module-timeout",
                }
                break
    job.seconds = time.monotonic() - started
    return job


def _run_worker(job: Job, skip_file: Path, deadline: float) -> tuple[bool, str | None, str]:
    """One worker process; returns (saw "done", id of the test it died in, its stderr)."""
    read_fd, write_fd = os.pipe()
    command = [
        job.interpreter,
        str(WORKER),
        "--module",
        job.module,
        "--loop",
        job.loop,
        "--results-fd",
        str(write_fd),
        "--skip-file",
        str(skip_file),
        "--per-test-timeout",
        str(job.per_test_timeout),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p
    )
    env.pop("PYTHONASYNCIODEBUG", None)  # debug mode is the tests' decision
    with tempfile.TemporaryFile(mode="w+b") as stderr_file:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
            stdout=stderr_file,
            stderr=stderr_file,
            start_new_session=True,  # its own process group: killed as a whole
            env=env,
        )
        os.close(write_fd)
        running: str | None = None
        finished = False
        killed = False
        buffer = b""
        with selectors.DefaultSelector() as selector, os.fdopen(read_fd, "rb", 0) as pipe:
            selector.register(pipe, selectors.EVENT_READ)
            last_event = time.monotonic()
            while True:
                now = time.monotonic()
                limit = min(last_event + job.per_test_timeout + KILL_GRACE, deadline)
                if now >= limit:
                    _kill(proc)
                    killed = True
                    break
                if not selector.select(limit - now):
                    continue
                chunk = pipe.read(65536)
                if not chunk:
                    break
                last_event = time.monotonic()
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    record = json.loads(line)
                    event = record.pop("event")
                    if event == "start":
                        running = record["id"]
                    elif event == "end":
                        test_id = record.pop("id", None)
                        if test_id is None:  # a worker bug: keep the line, do not crash
                            job.log += f"[worker sent an end record without id: {line!r}]\n"
                            continue
                        job.results[test_id] = record
                        if test_id == running:
                            running = None
                    elif event == "done":
                        finished = True
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _kill(proc)
            proc.wait()
        stderr_file.seek(0)
        stderr = stderr_file.read().decode("utf-8", "replace")
    if killed:
        stderr += "\n[killed by the runner: no progress within the per-test limit]\n"
    if finished and proc.returncode != 0:
        job.log += stderr
    return finished, running, stderr


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- interpreters ---------------------------------------------------------------------------------


def find_interpreter(python: str) -> str:
    """The interpreter for ``python`` ("3.12"): the repo's venv, then pyenv, then PATH.

    Each candidate is run once to check that it starts and is that version: pyenv's shims
    are on PATH for every version but fail for the ones not selected.
    """
    current = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if python == current:
        return sys.executable
    candidates = [ROOT / ".venv" / python / "bin" / "python"]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += sorted(pyenv.glob(f"{python}.*/bin/python{python}"), reverse=True)
    on_path = shutil.which(f"python{python}")
    if on_path:
        candidates.append(Path(on_path))
    probe = "import sys; print('%d.%d' % sys.version_info[:2])"
    for candidate in candidates:
        if not candidate.exists():
            continue
        try:
            found = subprocess.run(
                [str(candidate), "-c", probe], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if found.returncode == 0 and found.stdout.strip() == python:
            return str(candidate)
    raise SystemExit(f"no working interpreter found for Python {python}")


# -- verdicts -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Verdict:
    """Everything judged about one tidal test."""

    python: str  # "3.12"
    test_id: str
    outcome: str  # the tidal outcome, or "not run"
    exclusion: Exclusion | None
    oracle: str | None  # the asyncio outcome, when that loop ran too
    loops: dict[str, int]  # event loops the test built, by kind ("tidal", "asyncio")

    @property
    def ran_on(self) -> str:
        """Where the test ran: tidal, asyncio (only asyncio loops were built) or none."""
        if self.loops.get("tidal"):
            return "tidal"
        return "asyncio" if self.loops.get("asyncio") else "none"

    @property
    def gated(self) -> bool:
        return self.exclusion is None

    @property
    def fails_gate(self) -> bool:
        if not self.gated:
            return False
        if self.ran_on == "asyncio":
            # The harness failed to put tidal in place: whatever the outcome, tidal untested.
            return True
        if self.outcome == "skip":
            # A skip hides a gap when asyncio's loop ran the same test and passed it.
            return self.oracle in PASSING
        if self.outcome not in FAILING:
            return False
        # asyncio failing the same test means the test is broken here, not tidal.
        return self.oracle is None or self.oracle in PASSING or self.oracle == "skip"


def judge(
    module: str,
    python: str,
    tidal: dict[str, dict[str, Any]],
    oracle: dict[str, dict[str, Any]] | None,
    exclusions: list[Exclusion],
    not_run: Iterable[str],
) -> list[Verdict]:
    verdicts = []
    for test_id, record in sorted(tidal.items()):
        oracle_outcome = None
        if oracle is not None and test_id in oracle:
            oracle_outcome = oracle[test_id]["outcome"]
        verdicts.append(
            Verdict(
                python,
                test_id,
                record["outcome"],
                find_exclusion(exclusions, test_id, python),
                oracle_outcome,
                record.get("loops", {}),
            )
        )
    for test_id in sorted(not_run):
        verdicts.append(
            Verdict(
                python, test_id, "not run", find_exclusion(exclusions, test_id, python), None, {}
            )
        )
    return verdicts


def counts(outcomes: Iterable[str]) -> Counter[str]:
    tally: Counter[str] = Counter()
    for outcome in outcomes:
        if outcome in PASSING:
            tally["pass"] += 1
        elif outcome in ("fail", "xpass"):
            tally["fail"] += 1
        elif outcome in ("error", "hang", "crash"):
            tally["error"] += 1
        elif outcome == "skip":
            tally["skip"] += 1
        else:
            tally["not run"] += 1
    return tally


def fmt_counts(tally: Counter[str]) -> str:
    return f"{tally['pass']}/{tally['fail']}/{tally['error']}/{tally['skip']}"


# -- listing the tests left out of a run ----------------------------------------------------------


def list_tests(interpreter: str, loop: str, module: str) -> list[str]:
    """Ask a worker for a module's test ids (used to name the tests left out of a run)."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [
            interpreter,
            str(WORKER),
            "--module",
            module,
            "--loop",
            loop,
            "--list",
            "--results-fd",
            str(write_fd),
        ],
        cwd=ROOT,
        pass_fds=(write_fd,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    proc.wait(timeout=120)
    ids = []
    for line in data.splitlines():
        record = json.loads(line)
        if record["event"] == "listed":
            ids.append(record["id"])
    return ids


# -- the command ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run CPython's test_asyncio modules against tidal and asyncio.",
    )
    parser.add_argument("--loop", choices=["tidal", "asyncio", "both"], default="both")
    parser.add_argument(
        "-m",
        "--modules",
        nargs="+",
        default=list(DEFAULT_MODULES),
        metavar="MODULE",
        help="test modules (default: the agreed set)",
    )
    parser.add_argument(
        "--python",
        action="append",
        dest="pythons",
        metavar="X.Y",
        help="run under this Python (repeatable; default: the running one)",
    )
    parser.add_argument("--all-pythons", action="store_true", help="3.11, 3.12 and 3.13")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--per-test-timeout", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--module-timeout", type=float, default=600.0, metavar="SECONDS")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every result here")
    parser.add_argument(
        "--exclusions",
        type=Path,
        default=EXCLUSIONS_FILE,
        metavar="PATH",
        help="the exclusion list (default: conformance/exclusions.toml)",
    )
    parser.add_argument(
        "--ci",
        action="store_true",
        help="tidal only, skip the tests exclusions.toml marks ci_run=false, "
        "tighter time limits, one summary line; exit 1 if the gate fails",
    )
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help=f"both loops on 3.11-3.13, then write {DOCS_FILE.relative_to(ROOT)}",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show the traceback of each gate failure"
    )
    args = parser.parse_args(argv)
    if args.ci:
        args.loop = "tidal"
        args.per_test_timeout = min(args.per_test_timeout, 20.0)
        args.module_timeout = min(args.module_timeout, 90.0)
    if args.write_docs:
        args.loop = "both"
        args.all_pythons = True
        args.modules = list(DEFAULT_MODULES)
    if args.all_pythons:
        args.pythons = list(PYTHONS)
    if not args.pythons:
        args.pythons = [f"{sys.version_info[0]}.{sys.version_info[1]}"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exclusions = load_exclusions(args.exclusions)
    loops = LOOPS if args.loop == "both" else (args.loop,)
    jobs: list[Job] = []
    for python in args.pythons:
        interpreter = find_interpreter(python)
        for loop in loops:
            for module in args.modules:
                skip: list[str] = []
                if loop == "tidal":
                    for entry in exclusions:
                        if entry.pythons and python not in entry.pythons:
                            continue
                        if not entry.run or (args.ci and not entry.ci_run):
                            skip.extend(p for p in entry.tests if p.startswith(module + "."))
                jobs.append(
                    Job(
                        python,
                        interpreter,
                        loop,
                        module,
                        skip,
                        args.per_test_timeout,
                        args.module_timeout,
                    )
                )
    # Longest first, so that a long module does not start last and stretch the wall time.
    weight = {
        "test_subprocess": 0,
        "test_tasks": 1,
        "test_events": 2,
        "test_ssl": 3,
        "test_taskgroups": 4,
        "test_sslproto": 5,
    }
    jobs.sort(key=lambda j: weight.get(j.module, 9))

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        done = list(pool.map(run_job, jobs))
    wall = time.monotonic() - started

    by_key = {(j.python, j.loop, j.module): j for j in done}
    report: dict[str, Any] = {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(wall, 1),
        "ci": args.ci,
        "runs": [],
    }
    all_verdicts: dict[tuple[str, str], list[Verdict]] = {}
    for python in args.pythons:
        for module in args.modules:
            tidal_job = by_key.get((python, "tidal", module))
            oracle_job = by_key.get((python, "asyncio", module))
            if tidal_job is None:
                continue
            not_run: list[str] = []
            if tidal_job.skip:
                listed = list_tests(tidal_job.interpreter, "tidal", module)
                not_run = [
                    t for t in listed if any(fnmatch.fnmatchcase(t, p) for p in tidal_job.skip)
                ]
            all_verdicts[(python, module)] = judge(
                module,
                python,
                tidal_job.results,
                oracle_job.results if oracle_job else None,
                exclusions,
                not_run,
            )
    for job in done:
        report["runs"].append(
            {
                "python": job.python,
                "loop": job.loop,
                "module": job.module,
                "seconds": round(job.seconds, 2),
                "relaunches": job.relaunches,
                "tests": job.results,
                "worker_log": job.log[-5000:],  # stderr of workers that hung or crashed
            }
        )

    failures = [v for verdicts in all_verdicts.values() for v in verdicts if v.fails_gate]
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, sort_keys=True))
    if args.write_docs:
        write_docs(report, all_verdicts, exclusions, args)

    print_summary(done, all_verdicts, failures, wall, args)
    if "tidal" in loops:
        return 1 if failures else 0
    return 1 if any(r["outcome"] in FAILING for j in done for r in j.results.values()) else 0


def _detail_of(verdict: Verdict, done: list[Job]) -> str:
    module = verdict.test_id.split(".", 1)[0]
    for job in done:
        if (job.python, job.loop, job.module) == (verdict.python, "tidal", module):
            return str(job.results.get(verdict.test_id, {}).get("detail", ""))[-1500:]
    return ""


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())


def print_summary(
    done: list[Job],
    all_verdicts: dict[tuple[str, str], list[Verdict]],
    failures: list[Verdict],
    wall: float,
    args: argparse.Namespace,
) -> None:
    if not args.ci:
        print(f"{'python':6} {'module':18} {'loop':7} {'pass/fail/error/skip':>22} {'secs':>6}")
        for job in sorted(done, key=lambda j: (j.python, j.module, j.loop)):
            tally = counts(r["outcome"] for r in job.results.values())
            print(
                f"{job.python:6} {job.module:18} {job.loop:7} {fmt_counts(tally):>22} "
                f"{job.seconds:6.1f}"
            )
    for job in sorted(done, key=lambda j: (j.python, j.module, j.loop)):
        for test_id, record in sorted(job.results.items()):
            if record.get("blocked"):  # worker.confine_network refused these
                print(
                    f"NETWORK [{job.python}] {job.loop} {test_id}: refused "
                    f"{', '.join(record['blocked'][:3])}"
                )
    for verdict in failures:  # printed under --ci too: they are what a red CI run needs
        why = "ran on asyncio's loop" if verdict.ran_on == "asyncio" else verdict.outcome
        print(f"GATE FAIL [{verdict.python}] {verdict.test_id}: {why}")
        if args.verbose:
            print(_indent(_detail_of(verdict, done)))
    if "tidal" not in ([args.loop] if args.loop != "both" else LOOPS):
        tally = counts(r["outcome"] for j in done for r in j.results.values())
        print(f"asyncio: {fmt_counts(tally)} pass/fail/error/skip in {wall:.0f}s")
        return
    verdicts = [v for vs in all_verdicts.values() for v in vs]
    gated = counts(v.outcome for v in verdicts if v.gated)
    excluded_ran = sum(1 for v in verdicts if not v.gated and v.outcome != "not run")
    not_run = sum(1 for v in verdicts if v.outcome == "not run")
    status = "FAIL" if failures else "OK"
    pythons = ",".join(args.pythons)
    print(
        f"conformance {status}: tidal on Python {pythons}, {len(args.modules)} modules: "
        f"{gated['pass']} passed, {len(failures)} failed the gate, {gated['skip']} skipped; "
        f"excluded: {excluded_ran} ran ungated, {not_run} not run; {wall:.0f}s"
    )


# -- docs ------------------------------------------------------------------------------------------


def write_docs(
    report: dict[str, Any],
    all_verdicts: dict[tuple[str, str], list[Verdict]],
    exclusions: list[Exclusion],
    args: argparse.Namespace,
) -> None:
    runs = {(r["python"], r["loop"], r["module"]): r for r in report["runs"]}
    out: list[str] = []
    add = out.append
    add("# Conformance: CPython's test_asyncio against tidal")
    add("")
    add("<!-- Generated by `python conformance/run.py --write-docs`; do not edit by hand. -->")
    add("")
    add(
        "tidal runs CPython's own `test.test_asyncio` modules, the ones that ship with each "
        "interpreter, with tidal put in place of asyncio's loop (`conformance/harness.py`): "
        "the policy, `asyncio.SelectorEventLoop`, and the virtual-clock `TestLoop` all hand "
        "out tidal loops, and tidal twins of the Future/Task test classes re-run their "
        "scenarios with `tidal.Future` and `tidal.Task`. The same modules run on asyncio's "
        "own loop as the oracle."
    )
    add("")
    add(
        f"Modules: the core set ({', '.join(CORE_MODULES)}) and the I/O set "
        f"({', '.join(IO_MODULES)}); test_events and test_base_events hold I/O tests too "
        "(sockets, servers, TLS, datagrams, pipes, ptys, subprocesses, signals). All of them "
        "are in the CI gate (`--ci`)."
    )
    add("")
    add(
        f"Generated {report['generated']}; wall time for the whole matrix "
        f"{report['wall_seconds']:.0f} s with {args.jobs} workers."
    )
    add("")
    add("How to run:")
    add("")
    add("```")
    add("python conformance/run.py --loop tidal --ci     # CI gate: this Python, one line, status")
    add("python conformance/run.py --loop both -m test_tasks -v")
    add("python conformance/run.py --write-docs          # regenerate this page")
    add("```")
    add("")
    add(
        "**Gate**: every tidal test that no exclusion below covers must pass. A skip is "
        "allowed unless asyncio's loop passed the same test; a test that built only asyncio "
        "loops on the tidal run fails the gate whatever its outcome (the substitution "
        "failed). Counts are pass/fail/error/skip; *gated* is what tidal is judged on, "
        "*excluded* is everything `conformance/exclusions.toml` covers (run and recorded "
        "unless the entry says otherwise). The asyncio column counts every test of the "
        "module; the tidal columns also count the tidal twin classes. *On tidal loop / no "
        "loop*: the worker counts the loops each test builds; the *no loop* tests check "
        "asyncio helpers that involve no loop (for example `HandleTests` with a mock loop), "
        "so they pass on any loop."
    )
    add("")
    add(
        "**Network**: the tests may reach only this machine. The worker "
        "(`confine_network()` in `conformance/worker.py`) makes real sockets refuse to connect "
        "or send to anything but loopback, unspecified and Unix-domain addresses, and "
        "getaddrinfo refuse host names other than localhost; the runner prints a `NETWORK` "
        "line for every test it refused. Some CPython tests name outside addresses that only "
        "their mocks of asyncio's modules were meant to see; those mocks are not in tidal's "
        "path, so such tests are excluded and not run (see *A mocked `socket` module inside "
        "asyncio, that would reach out for real on tidal*)."
    )
    add("")
    add(
        "Tidal twins (`conformance/harness.py`): `TidalFutureTests`, "
        "`TidalFutureDoneCallbackTests`, `TidalFutureInheritanceTests` (test_futures, "
        "`tidal.Future`); `TidalFutureTests` (test_futures2, `tidal.Task`); "
        "`TidalTask_TidalFuture_Tests`, `TidalTask_TidalFuture_SubclassTests`, "
        "`TidalTask_CFuture_Tests`, `TidalCurrentLoopTests` (test_tasks); "
        "`TidalBaseEventLoopTests` (test_base_events, on `tidal.EventLoop`); "
        "`TidalEventLoopTests` (test_events, on `tidal.EventLoop` with its default poller, "
        "while the EPoll/Poll/Select classes run tidal's loop on the selector they name); "
        "`TidalEagerTaskFactoryLoopTests`, `TidalNonEagerTests`, `TidalEagerTests` "
        "(test_eager_task_factory, `tidal.Task`; this module is not in the issue's list but is "
        "run because eager tasks are tidal's own code)."
    )
    add("")
    add("Modules of test_asyncio that are not run:")
    add("")
    for module, why in MODULES_NOT_RUN.items():
        add(f"- {module}: {why}.")
    add("")
    for python in args.pythons:
        add(f"## Python {python}")
        add("")
        add(
            "| module | asyncio | tidal gated | gate failures | gated: on tidal loop / no loop "
            "| tidal excluded (ran) | excluded, not run | secs asyncio / tidal |"
        )
        add("|---|---|---|---|---|---|---|---|")
        totals: dict[str, Counter[str]] = {
            "asyncio": Counter(),
            "gated": Counter(),
            "excluded": Counter(),
            "other": Counter(),
        }
        for module in args.modules:
            verdicts = all_verdicts.get((python, module), [])
            oracle = runs.get((python, "asyncio", module))
            tidal_run = runs.get((python, "tidal", module))
            oracle_tally = (
                counts(r["outcome"] for r in oracle["tests"].values()) if oracle else None
            )
            gated = counts(v.outcome for v in verdicts if v.gated)
            excluded_ran = counts(
                v.outcome for v in verdicts if not v.gated and v.outcome != "not run"
            )
            not_run = sum(1 for v in verdicts if v.outcome == "not run")
            gate_failures = sum(1 for v in verdicts if v.fails_gate)
            secs = (
                f"{oracle['seconds'] if oracle else 0:.1f} / "
                f"{tidal_run['seconds'] if tidal_run else 0:.1f}"
            )
            on_tidal = sum(1 for v in verdicts if v.gated and v.ran_on == "tidal")
            no_loop = sum(1 for v in verdicts if v.gated and v.ran_on == "none")
            add(
                f"| {module} | {fmt_counts(oracle_tally) if oracle_tally else '-'} "
                f"| {fmt_counts(gated)} | {gate_failures} | {on_tidal} / {no_loop} "
                f"| {fmt_counts(excluded_ran)} | {not_run} | {secs} |"
            )
            totals["asyncio"].update(oracle_tally or Counter())
            totals["gated"].update(gated)
            totals["excluded"].update(excluded_ran)
            totals["other"].update(
                failures=gate_failures,
                on_tidal=on_tidal,
                no_loop=no_loop,
                not_run=not_run,
                secs_asyncio=round((oracle["seconds"] if oracle else 0) * 10),
                secs_tidal=round((tidal_run["seconds"] if tidal_run else 0) * 10),
            )
        other = totals["other"]
        add(
            f"| **total** | {fmt_counts(totals['asyncio'])} | {fmt_counts(totals['gated'])} "
            f"| {other['failures']} | {other['on_tidal']} / {other['no_loop']} "
            f"| {fmt_counts(totals['excluded'])} | {other['not_run']} "
            f"| {other['secs_asyncio'] / 10:.1f} / {other['secs_tidal'] / 10:.1f} |"
        )
        add("")
        # The excluded tests by category and module, so the I/O ones can be tracked over time.
        by_category: dict[tuple[str, str], list[Verdict]] = {}
        for (py, module), verdicts in all_verdicts.items():
            if py != python:
                continue
            for v in verdicts:
                if v.exclusion is not None:
                    by_category.setdefault((v.exclusion.category, module), []).append(v)
        if by_category:
            add(
                "Excluded tests on tidal, by category and module (pass/fail/error/skip of those "
                "that ran):"
            )
            add("")
            add("| category | module | tests | ran: pass/fail/error/skip | not run |")
            add("|---|---|---|---|---|")
            for category, module in sorted(by_category):
                vs = by_category[(category, module)]
                ran = counts(v.outcome for v in vs if v.outcome != "not run")
                not_run = sum(1 for v in vs if v.outcome == "not run")
                add(f"| {category} | {module} | {len(vs)} | {fmt_counts(ran)} | {not_run} |")
            add("")
        failing = [
            v for (py, _m), vs in all_verdicts.items() if py == python for v in vs if v.fails_gate
        ]
        if failing:
            add("Gate failures:")
            add("")
            for v in failing:
                add(f"- `{v.test_id}`: {v.outcome} (asyncio: {v.oracle})")
            add("")
    add("## Exclusions")
    add("")
    add(
        "Every entry of `conformance/exclusions.toml`, with the number of tidal tests it "
        "covered per Python. Entries marked *not run* are never run on tidal (they would "
        "hang, or do something a conformance run must not); entries marked *not run under "
        "--ci* run in full runs (like this page's) but are left out of the CI gate to keep it "
        "fast. Categories:"
    )
    add("")
    for category, meaning in CATEGORIES.items():
        add(f"- *{category}*: {meaning}.")
    add("")
    for entry in exclusions:
        matched = {
            python: sum(
                1
                for (py, _m), vs in all_verdicts.items()
                if py == python
                for v in vs
                if v.exclusion is entry
            )
            for python in args.pythons
        }
        where = ", ".join(f"{p}: {n}" for p, n in matched.items())
        flags = []
        if not entry.run:
            flags.append("not run")
        if not entry.ci_run:
            flags.append("not run under --ci")
        if entry.pythons:
            flags.append("Python " + ", ".join(entry.pythons))
        flag_text = f"; {'; '.join(flags)}" if flags else ""
        add(f"### {entry.title}")
        add("")
        add(f"*{entry.category}*{flag_text}. Tests covered: {where}.")
        add("")
        add(entry.reason)
        add("")
        for pattern in entry.tests:
            add(f"- `{pattern}`")
        add("")
    DOCS_FILE.parent.mkdir(parents=True, exist_ok=True)
    # The anyio suite's section belongs to anyio_run.py: keep it as it is.
    previous = DOCS_FILE.read_text() if DOCS_FILE.exists() else ""
    begin, end = "<!-- anyio-suite:begin -->", "<!-- anyio-suite:end -->"
    if begin in previous and end in previous:
        section = begin + previous.split(begin, 1)[1].split(end, 1)[0] + end
        out += ["", section, ""]
    DOCS_FILE.write_text("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
