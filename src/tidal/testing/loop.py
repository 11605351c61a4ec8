"""``ControlledLoop``: a tidal loop whose clock and schedule a test controls.

Owns: the virtual clock (``time()``, ``advance()``, the jump rule), schedule fuzzing from a seed
(equal-deadline and same-turn timer order, I/O event order, extra turns before a woken task
resumes), the count of executor jobs in flight, and creation sites of transports and servers
for the strict lifecycle check (testing/lifecycle.py reads them).
Not here: the turn of the loop (core/scheduler.py, unchanged: this is a subclass), the pytest
plugin (testing/pytest_plugin.py), the leak checks themselves (testing/lifecycle.py).

Everything is switched on per instance, in ``__init__``: with virtual time off and no seed the
loop is a plain ``tidal.EventLoop`` plus a job counter, and ``tidal.EventLoop`` itself carries
no trace of this module. Virtual time replaces ``time`` by an instance attribute and wraps the
poller; a seed replaces ``_timer_seq`` and ``call_soon`` the same way.

The jump rule (docs/testing.md states it for users). When a turn finds nothing to run and the
next event is a timer, the scheduler asks the poller to wait until that timer's deadline. The
wrapped poller then moves the clock to the deadline instead of sleeping, but only if nothing
from outside the loop could arrive first:
1. no callback is ready (a thread's ``call_soon_threadsafe`` appends to the ready queue);
2. no job this loop gave an executor (``run_in_executor``, hence ``to_thread`` and name
   resolution) is in flight: a job counts from submission until its result has reached the
   loop or its future was cancelled;
3. no child process this loop started is still running;
4. every watched descriptor is closed-world: a socket that is listening, not connected
   (datagram), or connected to a socket this loop also owns (both ends of a loopback
   connection); the loop's own wake-up and signal descriptors do not count. Anything else (a
   socket connected elsewhere, a pipe, a terminal) could deliver I/O at any moment;
5. a real poll of ``autojump`` seconds (0: a non-blocking poll) reports no I/O.
If 1-4 hold and 5 finds nothing, the clock jumps. If 2-4 do not hold, the loop really waits and
the clock follows real time (capped at the deadline), so the program behaves as in real time
until the outside work is done. With ``autojump=None`` the clock moves only by ``advance()``.

Invariant: the virtual clock never goes back, and never passes the deadline of a timer that
has not run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import heapq
import itertools
import random
import socket
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Final, TypeVar

from ..core.handles import Handle
from ..io.poller import Key, Poller
from ..loop import EventLoop

_T = TypeVar("_T")

# Extra turns a woken task may wait before it resumes, drawn per wake-up from the seed: most
# wake-ups keep their place (0), the rest wait one to three turns. Small numbers suffice: a
# race needs only its two sides swapped, and long delays would starve nothing but tests' time.
_WAKEUP_DELAYS: Final = (0, 0, 0, 1, 1, 2, 3)

# Frames kept from a creation stack (transports, servers) for the strict lifecycle report.
CREATION_STACK_DEPTH: Final = 12


class ControlledLoop(EventLoop):
    """A ``tidal.EventLoop`` with an optional virtual clock and a seeded schedule.

    Args:
        virtual_time: ``time()`` starts at 0 and jumps to the next timer instead of sleeping
            (module docstring: the jump rule).
        autojump: real seconds the loop must stay idle before the clock jumps (0: at once);
            None: the clock moves only by ``advance()``. Needs ``virtual_time``.
        seed: perturb, reproducibly, what asyncio leaves unspecified (docs/testing.md).
        track: record where transports and servers were created (for the lifecycle check).

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: ``autojump`` is negative or given without ``virtual_time``.
    """

    def __init__(
        self,
        *,
        virtual_time: bool = False,
        autojump: float | None = 0.0,
        seed: int | None = None,
        track: bool = False,
    ) -> None:
        # Fuzzing delays task wake-ups in call_soon; CPython's C Task wakes through it, tidal's
        # Python Task appends to the ready queue directly. So a seeded loop hosts the C Task.
        super().__init__(tasks="native" if seed is not None else None)
        try:
            check_options(virtual_time=virtual_time, autojump=autojump, seed=seed)
        except BaseException:
            # Close what the loop opened: a half-built loop would warn "unclosed" when collected
            # (the compiled scheduler's fields exist, as False, before __init__ sets them).
            self.close()
            raise
        self._virtual = bool(virtual_time)
        self._autojump = autojump
        self._seed = seed
        self._now = 0.0  # the virtual clock, seconds (read only when _virtual)
        self._jobs_in_flight = 0  # executor jobs whose result has not reached the loop yet
        # Transports and servers this loop made, with their creation stacks (track=True only).
        self._created: list[tuple[Any, traceback.StackSummary]] | None = [] if track else None
        self._rng: random.Random | None = None
        if virtual_time:
            self.time = self._virtual_time  # type: ignore[method-assign]
        if seed is not None:
            self._rng = random.Random(seed)
            counter = itertools.count().__next__
            getrandbits = self._rng.getrandbits
            # Random high bits, a counter below: equal deadlines run in a seeded order, and
            # two entries never compare equal (the heap would then compare TimerHandles).
            self._timer_seq = lambda: (getrandbits(31) << 32) | counter()
            self.call_soon = self._call_soon_fuzzed  # type: ignore[method-assign,assignment]
            # Poll on busy turns too (the scheduler polls every other busy turn when something
            # is registered), so that timers falling due together get shuffled there as well.
            self._io_registrations += 1
        if virtual_time or seed is not None:
            self._poller = ControlledPoller(self._poller, self)

    # -- the virtual clock ---------------------------------------------------------------------

    def _virtual_time(self) -> float:
        return self._now

    @property
    def virtual_time(self) -> bool:
        """Whether ``time()`` is the virtual clock."""
        return self._virtual

    @property
    def seed(self) -> int | None:
        """The seed the schedule is perturbed with, or None."""
        return self._seed

    def advance(self, seconds: float) -> None:
        """Move the virtual clock forward by ``seconds``; timers now due run on the next turn.

        Safe to call from any thread (it wakes the loop).

        Raises:
            RuntimeError: the loop does not use virtual time.
            ValueError: ``seconds`` is negative.
        """
        if not self._virtual:
            raise RuntimeError(
                "advance() needs a virtual clock: create the loop with "
                "tidal.testing.new_event_loop(virtual_time=True)"
            )
        if seconds < 0:
            raise ValueError(f"cannot advance the clock by {seconds!r} s: time only moves forward")
        self._now += seconds
        if not self._closed and self._thread_id not in (None, threading.get_ident()):
            self._write_to_self()

    def _jump_to(self, when: float) -> None:
        if when > self._now:
            self._now = when

    # -- what could still arrive from outside (rules 2-4 of the module docstring) -----------------

    def outside_work(self) -> str | None:
        """Why the clock may not jump now (a short description), or None if it may."""
        if self._jobs_in_flight:
            return f"{self._jobs_in_flight} executor job(s) in flight"
        reaper = self._child_reaper
        if reaper is not None and reaper._children:
            return f"child process(es) {sorted(reaper._children)} still running"
        return _open_descriptor(self)

    # -- schedule fuzzing ------------------------------------------------------------------------

    def _call_soon_fuzzed(
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> Handle:
        """``call_soon``, but a task's step or wake-up may wait a few extra turns.

        Only callbacks bound to a Task are delayed (their ``__self__`` is the task, for
        CPython's C Task and for tidal's). Every other callback keeps FIFO order, which asyncio
        promises; a delayed wake-up is parked behind relay handles that re-queue it.
        """
        rng = self._rng
        assert rng is not None
        if not isinstance(getattr(callback, "__self__", None), asyncio.Task):
            return EventLoop.call_soon(self, callback, *args, context=context)
        delay = _WAKEUP_DELAYS[rng.randrange(len(_WAKEUP_DELAYS))]
        if not delay:
            return EventLoop.call_soon(self, callback, *args, context=context)
        if self._closed:
            self._raise_closed()
        handle = Handle(
            callback, args, self, contextvars.copy_context() if context is None else context
        )
        self._relay(delay, handle)
        return handle

    def _relay(self, turns: int, handle: Handle) -> None:
        """Queue ``handle`` after ``turns`` more turns (the relay handles are the loop's own)."""
        if turns:
            self._ready.append(Handle(self._relay, (turns - 1, handle), self, _RELAY_CONTEXT))
        else:
            self._ready.append(handle)

    def _shuffle_due_timers(self) -> None:
        """Give the timers due this turn a seeded order (phase 3 runs them in heap order)."""
        timers = self._timers
        if len(timers) < 2:
            return
        end = self.time() + self._clock_resolution
        if timers[1][0] >= end and (len(timers) < 3 or timers[2][0] >= end):
            return  # at most one due: nothing to reorder
        due = []
        while timers and timers[0][0] < end:
            due.append(heapq.heappop(timers))
        rng = self._rng
        assert rng is not None
        rng.shuffle(due)
        # The same key for all: still due (the earliest deadline), in the shuffled order. Only
        # the heap's key changes; each TimerHandle keeps its own when().
        first = min(entry[0] for entry in due)
        counter = itertools.count()
        for entry in due:
            heapq.heappush(timers, (first, -(1 << 40) + next(counter), entry[2]))

    # -- executor jobs: counted, for rule 2 --------------------------------------------------------

    def run_in_executor(  # type: ignore[override]  # typeshed's TypeVarTuple form
        self, executor: concurrent.futures.Executor | None, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        """``run_in_executor``, counting the job as outside work until its result is in."""
        future = super().run_in_executor(executor, func, *args)
        self._jobs_in_flight += 1
        future.add_done_callback(self._job_done)
        return future

    def _job_done(self, _future: asyncio.Future[Any]) -> None:
        self._jobs_in_flight -= 1

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        """Join the default pool's threads; the joining thread counts as outside work."""
        self._jobs_in_flight += 1
        try:
            await super().shutdown_default_executor(timeout)
        finally:
            self._jobs_in_flight -= 1

    # -- creation sites of transports and servers (track=True) -------------------------------------

    def _record(self, thing: Any) -> None:
        created = self._created
        if created is not None:
            stack = traceback.extract_stack(limit=CREATION_STACK_DEPTH)
            created.append((thing, _user_frames(stack)))

    def created_resources(self) -> list[tuple[Any, traceback.StackSummary]]:
        """Transports and servers made through this loop, with where (``track=True``)."""
        return list(self._created or ())

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        result = await super().create_connection(*args, **kwargs)
        self._record(result[0])
        return result

    async def create_unix_connection(self, *args: Any, **kwargs: Any) -> Any:
        result = await super().create_unix_connection(*args, **kwargs)
        self._record(result[0])
        return result

    async def create_datagram_endpoint(self, *args: Any, **kwargs: Any) -> Any:
        result = await super().create_datagram_endpoint(*args, **kwargs)
        self._record(result[0])
        return result

    async def connect_accepted_socket(self, *args: Any, **kwargs: Any) -> Any:
        result = await super().connect_accepted_socket(*args, **kwargs)
        self._record(result[0])
        return result

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        server = await super().create_server(*args, **kwargs)
        self._record(server)
        return server

    async def create_unix_server(self, *args: Any, **kwargs: Any) -> Any:
        server = await super().create_unix_server(*args, **kwargs)
        self._record(server)
        return server

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:
        result = await super().subprocess_exec(*args, **kwargs)
        self._record(result[0])
        return result

    async def subprocess_shell(self, *args: Any, **kwargs: Any) -> Any:
        result = await super().subprocess_shell(*args, **kwargs)
        self._record(result[0])
        return result

    def __repr__(self) -> str:
        options = []
        if getattr(self, "_virtual", False):
            options.append(f"virtual_time=True autojump={self._autojump!r} now={self._now!r}")
        if getattr(self, "_seed", None) is not None:
            options.append(f"seed={self._seed!r}")
        return super().__repr__()[:-1] + "".join(" " + o for o in options) + ">"


# One context for every relay handle: they touch no context variable, and a context may be
# entered again once the previous run left it.
_RELAY_CONTEXT: Final = contextvars.Context()


def check_options(*, virtual_time: object, autojump: object, seed: object) -> None:
    """Validate the options shared by ``new_event_loop``, ``loop_factory`` and ``run``.

    Raises:
        TypeError: an option has the wrong type.
        ValueError: ``autojump`` is negative, or set without ``virtual_time``.
    """
    if not isinstance(virtual_time, bool):
        raise TypeError(f"virtual_time must be True or False, got {virtual_time!r}")
    if autojump is not None:
        if isinstance(autojump, bool) or not isinstance(autojump, int | float):
            raise TypeError(f"autojump must be a number of seconds or None, got {autojump!r}")
        if autojump < 0:
            raise ValueError(f"autojump must be >= 0 seconds (0 jumps at once), got {autojump!r}")
        if autojump and not virtual_time:
            raise ValueError("autojump needs virtual_time=True: only a virtual clock can jump")
    elif not virtual_time:
        raise ValueError("autojump=None needs virtual_time=True: it stops the virtual clock")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")


class ControlledPoller:
    """The loop's poller, wrapped: jumps the virtual clock and shuffles what one poll reports.

    Everything but ``select`` is passed through to the real poller.
    """

    def __init__(self, inner: Poller, loop: ControlledLoop) -> None:
        self._inner = inner
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        loop = self._loop
        if loop._virtual and (timeout is None or timeout > 0):
            events = self._wait_virtually(timeout)
        else:
            events = self._inner.select(timeout)
        rng = loop._rng
        if rng is not None:
            if len(events) > 1:
                rng.shuffle(events)
            loop._shuffle_due_timers()
        return events

    def _wait_virtually(self, timeout: float | None) -> list[tuple[Any, int]]:
        """The loop would sleep ``timeout`` seconds (None: until I/O): apply the jump rule."""
        loop = self._loop
        timers = loop._timers
        if loop._autojump is None:
            return self._inner.select(None)  # only advance() moves the clock
        if timeout is None or not timers:
            # Nothing to jump to: wait for real. If outside work is what we wait for, the
            # clock follows real time meanwhile, as it would without virtual time.
            if loop.outside_work() is None:
                return self._inner.select(None)
            started = time.monotonic()
            events = self._inner.select(None)
            loop._jump_to(loop._now + (time.monotonic() - started))
            return events
        deadline = min(timers[0][0], loop._now + timeout)
        if loop.outside_work() is not None:
            # Rules 2-4 fail: wait for real, and let the clock follow real time.
            started = time.monotonic()
            events = self._inner.select(timeout)
            waited = time.monotonic() - started
            loop._jump_to(deadline if waited >= timeout else min(deadline, loop._now + waited))
            return events
        events = self._inner.select(loop._autojump)  # rule 5
        if not events and not loop._ready:  # rule 1 again: a thread may have called in
            loop._jump_to(deadline)
        return events

    def register(self, fileobj: Any, events: int, data: Any = None) -> Key:
        return self._inner.register(fileobj, events, data)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> Key:
        return self._inner.modify(fileobj, events, data)

    def unregister(self, fileobj: Any) -> Key:
        return self._inner.unregister(fileobj)

    def get_key(self, fileobj: Any) -> Key:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Any:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()


# -- rule 4: which watched descriptors could deliver I/O from outside the loop -------------------


def _open_descriptor(loop: ControlledLoop) -> str | None:
    """Describe a watched descriptor connected outside the loop, or return None."""
    own = _own_descriptors(loop)
    local_names: set[Any] = set()
    peers: list[tuple[int, Any]] = []
    for key in list(loop._poller.get_map().values()):
        fd = key.fd
        if key.data is None or fd in own:
            continue
        names = _socket_names(fd)
        if names is None:
            return f"descriptor {fd} is not a socket (a pipe or file can deliver I/O any time)"
        local, peer = names
        local_names.add(local)
        if peer is not None:
            peers.append((fd, peer))
    if not peers:
        return None
    for transport in list(loop._transports.values()):
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                local_names.add(sock.getsockname())
            except OSError:
                continue
    for fd, peer in peers:
        if peer == "" or peer not in local_names:
            return f"descriptor {fd} is connected to {peer!r}, outside this loop"
    return None


def _own_descriptors(loop: ControlledLoop) -> set[int]:
    """The loop's own descriptors that never carry outside I/O the program waits for."""
    own: set[int] = set()
    dispatcher = loop._signal_dispatcher
    rsock = getattr(dispatcher, "_rsock", None)
    if rsock is not None:
        own.add(rsock.fileno())  # signals: they may arrive any time, in real time too
    reaper = loop._child_reaper
    if reaper is not None:
        own.update(child.pidfd for child in reaper._children.values() if child.pidfd >= 0)
    return own


def _socket_names(fd: int) -> tuple[Any, Any] | None:
    """(local name, peer name or None if unconnected) of socket ``fd``; None: not a socket."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        local = sock.getsockname()
        try:
            peer = sock.getpeername()
        except OSError:
            peer = None  # listening, or an unconnected datagram socket
        return local, peer
    except OSError:
        return None
    finally:
        sock.detach()


def _user_frames(stack: traceback.StackSummary) -> traceback.StackSummary:
    """``stack`` without its innermost frames from tidal itself and asyncio."""
    frames = list(stack)
    while frames and ("/tidal/" in frames[-1].filename or "/asyncio/" in frames[-1].filename):
        frames.pop()
    return traceback.StackSummary.from_list(frames)
