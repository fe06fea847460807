"""Running the calls made in one turn of the event loop as one.

Under load, many requests reach the same store operation in the same turn of the event
loop. `TurnBatcher` gathers them and, at the end of that turn, hands them all to one
`run`: one statement, one round trip and one commit for the lot, instead of one each.
A call made alone waits for nothing but the end of its own turn, so an idle server
answers as fast as before; a busy one makes fewer, larger trips to the database.

Each call gets its own result, or the error the whole batch failed with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class TurnBatcher(Generic[In, Out]):
    """`submit` an item, get its result: `run` receives every item submitted in the
    same turn (at most `max_size` at a time, in order) and returns one result each."""

    def __init__(
        self, run: Callable[[Sequence[In]], Awaitable[Sequence[Out]]], max_size: int
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._run = run
        self._max_size = max_size
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: In) -> Out:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Out] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self._max_size:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._run_batch(batch))
            self._running.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._running.discard)

    async def _run_batch(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} items")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as error:  # every caller sees the failure of the batch
            for _, future in batch:
                if not future.done():  # a caller may have been cancelled meanwhile
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
