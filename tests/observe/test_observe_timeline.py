"""Timeline recording (tidal.trace) and its exports, on real programs: the seed's examples."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest

import tidal
import tidal.trace
from tidal import demo
from tidal.observe.timeline import CALLBACK, EXIT, IO_WAIT, JOB, SPAWN, STEP, Recording, Segment

SCALE = 0.05  # the seed's 1 s and 2 s become 50 ms and 100 ms


def _record(example: demo.Example) -> Recording:
    with tidal.trace.record() as session:
        demo.run_example(example, tidal.new_event_loop, SCALE)
    assert session.recording is not None
    return session.recording


def _example(name: str) -> demo.Example:
    return next(e for e in demo.EXAMPLES if e.name == name)


def _task_segments(rec: Recording, state: str) -> dict[str, list[Segment]]:
    out: dict[str, list[Segment]] = {}
    for seg in rec.segments():
        lane = rec.lanes[seg.lane]
        if lane.kind == "task" and seg.state == state:
            out.setdefault(lane.name, []).append(seg)
    return out


def test_sequential_and_concurrent_examples_record_different_shapes() -> None:
    sequential = _record(_example("sequential"))
    concurrent = _record(_example("concurrent"))

    # Sequential: one task waits twice in turn, 1 unit then 2; nothing overlaps it.
    seq_waits = _task_segments(sequential, "waiting")
    main_lane = next(lane for lane in sequential.task_lanes() if lane.detail.endswith("main"))
    waits = seq_waits[main_lane.name]
    assert len(waits) == 2
    first, second = (w.end - w.start for w in waits)
    assert first == pytest.approx(1 * SCALE, abs=0.03)
    assert second == pytest.approx(2 * SCALE, abs=0.03)
    assert "say_after" in waits[0].tip and "sleep" in waits[0].tip
    assert sequential.duration >= 3 * SCALE

    # Concurrent: two say_after tasks wait at the same time while the cell waits on gather.
    con_waits = _task_segments(concurrent, "waiting")
    sayers = [lane for lane in concurrent.task_lanes() if lane.detail == "say_after"]
    assert len(sayers) == 2
    spans = [con_waits[lane.name][0] for lane in sayers]
    overlap = min(s.end for s in spans) - max(s.start for s in spans)
    assert overlap == pytest.approx(1 * SCALE, abs=0.03)
    gathering = _task_segments(concurrent, "waiting-task")
    assert any("gather of 2" in seg.tip for segs in gathering.values() for seg in segs)
    assert concurrent.duration < sequential.duration
    # Each say_after lane ends with its task finishing.
    assert len(_task_segments(concurrent, "finished")) >= 2

    # Creator and creation site are recorded for the tasks the cell created.
    for lane in sayers:
        assert lane.parent >= 0
        assert lane.created_at is not None and lane.created_at.startswith("<cell>")


def test_executor_timers_and_io_waits_get_their_own_lanes() -> None:
    def blocking() -> str:
        time.sleep(0.02)
        return "ok"

    async def main() -> str:
        loop = asyncio.get_running_loop()
        loop.call_later(0.001, lambda: None)
        await asyncio.sleep(0.005)
        return await loop.run_in_executor(None, blocking)

    with tidal.trace.record() as session:
        assert tidal.run(main()) == "ok"
    rec = session.stop()
    kinds = {event[0] for event in rec.events}
    assert {CALLBACK, IO_WAIT, JOB} <= kinds
    jobs = [s for s in rec.segments() if s.state == "job"]
    assert len(jobs) == 1 and "blocking" in jobs[0].tip
    assert jobs[0].end - jobs[0].start >= 0.015
    assert rec.lanes[jobs[0].lane].kind == "thread"
    assert any(s.state == "timer" for s in rec.segments())
    assert any(s.state == "io" for s in rec.segments())


def test_recording_inside_a_running_loop_sees_only_that_block() -> None:
    async def child() -> None:
        await asyncio.sleep(0)

    async def main() -> Recording:
        await asyncio.create_task(child(), name="before")
        with tidal.trace.record() as session:
            await asyncio.create_task(child(), name="during")
        await asyncio.create_task(child(), name="after")
        return session.stop()

    rec = tidal.run(main())
    names = {lane.name for lane in rec.task_lanes()}
    assert "during" in names
    assert "after" not in names


def test_the_ring_buffer_keeps_the_newest_events_and_counts_the_rest() -> None:
    async def main() -> None:
        for _ in range(200):
            await asyncio.sleep(0)

    with tidal.trace.record(capacity=50) as session:
        tidal.run(main())
    rec = session.stop()
    # 50 raw records: each step is one, each batch end another, so fewer events than that.
    steps = [event for event in rec.events if event[0] == STEP]
    assert 10 <= len(steps) <= 50 and len(rec.events) <= 50
    assert rec.dropped > 150
    assert any(event[0] == EXIT for event in rec.events)  # the newest: main's exit is kept
    assert not any(event[0] == SPAWN for event in rec.events[:10])  # the oldest went first
    assert "oldest events dropped" in rec.to_html()


def test_chrome_trace_json_has_lanes_and_complete_events(tmp_path: Path) -> None:
    rec = _record(_example("concurrent"))
    path = tmp_path / "trace.json"
    rec.save(path)
    data = json.loads(path.read_text())
    events = data["traceEvents"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert sum("say_after" in n for n in names) == 2
    complete = [e for e in events if e["ph"] == "X"]
    assert complete and all(e["dur"] >= 0 and e["ts"] >= 0 for e in complete)
    waits = [e for e in complete if e["cat"] == "waiting"]
    assert any("sleep" in e["args"]["detail"] for e in waits)
    assert max(e["ts"] + e["dur"] for e in complete) == pytest.approx(rec.duration * 1e6, rel=0.05)


def test_html_page_is_self_contained(tmp_path: Path) -> None:
    rec = _record(_example("sequential"))
    path = tmp_path / "timeline.html"
    rec.save(path, title="sequential <example>")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "sequential &lt;example&gt;" in page
    assert 'class="lane lane-task"' in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    assert "say_after" in page  # the await chain, in the hover text


def test_record_refuses_asyncio_loops_and_bad_capacity() -> None:
    async def main() -> None:
        with tidal.trace.record():
            pass

    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(TypeError, match="needs a tidal loop"):
            loop.run_until_complete(main())
    finally:
        loop.close()
    with pytest.raises(ValueError, match="capacity"), tidal.trace.record(capacity=0):
        pass


def test_recording_never_keeps_tasks_alive() -> None:
    # The ring holds ids, times, functions and names: a finished task is freed while recording
    # goes on, and the Recording holds only numbers and strings.
    import gc
    import weakref

    refs: list[weakref.ref[asyncio.Task[None]]] = []

    async def main() -> None:
        task = asyncio.create_task(asyncio.sleep(0))
        refs.append(weakref.ref(task))
        await task

    with tidal.trace.record() as session:
        tidal.run(main())
        gc.collect()
        assert refs[0]() is None
    assert session.recording is not None
    assert any(lane.detail == "sleep" for lane in session.recording.task_lanes())


def test_executor_events_from_many_threads_are_all_recorded() -> None:
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait(5)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, work) for _ in range(4)))

    with tidal.trace.record() as session:
        tidal.run(main())
    rec = session.stop()
    assert sum(1 for s in rec.segments() if s.state == "job") == 4
    assert len({lane.name for lane in rec.lanes if lane.kind == "thread"}) == 4


def _shape(rec: Recording) -> list[tuple[str, str, str]]:
    """Lane name, segment state and tip of every task segment (times left out)."""
    return [
        (rec.lanes[s.lane].name, s.state, s.tip)
        for s in rec.segments()
        if rec.lanes[s.lane].kind == "task"
    ]


async def _waiter_program() -> None:
    async def child(delay: float) -> str:
        await asyncio.sleep(delay)
        return "done"

    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    first = asyncio.create_task(child(0.02), name="slow")
    second = asyncio.create_task(child(0), name="quick")
    bad = asyncio.create_task(failing(), name="bad")
    await asyncio.gather(first, second, return_exceptions=True)
    with pytest.raises(ValueError):
        await bad


def test_the_observed_phase_records_the_same_timeline_as_the_fast_one() -> None:
    from tidal.observe import stats

    loop = tidal.new_event_loop()
    try:
        with tidal.trace.record(loop, chain_min_wait=0) as fast:
            loop.run_until_complete(_waiter_program())
        # A second per-handle listener (stats) sends phase 4 through hooks.run_ready instead.
        with stats.collect(loop), tidal.trace.record(loop, chain_min_wait=0) as observed:
            loop.run_until_complete(_waiter_program())
    finally:
        loop.close()
    assert fast.recording is not None and observed.recording is not None

    def normal(rec: Recording) -> list[tuple[str, str, str]]:
        # Lanes are named after tasks; default names differ between the two runs.
        return [(n if not n.startswith("Task-") else "Task", st, t) for n, st, t in _shape(rec)]

    assert normal(fast.recording) == normal(observed.recording)
    states = {(name, state) for name, state, _ in _shape(fast.recording)}
    assert ("slow", "finished") in states and ("bad", "failed") in states
    assert any(
        name == "slow" and state == "waiting" and "child" in tip and "sleep" in tip
        for name, state, tip in _shape(fast.recording)
    )


def test_short_waits_show_their_future_and_long_ones_their_await_chain() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(3):
            future = loop.create_future()
            loop.call_soon(future.set_result, None)
            await future  # a wait of a few microseconds
        await asyncio.sleep(0.01)  # a long one

    with tidal.trace.record(chain_min_wait=0.005) as session:
        tidal.run(main())
    rec = session.stop()
    waits = [seg for seg in rec.segments() if seg.state == "waiting"]
    short = [seg for seg in waits if seg.end - seg.start < 0.005]
    long = [seg for seg in waits if seg.end - seg.start >= 0.009]
    assert long and all("main" in seg.tip and "sleep" in seg.tip for seg in long)
    # The first wait of a task always gets its chain; later short ones only their future.
    assert any("not sampled" in seg.tip and "Future" in seg.tip for seg in short)
    assert all("not sampled" not in seg.tip for seg in long)


def test_asyncio_tasks_on_a_tidal_loop_get_lanes_and_exits() -> None:
    async def child() -> int:
        await asyncio.sleep(0.001)
        return 1

    async def main() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.Task(child(), loop=loop, name="asyncio-task")  # asyncio's own Task
        return await task

    with tidal.trace.record() as session:
        assert tidal.run(main()) == 1
    rec = session.stop()
    shape = _shape(rec)
    assert ("asyncio-task", "finished", "task finished") in shape
    assert any(name == "asyncio-task" and state == "running" for name, state, _ in shape)
