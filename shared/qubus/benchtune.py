"""Tuning the score weights on the scheduling benchmark (``qubus weights tune --from-bench``).

The objective of a setting of the weights is an outcome of the benchmark's workload
(``qubus.schedsim``) replayed under the ``hyperscore`` policy with fusion's scores computed from
those weights: the tasks' completion times in the replay and the measured fidelities of real
(cached) noisy emulations of each task on the node it was given. It is the allocator's batch
objective per task (``qubus.allocation``) with measured outcomes in place of predictions,
negated so that higher is better:

    objective = −(mean completion time + λ·(1 − mean measured fidelity)),  λ = 100 s

(``Workload.fidelity_weight_s``). ``tune_on_bench`` maximises it with ``qubus.tuning`` on one
workload and reports the start and tuned weights' objectives on a held-out workload (another
seed: other tasks, arrivals and background load).

Limits: the benchmark scores every task as ``qubus.schedsim`` does (logic score 1, ΔRepro 1,
novelty 0, priority 0, Meta from the calibration's prior), so of the V weights only the
shares of w_qnc and w_meta change decisions; and the workload is the benchmark's, not the
stack's recent completed tasks.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qubus.schedsim import DEV_QASM, Bench, Measurements, Workload, default_cache_dir
from qubus.scoring import Weights
from qubus.tuning import TuningStep, tune_weights

POLICY = "hyperscore"


class BenchObjective:
    """The objective of weights on one prepared workload (module docstring).

    Args:
        workload: The workload.
        cache_dir: The emulation cache (default ``qubus.schedsim.default_cache_dir()``).
        qasm_dir: The dev set (None: generated circuits only).
    """

    def __init__(
        self, workload: Workload, *, cache_dir: Path | None = None, qasm_dir: Path | None = DEV_QASM
    ) -> None:
        prepared = Bench.prepare(workload, qasm_dir=qasm_dir)
        self.bench = prepared
        self.measurements = Measurements(cache_dir or default_cache_dir(), shots=workload.shots)

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
        QubusError: as ``qubus.tuning.tune_weights``.
    """
    objective = BenchObjective(workload, cache_dir=cache_dir, qasm_dir=qasm_dir)
    best, steps = tune_weights(objective, start, pinned, budget, seed)
    holdout = BenchObjective(
        Workload(**{**vars(workload), "seed": holdout_seed}),
        cache_dir=cache_dir,
        qasm_dir=qasm_dir,
    )
    return BenchTuning(best, steps, holdout(start), holdout(best))
