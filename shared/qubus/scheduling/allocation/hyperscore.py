"""The ``hyperscore`` policy: each task to its node of highest hyperscore, batch-aware."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qubus.scheduling.allocation.interface import _Policy, _runner_up
from qubus.scheduling.allocation.problem import Problem


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
