"""``tidal.trace``: record a timeline of a program and export it as HTML or Perfetto JSON.

Owns: the public surface of timeline recording; the work is in ``tidal.observe.timeline``.
Not here: the hooks the recorder listens to (``tidal.observe.hooks``).

    with tidal.trace.record() as session:
        tidal.run(main())
    session.save("timeline.html")      # or "trace.json" for Perfetto / chrome://tracing

From the command line: ``python -m tidal trace script.py -o timeline.html``.
"""

from __future__ import annotations

from .observe.timeline import DEFAULT_CAPACITY, Lane, Recording, RecordingSession, Segment, record

__all__ = ["DEFAULT_CAPACITY", "Lane", "Recording", "RecordingSession", "Segment", "record"]
