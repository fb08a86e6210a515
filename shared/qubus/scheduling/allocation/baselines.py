"""The baseline policies: ``round_robin``, ``least_loaded`` and ``greedy_fidelity``.

Each looks at one thing only (an even spread, the node that frees up first, the predicted
fidelity): the references the batch-aware policies are compared with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from qubus.scheduling.allocation.interface import _Policy, _runner_up
from qubus.scheduling.allocation.problem import Problem


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
