"""The interface of the placement policies, and the placing of a batch through one of them.

``Policy`` is what every policy implements; ``_Policy`` is their base class, with the default
ranking. :func:`decide` builds the batch's ``Problem``, lets the policy assign its tasks,
checks the assignment and turns it into one ``Decision`` per task: its place in the node's run
order, expected completion, ranking of the other nodes and the reason, in words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol

import numpy as np

from qubus.errors import QubusError
from qubus.scheduling.allocation.problem import Decision, Problem, TaskRequest, build_problem
from qubus.scheduling.scoring import FIDELITY_WEIGHT_S

Outcome = Decision | QubusError
"""What :func:`decide` returns for each task."""


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

    The decision itself is :func:`place` on the batch's problem; the decisions' schedule,
    rankings and reasons are worked out after it (:func:`explain`).

    Raises:
        QubusError: ``alloc.invalid`` if the policy placed a task where it may not go (a bug).
    """
    problem, rejected = build_problem(requests, lam=lam)
    if problem is None:
        return [rejected[i] for i in range(len(requests))]
    return explain(policy, problem, place(policy, problem), rejected)


def place(policy: Policy, problem: Problem) -> list[int]:
    """The policy's assignment of the problem's tasks, checked.

    Raises:
        QubusError: ``alloc.invalid`` if the policy placed a task where it may not go (a bug).
    """
    assignment = [int(j) for j in policy.assign(problem)]
    rows = problem.allowed_rows
    if len(assignment) != problem.n or not all(map(list.__getitem__, rows, assignment)):
        raise QubusError(f"{policy.name} placed a task where it may not go", code="alloc.invalid")
    return assignment


def explain(
    policy: Policy, problem: Problem, assignment: list[int], rejected: dict[int, QubusError]
) -> list[Outcome]:
    """One outcome per request of the batch, in order: the rejected tasks' errors (by batch
    index, as ``build_problem`` gives them) and a ``Decision`` for each placed task."""
    decisions = iter(_decisions(policy, problem, assignment))
    return [
        rejected[i] if i in rejected else next(decisions) for i in range(problem.n + len(rejected))
    ]


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
        if request.prefer is not None:
            reason += f"; prefers {request.prefer} (λ = {problem.task_lam[i]:g} s)"
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
