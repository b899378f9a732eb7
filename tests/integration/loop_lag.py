"""A probe for a blocked asyncio event loop (shared by the async tests)."""

from __future__ import annotations

import asyncio
import time


class LoopLag:
    """How late a 10 ms asyncio ticker wakes while an ``async with`` block runs: a blocked
    event loop shows up as lag."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            self.lags.append(time.perf_counter() - t0 - 0.01)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    @property
    def worst(self) -> float:
        return max(self.lags)
