"""Build script for tidal's compiled build: the same ``.py`` files, compiled by Cython.

Everything about the package lives in pyproject.toml; this file only adds the extension modules.
With ``TIDAL_COMPILE=1`` in the environment, ``pip install`` compiles the modules in
``COMPILED_MODULES`` when Cython (a build requirement) and a C compiler are there. When either is
missing, or a module fails to compile, it prints one line saying so and installs the pure-Python
package, which is always complete: a compiled module is an accelerated copy of its ``.py`` file,
never the only copy. At run time ``TIDAL_PURE=1`` makes ``import tidal`` ignore compiled modules
(see ``tidal/_build.py``).

Why compiling is opt-in (docs/design.md, decision log 2026-12-02): a process that leaves a loop
open with a child, a server and a signal handler (a supported, if careless, way to end a
program) dies with SIGSEGV in the interpreter's final garbage collection when the scheduler is
compiled, in either form (as an ordinary class or as an extension type), and never when it is
Python. Until that is understood, the default install is the pure-Python build.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# What is compiled, and why only this: Cython compiles a method of an ordinary Python class
# into C that still reads and writes every attribute through the generic attribute protocol,
# which on 3.11+ costs more than the interpreter's specialised (inline-cached) bytecode. Measured
# with valgrind (instructions per unit of work, 3.11; docs/design.md, decision log 2026-12-02):
# compiling the hot modules as they are made call_soon batches 1.7% and sleep(0) switches 1.1%
# *more* expensive than pure Python. What pays is an extension type: scheduler.pxd turns
# Scheduler into one (fields as C struct members), 4.6% and 5.4% cheaper. Handles, Future and
# Task cannot become extension types while they must subclass asyncio's classes (isinstance),
# so the rest of tidal stays Python in both builds.
COMPILED_MODULES = [
    "tidal/core/scheduler.py",
]

# Cython directives: Python semantics everywhere. annotation_typing is off so that an annotation
# such as ``delay: float`` never turns into a C type that rejects what asyncio accepts (or
# raises another error than asyncio does); binding keeps functions introspectable like Python
# functions (names, signatures, __module__), which libraries and tracebacks rely on.
DIRECTIVES = {
    "language_level": 3,
    "annotation_typing": False,
    "binding": True,
    "embedsignature": True,
}


def _say(message: str) -> None:
    print(f"tidal: {message}", file=sys.stderr, flush=True)


class OptionalBuildExt(build_ext):
    """build_ext that falls back to pure Python instead of failing the install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no Python headers, ...
            _say(f"installing the pure-Python build: compiling failed ({exc})")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            _say(f"{ext.name} stays pure Python: compiling it failed ({exc})")


def _extensions() -> list[Extension]:
    if os.environ.get("TIDAL_COMPILE", "") in ("", "0"):
        _say("installing the pure-Python build (TIDAL_COMPILE=1 compiles the scheduler)")
        return []
    if os.environ.get("TIDAL_PURE"):
        _say("TIDAL_PURE is set: installing the pure-Python build")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        _say("Cython is not available: installing the pure-Python build")
        return []
    extensions = [
        Extension(path[: -len(".py")].replace("/", "."), [f"src/{path}"])
        for path in COMPILED_MODULES
    ]
    try:
        return list(
            cythonize(
                extensions,
                compiler_directives=DIRECTIVES,
                build_dir="build/cython",
                quiet=True,
                nthreads=os.cpu_count() or 1,
            )
        )
    except Exception as exc:
        _say(f"installing the pure-Python build: Cython failed ({exc})")
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
