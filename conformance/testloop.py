"""A virtual-clock tidal loop that honours the contract of CPython's ``test_utils.TestLoop``.

Owns: ``TidalTestLoop``, which the conformance worker puts in place of
``test.test_asyncio.utils.TestLoop`` when the tests run on tidal.
Not here: deciding which tests run (run.py, exclusions.toml), the rest of the patching
(harness.py).

The contract, as CPython's test-suite uses it (read from ``test/test_asyncio/utils.py``):

- The loop's clock starts at 0 and only moves when the test's *time generator* says so. The
  generator is primed with ``next()``; after every turn of the loop it is sent, one by one, the
  deadline of every ``call_at``/``call_later`` made during that turn, and each value it yields
  back is added to the clock. Without a generator the clock never moves by itself.
- ``advance_time(seconds)`` moves the clock by hand.
- ``close()`` sends the generator a final 0 and fails if it does not finish: a test that
  expected more timers than the code made is caught.
- ``add_reader``/``add_writer`` and the removals record handles in ``readers``/``writers``
  dicts and count removals, without touching a real poller; ``assert_reader``,
  ``assert_no_reader`` and ``assert_writer`` check them.
- Polling never blocks: the clock is virtual, so a turn with nothing ready just turns again.

Everything else (the ready queue, the timer heap, running callbacks, tasks) is tidal's own, so a
test run on this loop exercises tidal's scheduler, not a copy of asyncio's.

Invariant: ``_timer_deadlines`` holds the deadlines scheduled since the previous turn ended, in
call order; after each turn ``_run_turns`` hands them to the generator and clears the list.
This depends on two private seams of the scheduler: ``_run_turns(once)``, the function that
turns the loop, and ``_call_at``, where every timer is made. If either is renamed, this class
fails loudly at construction rather than running with a frozen clock.
"""

from __future__ import annotations

import collections
import contextvars
import selectors
import weakref
from collections.abc import Callable, Generator, Mapping
from typing import Any

from tidal import EventLoop
from tidal.core.handles import Handle, TimerHandle


class _NeverBlockingPoller:
    """A poller with no descriptors that returns at once: the virtual clock decides timing."""

    def __init__(self) -> None:
        self._keys: dict[Any, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, fileobj, events, data)
        self._keys[fileobj] = key
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(fileobj)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys[fileobj]

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._keys

    def close(self) -> None:
        self._keys.clear()


def _idle_time_generator() -> Generator[float, float, None]:
    """The generator used when a test gives none: the clock never moves on its own."""
    while True:
        yield 0


class TidalTestLoop(EventLoop):
    """tidal's loop on a virtual clock driven by a test's time generator (see module doc).

    Args:
        gen: a generator *function*; see the module docstring for its protocol.
    """

    def __init__(self, gen: Callable[[], Generator[Any, Any, Any]] | None = None) -> None:
        for hook in ("_run_turns", "_call_at"):
            if not hasattr(EventLoop, hook):
                raise RuntimeError(f"tidal's scheduler has no {hook}(): update TidalTestLoop")
        super().__init__()
        # Swap the real poller for one that never blocks; the wake-up descriptor moves with it.
        real_poller = self._poller
        real_poller.unregister(self._wakeup.fileno())
        real_poller.close()
        self._poller = _NeverBlockingPoller()
        self._poller.register(self._wakeup.fileno(), selectors.EVENT_READ, None)

        # A test that passes its own generator expects it to be exhausted at close().
        self._check_on_close = gen is not None
        self._gen = (gen or _idle_time_generator)()
        next(self._gen)
        self._time = 0.0  # the virtual clock, in seconds
        self._clock_resolution = 1e-9
        self._timer_deadlines: list[float] = []  # see the module invariant

        self.readers: dict[Any, Handle] = {}
        self.writers: dict[Any, Handle] = {}
        self.remove_reader_count: collections.defaultdict[Any, int]
        self.remove_writer_count: collections.defaultdict[Any, int]
        self.reset_counters()
        # Some tests register transports here to check the "fd in use" guard.
        self._transports: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()

    # -- the virtual clock ---------------------------------------------------------------------

    def time(self) -> float:
        return self._time

    def advance_time(self, advance: float) -> None:
        """Move the virtual clock forward by ``advance`` seconds."""
        if advance:
            self._time += advance

    def _call_at(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: Any,
        method: str,
    ) -> TimerHandle:
        # Every timer of the scheduler (call_at and call_later alike) is made here.
        self._timer_deadlines.append(when)
        return super()._call_at(when, callback, args, context, method)

    def _run_turns(self, once: bool) -> None:
        # tidal runs all of run_forever's turns inside one call of _run_turns (and _run_once
        # is _run_turns(once=True)), so the clock is fed here, one turn at a time.
        while True:
            super()._run_turns(once=True)
            deadlines, self._timer_deadlines = self._timer_deadlines, []
            for when in deadlines:
                self.advance_time(self._gen.send(when))
            if once or self._stopping:
                return

    def close(self) -> None:
        super().close()
        if self._check_on_close:
            try:
                self._gen.send(0)
            except StopIteration:
                pass
            else:
                raise AssertionError("Time generator is not finished")

    # -- readers and writers, recorded rather than polled -------------------------------------

    def _fd_in_use_check(self, fd: Any) -> None:
        if not isinstance(fd, int):
            try:
                fd = int(fd.fileno())
            except (AttributeError, TypeError, ValueError):
                raise ValueError(f"Invalid file object: {fd!r}") from None
        transport = self._transports.get(fd)
        if transport is not None:
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")

    def add_reader(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:
        self._fd_in_use_check(fd)
        self.readers[fd] = Handle(callback, args, self, contextvars.copy_context())

    def remove_reader(self, fd: Any) -> bool:
        self._fd_in_use_check(fd)
        self.remove_reader_count[fd] += 1
        return self.readers.pop(fd, None) is not None

    def add_writer(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:
        self._fd_in_use_check(fd)
        self.writers[fd] = Handle(callback, args, self, contextvars.copy_context())

    def remove_writer(self, fd: Any) -> bool:
        self._fd_in_use_check(fd)
        self.remove_writer_count[fd] += 1
        return self.writers.pop(fd, None) is not None

    def assert_reader(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:
        _assert_watched(self.readers, fd, callback, args)

    def assert_no_reader(self, fd: Any) -> None:
        if fd in self.readers:
            raise AssertionError(f"fd {fd} is registered")

    def assert_writer(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:
        _assert_watched(self.writers, fd, callback, args)

    def reset_counters(self) -> None:
        self.remove_reader_count = collections.defaultdict(int)
        self.remove_writer_count = collections.defaultdict(int)


def _assert_watched(
    table: dict[Any, Handle], fd: Any, callback: Callable[..., object], args: tuple[Any, ...]
) -> None:
    handle = table.get(fd)
    if handle is None:
        raise AssertionError(f"fd {fd} is not registered")
    if handle._callback != callback:
        raise AssertionError(f"unexpected callback: {handle._callback} != {callback}")
    if handle._args != args:
        raise AssertionError(f"unexpected callback args: {handle._args} != {args}")
