"""Heuristic optimisers of the batch objective J, and the ``annealing`` policy.

``greedy_cost`` places tasks one by one where they add least to J, ``local_search`` moves
single tasks while a move lowers it, and ``AnnealingPolicy`` anneals J from the greedy
placement. ``milp`` bounds its model with ``greedy_cost``; ``qaoa`` refines its samples with
``local_search`` and hands large batches to ``AnnealingPolicy``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from qubus.scheduling.allocation.interface import _Policy
from qubus.scheduling.allocation.problem import Problem

ANNEALING_STEPS_PER_TASK = 300
"""Moves tried by simulated annealing per task of the batch."""


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
