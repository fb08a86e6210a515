"""A node's run order: shortest expected run first, a task waiting past the bound first."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from qubus.scheduling.nodeorder import RunOrder, next_to_run


@dataclass
class Task:
    name: str
    run_s: float
    since: float


def test_the_shortest_waiting_task_runs_next_ties_in_arrival_order() -> None:
    waiting = [Task("long", 30, 0), Task("short", 1, 1), Task("also short", 1, 2)]
    assert next_to_run(waiting, now=5, starve_after_s=60).name == "short"


def test_a_task_waiting_past_the_bound_goes_first_the_longest_waiting_first() -> None:
    waiting = [Task("short", 1, 50), Task("long", 30, 10), Task("longer", 40, 0)]
    assert next_to_run(waiting, now=65, starve_after_s=60).name == "longer"
    assert next_to_run(waiting, now=55, starve_after_s=60).name == "short"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _run(order: RunOrder, name: str, run_s: float, since: float, log: list[str]) -> None:
    async with order.turn(run_s, since):
        log.append(name)
        await asyncio.sleep(0)  # hold the node while the others queue up


async def holding(order: RunOrder, release: asyncio.Event) -> asyncio.Task[None]:
    """A task of 5 s waiting since 0 that holds the node until ``release``."""

    async def running() -> None:
        async with order.turn(5, 0):
            await release.wait()

    holder = asyncio.create_task(running())
    await asyncio.sleep(0)
    return holder


@pytest.mark.parametrize(
    ("queued", "now", "order", "worst"),
    [
        # shortest first once the node frees up at 20; every one waited since 1
        (
            [("long", 30, 1), ("medium", 10, 1), ("short", 1, 1)],
            20,
            ["short", "medium", "long"],
            19,
        ),
        # at 70 the long task has waited 70 s, over the 60 s bound: it overtakes the short one
        ([("long", 30, 0), ("short", 1, 50)], 70, ["long", "short"], 70),
    ],
)
async def test_tasks_queued_behind_a_running_one_start_in_turn(
    queued: list[tuple[str, float, float]], now: float, order: list[str], worst: float
) -> None:
    clock = Clock()
    turns = RunOrder(starve_after_s=60, clock=clock)
    started: list[str] = []
    release = asyncio.Event()
    holder = await holding(turns, release)
    tasks = [
        asyncio.create_task(_run(turns, name, run_s, since, started))
        for name, run_s, since in queued
    ]
    await asyncio.sleep(0)
    assert turns.waiting == len(queued)
    clock.now = now
    release.set()
    await asyncio.gather(holder, *tasks)
    assert started == order
    assert turns.worst_wait_s == worst


async def test_a_task_cancelled_while_waiting_or_running_frees_its_turn() -> None:
    order = RunOrder(starve_after_s=60, clock=Clock())
    started: list[str] = []
    holder = await holding(order, asyncio.Event())
    doomed = asyncio.create_task(_run(order, "doomed", 1, 0, started))
    after = asyncio.create_task(_run(order, "after", 2, 0, started))
    await asyncio.sleep(0)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert order.waiting == 1
    holder.cancel()  # the running task's end, however it ends, lets the next one start
    with pytest.raises(asyncio.CancelledError):
        await holder
    await asyncio.wait_for(after, 5)
    assert started == ["after"]
