"""Seeing inside the loop: hooks, the task tree, timelines, the watchdog, stats, leak reports.

Owns: nothing itself; each module says what it owns. The public entry points are
``tidal.inspect`` (task tree), ``tidal.trace`` (timeline recording) and the names below.
Not here: the loop (core/); core never imports this package (tests/test_layering.py).
"""
