"""noise: ``checked`` → ``eval.noise``. For every online QPU, the circuit compiled for it, its
ESP and its noise budget (``qubus.devices.prediction.noise_budget``) from the node's latest
calibration in KV ``qubus_nodes``. Fusion turns the budget into a predicted fidelity with the
sandbox's ideal distribution. A node whose emulation of the circuit would exceed its limits
(``qubus.devices.cost``) is unfit; a circuit too large for every node is rejected
(``qpu.too_large``). With ``QUBUS_HEAVY_LANE``, heavy circuits (``qubus.bus.workers.is_heavy``)
are compiled one at a time while light ones go on beside them."""

from __future__ import annotations

from qubus.bus.consumer import Context, Stage
from qubus.bus.messages import NodePrediction, NodeStatus, NoiseEvaluation, TaskChecked
from qubus.bus.service import Runtime
from qubus.bus.workers import HeavySlot, is_heavy, is_small, laned_concurrency, off_loop
from qubus.circuits import circuit_from_wire
from qubus.circuits.sweeps import representative
from qubus.devices.compile import compile_for_device
from qubus.devices.cost import emulation_cost, refuse_too_large
from qubus.devices.emulation import JOB_OVERHEAD_S, emulated_runtime_s
from qubus.devices.prediction import esp, noise_budget
from qubus.devices.profiles import device_of
from qubus.errors import CircuitRejected, QubusError


def predict(
    event: TaskChecked, statuses: list[NodeStatus], *, max_s: float, memory_mb: int
) -> NoiseEvaluation:
    """Compile for each node and predict; a node the circuit cannot fit, or whose emulation of
    it would exceed the node's limits (``qubus.devices.cost``), gets ``fits=False``. A sweep
    is compiled and predicted once, on its first point, and its run time is that of one job of
    every point's shots (``qubus.circuits.sweeps``).

    Raises:
        QubusError: ``qpu.too_large`` when every node the circuit fits would refuse it as too
            large to emulate (the estimates in the message).
    """
    circuit = representative(circuit_from_wire(event.circuit), event.options)
    noiseless = event.options.noiseless
    predictions = []
    too_large = []
    for status in statuses:
        device = device_of(status)
        try:
            compiled = compile_for_device(circuit, device)
        except CircuitRejected as exc:
            predictions.append(NodePrediction(node=status.node, fits=False, reason=exc.message))
            continue
        try:
            cost = emulation_cost(compiled, event.options.shots, noiseless=noiseless)
            refuse_too_large(cost, max_s=max_s, memory_mb=memory_mb)
        except QubusError as exc:
            too_large.append(f"{status.node}: {exc.message}")
            predictions.append(NodePrediction(node=status.node, fits=False, reason=exc.message))
            continue
        predictions.append(
            NodePrediction(
                node=status.node,
                fits=True,
                predicted_fidelity=esp(compiled, device),
                budget=noise_budget(compiled, device),
                expected_run_s=emulated_runtime_s(compiled, device, event.options.total_shots),
                calibration_revision=device.revision,
                swaps=compiled.swaps,
                emulation_s=cost.seconds,
                job_s=JOB_OVERHEAD_S[device.kind],
            )
        )
    if too_large and not any(p.fits for p in predictions):
        raise QubusError("; ".join(too_large), code="qpu.too_large")
    return NoiseEvaluation(task_id=event.task_id, predictions=predictions)


async def setup(rt: Runtime) -> None:
    directory = await rt.node_directory()
    heavy_lane = HeavySlot(rt.settings.heavy_lane)

    async def handle(event: TaskChecked, ctx: Context) -> NoiseEvaluation:
        statuses = directory.require_online(rt.settings.node_timeout_s)
        ordered = [statuses[node] for node in sorted(statuses)]
        async with heavy_lane(is_heavy(event.features)):
            return await off_loop(
                predict,
                event,
                ordered,
                max_s=rt.settings.qpu_max_emulation_s,
                memory_mb=rt.settings.sandbox_memory_mb,
                inline=is_small(event.circuit, event.features),
            )

    concurrency = laned_concurrency(rt.settings.heavy_lane, without=2)
    await rt.consume(Stage("noise", [TaskChecked], handle, concurrency=concurrency))
