"""The two builds: compiled modules when installed, pure Python with TIDAL_PURE=1 or when stale."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import tidal
from tidal import _build

_REPORT = """
import json, sys, tidal
mods = {n: getattr(m, "__file__", None) for n, m in sys.modules.items() if n.startswith("tidal.")}
mods = {n: f for n, f in mods.items() if f}
print(json.dumps({"compiled": tidal.COMPILED, "modules": mods}))
"""


def _import_report(**env: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _REPORT],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
        timeout=60,
    )
    report: dict[str, object] = json.loads(done.stdout)
    return report


def test_tidal_pure_loads_every_module_from_source() -> None:
    report = _import_report(TIDAL_PURE="1")
    assert report["compiled"] is False
    modules = report["modules"]
    assert isinstance(modules, dict) and "tidal.core.scheduler" in modules
    assert all(path.endswith(".py") for path in modules.values()), modules


def test_compiled_flag_says_which_build_runs() -> None:
    report = _import_report(TIDAL_PURE="")
    modules = report["modules"]
    assert isinstance(modules, dict)
    scheduler_compiled = modules["tidal.core.scheduler"].endswith(
        tuple(importlib.machinery.EXTENSION_SUFFIXES)
    )
    assert report["compiled"] is scheduler_compiled
    assert tidal.COMPILED is _build.compiled(sys.modules["tidal.core.scheduler"])


def test_a_compiled_module_older_than_its_source_is_not_used(tmp_path: Path) -> None:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    source = tmp_path / "hot.py"
    compiled = tmp_path / f"hot{suffix}"
    compiled.write_bytes(b"")
    source.write_text("VALUE = 1\n")
    finder = _build.SourceFinder(pure=False)
    old = time.time() - 100
    os.utime(compiled, (old, old))  # the source changed after compiling: use the source
    spec = finder.find_spec("tidal.hot", [str(tmp_path)])
    assert spec is not None and spec.origin == str(source)
    os.utime(source, (old - 100, old - 100))  # compiled after the last edit: the usual finders
    assert finder.find_spec("tidal.hot", [str(tmp_path)]) is None
    assert _build.SourceFinder(pure=True).find_spec("tidal.hot", [str(tmp_path)]) is not None
    # Other packages' modules and tidal's packages are never this finder's business.
    assert finder.find_spec("other.hot", [str(tmp_path)]) is None
    assert finder.find_spec("tidal.hot", None) is None
