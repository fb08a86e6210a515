"""Heuristic optimisers of the batch objective J, and the ``annealing`` policy.

``greedy_cost`` places tasks one by one where they add least to J, ``local_search`` moves
single tasks while a move lowers it, and ``AnnealingPolicy`` anneals J from the greedy
placement; all three keep each task's cost on every node up to date (``_Placement``).
``milp`` bounds its model with ``greedy_cost``; ``qaoa`` refines its samples with
``local_search`` and hands large batches to ``AnnealingPolicy``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from qubus.scheduling.allocation.interface import _Policy
from qubus.scheduling.allocation.problem import Problem

ANNEALING_STEPS_PER_TASK = 60
"""Moves tried by simulated annealing per task of the batch."""


class _Placement:
    """An assignment being built or changed, with what each task would cost on each node.

    ``delay[i, j]`` is Σ over the tasks ``k`` on node ``j`` of ``min(run_ij, run_kj)`` (task
    ``i`` itself included when it is there): what task ``i`` and they cost each other there.
    Placing or removing a task updates one column of it with one vector operation, so the
    change of J of any move is read in constant time.
    """

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.delay = np.zeros((problem.n, problem.m))
        self.nodes: list[int | None] = [None] * problem.n

    def add(self, i: int, j: int) -> None:
        run = self.problem.run[:, j]
        self.delay[:, j] += np.minimum(run, run[i])
        self.nodes[i] = j

    def remove(self, i: int) -> None:
        j = self.nodes[i]
        assert j is not None
        run = self.problem.run[:, j]
        self.delay[:, j] -= np.minimum(run, run[i])
        self.nodes[i] = None

    def costs(self, i: int) -> np.ndarray:
        """What task ``i`` would add to J on each node (given the others; +inf where not
        allowed), with it taken off its own node first."""
        cost = self.problem.unary[i] + self.delay[i]
        j = self.nodes[i]
        if j is not None:
            cost[j] -= self.problem.run[i, j]
        return cost

    def delta(self, i: int, new: int) -> float:
        """Change of J when placed task ``i`` moves to node ``new``."""
        old = self.nodes[i]
        assert old is not None
        if new == old:
            return 0.0
        unary, delay = self.problem.unary, self.delay
        return float(
            unary[i, new] + delay[i, new] - unary[i, old] - delay[i, old] + self.problem.run[i, old]
        )

    def move(self, i: int, new: int) -> None:
        self.remove(i)
        self.add(i, new)

    def assignment(self) -> list[int]:
        return [int(j) for j in self.nodes if j is not None]


def greedy_cost(problem: Problem) -> list[int]:
    """Tasks shortest first, each to the node that adds least to J given those placed (ties:
    the first node by id)."""
    placement = _Placement(problem)
    for i in problem.shortest_first:
        placement.add(i, int(np.argmin(placement.costs(i))))
    return placement.assignment()


def local_search(problem: Problem, assignment: Sequence[int]) -> list[int]:
    """Moves single tasks to the node that lowers J most until no move lowers it."""
    placement = _Placement(problem)
    for i, j in enumerate(assignment):
        placement.add(i, int(j))
    improved = True
    while improved:
        improved = False
        for i in range(problem.n):
            costs = placement.costs(i)
            best = int(np.argmin(costs))
            old = placement.nodes[i]
            assert old is not None
            if best != old and costs[best] < costs[old] - 1e-9:
                placement.move(i, best)
                improved = True
    return placement.assignment()


class AnnealingPolicy(_Policy):
    """Simulated annealing of J over the batch's assignments.

    Starts from ``greedy_cost``; a move sends one random task to another of its allowed
    nodes, accepted with probability ``min(1, exp(−ΔJ/T))``; ``T`` falls geometrically from
    the mean |ΔJ| of the first moves to a thousandth of it over ``ANNEALING_STEPS_PER_TASK``
    moves per task. Seeded by the batch's task ids; the best assignment seen wins.
    """

    name = "annealing"

    def assign(self, problem: Problem) -> list[int]:
        placement = _Placement(problem)
        for i, j in enumerate(greedy_cost(problem)):
            placement.add(i, j)
        movable = [i for i in range(problem.n) if len(problem.option_lists[i]) > 1]
        if not movable:
            return placement.assignment()
        rng = np.random.default_rng(problem.seed)
        steps = ANNEALING_STEPS_PER_TASK * problem.n
        options = problem.option_lists
        tasks = [movable[k] for k in rng.integers(len(movable), size=steps).tolist()]
        picks = rng.random(steps).tolist()
        moves = [
            (i, options[i][int(u * len(options[i]))]) for i, u in zip(tasks, picks, strict=True)
        ]
        first = [abs(placement.delta(i, j)) for i, j in moves[:50]]
        start_t = max(float(np.mean([d for d in first if d > 0] or [0.0])), 1e-6)
        cost = best_cost = problem.objective(placement.assignment())
        best = placement.assignment()
        uniforms = rng.random(steps).tolist()
        cooling = 1e-3 ** (1 / steps)
        temperature = start_t
        for step, (i, new) in enumerate(moves):
            if step:
                temperature *= cooling
            if new == placement.nodes[i]:
                continue
            delta = placement.delta(i, new)
            if delta < 0 or uniforms[step] < math.exp(-delta / temperature):
                placement.move(i, new)
                cost += delta
                if cost < best_cost - 1e-9:
                    best_cost, best = cost, placement.assignment()
        return best

    def describe(self, problem: Problem, assignment: Sequence[int], i: int) -> str:
        return (
            f"simulated annealing of the batch objective ({ANNEALING_STEPS_PER_TASK * problem.n} "
            f"moves from the greedy placement)"
        )
