"""Tuning the score weights on the scheduling benchmark (``qubus weights tune --from-bench``).

The objective of a setting of the weights is an outcome of the benchmark's workload
(``qubus.scheduling.schedsim``) replayed under the ``hyperscore`` policy with fusion's scores
computed from those weights: the tasks' completion times in the replay and the measured fidelities
of real (cached) noisy emulations of each task on the node it was given. It is the allocator's batch
objective per task (``qubus.scheduling.allocation``) with measured outcomes in place of predictions,
negated so that higher is better:

    objective = −(mean completion time + λ·(1 − mean measured fidelity)),  λ = 100 s

(``Workload.fidelity_weight_s``). ``tune_on_bench`` maximises it with ``qubus.scheduling.tuning``
on one workload and reports the start and tuned weights' objectives on a held-out workload (another
seed: other tasks, arrivals and background load).

Limits: the benchmark scores every task as ``qubus.scheduling.schedsim`` does (logic score 1,
ΔRepro 1, novelty 0, priority 0, Meta from the calibration's prior), so of the V weights only the
shares of w_qnc and w_meta change decisions; and the workload is the benchmark's, not the
stack's recent completed tasks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qubus.bus.connection import StoredEvent
from qubus.bus.messages import TaskAllocated, TaskCompleted, TaskIngested
from qubus.circuits import circuit_features, circuit_from_wire
from qubus.devices.profiles import load_device
from qubus.errors import QubusError
from qubus.scheduling.schedsim import (
    DEV_QASM,
    Background,
    Bench,
    BenchCircuit,
    Measurements,
    Task,
    Workload,
    batches,
    default_cache_dir,
    pair_on,
)
from qubus.scheduling.scoring import Weights
from qubus.scheduling.tuning import TuningStep, tune_weights

POLICY = "hyperscore"
HOLDOUT_SHARE = 1 / 3
"""The share of the stack's latest outcomes ``tune_on_outcomes`` holds out."""


class BenchObjective:
    """The objective of weights on one prepared workload (module docstring).

    Args:
        bench: The prepared workload.
        measurements: The measured fidelity of each (circuit, node).
    """

    def __init__(self, bench: Bench, measurements: Measurements) -> None:
        self.bench = bench
        self.measurements = measurements

    @classmethod
    def for_workload(
        cls, workload: Workload, *, cache_dir: Path | None = None, qasm_dir: Path | None = DEV_QASM
    ) -> BenchObjective:
        """The objective on a benchmark workload (``cache_dir``: the emulation cache, default
        ``qubus.scheduling.schedsim.default_cache_dir()``; ``qasm_dir``: the dev set, None for
        generated circuits only)."""
        return cls(
            Bench.prepare(workload, qasm_dir=qasm_dir),
            Measurements(cache_dir or default_cache_dir(), shots=workload.shots),
        )

    def __call__(self, weights: Weights) -> float:
        self.bench.weights = weights
        run = self.bench.replay(POLICY, reference=False)
        tasks = self.bench.tasks
        jct = np.mean([f - t.arrival for f, t in zip(run.finish, tasks, strict=True)])
        fidelity = np.mean(
            [
                self.measurements.fidelity(
                    self.bench.circuits[t.circuit],
                    self.bench.devices[d],
                    self.bench.pairs[t.circuit, d].compiled,
                )
                for t, d in zip(tasks, run.nodes, strict=True)
            ]
        )
        return -float(jct + self.bench.workload.fidelity_weight_s * (1.0 - fidelity))


@dataclass(frozen=True)
class BenchTuning:
    """The outcome of ``tune_on_bench``.

    Attributes:
        weights: The best weights found on the tuning workload.
        steps: Every evaluation on the tuning workload, in order (the start first).
        start_holdout: The start weights' objective on the held-out workload.
        tuned_holdout: The tuned weights' objective on the held-out workload.
    """

    weights: Weights
    steps: list[TuningStep]
    start_holdout: float
    tuned_holdout: float


def tune_on_bench(
    workload: Workload,
    start: Weights,
    pinned: Collection[str],
    *,
    budget: int,
    seed: int,
    holdout_seed: int,
    cache_dir: Path | None = None,
    qasm_dir: Path | None = DEV_QASM,
) -> BenchTuning:
    """Tune the weights on ``workload`` and judge them on the same workload with
    ``holdout_seed``.

    Raises:
        QubusError: as ``qubus.scheduling.tuning.tune_weights``.
    """
    objective = BenchObjective.for_workload(workload, cache_dir=cache_dir, qasm_dir=qasm_dir)
    held_out = Workload(**{**vars(workload), "seed": holdout_seed})
    holdout = BenchObjective.for_workload(held_out, cache_dir=cache_dir, qasm_dir=qasm_dir)
    return _tune_and_hold_out(objective, holdout, start, pinned, budget=budget, seed=seed)


def _tune_and_hold_out(
    objective: BenchObjective,
    holdout: BenchObjective,
    start: Weights,
    pinned: Collection[str],
    *,
    budget: int,
    seed: int,
) -> BenchTuning:
    best, steps = tune_weights(objective, start, pinned, budget, seed)
    return BenchTuning(best, steps, holdout(start), holdout(best))


# ---------------------------------------------------------------- the stack's own outcomes


@dataclass(frozen=True)
class Outcome:
    """A task the stack ran on one node: what the replay needs of it.

    Attributes:
        task_id: The task.
        circuit: Its circuit (its wire form, as allocated).
        ideal: Its ideal distribution.
        shots: Its shots.
        arrival: When it was submitted (Unix time).
        node: The node that ran it.
        measured: The measured fidelity of that run.
    """

    task_id: str
    circuit: str
    ideal: dict[str, float]
    shots: int
    arrival: float
    node: str
    measured: float


def outcomes_of(tasks: Mapping[str, Sequence[StoredEvent]]) -> list[Outcome]:
    """The tasks that completed on one node with noise (not split, not noiseless), by
    arrival; tasks whose ``ingested`` or ``allocated`` event was not read are left out."""
    found = []
    for task_id, events in tasks.items():
        by_type = {type(stored.event): stored.event for stored in events}  # the last of each
        ingested, allocated = by_type.get(TaskIngested), by_type.get(TaskAllocated)
        completed = by_type.get(TaskCompleted)
        if not (ingested and allocated and completed) or allocated.options.noiseless:
            continue
        if allocated.split is not None:
            continue
        found.append(
            Outcome(
                task_id=task_id,
                circuit=allocated.circuit,
                ideal=allocated.ideal,
                shots=completed.shots,
                arrival=ingested.submitted_at,
                node=completed.node,
                measured=completed.measured_fidelity,
            )
        )
    return sorted(found, key=lambda o: (o.arrival, o.task_id))


def outcome_objective(
    outcomes: Sequence[Outcome], *, window_s: float, cache_dir: Path | None = None
) -> BenchObjective:
    """The objective on the stack's own tasks: the same circuits arriving at the same
    relative times on the nodes that ran them (no background load), decided in batches of
    ``window_s``. A (circuit, node) that ran counts its mean measured fidelity there; one that
    did not, a real emulation (cached like the benchmark's).

    Raises:
        QubusError: ``tuning.outcomes`` when there is no outcome.
    """
    if not outcomes:
        raise QubusError("no completed task to replay", code="tuning.outcomes")
    devices = [load_device(node) for node in sorted({o.node for o in outcomes})]
    circuits: dict[str, BenchCircuit] = {}
    index: dict[str, int] = {}
    tasks = []
    measured: dict[tuple[str, str], list[float]] = defaultdict(list)
    origin = outcomes[0].arrival
    shots = int(np.median([o.shots for o in outcomes]))
    for outcome in outcomes:
        if outcome.circuit not in index:
            circuit = circuit_from_wire(outcome.circuit)
            fingerprint = circuit_features(circuit).fingerprint
            index[outcome.circuit] = len(circuits)
            circuits[outcome.circuit] = BenchCircuit(
                fingerprint[:12], circuit, outcome.ideal, fingerprint
            )
        bench_circuit = circuits[outcome.circuit]
        tasks.append(Task(outcome.task_id, index[outcome.circuit], outcome.arrival - origin, shots))
        measured[bench_circuit.fingerprint, outcome.node].append(outcome.measured)
    workload = Workload(
        seed=0,
        tasks=len(tasks),
        qpus=len(devices),
        window_s=window_s,
        shots=shots,
        background=False,
    )
    listed = list(circuits.values())
    bench = Bench(
        workload=workload,
        circuits=listed,
        devices=devices,
        pairs={
            (c, d): pair_on(circuit, device, shots)
            for c, circuit in enumerate(listed)
            for d, device in enumerate(devices)
        },
        tasks=tasks,
        batches=batches(tasks, workload),
        background=Background(devices, seed=0, enabled=False),
    )
    observed = {key: float(np.mean(values)) for key, values in measured.items()}
    return BenchObjective(
        bench, Measurements(cache_dir or default_cache_dir(), shots=shots, observed=observed)
    )


def holdout_count(outcomes: int, share: float = HOLDOUT_SHARE) -> int:
    """How many of the latest outcomes ``tune_on_outcomes`` holds out (at least one)."""
    return max(1, round(outcomes * share))


def tune_on_outcomes(
    outcomes: Sequence[Outcome],
    start: Weights,
    pinned: Collection[str],
    *,
    budget: int,
    seed: int,
    window_s: float,
    holdout_share: float = HOLDOUT_SHARE,
    cache_dir: Path | None = None,
) -> BenchTuning:
    """Tune the weights on the earlier outcomes and judge them on the latest
    ``holdout_share`` of them.

    Raises:
        QubusError: ``tuning.outcomes`` with fewer than 6 outcomes; as ``tune_weights``.
    """
    if len(outcomes) < 6:
        raise QubusError(
            f"{len(outcomes)} completed task(s) to replay; at least 6 are needed",
            code="tuning.outcomes",
        )
    cut = len(outcomes) - holdout_count(len(outcomes), holdout_share)
    objective = outcome_objective(outcomes[:cut], window_s=window_s, cache_dir=cache_dir)
    holdout = outcome_objective(outcomes[cut:], window_s=window_s, cache_dir=cache_dir)
    return _tune_and_hold_out(objective, holdout, start, pinned, budget=budget, seed=seed)
