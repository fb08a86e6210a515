"""allocator: ``scored`` → ``allocated`` on ``qubus.task.<id>.allocated.<node>``, in micro-batches;
``replace`` → a new ``allocated`` for a task that must leave its node.

**Micro-batching.** Scored tasks are collected for ``QUBUS_BATCH_WINDOW_MS`` from the first
of a batch, or until ``QUBUS_BATCH_MAX`` have arrived, and decided together by the policy
(``qubus.allocation.decide``, in a thread: ``milp`` and ``qaoa`` take a while; λ of the
batch objective is ``QUBUS_FIDELITY_WEIGHT_S``). The batch's
allocations are published in run order (each node's tasks shortest first, the order the
batch objective assumes), and each scored message is acknowledged only after its allocation
(or its rejection) has been published. The decision is one message, which is also the chosen
QPU node's work item; its de-duplication id ``<task_id>.allocated`` makes a redelivered
``scored`` unable to place the task twice.

**Re-placement.** Every third of ``QUBUS_NODE_TIMEOUT_S`` the allocator looks for nodes it
has seen whose status is older than the timeout, reads the allocations each still holds
unacknowledged (``qubus.replacement``) and publishes a ``replace`` for each. A node itself
publishes ``replace`` instead of running a task when its calibration changed since the
allocation and the task's prediction fell below its floor or by more than
``QUBUS_REPLACE_DROP``. Either way the allocator decides again on the task's stored scores
with the node it leaves, and every offline node, excluded, and publishes the allocation as
attempt ``n + 1`` (``<task_id>.allocated.<n+1>``); the node skips superseded allocations. With
nowhere else to go, a task on an offline node waits for it, and a recalibrated task stays on
its node with the new prediction unless that breaks its floor (then it is rejected). A task is
re-placed at most ``QUBUS_MAX_REPLACEMENTS`` times.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from qubus.allocation import (
    Decision,
    Outcome,
    TaskRequest,
    candidate_from_score,
    decide,
    get_policy,
)
from qubus.consumer import Context, Stage
from qubus.errors import QubusError, Retry
from qubus.logs import get_logger
from qubus.messages import TaskAllocated, TaskIngested, TaskReplace, TaskScored
from qubus.replacement import latest_allocation, outstanding_allocations
from qubus.service import Runtime

log = get_logger()


def task_request(
    event: TaskScored, *, deadline_s: float | None, exclude: Mapping[str, str] | None = None
) -> TaskRequest:
    """The task as a placement request; nodes in ``exclude`` are unavailable for the reason
    given."""
    candidates = []
    for score in event.scores:
        candidate = candidate_from_score(score)
        if exclude and score.node in exclude and candidate.eligible:
            candidate = candidate.model_copy(
                update={"available": False, "reason": exclude[score.node]}
            )
        candidates.append(candidate)
    return TaskRequest(
        task_id=event.task_id,
        candidates=candidates,
        fidelity_floor=event.options.fidelity_floor,
        deadline_s=deadline_s,
    )


def allocation(event: TaskScored, decision: Decision, *, attempt: int = 0) -> TaskAllocated:
    """The published form of a decision on a scored task."""
    chosen = next(s for s in event.scores if s.node == decision.node)
    return TaskAllocated(
        task_id=event.task_id,
        node=decision.node,
        policy=decision.policy,
        reason=decision.reason,
        ranking=decision.ranking,
        predicted_fidelity=chosen.predicted_fidelity,
        hyperscore=chosen.hyperscore,
        circuit=event.circuit,
        options=event.options,
        ideal=event.ideal,
        calibration_revision=chosen.calibration_revision,
        attempt=attempt,
        expected_completion_s=decision.expected_completion_s,
        deadline_met=decision.deadline_met,
        batch_size=decision.batch_size,
        score=chosen,
    )


@dataclass
class _Pending:
    """A scored task waiting in the batch, and the future its handler waits on."""

    event: TaskScored
    ctx: Context
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Batcher:
    """Collects items for up to ``window_s`` from the first, or until ``max_items``, then hands
    the batch to ``flush``, which must settle every item's ``done`` future.

    Args:
        window_s: How long a batch stays open after its first item.
        max_items: A batch is flushed at once when it holds this many.
        flush: Decides and publishes one batch.
    """

    def __init__(
        self,
        window_s: float,
        max_items: int,
        flush: Callable[[list[_Pending]], Awaitable[None]],
    ) -> None:
        self._window_s = window_s
        self._max_items = max_items
        self._flush = flush
        self._items: list[_Pending] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def add(self, item: _Pending) -> None:
        """Queue ``item`` and return once its batch is published (its error, if it has one)."""
        self._items.append(item)
        if len(self._items) >= self._max_items:
            self._close()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._window_s, self._close)
        await item.done

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._items = self._items, []
        if batch:
            task = asyncio.create_task(self._settle(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _settle(self, batch: list[_Pending]) -> None:
        try:
            await self._flush(batch)
        except Exception as exc:  # every item not yet settled fails with the batch
            for item in batch:
                if not item.done.done():
                    item.done.set_exception(exc)


async def setup(rt: Runtime) -> None:
    settings = rt.settings
    policy = get_policy(settings.policy)  # an unknown policy stops the service at start
    directory = await rt.node_directory()

    async def deadline_left(event: TaskScored) -> float | None:
        """Seconds left until the task's deadline (counted from its submission)."""
        deadline = event.options.deadline_s
        if deadline is None:
            return None
        ingested = await rt.bus.last_event(event.task_id, TaskIngested)
        submitted = ingested.submitted_at if ingested is not None else time.time()
        return submitted + deadline - time.time()

    async def place(requests: list[TaskRequest]) -> list[Outcome]:
        return await asyncio.to_thread(decide, policy, requests, lam=settings.fidelity_weight_s)

    async def flush(batch: list[_Pending]) -> None:
        deadlines = await asyncio.gather(*(deadline_left(p.event) for p in batch))
        requests = [
            task_request(p.event, deadline_s=d) for p, d in zip(batch, deadlines, strict=True)
        ]
        outcomes = await place(requests)
        log.info("allocator.batch", tasks=len(batch), policy=policy.name)
        for item, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, QubusError):
                item.done.set_exception(outcome)
        decided = [(p, o) for p, o in zip(batch, outcomes, strict=True) if isinstance(o, Decision)]
        for item, decision in sorted(decided, key=lambda pair: pair[1].position):
            await item.ctx.publish(allocation(item.event, decision))
            item.done.set_result(None)

    batcher = Batcher(settings.batch_window_ms / 1000, settings.batch_max, flush)

    async def handle(event: TaskScored, ctx: Context) -> None:
        await batcher.add(_Pending(event, ctx))

    async def replace(event: TaskReplace, ctx: Context) -> TaskAllocated | None:
        current = await latest_allocation(rt.bus, event.task_id)
        if current is None or current.attempt != event.attempt:
            return None  # already re-placed
        scored = await rt.bus.last_event(event.task_id, TaskScored)
        if scored is None:
            raise Retry("the task's scored event is not readable yet")
        known = directory.online(math.inf)
        exclude = {
            node: "node is offline"
            for node in set(known) - set(directory.online(settings.node_timeout_s))
        }
        exclude[event.node] = event.reason
        request = task_request(scored, deadline_s=await deadline_left(scored), exclude=exclude)
        (outcome,) = await place([request])
        if isinstance(outcome, Decision):
            log.info("allocator.replaced", left=event.node, node=outcome.node, reason=event.reason)
            return allocation(scored, outcome, attempt=event.attempt + 1)
        if event.predicted_fidelity is None:
            log.info("allocator.replace_kept", node=event.node, reason=outcome.message)
            return None  # the node is offline and no other can take the task: it waits
        floor = scored.options.fidelity_floor
        if floor is not None and event.predicted_fidelity < floor:
            raise outcome
        return current.model_copy(
            update={
                "attempt": event.attempt + 1,
                "predicted_fidelity": event.predicted_fidelity,
                "calibration_revision": event.calibration_revision,
                "reason": f"kept on {event.node} after its recalibration ({event.reason}): "
                f"no other node can take the task",
            }
        )

    handled: set[tuple[str, int]] = set()

    async def watch_offline() -> None:
        """Publish ``replace`` for every allocation still held by a node gone offline."""
        known = directory.online(math.inf)
        online = directory.online(settings.node_timeout_s)
        for node in sorted(set(known) - set(online)):
            age = time.time() - known[node].updated_at
            for queued, trace in await outstanding_allocations(rt.bus, node):
                key = (queued.task_id, queued.attempt)
                if key in handled or queued.attempt >= settings.max_replacements:
                    continue
                latest = await latest_allocation(rt.bus, queued.task_id)
                if latest is not None and latest.attempt == queued.attempt:
                    reason = f"node {node} has reported no status for {age:.0f} s"
                    log.info("allocator.node_offline", node=node, task_id=queued.task_id)
                    await rt.bus.publish_event(
                        TaskReplace(
                            task_id=queued.task_id,
                            node=node,
                            attempt=queued.attempt,
                            reason=reason,
                        ),
                        trace=trace,
                    )
                handled.add(key)

    await rt.consume(Stage("allocator", [TaskScored], handle, concurrency=settings.batch_max))
    await rt.consume(Stage("allocator-replace", [TaskReplace], replace, concurrency=2))
    rt.every(max(1.0, settings.node_timeout_s / 3), watch_offline)
