"""Moves of single tasks that lower the batch objective J, shared by the optimising policies.

``greedy_cost`` places tasks one by one where they add least to J (``milp`` bounds its model
with it); ``local_search`` moves single tasks while a move lowers J (``hyperscore`` refines
its greedy pass with it, ``annealing`` its start and its end, ``qaoa`` its samples). Both
keep each task's cost on every node up to date in a ``_Placement``, so a move's change of J
is read, not recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qubus.scheduling.allocation.problem import Problem

IMPROVEMENT_S = 1e-9
"""Smallest lowering of J (s) that counts as one: below it a move is rounding."""


class _Placement:
    """An assignment being built or changed, with what each task would cost on each node.

    ``delay[i, j]`` is Σ over the tasks ``k`` on node ``j`` of ``min(run_ij, run_kj)`` (task
    ``i`` itself included when it is there): what task ``i`` and they cost each other there.
    Placing or removing a task updates one column of it with one vector operation, so the
    change of J of any move is read in constant time, and of every move at once with one
    operation on the tasks × nodes matrix (``costs_all``). ``cells`` is where each task's own
    node is in such a matrix read flat (``i·m + node``): a flat index reads or writes one entry
    per row with one call, faster than a row-and-column one on a batch's small matrices.
    """

    def __init__(self, problem: Problem, assignment: Sequence[int] | None = None) -> None:
        """An empty placement, or ``assignment`` (every task placed)."""
        self.problem = problem
        n, m = problem.n, problem.m
        if assignment is None or not n:
            self.nodes = np.full(n, -1)
            self.cells = np.arange(0, n * m, m)
            self.delay = np.zeros((n, m))
            return
        # Σ_k min(run_ij, run_kj) over the tasks k on j: the runs there shorter than run_ij,
        # plus run_ij once per run there not shorter. Every node's runs in one sorted array,
        # node j's shifted by j·width so that they sort after those of the nodes before it
        # and before those of the nodes after it (``bounds``: where each node's runs begin).
        self.nodes = where = np.array(assignment, dtype=int)
        self.cells = np.arange(0, n * m, m) + where
        run = problem.run
        offset = np.arange(m + 1, dtype=float) * (2.0 * float(run.max()) + 1.0)
        runs = run.take(self.cells)
        keys = runs + offset[where]
        order = keys.argsort()
        shifted = keys[order]
        total = np.zeros(n + 1)
        runs[order].cumsum(out=total[1:])
        bounds = shifted.searchsorted(offset)
        shorter = shifted.searchsorted(run + offset[:-1])
        self.delay = total[shorter] - total[bounds[:-1]] + run * (bounds[1:] - shorter)

    def add(self, i: int, j: int) -> None:
        run = self.problem.run[:, j]
        self.delay[:, j] += np.minimum(run, run[i])
        self.nodes[i] = j
        self.cells[i] = i * self.problem.m + j

    def remove(self, i: int) -> None:
        j = int(self.nodes[i])
        run = self.problem.run[:, j]
        self.delay[:, j] -= np.minimum(run, run[i])
        self.nodes[i] = -1

    def move(self, i: int, new: int) -> None:
        self.remove(i)
        self.add(i, new)

    def costs(self, i: int) -> np.ndarray:
        """What task ``i`` would add to J on each node (given the others; +inf where not
        allowed), with it taken off its own node first."""
        cost = self.problem.unary[i] + self.delay[i]
        j = self.nodes[i]
        if j >= 0:
            cost[j] -= self.problem.run[i, j]
        return cost

    def costs_all(self, unary: np.ndarray | None = None) -> np.ndarray:
        """``costs`` of every (placed) task, as one tasks × nodes matrix (``unary``: the
        problem's, or one with more nodes barred by +inf)."""
        cost = (self.problem.unary if unary is None else unary) + self.delay
        cost.reshape(-1)[self.cells] -= self.problem.run.take(self.cells)
        return cost

    def descend(self, allowed: np.ndarray | None = None) -> np.ndarray:
        """Makes the move that lowers J most until none does (steepest descent), only to the
        nodes ``allowed`` (tasks × nodes, each task's own node among them; all the problem
        allows if None); returns ``costs_all`` at the end (+inf where not ``allowed``)."""
        unary = None if allowed is None else np.where(allowed, self.problem.unary, np.inf)
        while True:
            cost = self.costs_all(unary)
            gain = cost.take(self.cells) - cost.min(axis=1)
            i = int(gain.argmax())
            if gain[i] <= IMPROVEMENT_S:
                return cost
            self.move(i, int(cost[i].argmin()))

    def assignment(self) -> list[int]:
        return self.nodes.tolist()


def greedy_cost(problem: Problem) -> list[int]:
    """Tasks shortest first, each to the node that adds least to J given those placed (ties:
    the first node by id)."""
    placement = _Placement(problem)
    for i in problem.shortest_first:
        placement.add(i, int(np.argmin(placement.costs(i))))
    return placement.assignment()


def descended(
    problem: Problem, assignment: Sequence[int], allowed: np.ndarray | None = None
) -> _Placement:
    """``assignment`` with single tasks moved, the move lowering J most first, until no move
    lowers it (moves only to the nodes ``allowed``, if given: ``_Placement.descend``)."""
    placement = _Placement(problem, assignment)
    placement.descend(allowed)
    return placement


def local_search(problem: Problem, assignment: Sequence[int]) -> list[int]:
    """``descended``, as the assignment."""
    return descended(problem, assignment).assignment()
