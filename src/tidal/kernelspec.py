"""A Jupyter kernel on tidal: the kernel spec that ``python -m tidal install-kernel`` installs.

Owns: the spec (``kernel.json``) and its installation through jupyter_client.
Not here: the kernel, which is ipykernel's, unchanged. The spec starts it as
``python -m tidal --no-leak-report -m ipykernel_launcher -f {connection_file}``: under
``python -m tidal`` asyncio hands out tidal loops, so the loop that ipykernel's tornado IOLoop
takes from asyncio, and on which IPython runs a cell's top-level ``await``, is tidal's. The leak
report is off because a kernel's loop is torn down by ipykernel, not by the notebook's code.

Neither ipykernel nor jupyter_client is a dependency of tidal: they are imported here, only when
a spec is installed, and a missing one is reported as such.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Final

DEFAULT_NAME: Final = "tidal"
DEFAULT_DISPLAY_NAME: Final = "Python 3 (tidal)"
_LOGOS: Final = ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg")  # ipykernel's, if present


class KernelSpecError(Exception):
    """The kernel spec could not be installed (the message says why and what to do)."""


def kernel_spec(display_name: str = DEFAULT_DISPLAY_NAME) -> dict[str, Any]:
    """The contents of ``kernel.json``: ipykernel under ``python -m tidal``, this Python."""
    return {
        "argv": [
            sys.executable,
            "-m",
            "tidal",
            "--no-leak-report",
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
        ],
        "display_name": display_name,
        "language": "python",
        "metadata": {"debugger": True},
    }


def install(
    *,
    name: str = DEFAULT_NAME,
    display_name: str = DEFAULT_DISPLAY_NAME,
    user: bool = False,
    prefix: str | None = None,
) -> str:
    """Install the spec as kernel ``name`` and return the directory it went to.

    Where, as ``python -m ipykernel install`` decides: ``user`` for this user's Jupyter data
    directory, ``prefix`` for ``PREFIX/share/jupyter/kernels``, else system-wide.

    Raises:
        KernelSpecError: ipykernel is not installed for this Python, the name is not a valid
            kernel name, or the directory cannot be written.
    """
    if importlib.util.find_spec("ipykernel") is None:
        raise KernelSpecError(
            f"ipykernel is not installed for {sys.executable}; install it there "
            f"('{sys.executable} -m pip install ipykernel') and run this again"
        )
    manager_module: Any = importlib.import_module("jupyter_client.kernelspec")
    resources = os.path.join(os.path.dirname(_ipykernel_file()), "resources")
    with tempfile.TemporaryDirectory() as source:
        with open(os.path.join(source, "kernel.json"), "w", encoding="utf-8") as out:
            json.dump(kernel_spec(display_name), out, indent=1)
        for logo in _LOGOS:
            if os.path.exists(os.path.join(resources, logo)):
                shutil.copy(os.path.join(resources, logo), source)
        try:
            path: str = manager_module.KernelSpecManager().install_kernel_spec(
                source, kernel_name=name, user=user, prefix=prefix
            )
        except ValueError as exc:  # jupyter_client's check of the name
            raise KernelSpecError(f"{exc}") from None
        except PermissionError as exc:
            raise KernelSpecError(
                f"cannot write {exc.filename or 'the kernel directory'} ({exc.strerror}); "
                "use --user, --sys-prefix or --prefix PREFIX"
            ) from None
    return path


def _ipykernel_file() -> str:
    spec = importlib.util.find_spec("ipykernel")
    return spec.origin if spec is not None and spec.origin else ""
