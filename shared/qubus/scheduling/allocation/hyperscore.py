"""The ``hyperscore`` policy: each task to its node of highest hyperscore, batch-aware."""

from __future__ import annotations

import math
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

    def assign(self, problem: Problem) -> list[int]:
        # Plain floats: tasks are placed one after another, and on a handful of nodes numpy's
        # per-call overhead would cost more than the arithmetic.
        hyperscore, rate, run = (
            a.tolist() for a in (problem.hyperscore, problem.time_rate, problem.run)
        )
        ready = problem.ready.tolist()
        added = [0.0] * problem.m
        assignment = [0] * problem.n
        for i in problem.shortest_first:
            h, r, t = hyperscore[i], rate[i], run[i]
            best = min(
                problem.option_lists[i],
                key=lambda j: (-h[j] * math.exp(-r[j] * added[j]), ready[j] + added[j] + t[j], j),
            )
            assignment[i] = best
            added[best] += t[best]
        return assignment

    @staticmethod
    def _adjusted(problem: Problem, assignment: Sequence[int]) -> np.ndarray:
        """Every task's hyperscores as discounted when it was placed (for ``describe``)."""
        added = np.zeros(problem.m)
        adjusted = np.zeros((problem.n, problem.m))
        for i in problem.shortest_first:
            adjusted[i] = problem.hyperscore[i] * np.exp(-problem.time_rate[i] * added)
            added[assignment[i]] += problem.run[i, assignment[i]]
        return adjusted

    def rank_key(self, problem: Problem, i: int) -> np.ndarray:
        return -problem.hyperscore[i]

    def describe(self, problem: Problem, assignment: Sequence[int], i: int) -> str:
        j = assignment[i]
        adjusted = problem.memo(self.name, lambda: self._adjusted(problem, assignment))[i]
        text = f"highest hyperscore {adjusted[j]:.2f} of {len(problem.options(i))} eligible node(s)"
        if adjusted[j] != problem.hyperscore[i, j]:
            text += f" ({problem.hyperscore[i, j]:.2f} before this batch's earlier tasks)"
        return text + _runner_up(problem, i, j, adjusted, ".2f")
