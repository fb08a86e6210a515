"""The ``annealing`` policy: simulated annealing of the batch objective J."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from qubus.scheduling.allocation.hyperscore import HyperscorePolicy
from qubus.scheduling.allocation.interface import _Policy
from qubus.scheduling.allocation.problem import Problem
from qubus.scheduling.allocation.search import IMPROVEMENT_S, local_search

ANNEALING_STEPS_PER_TASK = 8
"""Steps (moves or swaps) tried by simulated annealing per task of the batch."""

ANNEALING_START_QUANTILE = 0.1
"""The starting temperature: this quantile of the rises of J the first single moves would
cause."""

ANNEALING_SWAP_SHARE = 0.5
"""The share of moves that swap two tasks' nodes (the others move one task)."""

ANNEALING_COOLING = 1e-3
"""The final temperature, as a fraction of the starting one."""


@cache
def _cooling(steps: int) -> np.ndarray:
    """The temperature of each of ``steps`` steps, as a fraction of the starting one (kept
    for each batch size: it depends on nothing else)."""
    fractions = ANNEALING_COOLING ** (np.arange(steps) / steps)
    fractions.flags.writeable = False
    return fractions


def alone_optimum(problem: Problem) -> list[int] | None:
    """Every task on its node of least cost alone (the first such node), if that placement
    is provably a minimum of J; else None.

    The proof: let ``a`` be an assignment and ``c_ij`` the cost of task ``i`` alone on node
    ``j`` (``Problem.unary``). Suppose each task, charged its own cost and every run of its
    node-mates (as if it ran last on its node), costs no more than it would alone on any other
    node: ``c_{i,a(i)} + Σ_{k≠i, a(k)=a(i)} run_{k,a(i)} ≤ min_{j≠a(i)} c_ij`` for every ``i``.
    Take any assignment ``b``; ``S`` the tasks it leaves where ``a`` puts them, ``T`` the
    others, ``J_a(S)`` the objective of ``S`` alone placed as by ``a``. In ``b``, the tasks of
    ``S`` share their nodes with each other as in ``a`` (and maybe with tasks of ``T``, which
    only adds: every ``min(run_i, run_k)`` is ≥ 0), and every task of ``T`` is on a node other
    than its own in ``a``: ``J(b) ≥ J_a(S) + Σ_{i∈T} min_{j≠a(i)} c_ij``. In ``a``, the
    tasks of ``T`` add to ``J_a(S)`` their own costs and the pairs they are in, each pair's
    ``min(run_i, run_k)`` at most the node-mate's run: ``J(a) ≤ J_a(S) + Σ_{i∈T} (c_{i,a(i)} +
    Σ_{k≠i, a(k)=a(i)} run_{k,a(i)})``. By the supposition, ``J(a) ≤ J(b)``.

    Such an ``a`` puts every task on a node of its least ``c_ij`` (on any other, its own cost
    alone already exceeds its least: the supposition fails unless the two tie), so that is the
    only placement tried. Checked with a dozen whole-array operations: about 8 µs on the
    decision-speed study's 8-task batch, where every task is cheapest on the same node and it
    holds.
    """
    if problem.m == 1:
        return [0] * problem.n  # (the only placement)
    unary = problem.unary
    nodes = unary.argmin(axis=1)
    cells = np.arange(0, unary.size, problem.m) + nodes  # (``search._Placement.cells``)
    runs = problem.run.take(cells)
    load = np.bincount(nodes, weights=runs, minlength=problem.m)
    # Each row's two least costs: its own node's, and the least elsewhere (sorting a batch's
    # few nodes costs less than barring its own node and taking the minimum).
    lowest = np.sort(unary, axis=1)
    last = lowest[:, 0] + load[nodes] - runs  # each task run after all its node-mates
    if np.count_nonzero(last > lowest[:, 1]):
        return None
    return nodes.tolist()


class AnnealingPolicy(_Policy):
    """Simulated annealing of J over the batch's assignments, from a local minimum.

    When every task on its node of least cost alone is provably a minimum of J
    (``alone_optimum``), there is nothing to anneal: that is the placement, and its decisions
    say so. Otherwise it starts from the ``hyperscore`` policy's placement descended to a local
    minimum of single moves (``search._Placement.descend``, any allowed node).
    ``ANNEALING_STEPS_PER_TASK`` random steps per task follow: with probability
    ``ANNEALING_SWAP_SHARE`` a random task trades nodes with another random task (the step that
    leaves such a minimum), else it goes to another of its allowed nodes; a step is taken when
    ``ΔJ < −T·ln u`` (``u`` uniform: the Metropolis rule), ``ΔJ`` read from the placement's
    running costs (``search._Placement``) in constant time. ``T`` starts at the
    ``ANNEALING_START_QUANTILE`` of the rises of J among the first single moves (from a local
    minimum every move is a rise, and the mean one would scatter the placement more than so few
    steps can repair) and falls geometrically to ``ANNEALING_COOLING`` of it. The best
    assignment seen, if below the start, is descended again (``local_search``). Seeded by the
    batch's task ids.
    """

    name = "annealing"

    def assign(self, problem: Problem) -> list[int]:
        optimum = alone_optimum(problem)
        if optimum is not None:
            return optimum
        placement = HyperscorePolicy().placement(problem)
        cost_now = placement.descend()
        start = placement.assignment()
        choices = problem.allowed.sum(axis=1)
        movable = np.flatnonzero(choices > 1)
        if not movable.size:
            return start
        steps = ANNEALING_STEPS_PER_TASK * problem.n
        # Every step's random numbers at once: its task, its node (a uniform pick among the
        # task's allowed ones, listed first in each row of ``allowed_first``), its partner,
        # whether it swaps, and the uniform of its acceptance.
        draws = np.random.default_rng(problem.seed).random((5, steps))
        tasks = movable[(draws[0] * movable.size).astype(int)]
        allowed_first = (~problem.allowed).argsort(axis=1, kind="stable")
        targets = allowed_first[tasks, (draws[1] * choices[tasks]).astype(int)]
        first = tasks[:50]
        # (flat indices into the tasks × nodes matrix: ``search._Placement``'s ``cells``)
        rises = cost_now.take(first * problem.m + targets[:50]) - cost_now.take(
            placement.cells[first]
        )
        rises = rises[rises > 0]
        rises.sort()
        start_t = float(rises[int(ANNEALING_START_QUANTILE * rises.size)]) if rises.size else 0.0
        # Accept a step when ΔJ < T·(−ln u).
        limits = -np.log1p(-draws[4]) * max(start_t, 1e-6)
        limits *= _cooling(steps)
        # Plain floats and lists in the loop: numpy's per-element reads would cost more than
        # the arithmetic; ``delay`` is read from the placement, as Python floats, as moves
        # change it.
        unary, run, nodes = problem.unary.tolist(), problem.run.tolist(), start.copy()
        delay = placement.delay.item
        partners = (draws[2] * problem.n).astype(int).tolist()
        swaps = (draws[3] < ANNEALING_SWAP_SHARE).tolist()
        cost = best_cost = 0.0  # J relative to the start
        best = start
        for i, new, k, swap, limit in zip(
            tasks.tolist(), targets.tolist(), partners, swaps, limits.tolist(), strict=True
        ):
            old = nodes[i]
            if swap:
                new = nodes[k]
            if new == old:
                continue
            ui, ri = unary[i], run[i]
            delta = ui[new] + delay(i, new) - ui[old] - delay(i, old) + ri[old]
            if swap:
                # and k moves to i's node; neither then costs the other what it did
                uk, rk = unary[k], run[k]
                delta += uk[old] + delay(k, old) - uk[new] - delay(k, new) + rk[new]
                delta -= min(rk[old], ri[old]) + min(rk[new], ri[new])
            if delta < limit:
                placement.move(i, new)
                nodes[i] = new
                if swap:
                    placement.move(k, old)
                    nodes[k] = old
                cost += delta
                if cost < best_cost - IMPROVEMENT_S:
                    best_cost, best = cost, nodes.copy()
        if best is start:
            return start
        return local_search(problem, best)

    def describe(self, problem: Problem, assignment: Sequence[int], i: int) -> str:
        # (worked out again here, after the decision, rather than kept by ``assign``)
        if problem.memo(self.name, lambda: alone_optimum(problem)) is not None:
            return (
                "the optimum of the batch objective, no annealing needed: every task is on its "
                "node of least cost alone, and even run after all its node-mates there costs "
                "no more than alone on any other node"
            )
        return (
            f"simulated annealing of the batch objective ({ANNEALING_STEPS_PER_TASK * problem.n} "
            "moves and swaps from the hyperscore placement)"
        )
