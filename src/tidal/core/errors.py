"""Exceptions that must never be swallowed, in one place.

Owns: the tuple of exception types that every ``except BaseException`` in tidal lets through.
Not here: reporting errors (the loop's exception handler, in core/scheduler.py).

asyncio repeats ``except (SystemExit, KeyboardInterrupt): raise`` about forty times; tidal names
the tuple once so that the rule has a single definition.
"""

from __future__ import annotations

from typing import Final

# Exceptions that stop the program rather than a callback: re-raised wherever tidal would
# otherwise report an error and carry on.
FATAL_EXCEPTIONS: Final = (SystemExit, KeyboardInterrupt)
