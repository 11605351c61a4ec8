"""``python -m tidal``: see tidal.cli."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
