"""Networking built on the scheduler: socket coroutines, connecting, serving.

Owns: ``sockops`` (the ``loop.sock_*`` coroutines and descriptor registration for them and for
transports), ``connect`` (name resolution, happy eyeballs, ``create_connection`` and friends),
``serve`` (``Server``, ``create_server``, the accept loop).
Not here: transports (``tidal.transports``), TLS (``tidal.tls``).
"""
