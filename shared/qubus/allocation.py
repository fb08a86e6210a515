"""Placement policies: which QPU node runs each task of a batch, behind one interface.

The allocator decides tasks in micro-batches. :func:`decide` turns a batch of
``TaskRequest``s (each with one ``Candidate`` per known node) into one outcome per task: a
``Decision``, or the error of a task that cannot be placed (``CircuitRejected`` when no node
can take it, ``alloc.duplicate_node`` for malformed candidates). Policies are pure and
deterministic (seeded from the batch's task ids), so every allocator replica decides alike.

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
predicted fidelity is worth one second of completion time. Because the shorter of two tasks on
a node delays the other by its run, ``J = Σ_i c_{i,a(i)} + Σ_j Σ_{i<k both on j}
min(run_ij, run_kj)`` with ``c_ij = ready_j + run_ij + λ·(1 − F_ij)``: a quadratic function of
the one-hot assignment, the QUBO that ``qaoa`` samples.

**Policies** (``POLICIES``):

- ``round_robin``: each task to a node picked by a stable hash of its task id among its
  eligible nodes (spreads evenly, ignores everything else);
- ``least_loaded``: first come, first served: tasks in batch order, each to the eligible node
  that frees up first (its backlog plus the batch tasks already sent there), whatever the
  task's run time there;
- ``greedy_fidelity``: each task to the node with the highest predicted fidelity;
- ``hyperscore``: tasks shortest first, each to the node with the highest hyperscore, where a
  node's hyperscore is discounted for the batch tasks already sent to it by the scorer's own
  time factor ``exp(−time_rate·Δt)``;
- ``annealing``: simulated annealing of J over assignments, from the greedy minimum-cost
  placement;
- ``milp``: the exact minimum of J: tasks are assigned to positions counted from the end of
  each node's batch queue (a task ``k``-th from the end delays ``k`` completions by its run),
  an assignment problem solved by ``scipy.optimize.milp`` (HiGHS);
- ``qaoa``: the QUBO of J with a one-hot penalty, solved by QAOA simulated with qsim (p = 1
  and 2, angles optimised by scipy's COBYLA) on sub-problems of at most ``QAOA_MAX_QUBITS``
  qubits (``QAOA_CANDIDATES`` best nodes per task, tasks taken shortest first), the best
  sampled assignment of each kept, then the whole batch refined by local search. Batches of
  more than ``QAOA_MAX_BATCH`` tasks fall back to ``annealing`` (the decision says so).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from qubus.errors import CircuitRejected, QubusError
from qubus.scoring import FIDELITY_WEIGHT_S

if TYPE_CHECKING:
    from qubus.messages import NodeScore

_BY_NODE = attrgetter("node")
T = TypeVar("T")

QAOA_MAX_QUBITS = 12
"""Largest QAOA sub-problem simulated with qsim (one qubit per task × candidate node)."""

QAOA_CANDIDATES = 3
"""Candidate nodes per task in a QAOA sub-problem: its cheapest ones given earlier placements."""

QAOA_MAX_BATCH = 64
"""Largest batch the qaoa policy decides itself; larger ones go to annealing."""

QAOA_SHOTS = 256
"""Samples drawn from each optimised QAOA state."""

ANNEALING_STEPS_PER_TASK = 300
"""Moves tried by simulated annealing per task of the batch."""

MILP_TIME_LIMIT_S = 60.0
"""Wall-clock limit of one HiGHS solve; the best solution found by then is used."""


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
        hyperscore: The task's hyper-score there (``qubus.scoring``).
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
    """

    task_id: str = Field(min_length=1)
    candidates: list[Candidate]
    fidelity_floor: float | None = Field(default=None, ge=0, le=1)
    deadline_s: float | None = None


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


Outcome = Decision | QubusError
"""What :func:`decide` returns for each task."""


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


@dataclass(frozen=True, eq=False)
class Problem:
    """A batch in numbers: tasks × nodes (the batch's eligible nodes, sorted by id).

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
        lam: λ of the objective, s per unit of fidelity.
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
        cost = self.ready[None, :] + self.run + self.lam * (1.0 - self.fidelity)
        return np.where(self.allowed, cost, np.inf)

    @cached_property
    def shortest_first(self) -> list[int]:
        """The tasks by their shortest run on any node they may go to (ties: batch order)."""
        return sorted(range(self.n), key=lambda i: (self.run[i, self.options(i)].min(), i))

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
        return float(self.completions(assignment).sum() + self.lam * (1.0 - chosen).sum())

    def delay(self, i: int, j: int, others: Sequence[int]) -> float:
        """Σ over ``others`` on node ``j`` of ``min(run_ij, run_kj)``: what task ``i`` and
        they cost each other there."""
        if not others:
            return 0.0
        return float(np.minimum(self.run[i, j], self.run[list(others), j]).sum())


def build_problem(
    requests: Sequence[TaskRequest], *, lam: float = FIDELITY_WEIGHT_S
) -> tuple[Problem | None, dict[int, QubusError]]:
    """The batch's problem, and the tasks that cannot be placed (by batch index).

    Returns:
        The problem over the placeable tasks (None if there is none), and the errors of the
        others: ``alloc.no_fit`` (``CircuitRejected``) when no node can take a task,
        ``alloc.duplicate_node`` when its candidates repeat a node.
    """
    placeable: list[tuple[TaskRequest, dict[str, Candidate]]] = []
    rejected: dict[int, QubusError] = {}
    for index, request in enumerate(requests):
        try:
            options = eligible(_apply_floor(request))
        except QubusError as exc:
            rejected[index] = exc
            continue
        placeable.append((request, {c.node: c for c in options}))
    if not placeable:
        return None, rejected
    nodes = tuple(sorted({node for _, options in placeable for node in options}))
    shape = (len(placeable), len(nodes))
    allowed = np.zeros(shape, dtype=bool)
    grids = {name: np.zeros(shape) for name in ("run", "queue", "fidelity", "hyperscore", "rate")}
    for i, (_, options) in enumerate(placeable):
        for j, node in enumerate(nodes):
            c = options.get(node)
            if c is None:
                continue
            allowed[i, j] = True
            for name, value in zip(
                grids,
                (c.run_s, c.queue_s, c.predicted_fidelity, c.hyperscore, c.time_rate),
                strict=True,
            ):
                grids[name][i, j] = value
    ready = grids["queue"].max(axis=0)
    late = np.zeros(len(placeable), dtype=bool)
    for i, (request, _) in enumerate(placeable):
        if request.deadline_s is None:
            continue
        finish = np.where(allowed[i], ready + grids["run"][i], np.inf)
        in_time = finish <= request.deadline_s
        if in_time.any():
            allowed[i] = in_time
        else:  # the earliest finish only (the first node by id on a tie)
            late[i] = True
            allowed[i] = False
            allowed[i, np.argmin(finish)] = True
    problem = Problem(
        tasks=tuple(request for request, _ in placeable),
        nodes=nodes,
        allowed=allowed,
        run=grids["run"],
        ready=ready,
        fidelity=grids["fidelity"],
        hyperscore=grids["hyperscore"],
        time_rate=grids["rate"],
        late=late,
        lam=lam,
    )
    return problem, rejected


# ---------------------------------------------------------------- the interface


class Policy(Protocol):
    """A placement policy for a batch."""

    name: str

    def assign(self, problem: Problem) -> list[int]:
        """The node index of every task; each one allowed for its task."""
        ...

    def rank_key(self, problem: Problem, i: int) -> np.ndarray:
        """Per node, how much the policy prefers it for task ``i`` (lower first)."""
        ...

    def describe(self, problem: Problem, assignment: Sequence[int], i: int) -> str:
        """Why task ``i`` went where ``assignment`` puts it, in words."""
        ...


class _Policy:
    """Defaults: rank nodes by the task's own term of the objective."""

    name: ClassVar[str] = ""

    def rank_key(self, problem: Problem, i: int) -> np.ndarray:
        return problem.unary[i]


def decide(
    policy: Policy, requests: Sequence[TaskRequest], *, lam: float = FIDELITY_WEIGHT_S
) -> list[Outcome]:
    """Places a batch: one outcome per request, in order.

    Raises:
        QubusError: ``alloc.invalid`` if the policy placed a task where it may not go (a bug).
    """
    problem, rejected = build_problem(requests, lam=lam)
    outcomes: list[Outcome | None] = [rejected.get(i) for i in range(len(requests))]
    if problem is None:
        return [o for o in outcomes if o is not None]
    assignment = [int(j) for j in policy.assign(problem)]
    if len(assignment) != problem.n or not all(
        problem.allowed[i, j] for i, j in enumerate(assignment)
    ):
        raise QubusError(f"{policy.name} placed a task where it may not go", code="alloc.invalid")
    decisions = iter(_decisions(policy, problem, assignment))
    return [o if o is not None else next(decisions) for o in outcomes]


def _decisions(policy: Policy, problem: Problem, assignment: list[int]) -> list[Decision]:
    """The decisions of an assignment: schedule, ranking, reason and deadline of each task."""
    completions = problem.completions(assignment)
    objective = problem.objective(assignment)
    positions = {i: k for queue in problem.queues(assignment) for k, i in enumerate(queue)}
    decisions = []
    for i, (request, j) in enumerate(zip(problem.tasks, assignment, strict=True)):
        key = policy.rank_key(problem, i)
        others = sorted((o for o in problem.options(i) if o != j), key=lambda o: (key[o], o))
        ranking = [(problem.nodes[o], float(problem.hyperscore[i, o])) for o in (j, *others)]
        done = float(completions[i])
        met = None if request.deadline_s is None else done <= request.deadline_s
        reason = f"{policy.describe(problem, assignment, i)}; expected completion {done:.1f} s"
        if met is not None:
            verdict = "meets" if met else "misses"
            reason += f", {verdict} its deadline ({request.deadline_s:.1f} s left)"
            if problem.late[i]:
                reason += "; no node can meet it, so it goes where it finishes earliest"
        if problem.n > 1:
            reason += f" (batch of {problem.n}, J = {objective:.1f} s)"
        decisions.append(
            Decision(
                task_id=request.task_id,
                node=problem.nodes[j],
                policy=policy.name,
                reason=reason,
                ranking=ranking,
                expected_completion_s=done,
                predicted_fidelity=float(problem.fidelity[i, j]),
                deadline_met=met,
                batch_size=problem.n,
                position=positions[i],
            )
        )
    return decisions


def _runner_up(problem: Problem, i: int, j: int, values: np.ndarray, fmt: str) -> str:
    """``; next <node> at <value>`` for the best other option of task ``i`` by ``values``
    (higher first), or nothing when it has no other option."""
    others = [o for o in problem.options(i) if o != j]
    if not others:
        return ""
    best = max(others, key=lambda o: (values[o], -o))
    return f"; next {problem.nodes[best]} at {format(values[best], fmt)}"


# ---------------------------------------------------------------- heuristics


class RoundRobinPolicy(_Policy):
    """Spreads tasks evenly over their eligible nodes, taken in node-id order.

    Stateless: the starting position is a stable hash (SHA-256) of the task id modulo the number
    of eligible nodes, so every allocator replica, and a redelivered message, picks the same node
    for the same task without a shared cursor. Over many tasks each eligible node receives an
    equal share, though consecutive tasks do not visit nodes in strict cyclic order.
    """

    name = "round_robin"

    @staticmethod
    def _rotation(problem: Problem, i: int) -> np.ndarray:
        options = problem.options(i)
        digest = hashlib.sha256(problem.tasks[i].task_id.encode()).digest()
        start = int.from_bytes(digest[:8], "big") % len(options)
        return np.roll(options, -start)

    def assign(self, problem: Problem) -> list[int]:
        return [int(self._rotation(problem, i)[0]) for i in range(problem.n)]

    def rank_key(self, problem: Problem, i: int) -> np.ndarray:
        key = np.full(problem.m, np.inf)
        key[self._rotation(problem, i)] = np.arange(len(problem.options(i)))
        return key

    def describe(self, problem: Problem, assignment: Sequence[int], i: int) -> str:
        options = problem.options(i)
        start = int(np.flatnonzero(options == self._rotation(problem, i)[0])[0])
        return f"round robin over {len(options)} eligible node(s): position {start} by task id"


class LeastLoadedPolicy(_Policy):
    """First come, first served to the node that frees up first.

    Tasks in batch (arrival) order each go to the eligible node whose backlog, including the
    batch's tasks already sent there, ends first; ties to the node id that sorts first. The
    task's own run time there does not count: the FCFS baseline.
    """

    name = "least_loaded"

    def _placements(self, problem: Problem) -> tuple[list[int], list[float]]:
        free = problem.ready.copy()
        assignment, waits = [], []
        for i in range(problem.n):
            options = problem.options(i)
            j = int(options[np.argmin(free[options])])
            assignment.append(j)
            waits.append(float(free[j]))
            free[j] += problem.run[i, j]
        return assignment, waits

    def assign(self, problem: Problem) -> list[int]:
        return problem.memo(self.name, lambda: self._placements(problem))[0]

    def rank_key(self, problem: Problem, i: int) -> np.ndarray:
        return problem.ready

    def describe(self, problem: Problem, assignment: Sequence[int], i: int) -> str:
        wait = problem.memo(self.name, lambda: self._placements(problem))[1][i]
        return (
            f"first come, first served: {problem.nodes[assignment[i]]} frees up first "
            f"(in {wait:.1f} s) of {len(problem.options(i))} eligible node(s)"
        )


class GreedyFidelityPolicy(_Policy):
    """Each task to its node of highest predicted fidelity; ties to the earliest finish."""

    name = "greedy_fidelity"

    def assign(self, problem: Problem) -> list[int]:
        return [
            min(problem.options(i), key=lambda j, i=i: self._order(problem, i, j))
            for i in range(problem.n)
        ]

    @staticmethod
    def _order(problem: Problem, i: int, j: int) -> tuple[float, float, int]:
        return (-problem.fidelity[i, j], problem.ready[j] + problem.run[i, j], j)

    def rank_key(self, problem: Problem, i: int) -> np.ndarray:
        return -problem.fidelity[i]

    def describe(self, problem: Problem, assignment: Sequence[int], i: int) -> str:
        j = assignment[i]
        return (
            f"highest predicted fidelity {problem.fidelity[i, j]:.3f} of "
            f"{len(problem.options(i))} eligible node(s)"
            + _runner_up(problem, i, j, problem.fidelity[i], ".3f")
        )


class HyperscorePolicy(_Policy):
    """Each task to its node of highest hyperscore, batch-aware.

    Tasks are taken shortest first (by their shortest run anywhere, ties in batch order). A
    node's hyperscore for a task is discounted for the batch tasks already sent to it, by the
    scorer's own time factor: ``hyperscore·exp(−time_rate·Δt)`` with ``Δt`` their run time
    there. Ties go to the earlier finish, then to the node id that sorts first.
    """

    name = "hyperscore"

    def _placements(self, problem: Problem) -> tuple[list[int], np.ndarray]:
        order = problem.shortest_first
        added = np.zeros(problem.m)
        assignment = [0] * problem.n
        adjusted = np.zeros((problem.n, problem.m))
        for i in order:
            adjusted[i] = problem.hyperscore[i] * np.exp(-problem.time_rate[i] * added)
            finish = problem.ready + added + problem.run[i]
            j = min(problem.options(i), key=lambda j: (-adjusted[i, j], finish[j], j))
            assignment[i] = int(j)
            added[j] += problem.run[i, j]
        return assignment, adjusted

    def assign(self, problem: Problem) -> list[int]:
        return problem.memo(self.name, lambda: self._placements(problem))[0]

    def rank_key(self, problem: Problem, i: int) -> np.ndarray:
        return -problem.hyperscore[i]

    def describe(self, problem: Problem, assignment: Sequence[int], i: int) -> str:
        j = assignment[i]
        adjusted = problem.memo(self.name, lambda: self._placements(problem))[1][i]
        text = f"highest hyperscore {adjusted[j]:.2f} of {len(problem.options(i))} eligible node(s)"
        if adjusted[j] != problem.hyperscore[i, j]:
            text += f" ({problem.hyperscore[i, j]:.2f} before this batch's earlier tasks)"
        return text + _runner_up(problem, i, j, adjusted, ".2f")


# ---------------------------------------------------------------- optimisers of J


def greedy_cost(problem: Problem) -> list[int]:
    """Tasks shortest first, each to the node that adds least to J given those placed."""
    order = problem.shortest_first
    members: list[list[int]] = [[] for _ in problem.nodes]
    assignment = [0] * problem.n
    for i in order:
        j = min(
            problem.options(i),
            key=lambda j: (problem.unary[i, j] + problem.delay(i, j, members[j]), j),
        )
        assignment[i] = int(j)
        members[j].append(i)
    return assignment


def _move_delta(problem: Problem, members: list[list[int]], i: int, old: int, new: int) -> float:
    """Change of J when task ``i`` moves from node ``old`` to node ``new``."""
    if new == old:
        return 0.0
    stay = [k for k in members[old] if k != i]
    gain = problem.unary[i, new] + problem.delay(i, new, members[new])
    return float(gain - problem.unary[i, old] - problem.delay(i, old, stay))


def local_search(problem: Problem, assignment: Sequence[int]) -> list[int]:
    """Moves single tasks to the node that lowers J most until no move lowers it."""
    current = list(assignment)
    members: list[list[int]] = [[] for _ in problem.nodes]
    for i, j in enumerate(current):
        members[j].append(i)
    improved = True
    while improved:
        improved = False
        for i in range(problem.n):
            old = current[i]
            deltas = {j: _move_delta(problem, members, i, old, j) for j in problem.options(i)}
            best = min(deltas, key=lambda j: (deltas[j], j))
            if best != old and deltas[best] < -1e-9:
                members[old].remove(i)
                members[best].append(i)
                current[i] = int(best)
                improved = True
    return current


class AnnealingPolicy(_Policy):
    """Simulated annealing of J over the batch's assignments.

    Starts from ``greedy_cost``; a move sends one random task to another of its allowed
    nodes, accepted with probability ``min(1, exp(−ΔJ/T))``; ``T`` falls geometrically from
    the mean |ΔJ| of the first moves to a thousandth of it over ``ANNEALING_STEPS_PER_TASK``
    moves per task. Seeded by the batch's task ids; the best assignment seen wins.
    """

    name = "annealing"

    def assign(self, problem: Problem) -> list[int]:
        current = greedy_cost(problem)
        movable = [i for i in range(problem.n) if len(problem.options(i)) > 1]
        if not movable:
            return current
        members: list[list[int]] = [[] for _ in problem.nodes]
        for i, j in enumerate(current):
            members[j].append(i)
        rng = np.random.default_rng(problem.seed)
        steps = ANNEALING_STEPS_PER_TASK * problem.n
        moves = [self._random_move(problem, rng, movable) for _ in range(steps)]
        first = [abs(_move_delta(problem, members, i, current[i], j)) for i, j in moves[:50]]
        start_t = max(float(np.mean([d for d in first if d > 0] or [0.0])), 1e-6)
        cost = best_cost = problem.objective(current)
        best = list(current)
        uniforms = rng.random(steps)
        for step, (i, new) in enumerate(moves):
            old = current[i]
            if new == old:
                continue
            delta = _move_delta(problem, members, i, old, new)
            temperature = start_t * 1e-3 ** (step / steps)
            if delta < 0 or uniforms[step] < math.exp(-delta / temperature):
                members[old].remove(i)
                members[new].append(i)
                current[i] = new
                cost += delta
                if cost < best_cost - 1e-9:
                    best_cost, best = cost, list(current)
        return best

    @staticmethod
    def _random_move(
        problem: Problem, rng: np.random.Generator, movable: list[int]
    ) -> tuple[int, int]:
        i = movable[int(rng.integers(len(movable)))]
        options = problem.options(i)
        return i, int(options[int(rng.integers(len(options)))])

    def describe(self, problem: Problem, assignment: Sequence[int], i: int) -> str:
        return (
            f"simulated annealing of the batch objective ({ANNEALING_STEPS_PER_TASK * problem.n} "
            f"moves from the greedy placement)"
        )


class MilpPolicy(_Policy):
    """The exact minimum of J, by ``scipy.optimize.milp`` (HiGHS).

    Variables ``y[i, j, k]``: task ``i`` is ``k``-th from the end of node ``j``'s batch queue
    (``k = 1`` runs last). A task there completes the node's backlog once and its own run
    delays ``k`` completions (its own and the ``k − 1`` after it), so it costs
    ``ready_j + k·run_ij + λ·(1 − F_ij)``. Each task takes one position, each position holds
    at most one task. Optimal positions are filled from the end without gaps and in SPT order,
    so the minimum is J's minimum over assignments (an assignment problem: the LP relaxation
    is integral).

    To keep the model small, a position is left out when it cannot be part of a placement
    better than ``greedy_cost``'s: its cost plus every other task's cheapest possible cost
    (its smallest ``c_ij``) already exceeds that placement's J. The optimum survives this
    cut, so the result is still exact.
    """

    name = "milp"

    def assign(self, problem: Problem) -> list[int]:
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import coo_array

        columns = self._columns(problem)
        task, node, position = (np.array(v) for v in zip(*columns, strict=True))
        cost = problem.unary[task, node] + (position - 1) * problem.run[task, node]
        slots = {
            slot: row for row, slot in enumerate(sorted(set(zip(node, position, strict=True))))
        }
        slot_rows = np.array([slots[s] for s in zip(node, position, strict=True)])
        width = len(columns)
        one_each = coo_array((np.ones(width), (task, np.arange(width))), shape=(problem.n, width))
        at_most_one = coo_array((np.ones(width), (slot_rows, np.arange(width))))
        result = milp(
            cost,
            integrality=np.ones(width),
            bounds=Bounds(0, 1),
            constraints=[
                LinearConstraint(one_each.tocsr(), 1, 1),
                LinearConstraint(at_most_one.tocsr(), 0, 1),
            ],
            options={"time_limit": MILP_TIME_LIMIT_S},
        )
        if result.x is None:
            raise QubusError(f"milp found no placement: {result.message}", code="alloc.milp")
        assignment = [0] * problem.n
        for column in np.flatnonzero(result.x > 0.5):
            assignment[task[column]] = int(node[column])
        return assignment

    @staticmethod
    def _columns(problem: Problem) -> list[tuple[int, int, int]]:
        """The (task, node, position from the end) that can be part of an optimum."""
        lowest = problem.unary.min(axis=1)
        upper = problem.objective(greedy_cost(problem))
        slack = upper - lowest.sum() + 1e-9 * (1.0 + abs(upper))
        columns = []
        for j in range(problem.m):
            tasks = np.flatnonzero(problem.allowed[:, j])
            for i in tasks:
                room = slack + lowest[i] - problem.unary[i, j]  # what (k − 1)·run may cost
                run = problem.run[i, j]
                last = len(tasks) if run <= 0 else min(len(tasks), 1 + int(room // run))
                columns += [(int(i), j, k) for k in range(1, last + 1)]
        return columns

    def describe(self, problem: Problem, assignment: Sequence[int], i: int) -> str:
        return "optimum of the batch objective (MILP over queue positions, HiGHS)"


@dataclass(frozen=True)
class _Qubo:
    """A QAOA sub-problem: one binary variable per (task, candidate node).

    Energy ``E(x) = Σ_v linear_v·x_v + Σ_{v<w} quad_vw·x_v·x_w + offset``, where the linear
    and quadratic parts hold J's terms and the one-hot penalty ``P·Σ_i (1 − Σ_{v∈i} x_v)²``.
    """

    variables: tuple[tuple[int, int], ...]
    linear: np.ndarray
    quad: np.ndarray
    offset: float
    cost: np.ndarray
    """J's part alone (no penalty) per variable, for decoding."""

    def energies(self) -> np.ndarray:
        """E of every basis state (qubit 0 is the most significant bit of the index)."""
        q = len(self.variables)
        bits = (np.arange(2**q)[:, None] >> np.arange(q - 1, -1, -1)) & 1
        return bits @ self.linear + np.einsum("sv,vw,sw->s", bits, self.quad, bits) + self.offset


class QaoaPolicy(_Policy):
    """J as a QUBO, sampled from QAOA states simulated with qsim, then refined by local search.

    See the module docstring: sub-problems of at most ``QAOA_MAX_QUBITS`` qubits, p = 1 and 2,
    COBYLA on the angles, ``QAOA_SHOTS`` samples of each optimised state decoded to the
    cheapest feasible assignment (a task with no or several of its qubits set takes its
    cheapest candidate among them, or among all if none), then ``local_search`` on the batch.
    Tasks with a single allowed node need no qubit. Batches above ``QAOA_MAX_BATCH`` go to
    ``AnnealingPolicy``.
    """

    name = "qaoa"
    LAYERS = (1, 2)

    def assign(self, problem: Problem) -> list[int]:
        if problem.n > QAOA_MAX_BATCH:
            return AnnealingPolicy().assign(problem)
        rng = np.random.default_rng(problem.seed)
        assignment: dict[int, int] = {}
        members: list[list[int]] = [[] for _ in problem.nodes]
        order = problem.shortest_first
        for i in order:
            if len(problem.options(i)) == 1:
                self._place(assignment, members, i, int(problem.options(i)[0]))
        pending = [i for i in order if i not in assignment]
        per_chunk = max(1, QAOA_MAX_QUBITS // QAOA_CANDIDATES)
        for start in range(0, len(pending), per_chunk):
            chunk = pending[start : start + per_chunk]
            qubo = self._qubo(problem, members, chunk)
            for i, j in self._solve(qubo, chunk, rng).items():
                self._place(assignment, members, i, j)
        return local_search(problem, [assignment[i] for i in range(problem.n)])

    @staticmethod
    def _place(assignment: dict[int, int], members: list[list[int]], i: int, j: int) -> None:
        assignment[i] = j
        members[j].append(i)

    @staticmethod
    def _qubo(problem: Problem, members: list[list[int]], chunk: list[int]) -> _Qubo:
        """The chunk's QUBO given the tasks already placed (``members``)."""
        variables = []
        for i in chunk:
            fixed = {
                j: problem.unary[i, j] + problem.delay(i, j, members[j]) for j in problem.options(i)
            }
            best = sorted(fixed, key=lambda j: (fixed[j], j))[:QAOA_CANDIDATES]
            variables += [(i, int(j)) for j in best]
        cost = np.array(
            [problem.unary[i, j] + problem.delay(i, j, members[j]) for i, j in variables]
        )
        q = len(variables)
        quad = np.zeros((q, q))
        for v, (i, j) in enumerate(variables):
            for w in range(v + 1, q):
                k, jj = variables[w]
                if k != i and jj == j:
                    quad[v, w] = min(problem.run[i, j], problem.run[k, j])
        penalty = float(cost.max() + quad.sum(axis=0).max() + quad.sum(axis=1).max()) + 1.0
        linear = cost - penalty
        for v, (i, _) in enumerate(variables):
            for w in range(v + 1, q):
                if variables[w][0] == i:
                    quad[v, w] = 2 * penalty
        return _Qubo(tuple(variables), linear, quad, penalty * len(chunk), cost)

    def _solve(self, qubo: _Qubo, chunk: list[int], rng: np.random.Generator) -> dict[int, int]:
        """The cheapest assignment sampled from the optimised QAOA states."""
        import qsimcirq
        from scipy.optimize import minimize

        energies = qubo.energies()
        scale = float(np.abs(energies - energies.mean()).max()) or 1.0
        normalised = (energies - energies.mean()) / scale
        q = len(qubo.variables)
        simulator = qsimcirq.QSimSimulator()
        best: dict[int, int] = {}
        best_cost = math.inf
        angles = np.array([0.5, 0.4])
        for p in self.LAYERS:

            def probabilities(x: np.ndarray, p: int = p) -> np.ndarray:
                circuit = self._circuit(qubo, scale, x[:p], x[p:])
                probs = np.abs(simulator.simulate(circuit).final_state_vector) ** 2
                return probs / probs.sum()

            start = (
                np.concatenate([np.full(p, angles[0]), np.full(p, angles[1])]) if p > 1 else angles
            )
            result = minimize(
                lambda x: float(probabilities(x) @ normalised),
                start,
                method="COBYLA",
                options={"maxiter": 20 * p + 5, "rhobeg": 0.3},
            )
            angles = np.array([result.x[0], result.x[p]])
            samples = rng.choice(2**q, size=QAOA_SHOTS, p=probabilities(result.x))
            for state in np.unique(samples):
                decoded, cost = self._decode(qubo, chunk, int(state))
                if cost < best_cost:
                    best, best_cost = decoded, cost
        return best

    @staticmethod
    def _circuit(qubo: _Qubo, scale: float, gammas: np.ndarray, betas: np.ndarray):
        """QAOA: |+⟩, then per layer e^(−iγH) (Z and ZZ rotations of the Ising form of E/scale)
        and the X mixer e^(−iβΣX)."""
        import cirq

        q = len(qubo.variables)
        qubits = cirq.LineQubit.range(q)
        # x = (1 − z)/2: a·x → −a/2·z, b·x_v·x_w → b/4·(z_v·z_w − z_v − z_w) + constants
        field = -qubo.linear / 2 - (qubo.quad.sum(axis=1) + qubo.quad.sum(axis=0)) / 4
        circuit = cirq.Circuit(cirq.H.on_each(*qubits))
        for gamma, beta in zip(gammas, betas, strict=True):
            circuit.append(
                cirq.rz(2 * gamma * field[v] / scale).on(qubits[v]) for v in range(q) if field[v]
            )
            circuit.append(
                cirq.ZZPowGate(exponent=2 * gamma * qubo.quad[v, w] / 4 / scale / math.pi).on(
                    qubits[v], qubits[w]
                )
                for v in range(q)
                for w in range(v + 1, q)
                if qubo.quad[v, w]
            )
            circuit.append(cirq.rx(2 * beta).on(qubit) for qubit in qubits)
        return circuit

    @staticmethod
    def _decode(qubo: _Qubo, chunk: list[int], state: int) -> tuple[dict[int, int], float]:
        """A basis state as a feasible assignment of the chunk, and its J part."""
        q = len(qubo.variables)
        chosen: dict[int, int] = {}
        for i in chunk:
            mine = [v for v, (t, _) in enumerate(qubo.variables) if t == i]
            on = [v for v in mine if state >> (q - 1 - v) & 1]
            pick = min(on or mine, key=lambda v: (qubo.cost[v], v))
            chosen[i] = pick
        picked = list(chosen.values())
        cost = float(qubo.cost[picked].sum() + qubo.quad[np.ix_(picked, picked)].sum())
        return {i: qubo.variables[v][1] for i, v in chosen.items()}, cost

    def describe(self, problem: Problem, assignment: Sequence[int], i: int) -> str:
        if problem.n > QAOA_MAX_BATCH:
            return (
                f"batch of {problem.n} exceeds QAOA's {QAOA_MAX_BATCH}: simulated annealing "
                "of the batch objective instead"
            )
        return (
            f"QAOA (qsim, p = 1..2) on sub-problems of ≤ {QAOA_MAX_QUBITS} qubits, "
            "best sample refined by local search"
        )


POLICIES: dict[str, Callable[[], Policy]] = {
    cls.name: cls
    for cls in (
        RoundRobinPolicy,
        LeastLoadedPolicy,
        GreedyFidelityPolicy,
        HyperscorePolicy,
        AnnealingPolicy,
        MilpPolicy,
        QaoaPolicy,
    )
}


def get_policy(name: str) -> Policy:
    """A new instance of the policy called ``name``.

    Raises:
        QubusError: ``policy.unknown`` for a name not in ``POLICIES`` (the message lists them).
    """
    try:
        factory = POLICIES[name]
    except KeyError:
        valid = ", ".join(sorted(POLICIES))
        raise QubusError(
            f"unknown allocation policy {name!r}; valid: {valid}", code="policy.unknown"
        ) from None
    return factory()
