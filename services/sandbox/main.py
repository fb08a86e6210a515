"""sandbox: ``checked`` → ``eval.sandbox``. The circuit's ideal distribution (qsim), checked
numerically and reproduced with a second simulator (ΔRepro), in a separate worker process
under qubit, depth, time and memory limits (``qubus.devices.sandbox``); a tiny circuit
(``qubus.bus.workers.is_tiny``, its measurements terminal) on the event loop instead, where
the worker's round trip would add about half the simulation's cost. A circuit beyond a limit
fails its task (``sandbox.too_large``, ``too_deep``, ``timeout``, ``memory``); the service goes
on. A sweep is evaluated in two worker calls (``qubus.devices.sweeps``): the first point as a
task with a sample of the points' ideal distributions (``eval.sandbox``, published at once:
fusion scores the sweep with it), then every other point's (``eval.ideals``, every point's
distribution, which its QPU nodes read). Heavy circuits (``qubus.bus.workers.is_heavy``) run in
a worker process of their own (``QUBUS_HEAVY_LANE``), so a light task is never simulated after
a heavy one."""

from __future__ import annotations

from qubus.bus.consumer import Context, Stage
from qubus.bus.messages import SandboxEvaluation, SweepIdeals, TaskChecked
from qubus.bus.service import Runtime
from qubus.bus.workers import Lanes, WorkerPool, is_heavy, is_tiny, laned_concurrency
from qubus.circuits import circuit_from_wire
from qubus.circuits.simulate import terminal_only
from qubus.devices.sandbox import SandboxLimits, evaluate, evaluate_circuit
from qubus.devices.sweeps import evaluate_sweep, sample_points, sweep_ideals


async def setup(rt: Runtime) -> None:
    settings = rt.settings
    limits = SandboxLimits(
        max_qubits=settings.sandbox_max_qubits,
        max_depth=settings.sandbox_max_depth,
        max_outcomes=settings.ideal_max_outcomes,
    )
    lanes = Lanes(
        heavy_lane=settings.heavy_lane,
        memory_mb=settings.sandbox_memory_mb,
        stage="sandbox",
        job="simulation",
    )
    lanes.start()
    rt.stack.callback(lanes.close)

    async def evaluate_points(
        event: TaskChecked, points: list[dict[str, float]], pool: WorkerPool, ctx: Context
    ) -> SweepIdeals:
        """A sweep's ``eval.sandbox`` (the first point as a task and the ideal distributions
        of ``sample_points``), published at once, then every point's distribution, the
        others simulated in a second worker call (each call's time limit is per point)."""
        sample = sample_points(len(points))
        evaluation = await pool.run(
            evaluate_sweep,
            event.task_id,
            event.circuit,
            [points[k] for k in sample],
            event.options.shots,
            limits,
            timeout_s=settings.sandbox_timeout_s * len(sample),
        )
        await ctx.publish(evaluation)
        sampled = set(sample)
        others = [k for k in range(len(points)) if k not in sampled]
        rest, norm_error = [], 0.0
        if others:
            rest, norm_error = await pool.run(
                sweep_ideals,
                event.circuit,
                [points[k] for k in others],
                limits,
                timeout_s=settings.sandbox_timeout_s * len(others),
            )
        ideals = dict(zip(sample, evaluation.sweep_ideals, strict=True))
        ideals.update(zip(others, rest, strict=True))
        return SweepIdeals(
            task_id=event.task_id,
            ideals=[ideals[k] for k in range(len(points))],
            norm_error=max(evaluation.norm_error, norm_error),
        )

    async def handle(event: TaskChecked, ctx: Context) -> SandboxEvaluation | SweepIdeals:
        points = len(event.options.sweep or [None])
        pool = lanes.pool(is_heavy(event.features, points=points))
        if event.options.sweep is not None:
            return await evaluate_points(event, event.options.sweep, pool, ctx)
        if is_tiny(event.circuit, event.features):
            circuit = circuit_from_wire(event.circuit)
            if terminal_only(circuit):
                return evaluate_circuit(event.task_id, circuit, event.options.shots, limits)
        return await pool.run(
            evaluate,
            event.task_id,
            event.circuit,
            event.options.shots,
            limits,
            timeout_s=settings.sandbox_timeout_s,
        )

    # Beside the one a light lane runs, the others in hand may wait for the heavy lane.
    concurrency = laned_concurrency(settings.heavy_lane, without=2)
    await rt.consume(Stage("sandbox", [TaskChecked], handle, concurrency=concurrency))
