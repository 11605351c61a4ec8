"""The README's benchmark section: both builds of tidal on several Pythons, from JSON results.

Owns: turning ``run.py --json`` results into the Markdown between the README's bench markers,
one table per Python with the columns asyncio, uvloop, tidal (pure) and tidal (compiled).
Not here: running anything (run.py), the per-run section ``run.py --update-readme`` writes.

One process can hold only one build of tidal, so each build is its own ``run.py`` invocation
(``TIDAL_PURE=1`` for the pure one), each with asyncio's loop as its own baseline: every ratio
in a table is relative to the asyncio runs interleaved with it. ``make`` (below) runs them all.

    python benchmarks/readme_tables.py make --pythons 3.11,3.13 -r 7 --clock cpu
    python benchmarks/readme_tables.py render RESULT.json [...]   # print the Markdown
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import harness

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results"


def _cell(entry: dict[str, Any] | None) -> str:
    if entry is None or entry.get("status") != "ok":
        return "n/a"
    ratio = entry.get("ratio")
    return f"{ratio:.2f}x" if ratio is not None else "n/a"


def _geomean(result: dict[str, Any], loop: str) -> str:
    ratios = [
        b["loops"][loop]["ratio"]
        for b in result["benchmarks"].values()
        if b["loops"].get(loop, {}).get("status") == "ok"
        and b["loops"].get("asyncio", {}).get("status") == "ok"
        and b["loops"][loop].get("ratio")
    ]
    if not ratios:
        return "n/a"
    return f"**{math.exp(sum(math.log(r) for r in ratios) / len(ratios)):.2f}x**"


def render(paths: list[Path]) -> str:
    """Markdown for the README from results: one table per Python, a column per build."""
    by_python: dict[str, dict[str, dict[str, Any]]] = {}
    for path in paths:
        result = json.loads(path.read_text(encoding="utf-8"))
        build = "compiled" if result["environment"].get("tidal_compiled") else "pure"
        by_python.setdefault(result["environment"]["python"], {})[build] = result
    parts = ["## Benchmarks", ""]
    some = next(iter(next(iter(by_python.values())).values()))
    settings, env = some["settings"], some["environment"]
    clock = "CPU time of the process" if env.get("clock") == "cpu" else "wall-clock time"
    parts.append(
        textwrap.fill(
            f"Speed relative to asyncio's loop: median(asyncio) / median(loop), higher is faster. "
            f"Median of {settings['repeat']} runs per loop, loops interleaved, {clock}; "
            f"{env['system']} {env['machine']} with {env['cpus']} CPUs, shared with other work "
            f"(ratios move by a few percent between runs); commit {env['git_commit']}. Each "
            "build of tidal is its own run with its own asyncio baseline (one process holds "
            "one build). n/a: the loop cannot run it (asyncio's eager task factory needs 3.12). "
            "Reproduce with `python benchmarks/readme_tables.py make`; `benchmarks/README.md` "
            "says what each benchmark does.",
            100,
        )
    )
    for python, builds in sorted(by_python.items()):
        pure, compiled = builds.get("pure"), builds.get("compiled")
        first = compiled or pure
        assert first is not None
        parts += [
            "",
            f"### CPython {python}",
            "",
            "| benchmark | asyncio | uvloop | tidal pure | tidal compiled |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, bench in first["benchmarks"].items():
            asyncio_entry = bench["loops"].get("asyncio", {})
            base = (
                f"{asyncio_entry['median_s'] * 1000:.1f} ms"
                if asyncio_entry.get("status") == "ok"
                else "n/a"
            )
            row = [
                f"`{name}`",
                base,
                _cell(bench["loops"].get("uvloop")),
                _cell(pure["benchmarks"][name]["loops"].get("tidal") if pure else None),
                _cell(compiled["benchmarks"][name]["loops"].get("tidal") if compiled else None),
            ]
            parts.append("| " + " | ".join(row) + " |")
        parts.append(
            "| **geometric mean** | 1.00x | "
            + _geomean(first, "uvloop")
            + " | "
            + (_geomean(pure, "tidal") if pure else "n/a")
            + " | "
            + (_geomean(compiled, "tidal") if compiled else "n/a")
            + " |"
        )
    return "\n".join(parts)


def make(pythons: list[str], repeat: int, clock: str) -> list[Path]:
    """Run the suite per Python and build; return the JSON files written."""
    written = []
    for python in pythons:
        exe = REPO_ROOT / ".venv" / python / "bin" / "python"
        for build in ("pure", "compiled"):
            out = RESULTS / f"readme-{python}-{build}.json"
            env = dict(os.environ)
            env.pop("TIDAL_PURE", None)
            if build == "pure":
                env["TIDAL_PURE"] = "1"
            else:
                probe = [str(exe), "-c", "import sys, tidal; sys.exit(0 if tidal.COMPILED else 1)"]
                if subprocess.run(probe, env=env, check=False).returncode != 0:
                    print(
                        f"== {python}: no compiled build installed (TIDAL_COMPILE=1 "
                        "pip install -e .); its column stays n/a",
                        file=sys.stderr,
                    )
                    continue
            command = [str(exe), str(REPO_ROOT / "benchmarks" / "run.py"), "-q"]
            command += ["-r", str(repeat), "--clock", clock, "--json", str(out)]
            print(f"== {python} {build}: {' '.join(command)}", file=sys.stderr, flush=True)
            subprocess.run(command, env=env, check=True)
            written.append(out)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/readme_tables.py")
    sub = parser.add_subparsers(dest="command", required=True)
    make_cmd = sub.add_parser("make", help="run every Python and build, then update README.md")
    make_cmd.add_argument("--pythons", default="3.11,3.13")
    make_cmd.add_argument("-r", "--repeat", type=int, default=7)
    make_cmd.add_argument("--clock", choices=["wall", "cpu"], default="cpu")
    render_cmd = sub.add_parser("render", help="print the Markdown for these JSON results")
    render_cmd.add_argument("paths", nargs="+", type=Path)
    render_cmd.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "make":
        paths = make(args.pythons.split(","), args.repeat, args.clock)
        harness.update_readme(render(paths))
        print(f"updated {harness.README_PATH}")
        return 0
    text = render(args.paths)
    if args.update_readme:
        harness.update_readme(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
