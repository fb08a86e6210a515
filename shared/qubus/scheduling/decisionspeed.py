"""How fast the policies decide one batch, and how close they come to the optimum
(``qubus bench schedule --decision-speed``).

One batch of each size (8, 64 and 512 tasks: the first tasks of the benchmark's workload,
``qubus.scheduling.schedsim``, all decided at once on the fleet as the background load leaves
it at time 0) is decided by each policy. A decision's time is
``qubus.scheduling.schedsim.timed_decision``'s: the batch's cost matrix built once, then the
policy's placement (explanations come after and are not counted), ``build_ms`` the first
part; the fastest of the runs in a row made in ``SPEED_BUDGET_S`` (at least ``TIMING_RUNS``;
one for a decision slower than ``TIMING_ONCE_MS``: milp on the larger batches), after one
untimed decision of the smallest batch by each policy.
milp stops at ``MILP_TIME_LIMIT_S`` with the best placement HiGHS found by then, or none.

The reference for the objective gap is the exact minimum of J computed independently of
HiGHS: milp's model (task ``i`` ``k``-th from the end of node ``j``'s batch queue costs
``ready_j + k·run_ij + λ·(1 − F_ij)``) is an assignment of tasks to (node, position) slots,
solved by ``scipy.optimize.linear_sum_assignment`` (Hungarian method).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from qubus.errors import QubusError
from qubus.scheduling.allocation import Problem, get_policy
from qubus.scheduling.allocation.milp import MILP_TIME_LIMIT_S
from qubus.scheduling.schedsim import (
    DEV_QASM,
    TIMING_ONCE_MS,
    TIMING_RUNS,
    Bench,
    Workload,
    timed_decision,
)

SIZES = (8, 64, 512)
"""Batch sizes decided."""

POLICIES = ("hyperscore", "annealing", "milp")
"""Policies timed."""

SPEED_BUDGET_S = 0.5
"""Each policy decides each batch again until its runs have taken this long (at least
``TIMING_RUNS`` runs). The fastest of three is mostly the machine's other work on a decision
of tens of microseconds: in two runs of this study as the fastest of three (session 11, load
2.5-4.0), building hyperscore's 8-task problem took 0.061 and 0.074 ms (the same code but for
one skipped array addition), against 0.045 ms as the fastest of 3,000 in a row. Every policy
is timed alike (milp's 8-task batch 29-80 times in session 11's runs at load 2-7)."""


def exact_optimum(problem: Problem) -> float:
    """The minimum of J over the problem's assignments (module docstring)."""
    from scipy.optimize import linear_sum_assignment

    n, m = problem.n, problem.m
    k = np.arange(1, n + 1)
    # cost[i, j, k-1]: task i k-th from the end of node j's queue.
    cost = problem.unary[:, :, None] + (k[None, None, :] - 1) * problem.run[:, :, None]
    cost = np.where(problem.allowed[:, :, None], cost, np.inf).reshape(n, m * n)
    finite = np.isfinite(cost)
    big = cost[finite].max() * (n + 1) + 1.0
    rows, cols = linear_sum_assignment(np.where(finite, cost, big))
    return float(cost[rows, cols].sum())


def decision_speed(
    workload: Workload, *, sizes: Sequence[int] = SIZES, qasm_dir: Path | None = DEV_QASM
) -> dict[str, Any]:
    """Per batch size: each policy's decision time (ms) and J against the exact minimum.

    Returns:
        ``{"sizes": {N: {"optimum": J*, "policies": {NAME: {"ms", "build_ms", "objective",
        "gap", "milp_speedup", "runs"}}}}}`` (``runs``: of how many runs ``ms`` is the
        fastest); a milp that found no placement in its time limit has
        ``build_ms``/``objective``/``gap`` None and ``ms`` the time it took.
    """
    bench = Bench.prepare(
        replace(workload, tasks=max(sizes), max_batch=max(sizes)), qasm_dir=qasm_dir
    )
    idle = [0.0] * len(bench.devices)
    # Untimed: a policy's first decision in a process pays its imports and first-use set-up
    # (HiGHS's: milp's first 8-task batch took 31-34 ms against about 6 ms after it).
    warm_up = bench.requests(range(min(sizes)), 0.0, idle, [[] for _ in bench.devices])
    for name in POLICIES:
        timed_decision(get_policy(name), warm_up, lam=workload.fidelity_weight_s)
    out: dict[str, Any] = {"time_limit_s": MILP_TIME_LIMIT_S, "sizes": {}}
    for size in sizes:
        requests = bench.requests(range(size), 0.0, idle, [[] for _ in bench.devices])
        figures: dict[str, dict[str, Any]] = {}
        optimum = None
        for name in POLICIES:
            started = time.perf_counter()
            try:
                timed = timed_decision(
                    get_policy(name),
                    requests,
                    lam=workload.fidelity_weight_s,
                    runs=TIMING_RUNS,
                    budget_s=SPEED_BUDGET_S,
                )
            except QubusError as exc:
                if exc.code != "alloc.milp":
                    raise
                ms = (time.perf_counter() - started) * 1000
                figures[name] = {"ms": ms, "build_ms": None, "objective": None, "runs": 1}
                continue
            optimum = optimum if optimum is not None else exact_optimum(timed.problem)
            figures[name] = {
                "ms": timed.ms,
                "build_ms": timed.build_ms,
                "objective": timed.problem.objective(timed.assignment),
                "runs": timed.runs,
            }
        for figs in figures.values():
            objective = figs["objective"]
            figs["gap"] = None if objective is None else objective / optimum - 1
            figs["milp_speedup"] = figures["milp"]["ms"] / max(figs["ms"], 1e-6)
        out["sizes"][size] = {"optimum": optimum, "policies": figures}
    return out


def format_speed(result: dict[str, Any]) -> str:
    """The study as text: one row per batch size and policy, then the goal per size."""
    lines = [
        "decision time per batch (cost matrix + placement; fastest of the runs in "
        f"{SPEED_BUDGET_S:g} s, at least {TIMING_RUNS}, once over {TIMING_ONCE_MS:g} ms; "
        f"milp's time limit {result['time_limit_s']:g} s) and J against its exact minimum "
        "(Hungarian method)",
        f"{'tasks':>6} {'policy':<12}{'ms':>12}{'build_ms':>10}{'runs':>7}{'J':>14}{'gap':>9}"
        f"{'milp/this':>11}",
    ]
    for size, entry in result["sizes"].items():
        for name, figs in entry["policies"].items():
            objective = "no placement" if figs["objective"] is None else f"{figs['objective']:.1f}"
            gap = "-" if figs["gap"] is None else f"{figs['gap']:+.2%}"
            build = "-" if figs["build_ms"] is None else f"{figs['build_ms']:.3f}"
            lines.append(
                f"{size:>6} {name:<12}{figs['ms']:>12.3f}{build:>10}{figs['runs']:>7}"
                f"{objective:>14}{gap:>9}"
                f"{figs['milp_speedup']:>10.0f}×"
            )
    lines += ["", "goal: hyperscore and annealing ≥ 100× faster than milp at ≤ 2% of J:"]
    for size, entry in result["sizes"].items():
        for name in ("hyperscore", "annealing"):
            figs = entry["policies"][name]
            met = figs["milp_speedup"] >= 100 and figs["gap"] is not None and figs["gap"] <= 0.02
            lines.append(
                f"  [{'met' if met else 'NOT met'}] {size} tasks, {name}: "
                f"{figs['milp_speedup']:.0f}× faster, J {figs['gap']:+.2%} over the minimum"
            )
    return "\n".join(lines)
