"""Which build of tidal is running: compiled modules (Cython) or the pure-Python reference.

Owns: ``TIDAL_PURE=1`` (make ``import`` skip tidal's compiled modules), never importing a
compiled module older than its source, and ``compiled()``.
Not here: building the modules (setup.py).

Both builds come from the same ``.py`` files; a compiled module sits next to its source as
``name.cpython-3XX-<platform>.so``. Python's own import system prefers the extension module, so
choosing the source means finding tidal's submodules before the default finders look. The
finder below does that, for ``tidal.*`` only (CPython's own C accelerators, ``_asyncio``,
``_heapq`` and the rest, stay in use in both builds), in two cases:
- ``TIDAL_PURE=1``: every submodule comes from its ``.py`` file;
- a ``.py`` file changed after its module was compiled (an editable install being worked on):
  that module comes from the source, so an edit is never silently ignored. Reinstalling
  (``pip install -e .``) compiles it again.

Invariant: the finder is installed before any compiled module can have been imported, because
``tidal/__init__.py`` (always pure Python) calls ``install_finder`` first.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Final

PURE_ENV: Final = "TIDAL_PURE"  # set (to anything but "" or "0") to force the pure build


def pure_requested() -> bool:
    """True when ``$TIDAL_PURE`` asks for the pure-Python build."""
    return os.environ.get(PURE_ENV, "") not in ("", "0")


class SourceFinder:
    """A meta-path finder that loads ``tidal.*`` submodules from their ``.py`` files when the
    pure build is requested or the compiled module is older than its source."""

    def __init__(self, pure: bool) -> None:
        self.pure = pure

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("tidal.") or path is None:
            return None
        name = fullname.rpartition(".")[2]
        for entry in path:
            source = os.path.join(entry, name + ".py")
            if not os.path.isfile(source):
                continue
            if self.pure or _compiled_is_stale(entry, name, source):
                return importlib.util.spec_from_file_location(fullname, source)
            return None  # the usual finders: the compiled module if there is one
        return None  # a package (its __init__.py is never compiled): the usual finders


def _compiled_is_stale(directory: str, name: str, source: str) -> bool:
    source_time = os.stat(source).st_mtime
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        try:
            return os.stat(os.path.join(directory, name + suffix)).st_mtime < source_time
        except OSError:
            continue
    return False  # not compiled at all


def install_finder() -> None:
    """Put ``SourceFinder`` first on ``sys.meta_path`` (once), honouring ``$TIDAL_PURE``."""
    if not any(isinstance(f, SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceFinder(pure_requested()))


def compiled(module: ModuleType) -> bool:
    """True if ``module`` was loaded from a compiled extension, not from its ``.py`` file."""
    filename = getattr(module, "__file__", None) or ""
    return filename.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
