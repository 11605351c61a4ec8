"""Timeline recording (tidal.trace) and its exports, on real programs: the seed's examples."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import tidal
import tidal.trace
from tidal import demo
from tidal.observe.timeline import (
    CALLBACK,
    EXIT,
    IO_WAIT,
    JOB,
    LOOP_INTERNAL_COROUTINES,
    OTHER_EXECUTOR_LANE,
    SPAWN,
    STEP,
    Lane,
    Recording,
    Segment,
)

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
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    assert "<link" not in page and " src=" not in page
    data = json.loads(page.split('id="timeline-data">', 1)[1].split("</script>", 1)[0])
    tasks = [lane for lane in data["lanes"] if lane["kind"] == "task" and not lane["internal"]]
    assert [lane["detail"] for lane in tasks] == ["sequential.<locals>.main"]
    assert any("say_after" in tip for tip in data["tips"])  # the await chain, for the tooltip


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


# -- what the explorable page needs from a recording, on both Task implementations ----------

TASK_IMPLEMENTATIONS = ["native", "python"]  # CPython's C Task (the default), tidal's own


def _record_on(impl: str, program: Any) -> Recording:
    loop = tidal.new_event_loop(tasks=impl)
    try:
        with tidal.trace.record(loop) as session:
            loop.run_until_complete(program())
    finally:
        loop.close()
    assert session.recording is not None
    return session.recording


def _lane_named(rec: Recording, name: str) -> Lane:
    return next(lane for lane in rec.lanes if lane.name == name)


async def _raises_inside() -> None:
    await asyncio.sleep(0)
    _fail_here()


def _fail_here() -> None:
    raise ValueError("boom <b>")


@pytest.mark.parametrize("impl", TASK_IMPLEMENTATIONS)
def test_a_failed_task_keeps_its_exception_and_where_it_was_raised(impl: str) -> None:
    async def main() -> None:
        task = asyncio.create_task(_raises_inside(), name="bad")
        with pytest.raises(ValueError):
            await task

    rec = _record_on(impl, main)
    lane = _lane_named(rec, "bad")
    assert lane.state == "failed"
    first, raised, *via = lane.error.splitlines()
    assert first == "ValueError: boom <b>"
    assert raised.startswith("  raised at _fail_here ") and "test_observe_timeline.py:" in raised
    assert via and "_raises_inside" in via[0]
    assert not any("tasks.py" in line for line in via)  # no Task machinery frames
    failed = [s for s in rec.segments() if s.lane == lane.id and s.state == "failed"]
    assert len(failed) == 1 and "ValueError: boom <b>" in failed[0].tip
    # Only text: the exception (and the frames of its traceback) are not kept.
    assert all(isinstance(value, str) for value in (lane.error, failed[0].tip))


@pytest.mark.parametrize("impl", TASK_IMPLEMENTATIONS)
def test_taskgroup_and_asyncio_wait_are_waits_for_other_tasks(impl: str) -> None:
    async def child(delay: float) -> None:
        await asyncio.sleep(delay)

    async def grouped() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(child(0.01))

    async def waited() -> None:
        await asyncio.wait([asyncio.create_task(child(0.01))])

    async def main() -> None:
        await asyncio.create_task(grouped(), name="grouped")
        await asyncio.create_task(waited(), name="waited")

    rec = _record_on(impl, main)
    for name, leaf in (("grouped", "children of a TaskGroup"), ("waited", "tasks of asyncio.wait")):
        lane = _lane_named(rec, name)
        waits = [s for s in rec.segments() if s.lane == lane.id and s.state.startswith("waiting")]
        long_waits = [s for s in waits if s.end - s.start > 0.005]
        assert long_waits and all(s.state == "waiting-task" for s in long_waits), waits
        assert all(leaf in s.tip for s in long_waits)


@pytest.mark.parametrize("impl", TASK_IMPLEMENTATIONS)
def test_to_thread_jobs_are_tied_to_the_task_that_submitted_them(impl: str) -> None:
    async def worker() -> None:
        await asyncio.to_thread(time.sleep, 0.01)

    async def main() -> None:
        await asyncio.create_task(worker(), name="worker")

    rec = _record_on(impl, main)
    task = _lane_named(rec, "worker")
    thread = next(lane for lane in rec.lanes if lane.kind == "thread")
    assert task.linked == [thread.id] and thread.linked == [task.id]
    jobs = [s for s in rec.segments() if s.state == "job"]
    assert len(jobs) == 1
    # The job is labelled with the function to_thread ran, not its context wrapper.
    assert jobs[0].tip.splitlines() == ["sleep", "submitted by task worker"]
    # The task's wait for it (its only wait) says which job, on which thread. (Not how long:
    # on a loaded machine the step that starts the pool's thread may outlast the job.)
    waits = [s for s in rec.segments() if s.lane == task.id and s.state == "waiting"]
    notes = [s.tip.splitlines()[-1] for s in waits]
    assert notes == [f"executor job sleep on thread {thread.name}"]


@pytest.mark.parametrize("impl", TASK_IMPLEMENTATIONS)
def test_jobs_of_other_executors_get_lanes_that_never_overlap(impl: str) -> None:
    # An executor tidal does not own gets func untouched (issue 10 A1); its jobs are seen from
    # submission to completion, and jobs in flight together go on separate lanes.
    barrier = threading.Barrier(3)

    def work() -> int:
        barrier.wait(5)
        return 1

    async def gatherer() -> None:
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            jobs = [loop.run_in_executor(pool, work) for _ in range(3)]
            assert await asyncio.gather(*jobs) == [1, 1, 1]

    async def main() -> None:
        await asyncio.create_task(gatherer(), name="gatherer")

    rec = _record_on(impl, main)
    task = _lane_named(rec, "gatherer")
    lanes = [lane for lane in rec.lanes if lane.kind == "thread"]
    assert [lane.name for lane in lanes] == [
        OTHER_EXECUTOR_LANE,
        f"{OTHER_EXECUTOR_LANE} 2",
        f"{OTHER_EXECUTOR_LANE} 3",
    ]
    assert task.linked == [lane.id for lane in lanes]
    jobs = [s for s in rec.segments() if s.state == "job"]
    assert sorted(s.lane for s in jobs) == [lane.id for lane in lanes]
    assert all("work" in s.tip and "in flight" in s.tip for s in jobs)
    wait = next(s for s in rec.segments() if s.lane == task.id and "gather of 3" in s.tip)
    assert wait.state == "waiting-task"
    notes = [line for line in wait.tip.splitlines() if line.startswith("executor job ")]
    assert [note.split(".work on ")[1] for note in notes] == [lane.name for lane in lanes]


def test_every_task_lane_ends_even_when_task_ids_are_reused() -> None:
    async def quick() -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        for n in range(40):  # each task is freed before the next: ids come back
            await asyncio.create_task(quick(), name=f"quick-{n}")

    rec = _record_on("native", main)
    lanes = [lane for lane in rec.task_lanes() if lane.name.startswith("quick-")]
    assert len(lanes) == 40
    assert all(lane.state == "finished" for lane in lanes)
    ended = {s.lane for s in rec.segments() if s.state == "finished"}
    assert all(lane.id in ended for lane in lanes)


def test_the_main_task_gets_one_lane_when_its_creation_starts_the_recording() -> None:
    async def main() -> None:
        await asyncio.sleep(0)

    with tidal.trace.record() as session:  # attaches when main's task is created
        tidal.run(main())
    rec = session.stop()
    mains = [lane for lane in rec.task_lanes() if lane.detail.endswith(".main")]
    assert len(mains) == 1
    assert mains[0].state == "finished" and mains[0].created_at is not None


def test_loop_internal_tasks_are_marked() -> None:
    async def main() -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print('hi')", stdout=asyncio.subprocess.PIPE
        )
        await process.communicate()

    with tidal.trace.record() as session:
        tidal.run(main())
    rec = session.stop()
    internal = {lane.detail for lane in rec.task_lanes() if lane.internal}
    assert internal == {
        "EventLoop.shutdown_asyncgens",
        "EventLoop.shutdown_default_executor",
        "SubprocessTransport._connect_pipes",
    }
    assert all(
        lane.detail in LOOP_INTERNAL_COROUTINES for lane in rec.task_lanes() if lane.internal
    )
    assert not any(lane.internal for lane in rec.task_lanes() if lane.detail == "main")


def test_chrome_trace_has_flow_arrows_to_created_tasks_and_executor_jobs() -> None:
    async def worker() -> None:
        await asyncio.to_thread(time.sleep, 0.005)

    async def main() -> None:
        await asyncio.gather(asyncio.create_task(worker()), asyncio.create_task(worker()))

    rec = _record_on("native", main)
    events = rec.to_chrome_trace()["traceEvents"]
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    ends = {e["id"]: e for e in events if e["ph"] == "f"}
    assert starts.keys() == ends.keys()
    kinds = [e["name"] for e in starts.values()]
    assert kinds.count("created") == 2 and kinds.count("executor job") == 2
    slices = [e for e in events if e["ph"] == "X"]

    def inside(event: dict[str, Any]) -> bool:  # bound to a slice of its own thread (lane)
        return any(
            s["tid"] == event["tid"] and s["ts"] <= event["ts"] <= s["ts"] + s["dur"]
            for s in slices
        )

    for ident, start in starts.items():
        end = ends[ident]
        assert end["bp"] == "e" and start["tid"] != end["tid"]
        assert inside(start) and inside(end)
        assert start["ts"] <= end["ts"]
    lane_of = {lane.id + 1: lane for lane in rec.lanes}
    created = [
        (lane_of[s["tid"]], lane_of[ends[i]["tid"]])
        for i, s in starts.items()
        if s["name"] == "created"
    ]
    assert all(p.detail.endswith("main") and c.detail.endswith("worker") for p, c in created)
    jobs = [
        (lane_of[s["tid"]], lane_of[ends[i]["tid"]])
        for i, s in starts.items()
        if s["name"] == "executor job"
    ]
    assert all(t.detail.endswith("worker") and th.kind == "thread" for t, th in jobs)


def test_html_page_keeps_every_string_out_of_the_markup() -> None:
    hostile = "<img src=x onerror=alert(1)></script><script>alert(2)</script>&amp;"

    async def main() -> None:
        await asyncio.create_task(asyncio.sleep(0), name=hostile)

    rec = _record_on("native", main)
    page = rec.to_html(title=hostile)
    assert "<img" not in page and "alert(2)</script>" not in page
    assert page.count("<script") == 2  # the data block and the page's own script
    data = page.split('id="timeline-data">', 1)[1].split("</script>", 1)[0]
    assert any(lane["name"] == hostile for lane in json.loads(data)["lanes"])
