"""Loop variants that measure what observability costs, for the benchmark harness.

Owns: two loop factories for ``benchmarks/run.py --loops NAME=module:attribute``:

- ``nohooks_loop``: tidal with every hook call site compiled out. It is a copy of ``src/tidal``
  imported as the package ``tidal_nohooks`` after removing, by exact text, the checks that
  observability added to the core (``Task.__init__``, phases 2 and 4 of the scheduler, ``close``,
  ``run_in_executor``). The copy is made once per process in a temporary directory. If a check
  is no longer found verbatim the variant refuses to load, so the comparison never silently
  measures the same code twice.
- ``recording_loop``: a tidal loop with a timeline recorder attached for its whole life (every
  step, callback, timer, I/O wait and executor job goes into the ring buffer).

Not here: the benchmarks (suite.py), timing and statistics (harness.py).

Usage, from the repository root (the commands the report quotes)::

    python benchmarks/run.py --loops tidal,nohooks=benchmarks.observe_overhead:nohooks_loop \\
        --baseline nohooks -r 15
    python benchmarks/run.py --loops tidal,recording=benchmarks.observe_overhead:recording_loop \\
        --baseline tidal -r 7

or ``python benchmarks/observe_overhead.py`` for both at once.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

SRC: Final = Path(__file__).resolve().parent.parent / "src" / "tidal"

# (file, text as it is in tidal, text without the observability check)
_STRIP: Final = (
    (
        "tasks.py",
        "        if _observe_spawn is not None:\n            _observe_spawn(self)\n",
        "",
    ),
    (
        "core/scheduler.py",
        "                    if self._instrumented:\n"
        "                        events = self._hooks.observed_select(timeout)\n"
        "                    else:\n"
        "                        events = self._poller.select(timeout)\n",
        "                    events = self._poller.select(timeout)\n",
    ),
    (
        "core/scheduler.py",
        "            if self._instrumented:\n"
        "                self._hooks.run_ready(len(ready))  # timing and hooks, off the fast path\n"
        "            elif self._debug:\n",
        "            if self._debug:\n",
    ),
    (
        "core/scheduler.py",
        "        if self._hooks is not None:\n"
        "            self._hooks.emit_loop_closing()  # observability (observe/hooks.py)\n",
        "",
    ),
    (
        "threads.py",
        "    hooks = loop._hooks\n"
        "    if hooks is not None and (hooks.executor_job_started or hooks.executor_job_finished)"
        ":\n",
        "    if False:\n",
    ),
)

_nohooks: Any = None


def _load_nohooks() -> Any:
    global _nohooks
    if _nohooks is None:
        root = Path(tempfile.mkdtemp(prefix="tidal-nohooks-"))
        atexit.register(shutil.rmtree, root, True)
        target = root / "tidal_nohooks"
        shutil.copytree(SRC, target, ignore=shutil.ignore_patterns("__pycache__", "observe"))
        for name, old, new in _STRIP:
            path = target / name
            text = path.read_text()
            if text.count(old) != 1:
                raise ImportError(
                    f"benchmarks/observe_overhead.py: the hook check in {name} changed; update "
                    f"_STRIP to the current text so that 'nohooks' really has it removed"
                )
            path.write_text(text.replace(old, new))
        sys.path.insert(0, str(root))
        _nohooks = importlib.import_module("tidal_nohooks")
    return _nohooks


def nohooks_loop() -> asyncio.AbstractEventLoop:
    """A loop of tidal with the hook call sites removed (see the module docstring)."""
    loop: asyncio.AbstractEventLoop = _load_nohooks().new_event_loop()
    return loop


def recording_loop() -> asyncio.AbstractEventLoop:
    """A tidal loop recording a timeline from creation to close (one recorder per loop, as
    ``tidal.trace.record()`` attaches to each loop a program makes)."""
    import tidal  # imported once; later calls find them in sys.modules
    from tidal.observe.timeline import Recorder

    loop = tidal.new_event_loop()
    recorder = Recorder()
    recorder.start()
    recorder.attach(loop)
    return loop


def main() -> int:
    """Run both comparisons through the harness's command line."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks import run

    nohooks = "nohooks=benchmarks.observe_overhead:nohooks_loop"
    recording = "recording=benchmarks.observe_overhead:recording_loop"
    status = run.main(["--loops", f"tidal,{nohooks}", "--baseline", "nohooks", "-r", "15"])
    return status or run.main(["--loops", f"tidal,{recording}", "--baseline", "tidal", "-r", "7"])


if __name__ == "__main__":
    raise SystemExit(main())
