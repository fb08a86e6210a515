"""The allocator's micro-batches: when a task waits for others, and one task's exception fails
only that task."""

from __future__ import annotations

import asyncio

import pytest

from qubus_services.allocator.main import Batcher, _Pending


class Poisoned(Exception):
    pass


async def decide_each(batch: list[_Pending], flushed: list[list[str]]) -> None:
    """A flush that, like the allocator's, decides the whole batch before settling anyone:
    a poisoned task makes it raise for every task of its batch."""
    flushed.append([item.event for item in batch])
    if any(item.event.startswith("poison") for item in batch):
        raise Poisoned("cannot decide a batch holding a poisoned task")
    for item in batch:
        item.done.set_result(None)


@pytest.mark.asyncio
async def test_a_failing_batch_is_retried_task_by_task_and_fails_only_the_poisoned_one():
    flushed: list[list[str]] = []
    batcher = Batcher(1.0, 4, lambda batch: decide_each(batch, flushed))
    names = ["good-1", "poison", "good-2", "good-3"]
    results = await asyncio.gather(
        *(
            batcher.add(_Pending(name, None), backlog=len(names) - i - 1)
            for i, name in enumerate(names)
        ),
        return_exceptions=True,
    )
    assert [isinstance(r, Poisoned) for r in results] == [False, True, False, False]
    assert flushed == [names, ["good-1"], ["poison"], ["good-2"], ["good-3"]]


@pytest.mark.asyncio
async def test_items_settled_before_the_batch_failed_are_not_decided_again():
    flushed: list[list[str]] = []

    async def settle_first_then_fail(batch: list[_Pending]) -> None:
        flushed.append([item.event for item in batch])
        batch[0].done.set_result(None)
        if len(batch) > 1:
            raise Poisoned("failed after publishing the first allocation")
        # the re-flush of a single task succeeds

    batcher = Batcher(1.0, 3, settle_first_then_fail)
    names = ["a", "b", "c"]
    results = await asyncio.gather(
        *(batcher.add(_Pending(n, None), backlog=len(names) - i - 1) for i, n in enumerate(names))
    )
    assert results == [None, None, None]
    assert flushed == [["a", "b", "c"], ["b"], ["c"]]


async def record(batch: list[_Pending], flushed: list[list[str]]) -> None:
    flushed.append([item.event for item in batch])
    for item in batch:
        item.done.set_result(None)


async def decided_without_waiting(batcher: Batcher, name: str, flushed: list[list[str]]) -> None:
    """Add ``name``; it must be flushed within a few turns of the loop, not by the window's
    timer."""
    added = asyncio.create_task(batcher.add(_Pending(name, None), backlog=0))
    for _ in range(5):
        await asyncio.sleep(0)
    assert flushed[-1] == [name]
    await added


@pytest.mark.asyncio
async def test_tasks_more_than_half_a_window_apart_are_decided_at_once_closer_ones_together():
    flushed: list[list[str]] = []
    window = 0.2
    batcher = Batcher(window, 8, lambda batch: record(batch, flushed))
    await decided_without_waiting(batcher, "first", flushed)  # none came before it
    await asyncio.sleep(0.6 * window)
    await decided_without_waiting(batcher, "later", flushed)  # over half a window after
    await asyncio.sleep(0.2 * window)
    # Under half a window after: it waits for the window, and one more comes in it.
    close = asyncio.create_task(batcher.add(_Pending("close", None), backlog=0))
    await asyncio.sleep(0.1 * window)
    assert flushed[-1] == ["later"]
    await batcher.add(_Pending("closer", None), backlog=0)
    await close
    assert flushed == [["first"], ["later"], ["close", "closer"]]
