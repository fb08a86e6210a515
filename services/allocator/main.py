"""allocator: ``scored`` → ``allocated`` on ``qubus.task.<id>.allocated.<node>``, in micro-batches;
``replace`` → a new ``allocated`` for a task that must leave its node.

**Micro-batching.** Scored tasks are collected for ``QUBUS_BATCH_WINDOW_MS`` from the first
of a batch, or until ``QUBUS_BATCH_MAX`` have arrived, and decided together by the policy; a
task scored after a quiet spell (none within half a window) with none waiting behind it is
decided at once, so an idle stack adds no window to a task's latency. A batch is placed on
each node's backlog as its status last reported it plus the runs this allocator sent it after
that status (``qubus.scheduling.backlog``): nodes report at most every 0.25 s. The policy
(``qubus.scheduling.allocation.decide``) runs in a thread (``milp`` and ``qaoa`` take a while;
λ of the batch objective is ``QUBUS_FIDELITY_WEIGHT_S``, scaled per task by its preference,
``TaskOptions.prefer``, which the decision's reason names). The batch's
allocations are published in run order (each node's tasks shortest first, the order the
batch objective assumes), and each scored message is acknowledged only after its allocation
(or its rejection) has been published. The decision is one message, which is also the chosen
QPU node's work item; its de-duplication id ``<task_id>.allocated`` makes a redelivered
``scored`` unable to place the task twice.

**Re-placement.** Every third of ``QUBUS_NODE_TIMEOUT_S`` the allocator looks for nodes it
has seen whose status is older than the timeout, reads the allocations each still holds
unacknowledged (``qubus.scheduling.replacement``) and publishes a ``replace`` for each. A node
itself publishes ``replace`` instead of running a task when its calibration changed since the
allocation and the task's prediction fell below its floor or by more than
``QUBUS_REPLACE_DROP``. Either way the allocator decides again on the task's stored scores
with the node it leaves, and every offline node, excluded, and publishes the allocation as
attempt ``n + 1`` (``<task_id>.allocated.<n+1>``); the node skips superseded allocations. With
nowhere else to go, a task on an offline node waits for it, and a recalibrated task stays on
its node with the new prediction unless that breaks its floor (then it is rejected). A task is
re-placed at most ``QUBUS_MAX_REPLACEMENTS`` times.

**Split placement.** After the policy, each task's outcome is weighed against splitting the
circuit across online nodes joined by entanglement links (``qubus.network.splitplan``, in a
thread: the task's forced ``split``, a circuit no node can take alone, or a split whose objective J
beats the decision; a plan too large for the QPU nodes to emulate, by
``QUBUS_QPU_MAX_EMULATION_S`` and their workers' memory, is never chosen). A split is
published as one allocation to the plan's lead node, with the plan in ``TaskAllocated.split``,
its breakdown (and the decision it beat) in ``reason``, and the plan's nodes first in
``ranking``; the other nodes receive nothing. A re-placement weighs splits the same way,
without the node left and the offline ones.

**Sweeps** are never split; once the policy has placed one, its points are shared among
the eligible nodes so that they all end together (``qubus.scheduling.sweepchunks``: each
node's queue and time per point, wall seconds at ``QUBUS_TIME_SCALE``), and each chunk of
points is published as an allocation of the sweep to its node (``TaskAllocated.chunk``). A
sweep pinned to a node (``--node``), one that prefers fidelity, or one too small to cut
(under twice ``MIN_CHUNK_POINTS``) stays one allocation of every point. A chunk held by a node
gone offline is re-placed alone, whole, on the node the policy then chooses for the sweep (its
next attempt, ``TaskReplace.chunk``); the node it left drops the batch it was running.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from qubus.bus.connection import NodeDirectory
from qubus.bus.consumer import Context, Stage
from qubus.bus.logs import get_logger
from qubus.bus.messages import (
    NodeScore,
    SweepChunk,
    TaskAllocated,
    TaskIngested,
    TaskReplace,
    TaskScored,
)
from qubus.bus.service import Runtime
from qubus.bus.workers import is_small, off_loop
from qubus.circuits import circuit_from_wire
from qubus.devices.cost import Limits
from qubus.errors import QubusError, Retry
from qubus.network.links import Topology, fleet_topology
from qubus.network.splitplan import FleetView, SplitChoice, choose_split
from qubus.scheduling.allocation import (
    Decision,
    Outcome,
    Policy,
    TaskRequest,
    candidate_from_score,
    decide,
    get_policy,
    preference_lam,
)
from qubus.scheduling.backlog import Ledger, with_backlogs
from qubus.scheduling.replacement import (
    chunk_allocations,
    latest_allocation,
    outstanding_allocations,
    replaced_by,
)
from qubus.scheduling.sweepchunks import NodeRate, chunk_ranges, share_points

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
        prefer=event.options.prefer,
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


def sweep_allocations(
    event: TaskScored, decision: Decision, *, time_scale: float
) -> list[TaskAllocated]:
    """The allocations of a scored task: one, or for a sweep one per chunk of its points
    (``qubus.scheduling.sweepchunks``), the policy's node first, then the other eligible
    nodes (above the task's fidelity floor) by id, each with its own score and prediction.
    A node's chunk holds it for one job's fixed time (``job_s``, counted with its queue)
    and each point for its share of the rest of the sweep's modelled run (fusion's
    ``expected_run_s``, every point's shots as one job), × the time scale. The emulation is
    left out: a point's is about the same work on any node, and the noise service's
    estimate (``emulation_s``) is about 20 times the measured time for a small density
    matrix (``docs/architecture.md``, *Sweeps*), which gave the slow nodes most points.

    Args:
        time_scale: ``QUBUS_TIME_SCALE``: a node's modelled seconds held in wall seconds.
    """
    placed = allocation(event, decision)
    options = event.options
    if options.sweep is None or options.node is not None or options.prefer == "fidelity":
        return [placed]
    points = len(options.sweep)
    floor = options.fidelity_floor or 0.0
    candidates = {
        c.node: c
        for c in task_request(event, deadline_s=None).candidates
        if c.eligible and c.predicted_fidelity >= floor
    }
    order = [decision.node, *sorted(set(candidates) - {decision.node})]
    scores = {score.node: score for score in event.scores}
    rates = []
    for node in order:
        candidate = candidates.get(node)
        run_s = candidate.run_s if candidate else 0.0
        queue_s = candidate.queue_s if candidate else 0.0
        job_s = min(scores[node].job_s, run_s)
        point_s = (run_s - job_s) * time_scale / points
        rates.append(NodeRate(node, (queue_s + job_s) * time_scale, point_s))
    chunks = chunk_ranges(share_points(points, rates))
    if len(chunks) == 1:
        return [placed]
    cut = ", ".join(f"{node} {c.first}-{c.stop - 1}" for node, c in chunks)
    reason = f"{decision.reason}; points shared so that the nodes end together: {cut}"
    return [on_node(placed, scores[node], chunk=chunk, reason=reason) for node, chunk in chunks]


def on_node(placed: TaskAllocated, score: NodeScore, **update: object) -> TaskAllocated:
    """``placed`` (an allocation of a sweep's chunk) given to the node ``score`` is of, with
    that node's score and prediction, and ``update``."""
    return placed.model_copy(
        update={
            "node": score.node,
            "predicted_fidelity": score.predicted_fidelity,
            "hyperscore": score.hyperscore,
            "calibration_revision": score.calibration_revision,
            "score": score,
            **update,
        }
    )


def split_allocation(
    event: TaskScored,
    choice: SplitChoice,
    single: Decision | QubusError,
    *,
    policy: str,
    deadline_s: float | None,
    attempt: int = 0,
) -> TaskAllocated:
    """The published form of a split: addressed to the plan's lead node, the plan's nodes
    first in the ranking (with fusion's hyperscore, 0 where the node was not eligible), then
    the rest of the policy's ranking."""
    plan = choice.plan
    scores = {score.node: score for score in event.scores}
    lead = scores.get(plan.nodes[0])
    others = single.ranking if isinstance(single, Decision) else []
    ranking = [(node, scores[node].hyperscore if node in scores else 0.0) for node in plan.nodes]
    ranking += [(node, value) for node, value in others if node not in plan.nodes]
    return TaskAllocated(
        task_id=event.task_id,
        node=plan.nodes[0],
        policy=policy,
        reason=choice.reason,
        ranking=ranking,
        predicted_fidelity=plan.predicted_fidelity,
        hyperscore=lead.hyperscore if lead else 0.0,
        circuit=event.circuit,
        options=event.options,
        ideal=event.ideal,
        calibration_revision=lead.calibration_revision if lead else "",
        attempt=attempt,
        expected_completion_s=plan.expected_completion_s,
        deadline_met=None if deadline_s is None else plan.expected_completion_s <= deadline_s,
        batch_size=single.batch_size if isinstance(single, Decision) else 1,
        score=lead,
        split=plan,
    )


def weigh_split(
    event: TaskScored, outcome: Outcome, fleet: FleetView, *, lam: float, limits: Limits
) -> Outcome | SplitChoice:
    """The policy's outcome for the task, or the split that replaces it; a task no split
    can rescue keeps its error, extended (``qubus.network.splitplan.choose_split``). A sweep
    is never split: it runs as one job of many points on one node. A plan whose emulation is
    over ``limits`` (the QPU nodes' own) is not chosen: the task keeps the policy's node, or
    if it must be split it fails with ``split.too_large``."""
    if event.options.sweep is not None:
        return outcome
    try:
        choice = choose_split(
            circuit_from_wire(event.circuit),
            event.options,
            outcome,
            fleet,
            lam=lam,
            limits=limits,
            ideal=event.ideal,
        )
    except QubusError as exc:
        return exc
    return outcome if choice is None else choice


INLINE_TASKS = 16
"""Largest batch of small circuits (``is_small``) decided on the event loop: a task's decision
takes some 0.3 ms there (``benchmarks/stagework.py``), less than the thread hop costs a
batch; larger batches and circuits are decided in a thread, so that heartbeats go on."""


@dataclass
class _Pending:
    """A scored task waiting in the batch, and the future its handler waits on."""

    event: TaskScored
    ctx: Context
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


QUIET_WINDOWS = 0.5
"""A gap since the last arrival longer than this many windows is a quiet spell. Tasks that came
that far apart would bring at most one more into a window: waiting for it costs the task up to
a window, the joint decision of two gains little. A client that sends each task when the last
one ended (arrivals one latency, about 50 ms, apart) waited out the 50 ms window whenever the
pipeline ran a little faster than it: idle p50 about 70 ms instead of 50
(``benchmarks/fastpath.py``)."""


class Batcher:
    """Collects items for up to ``window_s`` from the first, or until ``max_items``, then hands
    the batch to ``flush``, which must settle every item's ``done`` future. An item that
    arrives after a quiet spell (none in the last ``QUIET_WINDOWS × window_s``) with nothing
    waiting behind it on the bus (``backlog`` 0) is decided at once, alone: an idle stack does
    not wait out the window, and tasks that keep coming are still decided together.

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
        self._last_arrival = -math.inf

    async def add(self, item: _Pending, *, backlog: int) -> None:
        """Queue ``item`` and return once its batch is published (its error, if it has one).

        Args:
            backlog: Items still waiting on the bus behind this one.
        """
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self._last_arrival > QUIET_WINDOWS * self._window_s
        self._last_arrival = loop.time()
        self._items.append(item)
        if len(self._items) >= self._max_items or (quiet and backlog == 0):
            self._close()
        elif self._timer is None:
            self._timer = loop.call_later(self._window_s, self._close)
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
        """Flush the batch; if that raises, flush each item not yet settled alone, so one
        task's exception fails only that task (and only its message is redelivered)."""
        try:
            await self._flush(batch)
        except Exception as exc:
            if len(batch) > 1:
                log.warning("allocator.batch_failed", tasks=len(batch), error=repr(exc))
                for item in batch:
                    if not item.done.done():
                        await self._settle([item])
            elif not batch[0].done.done():
                batch[0].done.set_exception(exc)


class Allocator:
    """The allocator's handlers: scored tasks placed in micro-batches, ``replace`` placed
    again, and the watch for nodes gone offline.

    Args:
        rt: The service's runtime (its bus and settings).
        policy: The placement policy.
        directory: The fleet's node statuses.
        topology: The entanglement links between the nodes, for splits.
    """

    def __init__(
        self, rt: Runtime, policy: Policy, directory: NodeDirectory, topology: Topology
    ) -> None:
        self._bus = rt.bus
        self._settings = rt.settings
        self._policy = policy
        self._directory = directory
        self._topology = topology
        self._batcher = Batcher(
            self._settings.batch_window_ms / 1000, self._settings.batch_max, self._flush
        )
        self._handled: set[tuple[str, int]] = set()
        self._sent = Ledger()

    async def _deadline_left(self, event: TaskScored) -> float | None:
        """Seconds left until the task's deadline (counted from its submission)."""
        deadline = event.options.deadline_s
        if deadline is None:
            return None
        ingested = await self._bus.last_event(event.task_id, TaskIngested)
        submitted = ingested.submitted_at if ingested is not None else time.time()
        return submitted + deadline - time.time()

    def _decide_with_splits(
        self, events: list[TaskScored], requests: list[TaskRequest], fleet: FleetView
    ) -> list[tuple[Outcome, Outcome | SplitChoice]]:
        """Each task's policy outcome, and what it becomes once splits are weighed."""
        lam = self._settings.fidelity_weight_s
        limits = Limits(self._settings.qpu_max_emulation_s, self._settings.sandbox_memory_mb)
        outcomes = decide(self._policy, requests, lam=lam)
        return [
            (
                outcome,
                weigh_split(
                    event,
                    outcome,
                    fleet,
                    lam=preference_lam(lam, event.options.prefer),
                    limits=limits,
                ),
            )
            for event, outcome in zip(events, outcomes, strict=True)
        ]

    async def _place(
        self,
        events: list[TaskScored],
        deadlines: list[float | None],
        *,
        exclude: Mapping[str, str] | None = None,
    ) -> list[tuple[Outcome, Outcome | SplitChoice]]:
        online = self._directory.online(self._settings.node_timeout_s)
        backlogs = self._sent.backlogs(online)
        requests = [
            with_backlogs(task_request(event, deadline_s=d, exclude=exclude), backlogs)
            for event, d in zip(events, deadlines, strict=True)
        ]
        fleet = FleetView.from_statuses(
            {node: s for node, s in online.items() if node not in (exclude or {})}, self._topology
        )
        inline = len(events) <= INLINE_TASKS and all(is_small(e.circuit) for e in events)
        return await off_loop(self._decide_with_splits, events, requests, fleet, inline=inline)

    def _split_event(
        self,
        event: TaskScored,
        choice: SplitChoice,
        single: Outcome,
        deadline_s: float | None,
        *,
        attempt: int = 0,
    ) -> TaskAllocated:
        log.info("allocator.split", nodes=choice.plan.nodes, ebits=choice.plan.ebits)
        return split_allocation(
            event, choice, single, policy=self._policy.name, deadline_s=deadline_s, attempt=attempt
        )

    async def _flush(self, batch: list[_Pending]) -> None:
        deadlines = await asyncio.gather(*(self._deadline_left(p.event) for p in batch))
        placed = await self._place([p.event for p in batch], deadlines)
        log.info("allocator.batch", tasks=len(batch), policy=self._policy.name)
        for item, deadline, (single, outcome) in zip(batch, deadlines, placed, strict=True):
            if isinstance(outcome, QubusError):
                item.done.set_exception(outcome)
            elif isinstance(outcome, SplitChoice):
                await item.ctx.publish(self._split_event(item.event, outcome, single, deadline))
                item.done.set_result(None)
        decided = [
            (p, o) for p, (_, o) in zip(batch, placed, strict=True) if isinstance(o, Decision)
        ]
        for item, decision in sorted(decided, key=lambda pair: pair[1].position):
            for placed in sweep_allocations(
                item.event, decision, time_scale=self._settings.time_scale
            ):
                await item.ctx.publish(placed)
                if placed.chunk is None and placed.score is not None:
                    self._sent.record(placed.node, time.time(), placed.score.expected_run_s)
            item.done.set_result(None)

    async def handle(self, event: TaskScored, ctx: Context) -> None:
        """The ``allocator`` stage: the task waits in the batch until its decision is out."""
        await self._batcher.add(_Pending(event, ctx), backlog=ctx.backlog)

    async def replace(self, event: TaskReplace, ctx: Context) -> TaskAllocated | None:
        """The ``allocator-replace`` stage: the task's next allocation, without the node it
        leaves and the offline ones."""
        if event.chunk is None:
            current = await latest_allocation(self._bus, event.task_id)
        else:
            current = (await chunk_allocations(self._bus, event.task_id)).get(event.chunk)
        if current is None or current.attempt != event.attempt:
            return None  # already re-placed
        if current.node != event.node:
            log.warning("allocator.replace_not_held", node=event.node, held_by=current.node)
            return None  # a node asking to give up a task it does not hold
        scored = await self._bus.last_event(event.task_id, TaskScored)
        if scored is None:
            raise Retry("the task's scored event is not readable yet")
        known = self._directory.online(math.inf)
        exclude = {
            node: "node is offline"
            for node in set(known) - set(self._directory.online(self._settings.node_timeout_s))
        }
        exclude[event.node] = event.reason
        deadline = await self._deadline_left(scored)
        ((single, outcome),) = await self._place([scored], [deadline], exclude=exclude)
        if current.chunk is not None:
            return self._move_chunk(scored, current, current.chunk, event, outcome)
        if isinstance(outcome, SplitChoice):
            log.info("allocator.replaced", left=event.node, node=outcome.plan.nodes[0])
            return self._split_event(scored, outcome, single, deadline, attempt=event.attempt + 1)
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

    def _move_chunk(
        self,
        scored: TaskScored,
        current: TaskAllocated,
        chunk: SweepChunk,
        event: TaskReplace,
        outcome: Outcome | SplitChoice,
    ) -> TaskAllocated | None:
        """A chunk of a sweep, whose node went offline, given whole to the node the policy
        chooses for the sweep without the offline ones (a sweep is never split), as the
        chunk's next attempt; None if no node can take it (it waits for its node)."""
        if not isinstance(outcome, Decision):
            log.info("allocator.replace_kept", node=event.node, chunk=chunk.index)
            return None
        score = next(s for s in scored.scores if s.node == outcome.node)
        log.info("allocator.chunk_moved", left=event.node, node=outcome.node, chunk=chunk.index)
        return on_node(
            current,
            score,
            attempt=event.attempt + 1,
            reason=f"chunk {chunk.index + 1}/{chunk.chunks} (points {chunk.first}-"
            f"{chunk.stop - 1}) moved from {event.node} ({event.reason}); {outcome.reason}",
        )

    async def watch_offline(self) -> None:
        """Publish ``replace`` for every allocation still held by a node gone offline, a
        sweep's chunk alone (once: ``_handled`` keeps the allocations seen that are still
        outstanding)."""
        known = self._directory.online(math.inf)
        online = self._directory.online(self._settings.node_timeout_s)
        outstanding: set[tuple[str, int | None, int]] = set()
        for node in sorted(set(known) - set(online)):
            age = time.time() - known[node].updated_at
            for queued, trace in await outstanding_allocations(self._bus, node):
                chunk = queued.chunk.index if queued.chunk is not None else None
                key = (queued.task_id, chunk, queued.attempt)
                outstanding.add(key)
                if key in self._handled or queued.attempt >= self._settings.max_replacements:
                    continue
                if await replaced_by(self._bus, queued) is None:
                    reason = f"node {node} has reported no status for {age:.0f} s"
                    log.info("allocator.node_offline", node=node, task_id=queued.task_id)
                    await self._bus.publish_event(
                        TaskReplace(
                            task_id=queued.task_id,
                            node=node,
                            attempt=queued.attempt,
                            reason=reason,
                            chunk=chunk,
                        ),
                        trace=trace,
                    )
                self._handled.add(key)
        self._handled.intersection_update(outstanding)


async def setup(rt: Runtime) -> None:
    settings = rt.settings
    policy = get_policy(settings.policy)  # an unknown policy stops the service at start
    directory = await rt.node_directory()
    allocator = Allocator(rt, policy, directory, fleet_topology(settings.topology))
    await rt.consume(
        Stage("allocator", [TaskScored], allocator.handle, concurrency=settings.batch_max)
    )
    await rt.consume(Stage("allocator-replace", [TaskReplace], allocator.replace, concurrency=2))
    rt.every(max(1.0, settings.node_timeout_s / 3), allocator.watch_offline)
