"""The self-contained core of tidal: scheduling, handles, timers and the cross-thread door.

Nothing in here imports transports, TLS, subprocesses or observability implementations
(checked by tests/test_layering.py); everything else is built on this package's API.
"""
