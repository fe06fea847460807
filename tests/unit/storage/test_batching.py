"""`TurnBatcher`: the calls of one turn of the event loop go to one run, each gets its
own result or the batch's error."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from keyturn.storage.batching import TurnBatcher


class Recorder:
    def __init__(self, fail: Exception | None = None, short: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail
        self.short = short

    async def run(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await asyncio.sleep(0)  # a round trip
        if self.fail is not None:
            raise self.fail
        doubled = [2 * i for i in items]
        return doubled[:-1] if self.short else doubled


async def test_the_calls_of_one_turn_go_to_one_run_in_order() -> None:
    recorder = Recorder()
    batcher = TurnBatcher(recorder.run, max_size=64)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert results == [2 * i for i in range(10)]
    assert recorder.batches == [list(range(10))]


async def test_calls_of_later_turns_go_to_later_runs() -> None:
    recorder = Recorder()
    batcher = TurnBatcher(recorder.run, max_size=64)
    assert await batcher.submit(1) == 2
    assert await batcher.submit(2) == 4
    assert recorder.batches == [[1], [2]]


async def test_a_full_batch_leaves_at_once() -> None:
    recorder = Recorder()
    batcher = TurnBatcher(recorder.run, max_size=4)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert results == [2 * i for i in range(10)]
    assert recorder.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


async def test_every_caller_gets_the_error_of_its_batch() -> None:
    recorder = Recorder(fail=ConnectionError("gone"))
    batcher = TurnBatcher(recorder.run, max_size=64)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_a_run_that_answers_the_wrong_count_fails_every_caller() -> None:
    batcher = TurnBatcher(Recorder(short=True).run, max_size=64)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_a_cancelled_caller_leaves_the_others_their_results() -> None:
    recorder = Recorder()
    batcher = TurnBatcher(recorder.run, max_size=64)
    tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
    await asyncio.sleep(0)  # every submit is in; the run has started
    tasks[1].cancel()
    assert await tasks[0] == 0
    assert await tasks[2] == 4
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    assert recorder.batches == [[0, 1, 2]]


def test_a_batch_holds_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        TurnBatcher(Recorder().run, max_size=0)
