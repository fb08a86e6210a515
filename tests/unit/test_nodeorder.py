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


async def test_tasks_queued_behind_a_running_one_start_shortest_first() -> None:
    clock = Clock()
    order = RunOrder(starve_after_s=60, clock=clock)
    started: list[str] = []
    first = asyncio.Event()

    async def running() -> None:
        async with order.turn(5, 0):
            started.append("running")
            await first.wait()

    holder = asyncio.create_task(running())
    await asyncio.sleep(0)
    queued = [
        asyncio.create_task(_run(order, name, run_s, 1, started))
        for name, run_s in (("long", 30), ("medium", 10), ("short", 1))
    ]
    await asyncio.sleep(0)
    assert order.waiting == 3
    clock.now = 20
    first.set()
    await asyncio.gather(holder, *queued)
    assert started == ["running", "short", "medium", "long"]
    assert order.worst_wait_s == 19  # every queued task began its turn at 20, since 1


async def test_a_starving_task_overtakes_shorter_ones() -> None:
    clock = Clock()
    order = RunOrder(starve_after_s=60, clock=clock)
    started: list[str] = []
    release = asyncio.Event()

    async def running() -> None:
        async with order.turn(5, 0):
            await release.wait()

    holder = asyncio.create_task(running())
    await asyncio.sleep(0)
    queued = [
        asyncio.create_task(_run(order, "long", 30, 0, started)),
        asyncio.create_task(_run(order, "short", 1, 50, started)),
    ]
    await asyncio.sleep(0)
    clock.now = 70  # the long task has waited 70 s, over the bound
    release.set()
    await asyncio.gather(holder, *queued)
    assert started == ["long", "short"]
    assert order.worst_wait_s == 70


async def test_a_task_cancelled_while_waiting_or_running_frees_its_turn() -> None:
    order = RunOrder(starve_after_s=60, clock=Clock())
    release = asyncio.Event()
    started: list[str] = []

    async def running() -> None:
        async with order.turn(5, 0):
            await release.wait()

    holder = asyncio.create_task(running())
    await asyncio.sleep(0)
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
