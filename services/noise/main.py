"""noise: ``checked`` → ``eval.noise``. For every online QPU, the circuit compiled for it, its
ESP and its noise budget (``qubus.devices.prediction.noise_budget``) from the node's latest
calibration in KV ``qubus_nodes``. Fusion turns the budget into a predicted fidelity with the
sandbox's ideal distribution."""

from __future__ import annotations

from qubus.bus.consumer import Context, Stage
from qubus.bus.messages import NodePrediction, NodeStatus, NoiseEvaluation, TaskChecked
from qubus.bus.service import Runtime
from qubus.bus.workers import is_small, off_loop
from qubus.circuits import circuit_from_json
from qubus.circuits.sweeps import representative, total_shots
from qubus.devices.compile import compile_for_device
from qubus.devices.emulation import emulated_runtime_s
from qubus.devices.prediction import esp, noise_budget
from qubus.devices.profiles import device_of
from qubus.errors import CircuitRejected


def predict(event: TaskChecked, statuses: list[NodeStatus]) -> NoiseEvaluation:
    """Compile for each node and predict; a node the circuit cannot fit gets ``fits=False``.

    A sweep is compiled and predicted once, on its first point, and its run time is that of
    one job of every point's shots (``qubus.circuits.sweeps``)."""
    circuit = representative(circuit_from_json(event.circuit), event.options)
    predictions = []
    for status in statuses:
        device = device_of(status)
        try:
            compiled = compile_for_device(circuit, device)
        except CircuitRejected as exc:
            predictions.append(NodePrediction(node=status.node, fits=False, reason=exc.message))
            continue
        predictions.append(
            NodePrediction(
                node=status.node,
                fits=True,
                predicted_fidelity=esp(compiled, device),
                budget=noise_budget(compiled, device),
                expected_run_s=emulated_runtime_s(compiled, device, total_shots(event.options)),
                calibration_revision=device.revision,
                swaps=compiled.swaps,
            )
        )
    return NoiseEvaluation(task_id=event.task_id, predictions=predictions)


async def setup(rt: Runtime) -> None:
    directory = await rt.node_directory()

    async def handle(event: TaskChecked, ctx: Context) -> NoiseEvaluation:
        statuses = directory.require_online(rt.settings.node_timeout_s)
        ordered = [statuses[node] for node in sorted(statuses)]
        small = is_small(event.circuit, event.features)
        return await off_loop(predict, event, ordered, inline=small)

    await rt.consume(Stage("noise", [TaskChecked], handle, concurrency=2))
