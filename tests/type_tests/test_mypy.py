"""The type tests: mypy --strict accepts generics.py and reports exactly the marked lines of
misuse.py (tidal.Future[T] and tidal.Task[T] are generic; create_future() gives Future[Any])."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: ", re.MULTILINE)


@pytest.mark.slow
def test_mypy_checks_the_generic_future_and_task() -> None:
    pytest.importorskip("mypy")
    files = [HERE / "generics.py", HERE / "misuse.py"]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", *map(str, files)],
        cwd=ROOT,  # pyproject.toml's [tool.mypy] settings, and its cache
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "error: " in result.stdout, result.stdout + result.stderr  # mypy ran and reported
    reported = {
        (Path(match["file"]).name, int(match["line"])) for match in ERROR.finditer(result.stdout)
    }
    expected = {
        ("misuse.py", number)
        for number, line in enumerate((HERE / "misuse.py").read_text().splitlines(), 1)
        if line.endswith("# expect-error")
    }
    assert reported == expected, result.stdout
