"""The core stays self-contained: src/tidal/core imports no transport, network, TLS,
subprocess, signal or observability module of tidal (STYLE.md, "Layering").

The check reads the source with ``ast`` (nothing is imported), resolves relative imports against
the module's package, and also catches imports hidden inside functions and under
``TYPE_CHECKING``, and ``importlib.import_module("tidal...")`` calls with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE_DIR = Path(__file__).resolve().parent.parent / "src" / "tidal" / "core"

FORBIDDEN = (
    "tidal.transports",
    "tidal.net",
    "tidal.tls",
    "tidal.subprocess",
    "tidal.signals",
    "tidal.observe",
)
# The core is the bottom layer: inside tidal it may only use itself and the poller.
ALLOWED_TIDAL = ("tidal.core", "tidal.io")


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every absolute module name ``source`` (the text of ``module``) imports from."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            # "from tidal import net" imports the submodule tidal.net.
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "__import__")
            )
        ):
            found.add(node.args[0].value)
    return found


def is_under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def core_modules() -> list[Path]:
    paths = sorted(CORE_DIR.glob("*.py"))
    assert paths, f"no core modules found in {CORE_DIR}"
    return paths


def module_name(path: Path) -> tuple[str, bool]:
    if path.stem == "__init__":
        return "tidal.core", True
    return f"tidal.core.{path.stem}", False


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_core_module_imports_no_outer_layer(path: Path) -> None:
    name, is_package = module_name(path)
    imports = imported_modules(path.read_text(encoding="utf-8"), name, is_package)
    bad = sorted(i for i in imports if is_under(i, FORBIDDEN))
    assert not bad, f"{path.name} imports outer layers: {bad}"


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_core_module_imports_only_core_and_io_from_tidal(path: Path) -> None:
    name, is_package = module_name(path)
    imports = imported_modules(path.read_text(encoding="utf-8"), name, is_package)
    tidal_imports = {i for i in imports if is_under(i, ("tidal",))}
    outside = sorted(i for i in tidal_imports if not is_under(i, ALLOWED_TIDAL))
    assert not outside, f"{path.name} imports tidal modules above the core: {outside}"


# -- the checker itself: it must notice every form of import --------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import tidal.transports.stream", "tidal.transports.stream"),
        ("from tidal.net import connect", "tidal.net"),
        ("from tidal import observe", "tidal.observe"),
        ("from ..tls import wrap", "tidal.tls"),
        ("from .. import signals", "tidal.signals"),
        ("from ..subprocess.proc import spawn", "tidal.subprocess.proc"),
        ("def f():\n    from ..observe.hooks import Hooks\n", "tidal.observe.hooks"),
        ("if TYPE_CHECKING:\n    from ..net import sockops\n", "tidal.net"),
        ("import importlib\nimportlib.import_module('tidal.observe')", "tidal.observe"),
        ("__import__('tidal.signals')", "tidal.signals"),
    ],
)
def test_the_checker_sees_each_import_form(source: str, expected: str) -> None:
    imports = imported_modules(source, "tidal.core.example")
    assert expected in imports
    assert any(is_under(i, FORBIDDEN) for i in imports)


def test_the_checker_resolves_relative_imports_inside_the_core() -> None:
    imports = imported_modules(
        "from .handles import Handle\nfrom ..io.poller import Poller\n", "tidal.core.scheduler"
    )
    assert "tidal.core.handles" in imports
    assert "tidal.io.poller" in imports
    assert not any(is_under(i, FORBIDDEN) for i in imports)
    package_imports = imported_modules("from .scheduler import Scheduler", "tidal.core", True)
    assert "tidal.core.scheduler" in package_imports
