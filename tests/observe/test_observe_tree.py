"""The task tree (tidal.inspect / tidal.observe.tree), on asyncio's loop and tidal's alike."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

import tidal
import tidal.inspect
from tidal.inspect import Snapshot, TaskState


def _by_name(snap: Snapshot) -> dict[str, Any]:
    return {info.name: info for info in snap.tasks}


def test_gather_taskgroup_and_direct_awaits_form_the_tree(run: Callable[..., Any]) -> None:
    async def leaf(delay: float) -> None:
        await asyncio.sleep(delay)

    async def gatherer() -> None:
        await asyncio.gather(
            asyncio.create_task(leaf(10), name="g1"), asyncio.create_task(leaf(10), name="g2")
        )

    async def awaiter(target: asyncio.Task[None]) -> None:
        await target

    async def main() -> Snapshot:
        others = [asyncio.create_task(gatherer(), name="gatherer")]
        target = asyncio.create_task(leaf(10), name="target")
        others.append(asyncio.create_task(awaiter(target), name="awaiter"))
        async with asyncio.TaskGroup() as group:
            group.create_task(leaf(10), name="grouped")
            await asyncio.sleep(0.01)
            snap = tidal.inspect.snapshot()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
        return snap

    snap = run(main())
    tasks = _by_name(snap)
    assert tasks["Task-1" if "Task-1" in tasks else next(iter(tasks))] is not None
    main_info = next(i for i in snap.tasks if i.state is TaskState.RUNNING)
    assert main_info.chain[0].name.endswith("main")
    assert main_info.chain[0].filename == __file__
    assert {tasks[n].name for n in ("g1", "g2")} == {"g1", "g2"}
    assert tasks["g1"].awaited_by == (tasks["gatherer"].id,)
    assert set(tasks["gatherer"].waits_for) == {tasks["g1"].id, tasks["g2"].id}
    assert tasks["gatherer"].chain[-1].kind == "gather"
    assert tasks["target"].awaited_by == (tasks["awaiter"].id,)
    assert (
        tasks["awaiter"].chain[-1].kind == "task"
        and tasks["awaiter"].chain[-1].name == "task target"
    )
    assert tasks["grouped"].awaited_by == (main_info.id,)
    leaf_chain = [link.name for link in tasks["g1"].chain]
    assert leaf_chain[0].endswith("leaf") and leaf_chain[1] == "sleep"
    assert tasks["g1"].state is TaskState.WAITING
    assert tasks["g1"].waiting_on  # the future at the leaf, in words

    text = tidal.inspect.format_tree(snap)
    lines = text.splitlines()
    gatherer_line = next(i for i, line in enumerate(lines) if "(T) gatherer" in line)
    g1_line = next(i for i, line in enumerate(lines) if "(T) g1" in line)
    assert g1_line > gatherer_line
    assert lines[g1_line].index("(T)") > lines[gatherer_line].index("(T)")  # nested deeper
    assert "gather of 2" in text
    table = tidal.inspect.format_table(snap)
    assert "awaiter" in table and "gatherer" in table


def test_wait_and_shield_are_seen_through_their_callbacks(run: Callable[..., Any]) -> None:
    async def sleeper() -> None:
        await asyncio.sleep(10)

    async def main() -> Snapshot:
        waited = asyncio.create_task(sleeper(), name="waited")
        shielded = asyncio.create_task(sleeper(), name="shielded")

        async def waits() -> None:
            await asyncio.wait([waited])

        async def shields() -> None:
            await asyncio.shield(shielded)

        w = asyncio.create_task(waits(), name="waits")
        s = asyncio.create_task(shields(), name="shields")
        await asyncio.sleep(0.01)
        snap = tidal.inspect.snapshot()
        for task in (waited, shielded, w, s):
            task.cancel()
        await asyncio.gather(waited, shielded, w, s, return_exceptions=True)
        return snap

    tasks = _by_name(run(main()))
    assert tasks["waited"].awaited_by == (tasks["waits"].id,)
    assert tasks["shielded"].awaited_by == (tasks["shields"].id,)


def test_an_await_cycle_is_drawn_without_looping(run: Callable[..., Any]) -> None:
    holder: dict[str, asyncio.Task[None]] = {}

    async def first() -> None:
        await asyncio.sleep(0)
        await holder["b"]

    async def second() -> None:
        await asyncio.sleep(0)
        # Through wait(), so that cancelling B does not recurse into A (a direct cycle would).
        await asyncio.wait([holder["a"]])

    async def main() -> Snapshot:
        holder["a"] = asyncio.create_task(first(), name="A")
        holder["b"] = asyncio.create_task(second(), name="B")
        for _ in range(3):
            await asyncio.sleep(0)
        snap = tidal.inspect.snapshot()
        holder["b"].cancel()
        await asyncio.gather(holder["a"], holder["b"], return_exceptions=True)
        return snap

    snap = run(main())
    tasks = _by_name(snap)
    assert tasks["A"].waits_for == (tasks["B"].id,) and tasks["B"].waits_for == (tasks["A"].id,)
    assert {r.name for r in snap.roots()} >= {"A"} or {r.name for r in snap.roots()} >= {"B"}
    text = tidal.inspect.format_tree(snap)
    assert "await cycle" in text


def test_snapshot_round_trips_through_json(run: Callable[..., Any]) -> None:
    async def main() -> Snapshot:
        task = asyncio.create_task(asyncio.sleep(10), name="sleepy")
        await asyncio.sleep(0)
        snap = tidal.inspect.snapshot()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return snap

    snap = run(main())
    again = Snapshot.from_dict(json.loads(json.dumps(snap.to_dict())))
    assert again == snap


def test_print_tree_writes_the_tree(run: Callable[..., Any]) -> None:
    async def main() -> str:
        out = io.StringIO()
        tidal.inspect.print_tree(file=out)
        return out.getvalue()

    text = run(main())
    assert text.startswith("pid ") and "[running]" in text


def test_snapshot_from_another_thread_is_marked_inconsistent(run: Callable[..., Any]) -> None:
    async def main() -> Snapshot:
        loop = asyncio.get_running_loop()
        parked = threading.Event()
        done: asyncio.Future[Snapshot] = loop.create_future()

        def reader() -> None:
            parked.wait(10)
            snap = tidal.inspect.snapshot(loop)
            loop.call_soon_threadsafe(done.set_result, snap)

        thread = threading.Thread(target=reader)
        thread.start()
        loop.call_soon(parked.set)  # runs once main is parked on `done`
        snap = await done
        thread.join()
        return snap

    snap = run(main())
    assert snap.consistent is False
    assert any(info.state is TaskState.WAITING for info in snap.tasks)


def test_snapshot_needs_a_loop() -> None:
    with pytest.raises(RuntimeError):
        tidal.inspect.snapshot()


def test_tracking_fills_creator_age_steps_and_running_time() -> None:
    loop = tidal.new_event_loop()
    try:
        tidal.inspect.track(loop)

        async def child() -> None:
            await asyncio.sleep(0)
            await asyncio.sleep(10)

        async def main() -> Snapshot:
            task = asyncio.create_task(child(), name="child")
            for _ in range(3):
                await asyncio.sleep(0)
            snap = tidal.inspect.snapshot()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return snap

        snap = loop.run_until_complete(loop.create_task(main(), name="main"))
    finally:
        tidal.inspect.untrack(loop)
        loop.close()
    child_info = _by_name(snap)["child"]
    assert child_info.created_by_name == "main"
    assert child_info.created_at is not None and child_info.created_at.startswith(__file__)
    assert child_info.steps == 2
    assert child_info.running_time is not None and child_info.running_time > 0
    assert child_info.age is not None and child_info.age > 0
    text = tidal.inspect.format_tree(snap)
    assert "created by main" in text and "2 steps" in text
