"""Run anyio's own test suite on tidal's loop (and on asyncio's, the oracle), and judge it.

Owns: fetching the pinned anyio sdist into ``.cache/anyio/`` (never into the repo), installing
anyio's test dependencies (the ``anyio-suite`` extra), one pytest run per (Python, loop), the
serial re-run of the tests that failed in the parallel run, the difference list
(``anyio_differences.toml``), the verdict, and the anyio section of ``docs/conformance.md``.
Not here: how tidal is put behind anyio's backend parameters (anyio_plugin.py); CPython's
test_asyncio runner (run.py).

Usage::

    python conformance/anyio_run.py --ci                  # CI gate: tidal, this Python, one line
    python conformance/anyio_run.py --loop both -k subprocess   # compare the loops on a subset
    python conformance/anyio_run.py --write-docs          # both loops, 3.11-3.13, the docs section
    python conformance/anyio_run.py --write-docs --python 3.11 --python 3.12 --reuse 3.12

Verdict: with ``--loop both``, a test that passes (or xfails) on asyncio's loop and fails,
errors or skips on tidal's fails the gate unless an entry of anyio_differences.toml covers it.
With ``--ci`` (tidal only, without the two modules of ``CI_IGNORED``, which never run on the
loop under test) every tidal failure or error fails the gate unless an entry covers it;
entries of category ``environment`` name the tests that fail on asyncio's own loop on this
machine too (no IPv6 loopback, no outside DNS...), so tidal is not judged on them.

Flakes: the suite runs under pytest-xdist (``-n``) to fit the CI budget, and a few anyio tests
time subprocesses of pytest against a 3 s limit or catch ResourceWarnings raised by garbage
from an earlier test in the same worker. So every test that fails the gate in the parallel run
is run again on its own, serially; only a test that fails again fails the gate. A test that
passes on the re-run is reported as a flake (with its first failure) and counted in the docs.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from run import PYTHONS, find_interpreter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = ROOT / ".cache" / "anyio"
DIFFERENCES_FILE = HERE / "anyio_differences.toml"
DOCS_FILE = ROOT / "docs" / "conformance.md"
# The docs section this runner owns; run.py keeps it when it regenerates the rest of the page.
DOCS_BEGIN = "<!-- anyio-suite:begin -->"
DOCS_END = "<!-- anyio-suite:end -->"

# Must match the pin of the ``anyio-suite`` extra in pyproject.toml (checked at start).
ANYIO_VERSION = "4.16.0"
# Modules --ci leaves out: they never run on the loop under test (they run pytest itself, or an
# import, in subprocesses with anyio's default backend) and take about 80 % of the suite's time.
CI_IGNORED = ("tests/test_pytest_plugin.py", "tests/test_lazyimport.py")
LOOPS = ("asyncio", "tidal")
# A whole pytest run that takes longer is killed (a hang that pytest-timeout did not end).
RUN_TIMEOUT = 1500.0
PASSING = frozenset({"pass", "xfail"})
FAILING = frozenset({"fail", "error"})
CATEGORIES = {
    "environment": "fails on asyncio's own loop on this machine too (the machine lacks "
    "something the test needs)",
    "tidal-bug": "a tidal defect, known and tracked; the reason names the issue",
    "design": "tidal deliberately differs from asyncio's loop here; the reason says why",
}


# -- the suite ------------------------------------------------------------------------------------


def fetch_suite(interpreter: str) -> Path:
    """The extracted sdist of the pinned anyio, downloaded from PyPI on first use."""
    root = CACHE / f"anyio-{ANYIO_VERSION}"
    if (root / "tests" / "conftest.py").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = CACHE / f"anyio-{ANYIO_VERSION}.tar.gz"
    if not archive.exists():
        subprocess.run(
            [
                interpreter,
                *("-m", "pip", "download", "-q", "--disable-pip-version-check"),
                *("--no-binary", ":all:", "--no-deps", "-d", str(CACHE)),
                f"anyio=={ANYIO_VERSION}",
            ],
            check=True,
        )
    with tarfile.open(archive) as tar:
        tar.extractall(CACHE, filter="data")
    return root


def ensure_dependencies(interpreter: str) -> None:
    """Install the ``anyio-suite`` extra into the interpreter's venv if anyio is not pinned."""
    probe = (
        "import importlib.metadata as m, blockbuster, pytest_mock, xdist, psutil, truststore;"
        "print(m.version('anyio'))"
    )
    found = subprocess.run([interpreter, "-c", probe], capture_output=True, text=True)
    if found.returncode == 0 and found.stdout.strip() == ANYIO_VERSION:
        return
    subprocess.run(
        [
            interpreter,
            *("-m", "pip", "install", "-q", "--disable-pip-version-check"),
            *("-e", f"{ROOT}[anyio-suite]"),
        ],
        check=True,
    )


def check_pin() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    if f"anyio=={ANYIO_VERSION}" not in extras.get("anyio-suite", []):
        raise SystemExit(
            f"pyproject.toml's anyio-suite extra must pin anyio=={ANYIO_VERSION} "
            "(the version this runner fetches); change both together"
        )


def run_pytest(
    interpreter: str,
    suite: Path,
    loop: str,
    jobs: int,
    select: list[str],
    keyword: str | None,
    ignore: tuple[str, ...] = (),
) -> tuple[dict[str, dict[str, Any]], float]:
    """One pytest run of the suite on one loop; returns {node id: record} and wall seconds."""
    with tempfile.TemporaryDirectory(prefix="tidal-anyio-") as tmp:
        results = Path(tmp) / "results.json"
        command = [
            interpreter,
            *("-m", "pytest", "-p", "anyio_plugin", "-p", "no:cacheprovider", "-q"),
            *("--tb=short", f"--basetemp={tmp}/base", "-o", "console_output_style=classic"),
        ]
        if jobs > 1:
            command += ["-n", str(jobs)]
        if keyword:
            command += ["-k", keyword]
        command += [f"--ignore={path}" for path in ignore]
        command += select
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(HERE), str(ROOT / "src"), env.get("PYTHONPATH", "")) if p
        )
        env["TIDAL_ANYIO_LOOP"] = loop
        env["TIDAL_ANYIO_RESULTS"] = str(results)
        env.pop("PYTHONASYNCIODEBUG", None)
        started = time.monotonic()
        with tempfile.TemporaryFile("w+") as output:
            proc = subprocess.Popen(
                command,
                cwd=suite,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # its own process group: killed as a whole
            )
            try:
                proc.wait(timeout=RUN_TIMEOUT)
                timed_out = False
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                timed_out = True
            output.seek(0)
            text = output.read()
        seconds = time.monotonic() - started
        if not results.exists():
            raise SystemExit(
                f"anyio's suite did not run on {loop} ({interpreter}), exit {proc.returncode}:\n"
                + text[-4000:]
            )
        records: dict[str, dict[str, Any]] = {}
        for line in results.read_text().splitlines():
            record = json.loads(line)
            records[record.pop("id")] = record
        if timed_out:
            # Whatever was running is recorded under one id that judges as an error.
            records[f"<{loop} run killed after {RUN_TIMEOUT:.0f} s>"] = {
                "outcome": "error",
                "seconds": seconds,
                "detail": "E   the whole run hung; its output ended with:\n" + text[-1500:],
            }
        return records, seconds


# -- differences ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """One entry of anyio_differences.toml: tests tidal is not judged on, and why."""

    title: str
    category: str
    reason: str
    tests: tuple[str, ...]  # fnmatch patterns over pytest node ids
    pythons: tuple[str, ...]  # empty: every Python

    def applies(self, test_id: str, python: str) -> bool:
        if self.pythons and python not in self.pythons:
            return False
        return any(fnmatch.fnmatchcase(test_id, pattern) for pattern in self.tests)


def load_differences(path: Path) -> list[Difference]:
    with path.open("rb") as f:
        data = tomllib.load(f)
    entries = []
    for raw in data.get("difference", []):
        unknown = set(raw) - {"title", "category", "reason", "tests", "pythons"}
        if unknown:
            raise SystemExit(f"{path}: unknown keys {sorted(unknown)} in {raw.get('title')!r}")
        if raw["category"] not in CATEGORIES:
            raise SystemExit(f"{path}: category of {raw['title']!r} not in {sorted(CATEGORIES)}")
        reason = " ".join(raw["reason"].split())
        if not reason:
            raise SystemExit(f"{path}: entry {raw['title']!r} has no reason")
        entries.append(
            Difference(
                raw["title"],
                raw["category"],
                reason,
                tuple(raw["tests"]),
                tuple(raw.get("pythons", ())),
            )
        )
    return entries


def covering(differences: Iterable[Difference], test_id: str, python: str) -> Difference | None:
    return next((d for d in differences if d.applies(test_id, python)), None)


# -- judging --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    python: str
    loops: dict[str, dict[str, dict[str, Any]]]  # loop -> node id -> record
    seconds: dict[str, float]
    failures: list[str]  # node ids that fail the gate
    flakes: dict[str, str]  # node id -> the first (parallel-run) failure, passed alone
    covered: dict[str, Difference]  # tidal non-passes that an entry covers

    def stale(self, differences: list[Difference]) -> list[Difference]:
        """The ``tidal-bug`` entries none of whose tests fails any more: the bug is fixed."""
        tidal = self.loops.get("tidal", {})
        out = []
        for entry in differences:
            if entry.category != "tidal-bug":
                continue
            matched = [t for t in tidal if entry.applies(t, self.python)]
            if matched and all(tidal[t]["outcome"] in PASSING for t in matched):
                out.append(entry)
        return out


def gate_failures(
    python: str,
    tidal: dict[str, dict[str, Any]],
    oracle: dict[str, dict[str, Any]] | None,
    differences: list[Difference],
) -> tuple[list[str], dict[str, Difference]]:
    failing = []
    covered = {}
    for test_id, record in sorted(tidal.items()):
        outcome = record["outcome"]
        if test_id.startswith("<"):  # a run killed for hanging: always a gate failure
            failing.append(test_id)
            continue
        if oracle is None:
            bad = outcome in FAILING
        else:
            theirs = oracle.get(test_id, {}).get("outcome")
            bad = theirs in PASSING and outcome not in PASSING
        if not bad:
            continue
        entry = covering(differences, test_id, python)
        if entry is None:
            failing.append(test_id)
        else:
            covered[test_id] = entry
    return failing, covered


def run_python(python: str, args: argparse.Namespace, differences: list[Difference]) -> Outcome:
    interpreter = find_interpreter(python)
    ensure_dependencies(interpreter)
    suite = fetch_suite(interpreter)
    loops = LOOPS if args.loop == "both" else (args.loop,)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    seconds: dict[str, float] = {}
    for loop in loops:
        results[loop], seconds[loop] = run_pytest(
            interpreter,
            suite,
            loop,
            args.jobs,
            args.tests,
            args.keyword,
            CI_IGNORED if args.ci else (),
        )
        if not args.ci:
            print(f"[{python}] {loop}: {summary(results[loop])} in {seconds[loop]:.0f} s")
    flakes: dict[str, str] = {}
    failures: list[str] = []
    covered: dict[str, Difference] = {}
    if "tidal" in results:
        oracle = results.get("asyncio")
        failures, covered = gate_failures(python, results["tidal"], oracle, differences)
        rerun = [t for t in failures if not t.startswith("<")]
        if rerun and args.retry:
            again, extra = run_pytest(interpreter, suite, "tidal", 1, rerun, None)
            seconds["tidal"] += extra
            for test_id in failures:
                if test_id in results["tidal"] and again.get(test_id, {}).get("outcome") in PASSING:
                    flakes[test_id] = results["tidal"][test_id]["detail"]
                    results["tidal"][test_id] = again[test_id]
            failures = [t for t in failures if t not in flakes]
    return Outcome(python, results, seconds, failures, flakes, covered)


def headline(detail: str) -> str:
    """The line of a pytest failure that says what went wrong: the first ``E`` line."""
    lines = [line.strip() for line in detail.strip().splitlines()]
    errors = [line for line in lines if line.startswith("E ")]
    return (errors[0] if errors else lines[-1] if lines else "")[:200]


def save_outcome(o: Outcome) -> None:
    """Keep a two-loop outcome in .cache/anyio/ so --write-docs can reuse it (--reuse)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    data = {
        "python": o.python,
        "loops": o.loops,
        "seconds": o.seconds,
        "failures": o.failures,
        "flakes": o.flakes,
        "covered": {test_id: d.title for test_id, d in o.covered.items()},
    }
    (CACHE / f"outcome-{o.python}.json").write_text(json.dumps(data))


def load_outcome(python: str, differences: list[Difference]) -> Outcome | None:
    path = CACHE / f"outcome-{python}.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    # Judged again against the current difference list (it may have changed since the run).
    failures, covered = gate_failures(
        python, data["loops"]["tidal"], data["loops"].get("asyncio"), differences
    )
    return Outcome(python, data["loops"], data["seconds"], failures, data["flakes"], covered)


def summary(records: dict[str, dict[str, Any]]) -> str:
    tally = Counter(r["outcome"] for r in records.values())
    return " ".join(f"{n} {k}" for k, n in sorted(tally.items()))


# -- docs -----------------------------------------------------------------------------------------


def docs_section(outcomes: list[Outcome], differences: list[Difference], jobs: int) -> str:
    out: list[str] = [DOCS_BEGIN, "", "## anyio's own test suite", ""]
    add = out.append
    add(
        f"anyio {ANYIO_VERSION}'s test suite, from its sdist on PyPI (fetched into "
        "`.cache/anyio/` by `conformance/anyio_run.py`; not copied into this repository), runs "
        "with tidal as the loop behind anyio's asyncio backend: `conformance/anyio_plugin.py` "
        "rewrites the suite's `anyio_backend` parameters to "
        '`("asyncio", {"debug": True, "loop_factory": tidal.new_event_loop})` and, from 3.12, '
        "the same with asyncio's eager task factory installed on the tidal loop. The oracle is "
        "the same run on asyncio's own loop. uvloop and trio parameters are left out. Test "
        f"dependencies come from the `anyio-suite` extra; pytest-xdist runs {jobs} workers."
    )
    add("")
    add(
        "**Gate**: every test that passes on asyncio's loop passes on tidal's, unless an entry "
        "of `conformance/anyio_differences.toml` (listed below, with its reason) covers it. A "
        "test that fails in the parallel run is run again alone; one that passes then is a "
        "*flake* (load-sensitive timing or a warning from an earlier test's garbage) and does "
        "not fail the gate. CI runs `python conformance/anyio_run.py --ci` (tidal only) on "
        "Python 3.11 and 3.13, leaving out `tests/test_pytest_plugin.py` and "
        "`tests/test_lazyimport.py`: they run pytest itself, or an import, in subprocesses "
        "with anyio's default backend, so they never touch the loop under test, and they take "
        "about 80 % of the suite's time. The runs on this page include them."
    )
    add("")
    add(
        f"Generated {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} by "
        "`python conformance/anyio_run.py --write-docs`."
    )
    add("")
    add(
        "| Python | asyncio pass/fail/error/skip | tidal pass/fail/error/skip "
        "| gate failures | flakes | covered by an entry | secs asyncio / tidal |"
    )
    add("|---|---|---|---|---|---|---|")
    for o in outcomes:
        cells = []
        for loop in LOOPS:
            tally = Counter(r["outcome"] for r in o.loops.get(loop, {}).values())
            cells.append(
                f"{tally['pass'] + tally['xfail']}/{tally['fail']}/{tally['error']}/{tally['skip']}"
            )
        secs = " / ".join(f"{o.seconds.get(loop, 0):.0f}" for loop in LOOPS)
        add(
            f"| {o.python} | {cells[0]} | {cells[1]} | {len(o.failures)} | {len(o.flakes)} "
            f"| {len(o.covered)} | {secs} |"
        )
    add("")
    for o in outcomes:
        if o.failures:
            add(f"Gate failures on {o.python}:")
            add("")
            for test_id in o.failures:
                add(f"- `{test_id}`: {headline(o.loops['tidal'][test_id]['detail'])}")
            add("")
    add("### Differences")
    add("")
    for category, meaning in CATEGORIES.items():
        add(f"- *{category}*: {meaning}.")
    add("")
    for entry in differences:
        hits = ", ".join(
            f"{o.python}: {sum(1 for d in o.covered.values() if d is entry)}" for o in outcomes
        )
        where = f"; Python {', '.join(entry.pythons)}" if entry.pythons else ""
        add(f"#### {entry.title}")
        add("")
        add(f"*{entry.category}*{where}. Tests covered: {hits}.")
        add("")
        add(entry.reason)
        add("")
        for pattern in entry.tests:
            add(f"- `{pattern}`")
        add("")
    add(DOCS_END)
    return "\n".join(out)


def write_docs(section: str) -> None:
    text = DOCS_FILE.read_text() if DOCS_FILE.exists() else ""
    if DOCS_BEGIN in text:
        head, _, rest = text.partition(DOCS_BEGIN)
        _, _, tail = rest.partition(DOCS_END)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOCS_FILE.write_text(text)


# -- the command ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run anyio's test suite on tidal and asyncio.")
    parser.add_argument("--loop", choices=["tidal", "asyncio", "both"], default="both")
    parser.add_argument(
        "--python", action="append", dest="pythons", metavar="X.Y", help="repeatable"
    )
    parser.add_argument("--all-pythons", action="store_true", help="3.11, 3.12 and 3.13")
    parser.add_argument("-n", "--jobs", type=int, default=2, help="pytest-xdist workers")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    parser.add_argument("tests", nargs="*", help="node ids (relative to the sdist's root)")
    parser.add_argument("--no-retry", dest="retry", action="store_false")
    parser.add_argument("--ci", action="store_true", help="tidal only, one summary line")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="X.Y",
        help="with --write-docs: take this Python's last two-loop run from .cache/anyio/",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show failure details")
    args = parser.parse_args(argv)
    if args.ci:
        args.loop = "tidal"
    if args.write_docs:
        args.loop = "both"
        args.all_pythons = not args.pythons
    if args.all_pythons:
        args.pythons = list(PYTHONS)
    if not args.pythons:
        args.pythons = [f"{sys.version_info[0]}.{sys.version_info[1]}"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_pin()
    differences = load_differences(DIFFERENCES_FILE)
    outcomes = []
    for python in args.pythons:
        cached = load_outcome(python, differences) if python in args.reuse else None
        o = cached or run_python(python, args, differences)
        if args.loop == "both" and cached is None:
            save_outcome(o)
        outcomes.append(o)
        for test_id in o.failures:
            record = o.loops["tidal"][test_id]
            print(f"GATE {python} {test_id}: {record['outcome']} {headline(record['detail'])}")
            if args.verbose:
                print(record["detail"])
        for test_id, first in o.flakes.items():
            print(f"FLAKE {python} {test_id} (passed alone): {headline(first)}")
        for entry in o.stale(differences):
            print(f"STALE {python} {entry.title!r}: every test it covers passes now; remove it")
        secs = " + ".join(f"{loop} {s:.0f} s" for loop, s in o.seconds.items())
        tidal = summary(o.loops["tidal"]) if "tidal" in o.loops else "-"
        print(
            f"anyio {ANYIO_VERSION} suite, Python {python}: tidal {tidal}; "
            f"{len(o.failures)} gate failures, {len(o.flakes)} flakes, "
            f"{len(o.covered)} covered by anyio_differences.toml ({secs})"
        )
    if args.write_docs:
        write_docs(docs_section(outcomes, differences, args.jobs))
    return 1 if any(o.failures for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
