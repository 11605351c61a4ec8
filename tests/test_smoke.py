from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


def test_gather_of_tasks_returns_results_in_order(run: Callable[..., Any]) -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    async def main() -> list[int]:
        return await asyncio.gather(*(asyncio.create_task(double(i)) for i in range(5)))

    assert run(main()) == [0, 2, 4, 6, 8]
