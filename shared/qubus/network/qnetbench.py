"""The QNet-NO setting (``qubus bench schedule --qnet``): the placement policies on networked
QPUs, distributed tasks included, compared on solution quality and decision time.

The setting follows the QNet-NO experiments: 4–32 QPU nodes on ring-with-chords topologies,
link fidelities drawn from 0.85–0.95, batches of 8–64 tasks of which some run distributed
over two linked nodes. Each instance is one batch decided by ``qaoa``, ``greedy_fidelity``,
``hyperscore``, ``annealing`` and ``milp`` (``qubus.scheduling.allocation``) on the batch
objective J at λ = ``FIDELITY_WEIGHT_S``; quality is J against its exact minimum
(``qubus.scheduling.decisionspeed.exact_optimum``), time the wall clock of the decision
(``qubus.scheduling.schedsim.timed_decision``).

What is real and what is modelled:

- **Nodes and tasks**: the scheduling benchmark's fleet (``qubus.scheduling.schedsim.fleet``:
  real profiles, then variants) and circuits, each compiled for each node with its predicted
  fidelity and modelled run time at ``SHOTS`` shots; the nodes start idle (no background).
- **Links**: ``Topology.ring_chords`` with ``N // 4`` chords (at least one), each link's fresh
  pair fidelity ``f0`` drawn uniformly from ``LINK_F0``; a pair's delivered fidelity is
  ``LinkPlan.of(link).fidelity`` (memory decay over its making, the link's other figures at
  their defaults).
- **Distributed tasks** (a ``DISTRIBUTED_SHARE`` of the batch drawn, those whose circuit no
  linked pair of nodes holds run whole; the report counts those kept): a task placed on ``j``
  also runs on ``j``'s best-linked neighbour ``k``; it is predicted to reach ``F_j·F_k·F_l^e``
  with ``F_l`` the link's delivered pair fidelity and ``e = EBITS`` remote gates, and to run
  ``max(run_j, run_k)`` plus ``e·shots`` pair latencies. As in ``qubus.network.splitplan``, only
  the lead node ``j`` is occupied. This is a model of a split, not ``splitplan``'s partition of
  the circuit.
- **Scores** (for ``hyperscore``): fusion's rule with the scheduling benchmark's inputs
  (``qubus.scheduling.schedsim.fusion_score``: QNC the candidate's prediction, whole or
  distributed, Meta the prior for it) on the idle fleet.

The QNet-NO paper reports a 2.31× advantage of its quantum optimiser; the report gives
``greedy J / qaoa J`` and each policy's gap and time as measured here, with no claim that the
two settings coincide.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qubus.bus.messages import NodeScore
from qubus.network.links import LinkPlan, Topology
from qubus.scheduling.allocation import (
    FIDELITY_WEIGHT_S,
    Candidate,
    TaskRequest,
    candidate_from_score,
    get_policy,
)
from qubus.scheduling.decisionspeed import exact_optimum
from qubus.scheduling.frontier import weights_for
from qubus.scheduling.outcomes import calibrate
from qubus.scheduling.schedsim import (
    DEV_QASM,
    Pair,
    bench_circuits,
    fleet,
    fusion_score,
    pair_on,
    timed_decision,
)
from qubus.scheduling.scoring import DEFAULT_WEIGHTS, Weights

NODES = (4, 8, 16, 32)
"""Fleet sizes."""

TASKS = (8, 64)
"""Batch sizes."""

LINK_F0 = (0.85, 0.95)
"""Range of a link's fresh pair fidelity."""

DISTRIBUTED_SHARE = 0.25
"""Share of a batch's tasks that run distributed over two nodes."""

EBITS = 2
"""Remote two-qubit gates of a distributed task."""

SHOTS = 1000
"""Shots of every task."""

POLICIES = ("qaoa", "greedy_fidelity", "hyperscore", "annealing", "milp")
"""Policies compared."""


@dataclass(frozen=True)
class Instance:
    """One batch on one networked fleet.

    Attributes:
        requests: The batch, its nodes scored with fusion's default weights.
        scored: The same batch with the nodes scored with other weights.
    """

    nodes: int
    tasks: int
    distributed: int
    requests: list[TaskRequest]
    scored: Callable[[Weights], list[TaskRequest]] = field(repr=False, compare=False)


def instances(
    *,
    nodes: Sequence[int] = NODES,
    tasks: Sequence[int] = TASKS,
    seed: int = 1,
    qasm_dir: Path | None = DEV_QASM,
) -> list[Instance]:
    """Every (fleet size, batch size) instance, seeded."""
    circuits = bench_circuits(qasm_dir)
    out = []
    for n in nodes:
        devices = fleet(n)
        ids = [d.id for d in devices]
        rng = np.random.default_rng([seed, n])
        ring = Topology.ring_chords(ids, chords=max(1, n // 4), seed=seed)
        links = [
            spec.model_copy(update={"f0": float(rng.uniform(*LINK_F0))}) for spec in ring.links
        ]
        topology = Topology(links=links, description="QNet-NO setting")
        partner = {}
        for node in ids:
            plans = {
                other: LinkPlan.of(topology.link(node, other))
                for other in topology.neighbours()[node]
            }
            best = max(sorted(plans), key=lambda other: plans[other].fidelity)
            partner[node] = (ids.index(best), plans[best])
        pairs = {
            (c, d): pair_on(circuit, device, SHOTS)
            for c, circuit in enumerate(circuits)
            for d, device in enumerate(devices)
        }
        usable = [c for c in range(len(circuits)) if any(pairs[c, d].compiled for d in range(n))]
        for size in tasks:
            chosen = rng.choice(usable, size=size).tolist()
            split = set(
                rng.choice(size, size=int(size * DISTRIBUTED_SHARE), replace=False).tolist()
            )
            # a circuit no linked pair of nodes holds runs whole
            split = {
                i
                for i in split
                if any(
                    _candidate(pairs, chosen[i], d, ids, partner, distributed=True).fits
                    for d in range(n)
                )
            }

            scored = functools.partial(
                _requests,
                prefix=f"q{n}-{size}",
                chosen=chosen,
                split=split,
                pairs=pairs,
                ids=ids,
                partner=partner,
            )
            out.append(Instance(n, size, len(split), scored(DEFAULT_WEIGHTS), scored))
    return out


def _requests(
    weights: Weights,
    *,
    prefix: str,
    chosen: list[int],
    split: set[int],
    pairs: dict[tuple[int, int], Pair],
    ids: list[str],
    partner: dict[str, tuple[int, LinkPlan]],
) -> list[TaskRequest]:
    """The batch of circuits ``chosen``, those in ``split`` distributed, its nodes scored with
    ``weights``."""
    return [
        TaskRequest(
            task_id=f"{prefix}-t{i:03d}",
            candidates=[
                _candidate(pairs, c, d, ids, partner, distributed=i in split, weights=weights)
                for d in range(len(ids))
            ],
        )
        for i, c in enumerate(chosen)
    ]


def _candidate(
    pairs: dict[tuple[int, int], Pair],
    c: int,
    d: int,
    ids: list[str],
    partner: dict[str, tuple[int, LinkPlan]],
    *,
    distributed: bool,
    weights: Weights = DEFAULT_WEIGHTS,
) -> Candidate:
    """Node ``d`` for circuit ``c``, whole or distributed (module docstring), scored by
    fusion's rule with ``weights`` on the idle fleet (Meta: the prior for its prediction)."""
    here = pairs[c, d]
    fidelity, run = here.predicted, here.run_s
    fits = here.compiled is not None
    if distributed:
        k, plan = partner[ids[d]]
        there = pairs[c, k]
        fits = fits and there.compiled is not None
        fidelity = here.predicted * there.predicted * plan.fidelity**EBITS
        run = max(here.run_s, there.run_s) + EBITS * SHOTS * plan.latency_s
    if not fits:
        return candidate_from_score(
            NodeScore(node=ids[d], eligible=False, reason="the circuit does not fit")
        )
    fidelity = min(1.0, fidelity)
    return candidate_from_score(
        fusion_score(
            ids[d],
            predicted=fidelity,
            meta=calibrate(None, fidelity).meta,
            ready=0.0,
            run_s=run,
            depth=0,
            weights=weights,
        )
    )


def run_qnet(*, seed: int = 1, qasm_dir: Path | None = DEV_QASM) -> dict[str, Any]:
    """Every instance decided by every policy: ``{"seed", "instances": [{"nodes", "tasks",
    "distributed", "optimum", "policies": {NAME: {"objective", "gap", "ms"}}}]}``."""
    rows = []
    for instance in instances(seed=seed, qasm_dir=qasm_dir):
        figures = {}
        optimum = None
        for name in POLICIES:
            timed = timed_decision(get_policy(name), instance.requests, lam=FIDELITY_WEIGHT_S)
            optimum = optimum if optimum is not None else exact_optimum(timed.problem)
            objective = timed.problem.objective(timed.assignment)
            figures[name] = {"objective": objective, "gap": objective / optimum - 1, "ms": timed.ms}
        rows.append(
            {
                "nodes": instance.nodes,
                "tasks": instance.tasks,
                "distributed": instance.distributed,
                "optimum": optimum,
                "policies": figures,
            }
        )
    return {"seed": seed, "instances": rows}


FRONTIER_INSTANCE = (16, 64)
"""The instance (nodes, tasks) whose frontier ``qnet_frontier`` sweeps."""


def qnet_frontier(
    lambdas: Sequence[float], *, seed: int = 1, qasm_dir: Path | None = DEV_QASM
) -> dict[str, Any]:
    """The fidelity–time frontier of one QNet-NO instance (``FRONTIER_INSTANCE``), in the
    shape of ``qubus.scheduling.frontier.sweep``: annealing swept along λ, hyperscore along
    the weights' time reference scaled to the same worth of fidelity
    (``qubus.scheduling.frontier.weights_for``), the other policies as points at the
    default λ.

    Figures are the decision's own predictions on the idle fleet, not a replay with measured
    fidelities: mean and maximum completion time of the batch's schedule (throughput = tasks
    / the last completion) and mean predicted fidelity.
    """
    nodes, tasks = FRONTIER_INSTANCE
    (instance,) = instances(nodes=(nodes,), tasks=(tasks,), seed=seed, qasm_dir=qasm_dir)
    points = {
        name: _predicted(instance.requests, name, FIDELITY_WEIGHT_S)
        for name in ("round_robin", "least_loaded", "greedy_fidelity", "milp", "qaoa")
    }
    sweeps = {
        "annealing": [
            {"lam": lam, **_predicted(instance.requests, "annealing", lam)} for lam in lambdas
        ],
        "hyperscore": [
            {"lam": lam, **_predicted(instance.scored(weights_for(lam)), "hyperscore", lam)}
            for lam in lambdas
        ],
    }
    return {"points": points, "sweeps": sweeps}


def _predicted(requests: list[TaskRequest], name: str, lam: float) -> dict[str, float]:
    timed = timed_decision(get_policy(name), requests, lam=lam)
    problem, assignment = timed.problem, timed.assignment
    completions = problem.completions(assignment)
    fidelity = float(problem.fidelity[np.arange(problem.n), assignment].mean())
    return {
        "mean_jct": float(completions.mean()),
        "throughput": problem.n / float(completions.max()),
        "mean_fidelity": fidelity,
        "error_rate": 1 - fidelity,
    }


def format_qnet(result: dict[str, Any]) -> str:
    """The comparison as text: per instance each policy's gap and time, and greedy/qaoa."""
    lines = [
        f"QNet-NO setting, seed {result['seed']}: ring with chords, link f0 "
        f"{LINK_F0[0]}–{LINK_F0[1]}, {DISTRIBUTED_SHARE:.0%} of tasks distributed; J against "
        "its exact minimum, decision time in ms",
        f"{'nodes':>5} {'tasks':>5} {'dist':>4} "
        + "".join(f"{name + ' gap':>22}{'ms':>10}" for name in POLICIES)
        + f"{'greedy/qaoa J':>15}",
    ]
    for row in result["instances"]:
        p = row["policies"]
        cells = "".join(f"{p[n]['gap']:>+22.2%}{p[n]['ms']:>10.1f}" for n in POLICIES)
        ratio = p["greedy_fidelity"]["objective"] / p["qaoa"]["objective"]
        lines.append(
            f"{row['nodes']:>5} {row['tasks']:>5} {row['distributed']:>4} {cells}{ratio:>14.2f}×"
        )
    ratios = [
        r["policies"]["greedy_fidelity"]["objective"] / r["policies"]["qaoa"]["objective"]
        for r in result["instances"]
    ]
    lines.append(
        f"qaoa's advantage over greedy (greedy J / qaoa J): median {np.median(ratios):.2f}×, "
        f"range {min(ratios):.2f}–{max(ratios):.2f}× (QNet-NO reports 2.31×)"
    )
    return "\n".join(lines)
