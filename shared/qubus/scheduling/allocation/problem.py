"""The model every placement policy shares: requests, candidates, constraints, the batch.

A batch to place is a list of ``TaskRequest``s, each with one ``Candidate`` per known node
(``candidate_from_score`` builds one from fusion's node score). :func:`build_problem` applies
the constraints below and turns the placeable tasks into a ``Problem``: tasks × nodes in arrays,
with the batch objective J, on which every policy works. ``replacement_reason`` judges a
placement again after its node's recalibration.

**Constraints**, applied to every policy alike before it runs:

- capacity and availability: a candidate is eligible when the task fits the node and the node
  is available;
- fidelity floor: a candidate predicted below the task's ``fidelity_floor`` is excluded;
- deadline: a task with ``deadline_s`` (seconds left) may only go to nodes where it would
  finish in time if it ran right after the node's current backlog (``queue_s + run_s ≤
  deadline_s``). If no node can make it, the task is not rejected: it goes to the node where
  it would finish earliest and its decision says the deadline will be missed. Batch-mates that
  run before it on the same node can still make it late: ``Decision.deadline_met`` is judged
  on the batch's final schedule.

A task with no eligible candidate is rejected (``alloc.no_fit``), naming why each node was
excluded.

**The batch model.** Node ``j`` can start new work after ``ready_j`` seconds (its backlog: the
longest ``queue_s`` any of the batch's candidates reports for it), task ``i`` runs ``run_ij``
seconds there and is predicted to reach fidelity ``F_ij``. A node runs the tasks of one batch
shortest first (the allocator publishes them in that order), so task ``i`` on node ``j``
completes after ``ready_j``, the runs of its batch-mates on ``j`` that are shorter (ties: the
earlier in the batch), and its own run. The **batch objective**, which ``milp`` minimises
exactly and by which every policy's placements are compared, is

    J = Σ_i C_i + λ·Σ_i (1 − F_i)        (seconds; λ = ``FIDELITY_WEIGHT_S`` = 100 s)

with ``C_i`` the completion time of task ``i`` counted from the decision: one point of
predicted fidelity is worth one second of completion time. A task's preference
(``TaskRequest.prefer``: fidelity, balanced or time) scales its own λ by ``PREFERENCES``, and its
hyperscores' time dependence alike. Because the shorter of two tasks on
a node delays the other by its run, ``J = Σ_i c_{i,a(i)} + Σ_j Σ_{i<k both on j}
min(run_ij, run_kj)`` with ``c_ij = ready_j + run_ij + λ·(1 − F_ij)``: a quadratic function of
the one-hot assignment, the QUBO that ``qaoa`` samples.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import chain
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from qubus.bus.messages import Preference
from qubus.errors import CircuitRejected, QubusError
from qubus.scheduling.scoring import FIDELITY_WEIGHT_S

if TYPE_CHECKING:
    from qubus.bus.messages import NodeScore

PREFERENCES: dict[str, float] = {"fidelity": 10.0, "balanced": 1.0, "time": 0.1}
"""What a task's preference (``TaskRequest.prefer``) multiplies λ by. With the default λ of
100 s: 1,000 s, 100 s and 10 s per unit of fidelity, three points of the frontier that
``qubus bench schedule --frontier`` measures (on its default workload, annealing at 1,000 s
traded about 30% longer mean completion for about 20% fewer errors; at 10 s it matched 100 s)."""


def preference_lam(lam: float, prefer: Preference | None) -> float:
    """λ for a task with this preference (None: balanced) in a batch decided at ``lam``."""
    return lam * PREFERENCES[prefer or "balanced"]


_BY_NODE = attrgetter("node")
T = TypeVar("T")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Candidate(_Frozen):
    """One node as a placement option for one task.

    Attributes:
        node: The node id.
        fits: The task fits the node's capacity (qubits, connectivity, limits).
        available: The node is online and accepting work.
        queue_depth: Tasks already waiting on the node.
        expected_completion_s: Expected queue wait plus run time of the task there.
        predicted_fidelity: Predicted fidelity of the task there.
        hyperscore: The task's hyper-score there (``qubus.scheduling.scoring``).
        reason: Why the node cannot take the task, when it cannot (named in ``alloc.no_fit``).
        run_s: Expected run time of the task there (part of ``expected_completion_s``).
        time_rate: How fast the hyperscore falls with completion time: it is proportional to
            ``exp(−time_rate·t)`` (per second; 0 if it does not depend on time).
    """

    node: str = Field(min_length=1)
    fits: bool
    available: bool
    queue_depth: int = Field(ge=0)
    expected_completion_s: float = Field(ge=0)
    predicted_fidelity: float = Field(ge=0, le=1)
    hyperscore: float
    reason: str = ""
    run_s: float = Field(default=0.0, ge=0)
    time_rate: float = Field(default=0.0, ge=0)

    @property
    def eligible(self) -> bool:
        """The task may be placed here."""
        return self.fits and self.available

    @property
    def queue_s(self) -> float:
        """Expected wait before the task could start here (the node's backlog)."""
        return max(0.0, self.expected_completion_s - self.run_s)


class TaskRequest(_Frozen):
    """One task of a batch to place.

    Attributes:
        task_id: The task.
        candidates: One per known node.
        fidelity_floor: Nodes predicted below this fidelity are excluded.
        deadline_s: Seconds left until the task should be complete (≤ 0: already late).
        prefer: Where the task stands on the fidelity–time trade-off: its λ is the batch's
            times ``PREFERENCES[prefer]`` (None: balanced).
    """

    task_id: str = Field(min_length=1)
    candidates: list[Candidate]
    fidelity_floor: float | None = Field(default=None, ge=0, le=1)
    deadline_s: float | None = None
    prefer: Preference | None = None


class Decision(_Frozen):
    """A placement and why.

    Attributes:
        task_id: The task placed.
        node: The chosen node.
        policy: The policy that chose it.
        reason: What a user can read: why this node, the expected completion, the deadline.
        ranking: Every node the task could go to with its hyperscore, the chosen one first,
            then the others in the policy's order of preference.
        expected_completion_s: Completion time from now on the batch's schedule.
        predicted_fidelity: Predicted fidelity on the chosen node.
        deadline_met: Whether that completion meets the task's deadline (None: no deadline).
        batch_size: Tasks decided together with this one (itself included).
        position: Place in the chosen node's run order within the batch (0 runs first).
    """

    task_id: str
    node: str
    policy: str
    reason: str
    ranking: list[tuple[str, float]]
    expected_completion_s: float
    predicted_fidelity: float
    deadline_met: bool | None = None
    batch_size: int = 1
    position: int = 0


def candidate_from_score(score: NodeScore) -> Candidate:
    """The allocator's view of one of fusion's node scores.

    The run time is the score's ``expected_run_s``, or for scores that do not carry it, the
    completion time shared evenly among the queued tasks and this one. The time rate is
    recovered from the score's breakdown: the hyperscore is its base score times
    ``exp(−rate·t)`` and ``time_penalty`` is base − hyperscore.
    """
    completion = score.expected_completion_s
    run = score.expected_run_s or completion / (score.queue_depth + 1)
    penalty = score.terms.get("time_penalty", 0.0)
    rate = 0.0
    if completion > 0 and penalty > 0 and score.hyperscore > 0:
        rate = math.log1p(penalty / score.hyperscore) / completion
    return Candidate(
        node=score.node,
        fits=score.eligible,
        available=score.eligible,
        queue_depth=score.queue_depth,
        expected_completion_s=completion,
        predicted_fidelity=score.predicted_fidelity,
        hyperscore=score.hyperscore,
        reason=score.reason,
        run_s=min(run, completion),
        time_rate=rate,
    )


def eligible(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The eligible candidates, sorted by node id.

    Raises:
        QubusError: ``alloc.duplicate_node`` when a node appears twice.
        CircuitRejected: ``alloc.no_fit`` when none is eligible; the message names why each
            node was excluded.
    """
    nodes = [c.node for c in candidates]
    if len(set(nodes)) != len(nodes):
        raise QubusError(f"candidates repeat a node: {sorted(nodes)}", code="alloc.duplicate_node")
    chosen = sorted((c for c in candidates if c.eligible), key=_BY_NODE)
    if chosen:
        return chosen
    if not candidates:
        raise CircuitRejected("no QPU node is known", code="alloc.no_fit")
    excluded = "; ".join(f"{c.node}: {_exclusion(c)}" for c in sorted(candidates, key=_BY_NODE))
    raise CircuitRejected(f"no QPU node can run this task ({excluded})", code="alloc.no_fit")


def _exclusion(candidate: Candidate) -> str:
    if candidate.reason:
        return candidate.reason
    reasons = []
    if not candidate.fits:
        reasons.append("the task does not fit")
    if not candidate.available:
        reasons.append("unavailable")
    return " and ".join(reasons)


def _apply_floor(request: TaskRequest) -> list[Candidate]:
    """The request's candidates with those predicted below its fidelity floor made ineligible."""
    floor = request.fidelity_floor
    if floor is None:
        return list(request.candidates)
    return [
        c.model_copy(
            update={
                "fits": False,
                "reason": f"predicted fidelity {c.predicted_fidelity:.3f} is below the task's "
                f"floor {floor:g}",
            }
        )
        if c.eligible and c.predicted_fidelity < floor
        else c
        for c in request.candidates
    ]


def replacement_reason(
    *, allocated: float, predicted: float, floor: float | None, max_drop: float
) -> str | None:
    """Why a task should leave the node it was allocated to after a recalibration, or None.

    Args:
        allocated: The predicted fidelity the allocation was made on.
        predicted: The prediction on the node's current calibration.
        floor: The task's fidelity floor, if any.
        max_drop: The largest fall of the prediction tolerated without one.
    """
    if floor is not None and predicted < floor:
        return (
            f"predicted fidelity {predicted:.3f} on the new calibration is below the task's "
            f"floor {floor:g}"
        )
    if allocated - predicted > max_drop:
        return f"predicted fidelity fell from {allocated:.3f} to {predicted:.3f} on recalibration"
    return None


# ---------------------------------------------------------------- the batch problem


@dataclass(eq=False)
class Problem:
    """A batch in numbers: tasks × nodes (the batch's eligible nodes, sorted by id).

    Not changed once built (not a frozen dataclass only because that one's ``__init__`` took
    1 µs more, a sixtieth of a decision on 8 tasks).

    Attributes:
        tasks: The placeable requests, in batch order.
        nodes: Node ids, sorted.
        allowed: ``(n, m)``: task ``i`` may go to node ``j`` (all constraints applied).
        run: ``(n, m)`` run times, s.
        ready: ``(m,)`` backlog of each node, s.
        fidelity: ``(n, m)`` predicted fidelities.
        hyperscore: ``(n, m)`` hyperscores.
        time_rate: ``(n, m)`` hyperscore decay per second of completion.
        late: ``(n,)``: the task's deadline cannot be met on any node.
        task_lam: ``(n,)`` each task's own λ (``lam`` scaled by its preference).
        lam: λ of the batch, s per unit of fidelity.
    """

    tasks: tuple[TaskRequest, ...]
    nodes: tuple[str, ...]
    allowed: np.ndarray
    run: np.ndarray
    ready: np.ndarray
    fidelity: np.ndarray
    hyperscore: np.ndarray
    time_rate: np.ndarray
    late: np.ndarray
    task_lam: np.ndarray
    lam: float = FIDELITY_WEIGHT_S
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()``, once per problem and key: a policy's work kept for ``describe``."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @property
    def n(self) -> int:
        return len(self.tasks)

    @property
    def m(self) -> int:
        return len(self.nodes)

    @cached_property
    def unary(self) -> np.ndarray:
        """``c_ij = ready_j + run_ij + λ·(1 − F_ij)``; +inf where not allowed."""
        cost = self.ready[None, :] + self.run + self.task_lam[:, None] * (1.0 - self.fidelity)
        return np.where(self.allowed, cost, np.inf)

    @cached_property
    def allowed_rows(self) -> list[list[bool]]:
        """``allowed`` as lists (for plain-Python passes over it)."""
        return self.allowed.tolist()

    @cached_property
    def shortest_first(self) -> list[int]:
        """The tasks by their shortest run on any node they may go to (ties: batch order)."""
        shortest = self.run.min(axis=1, where=self.allowed, initial=np.inf).tolist()
        # Python's sort is stable; on a batch's few tasks it is faster than numpy's.
        return sorted(range(self.n), key=shortest.__getitem__)

    @cached_property
    def seed(self) -> int:
        """A seed fixed by the batch's task ids."""
        digest = hashlib.sha256("\n".join(t.task_id for t in self.tasks).encode()).digest()
        return int.from_bytes(digest[:8], "big")

    def options(self, i: int) -> np.ndarray:
        """Indices of the nodes task ``i`` may go to."""
        return np.flatnonzero(self.allowed[i])

    def queues(self, assignment: Sequence[int]) -> list[list[int]]:
        """Per node, its tasks in run order: shortest first, ties by batch order."""
        queues: list[list[int]] = [[] for _ in self.nodes]
        for i, j in enumerate(assignment):
            queues[j].append(i)
        for j, queue in enumerate(queues):
            queue.sort(key=lambda i, j=j: (self.run[i, j], i))
        return queues

    def completions(self, assignment: Sequence[int]) -> np.ndarray:
        """Each task's completion time from now on the batch's schedule."""
        done = np.zeros(self.n)
        for j, queue in enumerate(self.queues(assignment)):
            clock = self.ready[j]
            for i in queue:
                clock += self.run[i, j]
                done[i] = clock
        return done

    def objective(self, assignment: Sequence[int]) -> float:
        """J of an assignment (module docstring), in seconds."""
        chosen = self.fidelity[np.arange(self.n), np.asarray(assignment, dtype=int)]
        return float(self.completions(assignment).sum() + (self.task_lam * (1.0 - chosen)).sum())

    def delay(self, i: int, j: int, others: Sequence[int]) -> float:
        """Σ over ``others`` on node ``j`` of ``min(run_ij, run_kj)``: what task ``i`` and
        they cost each other there."""
        if not others:
            return 0.0
        return float(np.minimum(self.run[i, j], self.run[list(others), j]).sum())


_FIGURES = itemgetter(
    "fits",
    "available",
    "run_s",
    "expected_completion_s",
    "predicted_fidelity",
    "hyperscore",
    "time_rate",
)
"""A candidate's figures, in the order ``build_problem`` reads them as one row of floats, from
its ``__dict__`` (where pydantic keeps a model's fields: a lookup there is cheaper than the
attribute's)."""


@dataclass(frozen=True)
class _Layout:
    """Where a batch's candidates go on its requests × known nodes grid.

    Attributes:
        known: Every node the batch's candidates name, sorted.
        cell: ``(candidates,)`` each candidate's flat index on the grid, in batch order.
        single: ``(requests,)``: the request names no node twice.
        all_single: No request names a node twice.
    """

    known: tuple[str, ...]
    cell: np.ndarray
    single: np.ndarray
    all_single: bool


@lru_cache(maxsize=32)
def _layout(names: tuple[str, ...], counts: tuple[int, ...]) -> _Layout:
    """The grid of a batch whose requests name ``counts`` candidates each, ``names`` in order.

    It depends on the node directory and the batch's size only, so batches after the first
    reuse it while the directory does not change (on the benchmark's 8 tasks and 8 nodes,
    working it out took 15 of the 60 µs of building the problem)."""
    known = tuple(sorted(set(names)))
    column = {node: j for j, node in enumerate(known)}
    owner = np.repeat(np.arange(len(counts)), counts)
    cell = owner * len(known) + np.fromiter(map(column.__getitem__, names), int, len(names))
    repeats = np.bincount(cell, minlength=len(counts) * len(known))
    single = repeats.reshape(len(counts), len(known)).max(axis=1, initial=0) <= 1
    for array in (cell, single):
        array.flags.writeable = False
    return _Layout(known, cell, single, bool(single.all()))


def build_problem(
    requests: Sequence[TaskRequest], *, lam: float = FIDELITY_WEIGHT_S
) -> tuple[Problem | None, dict[int, QubusError]]:
    """The batch's problem, and the tasks that cannot be placed (by batch index).

    Every candidate of the batch is read once, its figures into one flat array scattered onto
    a requests × known nodes grid (``_layout``); the constraints and the matrices are
    whole-array operations on that grid. The error of a task that cannot be placed is worked
    out by ``eligible``.

    Returns:
        The problem over the placeable tasks (None if there is none), and the errors of the
        others: ``alloc.no_fit`` (``CircuitRejected``) when no node can take a task,
        ``alloc.duplicate_node`` when its candidates repeat a node.
    """
    flat = [c.__dict__ for request in requests for c in request.candidates]
    layout = _layout(tuple([c["node"] for c in flat]), tuple([len(r.candidates) for r in requests]))
    shape = (len(requests), len(layout.known))
    # One layer per figure, requests × known nodes; zero where a request names no candidate.
    grids = np.zeros((7, shape[0] * shape[1]))
    grids[:, layout.cell] = (
        np.fromiter(chain.from_iterable(map(_FIGURES, flat)), float, 7 * len(flat))
        .reshape(len(flat), 7)
        .T
    )
    grids = grids.reshape(7, *shape)
    usable = np.logical_and(grids[0], grids[1])  # fits and available
    floors = [r.fidelity_floor for r in requests]
    if floors.count(None) < len(floors):
        floor = np.array([-np.inf if f is None else f for f in floors])
        usable &= grids[4] >= floor[:, None]
    # Zero where the task may not go; only the placeable tasks and the nodes one may go to.
    grids = np.where(usable, grids, 0.0)
    placeable = usable.any(axis=1)
    if not layout.all_single:
        placeable &= layout.single
    if np.count_nonzero(placeable) == len(requests):  # (faster than ``all``)
        tasks, rejected = tuple(requests), {}
    else:
        rejected = {i: _rejection(requests[i]) for i in np.flatnonzero(~placeable).tolist()}
        if not placeable.any():
            return None, rejected
        tasks = tuple(r for r, keep in zip(requests, placeable.tolist(), strict=True) if keep)
        grids, usable = grids[:, placeable], usable[placeable]
    kept = usable.any(axis=0)
    nodes = layout.known
    if np.count_nonzero(kept) < len(nodes):
        nodes = tuple(node for node, keep in zip(nodes, kept.tolist(), strict=True) if keep)
        grids, usable = grids[:, :, kept], usable[:, kept]
    _, _, run, completion, fidelity, hyperscore, rate = grids
    ready = (completion - run).max(axis=0, initial=0.0)
    late = _apply_deadlines(tasks, usable, ready, run)
    prefers = [t.prefer for t in tasks]
    if prefers.count(None) + prefers.count("balanced") < len(prefers):
        scale = np.array([PREFERENCES[p or "balanced"] for p in prefers])
        # A task weighing fidelity ``scale`` times more: its hyperscore falls ``scale`` times
        # more slowly with completion time (the time reference scaled as λ is).
        task_rate = rate / scale[:, None]
        hyperscore = hyperscore * np.exp((rate - task_rate) * completion)
        rate = task_rate
        task_lam = lam * scale
    else:
        task_lam = np.empty(len(tasks))  # (then ``fill``: faster than ``np.full``)
        task_lam.fill(lam * PREFERENCES["balanced"])
    problem = Problem(
        tasks=tasks,
        nodes=nodes,
        allowed=usable,
        run=run,
        ready=ready,
        fidelity=fidelity,
        hyperscore=hyperscore,
        time_rate=rate,
        late=late,
        lam=lam,
        task_lam=task_lam,
    )
    return problem, rejected


def _rejection(request: TaskRequest) -> QubusError:
    """Why a request that ``build_problem`` found unplaceable cannot be placed."""
    try:
        eligible(_apply_floor(request))
    except QubusError as exc:
        return exc
    raise AssertionError(f"{request.task_id} is placeable")


def _apply_deadlines(
    tasks: Sequence[TaskRequest], allowed: np.ndarray, ready: np.ndarray, run: np.ndarray
) -> np.ndarray:
    """Restricts ``allowed`` (in place) to the nodes where each task with a deadline finishes
    in time (right after the node's backlog: ``ready + run``) or, when none can, to the one
    where it finishes earliest (the first node by id on a tie); returns which tasks are late
    so. A batch without deadlines costs one pass over its tasks."""
    late = np.zeros(len(tasks), dtype=bool)
    if [t.deadline_s for t in tasks].count(None) == len(tasks):
        return late
    deadline = np.array([np.nan if t.deadline_s is None else t.deadline_s for t in tasks])
    finish = np.where(allowed, ready + run, np.inf)
    in_time = finish <= deadline[:, None]  # never for a task without a deadline (NaN)
    met = in_time.any(axis=1)
    allowed[met] = in_time[met]
    late[:] = ~np.isnan(deadline) & ~met
    allowed[late] = False
    allowed[np.flatnonzero(late), np.argmin(finish[late], axis=1)] = True
    return late
