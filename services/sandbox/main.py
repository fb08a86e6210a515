"""sandbox: ``checked`` → ``eval.sandbox``. The circuit's ideal distribution (qsim), checked
numerically and reproduced with a second simulator (ΔRepro), in a separate worker process
under qubit, depth, time and memory limits (``qubus.devices.sandbox``). A circuit beyond a limit
fails its task (``sandbox.too_large``, ``too_deep``, ``timeout``, ``memory``); the service goes
on. A sweep's points are all evaluated in one worker call (``qubus.devices.sweeps``). Heavy
circuits (``qubus.bus.workers.is_heavy``) run in a worker process of their own
(``QUBUS_HEAVY_LANE``), so a light task is never simulated after a heavy one."""

from __future__ import annotations

from qubus.bus.consumer import Context, Stage
from qubus.bus.messages import SandboxEvaluation, TaskChecked
from qubus.bus.service import Runtime
from qubus.bus.workers import Lanes, is_heavy, laned_concurrency
from qubus.devices.sandbox import SandboxLimits, evaluate
from qubus.devices.sweeps import evaluate_sweep


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

    async def handle(event: TaskChecked, ctx: Context) -> SandboxEvaluation:
        points = len(event.options.sweep or [None])
        pool = lanes.pool(is_heavy(event.features, points=points))
        if event.options.sweep is not None:
            return await pool.run(
                evaluate_sweep,
                event.task_id,
                event.circuit,
                event.options.sweep,
                event.options.shots,
                limits,
                timeout_s=settings.sandbox_timeout_s * len(event.options.sweep),
            )
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
