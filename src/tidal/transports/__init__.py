"""Transports: the objects that move bytes between a protocol and a descriptor."""
