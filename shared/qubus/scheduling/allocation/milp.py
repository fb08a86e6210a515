"""The ``milp`` policy: the exact minimum of the batch objective J, by HiGHS."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qubus.errors import QubusError
from qubus.scheduling.allocation.interface import _Policy
from qubus.scheduling.allocation.problem import Problem
from qubus.scheduling.allocation.search import greedy_cost

MILP_TIME_LIMIT_S = 60.0
"""Wall-clock limit of one HiGHS solve; the best solution found by then is used."""


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
