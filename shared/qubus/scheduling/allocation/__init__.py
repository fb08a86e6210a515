"""Placement policies: which QPU node runs each task of a batch, behind one interface.

The allocator decides tasks in micro-batches. :func:`decide` turns a batch of
``TaskRequest``s (each with one ``Candidate`` per known node) into one outcome per task: a
``Decision``, or the error of a task that cannot be placed (``CircuitRejected`` when no node
can take it, ``alloc.duplicate_node`` for malformed candidates). Policies are pure and
deterministic (seeded from the batch's task ids), so every allocator replica decides alike.

The package, one module per part:

- ``problem``: the requests, the constraints every policy shares and the batch problem with
  its objective J (``Problem``, ``build_problem``; constraints and J are described there);
- ``interface``: the ``Policy`` protocol, the policies' base class and :func:`decide` (a
  policy's placement, :func:`place`, then the decisions' explanations, :func:`explain`);
- ``baselines``: ``round_robin``, ``least_loaded`` and ``greedy_fidelity``;
- ``hyperscore``: ``hyperscore``;
- ``search``: the greedy placement and the local search of J (moves of single tasks with
  their change of J kept up to date) that ``hyperscore``, ``annealing``, ``milp`` and ``qaoa``
  share;
- ``annealing``: ``annealing``;
- ``milp`` and ``qaoa``: the exact and the quantum optimisers of J.

**Policies** (``POLICIES``):

- ``round_robin``: each task to a node picked by a stable hash of its task id among its
  eligible nodes (spreads evenly, ignores everything else);
- ``least_loaded``: first come, first served: tasks in batch order, each to the eligible node
  that frees up first (its backlog plus the batch tasks already sent there), whatever the
  task's run time there;
- ``greedy_fidelity``: each task to the node with the highest predicted fidelity;
- ``hyperscore``: tasks shortest first, each to the node with the highest hyperscore, where a
  node's hyperscore is discounted for the batch tasks already sent to it by the scorer's own
  time factor ``exp(−time_rate·Δt)``; then single tasks moved while a move lowers J
  (``search.local_search``);
- ``annealing``: simulated annealing of J over assignments (single moves and swaps of two
  tasks' nodes), from the ``hyperscore`` placement;
- ``milp``: the exact minimum of J: tasks are assigned to positions counted from the end of
  each node's batch queue (a task ``k``-th from the end delays ``k`` completions by its run),
  an assignment problem solved by ``scipy.optimize.milp`` (HiGHS);
- ``qaoa``: the QUBO of J with a one-hot penalty, solved by QAOA simulated with qsim (p = 1
  and 2, angles optimised by scipy's COBYLA) on sub-problems of at most ``QAOA_MAX_QUBITS``
  qubits (``QAOA_CANDIDATES`` best nodes per task, tasks taken shortest first), the best
  sampled assignment of each kept, then the whole batch refined by local search. Batches of
  more than ``QAOA_MAX_BATCH`` tasks fall back to ``annealing`` (the decision says so).

This module holds the registry of the policies by name (``POLICIES``, :func:`get_policy`) and
re-exports what the rest of the code imports from ``qubus.scheduling.allocation``.
"""

from __future__ import annotations

from collections.abc import Callable

from qubus.errors import QubusError
from qubus.scheduling.allocation.annealing import AnnealingPolicy
from qubus.scheduling.allocation.baselines import (
    GreedyFidelityPolicy,
    LeastLoadedPolicy,
    RoundRobinPolicy,
)
from qubus.scheduling.allocation.hyperscore import HyperscorePolicy
from qubus.scheduling.allocation.interface import Outcome, Policy, decide, explain, place
from qubus.scheduling.allocation.milp import MilpPolicy
from qubus.scheduling.allocation.problem import (
    PREFERENCES,
    Candidate,
    Decision,
    Problem,
    TaskRequest,
    build_problem,
    candidate_from_score,
    preference_lam,
    replacement_reason,
)
from qubus.scheduling.allocation.qaoa import QaoaPolicy
from qubus.scheduling.scoring import FIDELITY_WEIGHT_S

__all__ = [
    "FIDELITY_WEIGHT_S",
    "POLICIES",
    "PREFERENCES",
    "Candidate",
    "Decision",
    "Outcome",
    "Policy",
    "Problem",
    "TaskRequest",
    "build_problem",
    "candidate_from_score",
    "decide",
    "explain",
    "get_policy",
    "place",
    "preference_lam",
    "replacement_reason",
]


POLICIES: dict[str, Callable[[], Policy]] = {
    cls.name: cls
    for cls in (
        RoundRobinPolicy,
        LeastLoadedPolicy,
        GreedyFidelityPolicy,
        HyperscorePolicy,
        AnnealingPolicy,
        MilpPolicy,
        QaoaPolicy,
    )
}


def get_policy(name: str) -> Policy:
    """A new instance of the policy called ``name``.

    Raises:
        QubusError: ``policy.unknown`` for a name not in ``POLICIES`` (the message lists them).
    """
    try:
        factory = POLICIES[name]
    except KeyError:
        valid = ", ".join(sorted(POLICIES))
        raise QubusError(
            f"unknown allocation policy {name!r}; valid: {valid}", code="policy.unknown"
        ) from None
    return factory()
