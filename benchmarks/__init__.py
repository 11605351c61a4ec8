"""tidal's benchmark suite: event-loop work timed on asyncio's loop, uvloop and tidal.

Run it with ``python benchmarks/run.py`` (``--help`` for the options). harness.py holds the loop
registry and the reporting, suite.py the benchmarks, run.py the command line.
"""
