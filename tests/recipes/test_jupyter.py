"""Recipe (docs/recipes.md): a Jupyter kernel on tidal, ``python -m tidal install-kernel``.

The spec is installed by the real command into a temporary prefix; nbclient and jupyter_client
start real ipykernel processes from it. The notebook is the seed's concurrent example
(``tidal.demo.CONCURRENT_CELL``: two tasks and gather, then a top-level ``await main()``), which
the notes time at 2 s; the kernel reports the loop it runs on.

Each kernel start costs about 2 s here, so the shutdown test runs ``TIDAL_KERNEL_CYCLES`` start,
run, shutdown cycles (default 2; the issue's 20 with ``TIDAL_KERNEL_CYCLES=20``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tidal import demo
from tidal.kernelspec import kernel_spec

pytest.importorskip("ipykernel")
pytest.importorskip("nbclient")

TIMEOUT = 120  # seconds for any one kernel operation
CYCLES = int(os.environ.get("TIDAL_KERNEL_CYCLES", "2"))
TIDAL = [sys.executable, "-m", "tidal"]
LOOP_PROBE = "import asyncio; print(type(asyncio.get_running_loop()).__module__)"


@pytest.fixture(scope="module")
def jupyter_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Install the kernel spec with the real command into a private prefix; the environment
    that makes Jupyter find it (and keeps Jupyter's files out of the home directory)."""
    root = tmp_path_factory.mktemp("jupyter")
    result = subprocess.run(
        [*TIDAL, "install-kernel", "--prefix", str(root / "prefix")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    spec_dir = root / "prefix" / "share" / "jupyter" / "kernels" / "tidal"
    assert result.stdout == f"Installed kernelspec tidal in {spec_dir}\n"
    assert json.loads((spec_dir / "kernel.json").read_text()) == kernel_spec()
    return {
        "JUPYTER_PATH": str(root / "prefix" / "share" / "jupyter"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "JUPYTER_DATA_DIR": str(root / "data"),
        "JUPYTER_CONFIG_DIR": str(root / "config"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "IPYTHONDIR": str(root / "ipython"),
    }


@pytest.fixture
def jupyter(jupyter_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in jupyter_env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.slow
def test_install_kernel_for_the_user_and_by_name(tmp_path: Path) -> None:
    env = {**os.environ, "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [*TIDAL, "install-kernel", "--user", "--name", "tidal-2", "--display-name", "tidal two"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    spec = json.loads((tmp_path / "data" / "kernels" / "tidal-2" / "kernel.json").read_text())
    assert spec["display_name"] == "tidal two"
    assert spec["argv"][:3] == [sys.executable, "-m", "tidal"]


@pytest.mark.slow
def test_notebook_top_level_await_runs_on_tidal_in_two_seconds(jupyter: None) -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("import asyncio, time\nscale = 1.0  # the notes' seconds"),
        nbformat.v4.new_code_cell(
            f"t0 = time.perf_counter()\n{demo.CONCURRENT_CELL}\nelapsed = time.perf_counter() - t0"
        ),
        nbformat.v4.new_code_cell(
            "import json\n"
            "print(json.dumps({'loop': type(asyncio.get_running_loop()).__module__,"
            " 'elapsed': elapsed}))"
        ),
    ]
    NotebookClient(notebook, kernel_name="tidal", timeout=TIMEOUT).execute()

    printed = "".join(out.get("text", "") for out in notebook.cells[1].outputs).splitlines()
    assert [demo.normalise(line) for line in printed] == [
        "started at HH:MM:SS",
        "hello zhangsan",
        "hello lisi",
        "finished at HH:MM:SS",
    ]
    (report,) = notebook.cells[2].outputs
    outcome = json.loads(report["text"])
    assert outcome["loop"] == "tidal.loop"
    assert 2.0 <= outcome["elapsed"] < 2.5  # two tasks in parallel: 2 s, not 1 s + 2 s


@pytest.mark.slow
def test_the_kernel_starts_runs_on_tidal_and_shuts_down_cleanly_again_and_again(
    jupyter: None,
) -> None:
    from jupyter_client import KernelManager

    for cycle in range(CYCLES):
        with tempfile.TemporaryFile("w+") as stderr:
            manager = KernelManager(kernel_name="tidal")
            manager.start_kernel(stderr=stderr)
            process = manager.provisioner.process  # type: ignore[union-attr]
            client = manager.client()
            client.start_channels()
            try:
                client.wait_for_ready(timeout=TIMEOUT)
                printed: list[str] = []
                reply = client.execute_interactive(
                    LOOP_PROBE, timeout=TIMEOUT, output_hook=_collect_text(printed)
                )
            finally:
                client.stop_channels()
                manager.shutdown_kernel(now=False)  # a shutdown request, as Jupyter sends
            stderr.seek(0)
            errors = stderr.read()
        assert reply["content"]["status"] == "ok", (cycle, reply["content"])
        assert "".join(printed) == "tidal.loop\n", cycle
        # Cleanly: the kernel exited by itself, with status 0, before any SIGTERM or SIGKILL.
        assert process.returncode == 0, (cycle, process.returncode, errors)
        assert "Traceback" not in errors and "Error" not in errors, (cycle, errors)


def _collect_text(into: list[str]) -> Callable[[dict[str, Any]], None]:
    """An output hook that keeps the text a cell prints."""

    def hook(message: dict[str, Any]) -> None:
        into.append(message["content"].get("text", ""))

    return hook
