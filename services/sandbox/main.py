"""sandbox: ``checked`` → ``eval.sandbox``. The circuit's ideal distribution, simulated with
qsim in a separate worker process under time and memory limits, and sampled with the task's
shots."""

from __future__ import annotations

import time

from qubus.circuits import circuit_from_json
from qubus.consumer import Context, Stage
from qubus.ids import seed_for
from qubus.messages import SandboxEvaluation, TaskChecked
from qubus.service import Runtime
from qubus.simulate import ideal_distribution, sample_counts
from qubus.workers import WorkerPool


def evaluate(
    task_id: str, circuit_json: str, shots: int, max_qubits: int, max_outcomes: int
) -> SandboxEvaluation:
    """Simulate ideally; keep the ``max_outcomes`` most likely outcomes. Runs in the worker."""
    started = time.perf_counter()
    distribution = ideal_distribution(circuit_from_json(circuit_json), max_qubits=max_qubits)
    total = sum(distribution.values())
    kept = dict(sorted(distribution.items(), key=lambda kv: -kv[1])[:max_outcomes])
    return SandboxEvaluation(
        task_id=task_id,
        ideal=kept,
        ideal_counts=sample_counts(distribution, shots, seed=seed_for(task_id, "ideal")),
        truncated_mass=max(0.0, total - sum(kept.values())),
        norm_error=abs(1.0 - total),
        simulator="qsim",
        elapsed_s=time.perf_counter() - started,
    )


async def setup(rt: Runtime) -> None:
    settings = rt.settings
    pool = WorkerPool(memory_mb=settings.sandbox_memory_mb)
    pool.start()
    rt.stack.callback(pool.close)

    async def handle(event: TaskChecked, ctx: Context) -> SandboxEvaluation:
        return await pool.run(
            evaluate,
            event.task_id,
            event.circuit,
            event.options.shots,
            settings.sandbox_max_qubits,
            settings.ideal_max_outcomes,
            timeout_s=settings.sandbox_timeout_s,
        )

    await rt.consume(Stage("sandbox", [TaskChecked], handle))
