"""tidal's pytest plugin: async tests on tidal, virtual time, fuzzing, a strict lifecycle.

Owns: the ``tidal`` marker, the ``--tidal``, ``--tidal-fuzz``, ``--tidal-seed`` and
``--tidal-strict`` options (ini: ``tidal_mode``, ``tidal_strict``), running async tests and
function-scoped async fixtures on a ``ControlledLoop``, and the bridge to pytest-asyncio's
``pytest_asyncio_loop_factories`` hook.
Not here: the loop (testing/loop.py), the leak checks (testing/lifecycle.py).

Installed with tidal (a ``pytest11`` entry point) and inert unless asked: without ``--tidal``,
``tidal_mode = true``, one of the other options or a ``tidal`` marker on the test, every hook
here returns at once and pytest behaves as if the plugin were absent.

Who runs an async test:
- pytest-asyncio, when it claims the test (``asyncio`` marker, or its auto mode); in tidal mode
  its loops then come from tidal through ``pytest_asyncio_loop_factories`` (one factory per seed
  when fuzzing, so each seed is a test of its own);
- otherwise, in tidal mode or under a ``tidal`` marker, this plugin: one fresh loop per test
  (and per seed), shared by the test's function-scoped async fixtures.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pytest

from . import lifecycle
from .loop import ControlledLoop, check_options

MARKER_KEYWORDS = frozenset({"virtual_time", "autojump", "fuzz", "seed", "strict"})
MARKER_HELP = (
    "tidal(virtual_time=False, autojump=0.0, fuzz=0, seed=None, strict=None): run this async "
    "test on tidal's loop; virtual_time/autojump as tidal.testing.new_event_loop; fuzz=N runs it "
    "under seeds 0..N-1; seed=S under seed S only; strict=True checks its lifecycle"
)


@dataclass(frozen=True)
class Settings:
    """The run-wide choices, from the command line and the ini file."""

    mode: bool  # --tidal / tidal_mode: run async tests on tidal
    fuzz: int | None  # --tidal-fuzz
    seed: int | None  # --tidal-seed
    strict: bool  # --tidal-strict / tidal_strict

    @property
    def active(self) -> bool:
        return self.mode or self.fuzz is not None or self.seed is not None or self.strict


@dataclass(frozen=True)
class Options:
    """What one test runs under: the run's settings overridden by its marker."""

    virtual_time: bool
    autojump: float | None
    seeds: tuple[int | None, ...]  # one run per entry; (None,) = no fuzzing
    strict: bool

    def describe(self, seed: int | None) -> str:
        parts = [f"virtual_time={self.virtual_time}"] if self.virtual_time else []
        if self.virtual_time and self.autojump != 0.0:
            parts.append(f"autojump={self.autojump!r}")
        if seed is not None:
            parts.append(f"seed={seed}")
        return ", ".join(parts)


SETTINGS = pytest.StashKey[Settings]()
STATE = pytest.StashKey["ItemState"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tidal", "tidal: asyncio tests on tidal's loop")
    group.addoption(
        "--tidal",
        action="store_true",
        default=None,
        dest="tidal_mode",
        help="run async tests and async fixtures on tidal's loop (ini: tidal_mode = true)",
    )
    group.addoption(
        "--tidal-fuzz",
        type=int,
        metavar="N",
        dest="tidal_fuzz",
        help="run every async test under N schedule seeds (0..N-1), reporting the first failure",
    )
    group.addoption(
        "--tidal-seed",
        type=int,
        metavar="SEED",
        dest="tidal_seed",
        help="run async tests under this one seed (to replay a failure fuzzing found)",
    )
    group.addoption(
        "--tidal-strict",
        action="store_true",
        default=None,
        dest="tidal_strict",
        help=(
            "fail a test that leaves tasks, unretrieved errors, unawaited coroutines, open "
            "transports or servers, descriptors, threads or child processes behind "
            "(ini: tidal_strict = true)"
        ),
    )
    parser.addini("tidal_mode", "run async tests on tidal's loop (like --tidal)", type="bool")
    parser.addini("tidal_strict", "strict lifecycle checks (like --tidal-strict)", type="bool")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    fuzz = config.getoption("tidal_fuzz")
    if fuzz is not None and fuzz < 1:
        raise pytest.UsageError(f"--tidal-fuzz needs a number of seeds >= 1, got {fuzz}")
    settings = Settings(
        mode=bool(config.getoption("tidal_mode") or config.getini("tidal_mode")),
        fuzz=fuzz,
        seed=config.getoption("tidal_seed"),
        strict=bool(config.getoption("tidal_strict") or config.getini("tidal_strict")),
    )
    config.stash[SETTINGS] = settings
    if settings.active and config.pluginmanager.hasplugin("asyncio"):
        config.pluginmanager.register(AsyncioBridge(), "tidal-asyncio-bridge")


# -- which tests, under what options --------------------------------------------------------------


def options_for(item: pytest.Item) -> Options | None:
    """The options ``item`` runs under on tidal, or None if tidal was not asked for."""
    settings = item.config.stash[SETTINGS]
    marker = item.get_closest_marker("tidal")
    if marker is None and not settings.active:
        return None
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    if marker is not None and marker.args:
        _refuse(
            f"{item.nodeid}: pytest.mark.tidal takes keyword arguments only "
            f"({', '.join(sorted(MARKER_KEYWORDS))}), got {marker.args!r}"
        )
    unknown = set(kwargs) - MARKER_KEYWORDS
    if unknown:
        _refuse(
            f"{item.nodeid}: pytest.mark.tidal got unknown keyword(s) {sorted(unknown)}; "
            f"it takes {', '.join(sorted(MARKER_KEYWORDS))}"
        )
    virtual_time = kwargs.get("virtual_time", False)
    autojump = kwargs.get("autojump", 0.0)
    try:
        check_options(virtual_time=virtual_time, autojump=autojump, seed=kwargs.get("seed"))
    except (TypeError, ValueError) as exc:
        _refuse(f"{item.nodeid}: pytest.mark.tidal: {exc}")
    fuzz = kwargs.get("fuzz", settings.fuzz or 0)
    if isinstance(fuzz, bool) or not isinstance(fuzz, int) or fuzz < 0:
        _refuse(f"{item.nodeid}: pytest.mark.tidal: fuzz must be an int >= 0")
    seed = settings.seed if settings.seed is not None else kwargs.get("seed")
    seeds: tuple[int | None, ...]
    if seed is not None:
        seeds = (seed,)
    elif fuzz:
        seeds = tuple(range(fuzz))
    else:
        seeds = (None,)
    strict = kwargs.get("strict", settings.strict)
    return Options(bool(virtual_time), autojump, seeds, bool(strict))


def _refuse(message: str) -> NoReturn:
    """Fail the test (not the run) over a misuse, with ``message`` and no traceback."""
    pytest.fail(message, pytrace=False)


def _is_ours(item: pytest.Item) -> bool:
    """An async test that no other plugin claims, on a run or test that asked for tidal."""
    if not isinstance(item, pytest.Function):
        return False
    if not inspect.iscoroutinefunction(getattr(item, "obj", None)):
        return False  # sync, or pytest-asyncio already replaced it with a sync wrapper
    if "anyio_backend" in item.fixturenames:
        return False  # anyio's plugin runs it (its backend_options can name our factory)
    if type(item).__module__.startswith("pytest_asyncio"):
        return False
    return item.get_closest_marker("tidal") is not None or item.config.stash[SETTINGS].active


@dataclass
class ItemState:
    """One test's loops and what the strict check needs to remember about them."""

    options: Options
    runner: asyncio.Runner | None = None  # the loop shared with async fixtures
    shared_loop: ControlledLoop | None = None  # the runner's loop, once it made one
    loops: list[ControlledLoop] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    watch: lifecycle.Watch | None = None
    before: lifecycle.Snapshot | None = None

    def new_loop(self, seed: int | None) -> ControlledLoop:
        options = self.options
        loop = ControlledLoop(
            virtual_time=options.virtual_time,
            autojump=options.autojump,
            seed=seed,
            track=options.strict,
        )
        if options.strict:
            loop.set_exception_handler(lambda _loop, context: self.errors.append(context))
        self.loops.append(loop)
        return loop

    def shared_runner(self) -> asyncio.Runner:
        if self.runner is None:
            self.runner = asyncio.Runner(loop_factory=self._new_shared_loop)
        return self.runner

    def _new_shared_loop(self) -> ControlledLoop:
        self.shared_loop = self.new_loop(self.options.seeds[0])
        return self.shared_loop

    def finish(self) -> list[str]:
        """Close the shared loop; with the strict check on, return what was left behind."""
        problems: list[str] = []
        strict = self.options.strict
        try:
            if self.runner is not None:
                if strict and self.shared_loop is not None:
                    problems += lifecycle.pending_tasks(self.shared_loop)
                self.runner.close()
            if not strict:
                return problems
            for loop in self.loops:
                problems += lifecycle.open_resources(loop)
            gc.collect()
            problems += [lifecycle.describe_error(context) for context in self.errors]
        finally:
            if self.watch is not None:
                self.watch.__exit__(None, None, None)
        if self.watch is not None:
            problems += [f"coroutine never awaited: {text}" for text in self.watch.never_awaited]
        if self.before is not None:
            problems += lifecycle.process_leaks(self.before)
        return problems


# The state of the test running now (pytest runs one test at a time per process); for loops
# that pytest-asyncio makes through the bridge.
_current: ItemState | None = None


def _state(item: pytest.Item) -> ItemState | None:
    return item.stash.get(STATE, None)


# -- the test protocol ---------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    global _current
    if (
        item.get_closest_marker("tidal") is not None
        and type(item).__module__.startswith("pytest_asyncio")
        and not _bridged(item)
    ):
        _refuse(
            f"{item.nodeid}: pytest-asyncio runs this test, so pytest.mark.tidal can reach its "
            f"loop only in tidal mode: add --tidal (or tidal_mode = true in the ini file), "
            f"then pytest-asyncio takes its loops from tidal"
        )
    options = options_for(item) if _is_ours(item) or _bridged(item) else None
    if options is not None:
        item.stash[STATE] = _current = ItemState(options)
    yield
    state = _state(item)
    if state is not None and state.options.strict:
        # After the fixtures: resources of wider-scoped fixtures are not this test's leaks.
        state.before = lifecycle.snapshot()
        state.watch = lifecycle.Watch().__enter__()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    state = _state(pyfuncitem)
    if state is None or not _is_ours(pyfuncitem):
        return None
    function = pyfuncitem.obj
    argnames = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in argnames}
    seeds = state.options.seeds
    if len(seeds) == 1:
        _run_seed(pyfuncitem, state, state.shared_runner(), function, kwargs, seeds[0])
        return True
    if state.runner is not None:
        _refuse(
            f"{pyfuncitem.nodeid}: fuzzing runs the test once per seed, each on a fresh loop, "
            f"but its async fixtures live on one loop; create those resources in the test "
            f"body, or replay one seed with --tidal-seed=SEED"
        )
    for seed in seeds:
        runner = asyncio.Runner(loop_factory=functools.partial(state.new_loop, seed))
        try:
            _run_seed(pyfuncitem, state, runner, function, kwargs, seed)
            if state.options.strict:
                leftovers = lifecycle.pending_tasks(runner.get_loop())
                if leftovers:
                    pytest.fail(f"under seed {seed}:\n" + "\n\n".join(leftovers), pytrace=False)
        finally:
            runner.close()
    return True


def _run_seed(
    item: pytest.Function,
    state: ItemState,
    runner: asyncio.Runner,
    function: Callable[..., Any],
    kwargs: dict[str, Any],
    seed: int | None,
) -> None:
    try:
        runner.run(function(**kwargs))
    except BaseException as exc:
        if seed is not None and not isinstance(exc, pytest.skip.Exception | KeyboardInterrupt):
            options = state.options.describe(seed)
            count = len(state.options.seeds)
            tried = f" (seed number {seeds_position(state, seed)} of {count})" if count > 1 else ""
            exc.add_note(
                f"tidal: failed under seed {seed}{tried} [{options}]; replay exactly this "
                f"schedule with: pytest '{item.nodeid}' --tidal-seed={seed}"
            )
        raise


def seeds_position(state: ItemState, seed: int) -> int:
    return state.options.seeds.index(seed) + 1


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: Any, request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    """Run a function-scoped async fixture of a test tidal runs on that test's loop."""
    func = fixturedef.func
    item = getattr(request, "_pyfuncitem", None)
    state = _state(item) if item is not None else None
    is_async = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
    if state is None or not is_async or not _is_ours(item):  # type: ignore[arg-type]
        return (yield)
    if fixturedef.scope != "function":
        _refuse(
            f"async fixture {fixturedef.argname!r} has scope {fixturedef.scope!r}; tidal runs "
            f"async fixtures on each test's own loop, so they must be function-scoped "
            f"(or use pytest-asyncio's loop_scope)"
        )
    from _pytest.fixtures import resolve_fixture_function

    target: Any = resolve_fixture_function(fixturedef, request)
    runner = state.shared_runner()
    if inspect.isasyncgenfunction(func):

        def wrapper(**kwargs: Any) -> Any:
            agen = target(**kwargs)
            yield runner.run(agen.__anext__())
            try:
                runner.run(agen.__anext__())
            except StopAsyncIteration:
                return
            raise RuntimeError(
                f"async fixture {fixturedef.argname!r} yielded twice; it must yield once"
            )
    else:

        def wrapper(**kwargs: Any) -> Any:
            return runner.run(target(**kwargs))

    fixturedef.func = wrapper
    try:
        return (yield)
    finally:
        fixturedef.func = func


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    global _current
    state = _state(item)
    try:
        yield
    finally:
        problems = state.finish() if state is not None else []
        if state is not None:
            del item.stash[STATE]
            _current = None
    if problems:
        pytest.fail(
            f"{len(problems)} thing(s) left behind (--tidal-strict):\n\n" + "\n\n".join(problems),
            pytrace=False,
        )


# -- pytest-asyncio ------------------------------------------------------------------------------


def _bridged(item: pytest.Item) -> bool:
    """A test pytest-asyncio runs on loops this plugin makes."""
    return type(item).__module__.startswith(
        "pytest_asyncio"
    ) and item.config.pluginmanager.has_plugin("tidal-asyncio-bridge")


class AsyncioBridge:
    """Registered in tidal mode when pytest-asyncio is installed: it asks us for its loops."""

    def pytest_asyncio_loop_factories(
        self, config: pytest.Config, item: pytest.Item
    ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
        options = options_for(item)
        assert options is not None  # this bridge exists only in tidal mode
        factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {}
        for seed in options.seeds:
            name = "tidal" if seed is None else f"tidal-seed-{seed}"
            factories[name] = functools.partial(_bridged_loop, item, options, seed)
        return factories


def _bridged_loop(item: pytest.Item, options: Options, seed: int | None) -> ControlledLoop:
    # pytest-asyncio asks for factories with the collection-time item; the loop is made while
    # the test runs, and belongs to that test's state (made in setup) for the strict check.
    state = _current if _current is not None else ItemState(options)
    return state.new_loop(seed)
