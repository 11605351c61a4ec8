"""Leak checks shared by the test modules that open descriptors and start processes.

Counting is done through /proc (Linux). Test modules wrap these context managers in an
autouse, module-scoped fixture: the counts are taken before the module's first test and compared
after its last one (after a garbage collection), so a leak is reported against its module.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator


def open_fds() -> set[int]:
    """The descriptors this process has open (without the one used to list them)."""
    dir_fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    try:
        return {int(name) for name in os.listdir(dir_fd)} - {dir_fd}
    finally:
        os.close(dir_fd)


def describe_fd(fd: int) -> str:
    """What a descriptor points at (a path, socket:[inode], pipe:[inode]), for leak reports."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def child_pids() -> set[int]:
    """Children of this process, zombies included (a zombie keeps its parent until reaped)."""
    me, found = str(os.getpid()), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == me:
                found.add(int(entry))
    return found


@contextlib.contextmanager
def no_fd_leaks() -> Iterator[None]:
    """Fail if the block ends with more open descriptors than it started with."""
    gc.collect()
    before = open_fds()
    yield
    gc.collect()
    leaked = {fd: describe_fd(fd) for fd in open_fds() - before}
    assert not leaked, f"descriptors leaked: {leaked}"


@contextlib.contextmanager
def no_leaks() -> Iterator[None]:
    """Fail if the block leaves descriptors open or child processes behind."""
    with no_fd_leaks():
        children = child_pids()
        yield
        gc.collect()
        assert child_pids() <= children, "child processes left behind"
