"""logic: ``parsed`` → ``checked`` | ``rejected``. Consistency checks with stable codes.

The qubit limit (``L008``) is the larger of the largest online QPU and what the online QPUs
joined by entanglement links hold together (``qubus.network.splitplan.split_capacity``): a
circuit that fits only split passes, and the allocator splits it.
"""

from __future__ import annotations

from qubus.bus.consumer import Context, Stage
from qubus.bus.messages import TaskChecked, TaskParsed
from qubus.bus.service import Runtime
from qubus.bus.workers import HeavySlot, is_long, is_small, laned_concurrency, off_loop
from qubus.circuits import circuit_from_wire
from qubus.circuits.checks import run_checks
from qubus.circuits.sweeps import representative
from qubus.errors import CircuitRejected
from qubus.network.links import fleet_topology
from qubus.network.splitplan import FleetView, split_capacity


def check(event: TaskParsed, fleet_max_qubits: int, split_max_qubits: int) -> TaskChecked:
    """Run every check (on a sweep's first point: ``qubus.circuits.sweeps``); a hard failure
    rejects the task listing every failed check."""
    report = run_checks(
        representative(circuit_from_wire(event.circuit), event.options),
        fleet_max_qubits=fleet_max_qubits,
        split_max_qubits=split_max_qubits,
    )
    if not report.passed:
        failed = [r for r in report.results if not r.passed and r.hard]
        raise CircuitRejected(
            "; ".join(f"{o.code} {o.name}: {o.message}" for o in failed),
            code=failed[0].code,
            failures=[{"code": o.code, "message": o.message} for o in failed],
        )
    return TaskChecked(
        task_id=event.task_id,
        circuit=event.circuit,
        features=event.features,
        options=event.options,
        checks=report.results,
        logic_score=report.logic_score,
        novelty=event.novelty,
        feature_vector=event.feature_vector,
    )


async def setup(rt: Runtime) -> None:
    directory = await rt.node_directory()
    topology = fleet_topology(rt.settings.topology)

    heavy_lane = HeavySlot(rt.settings.heavy_lane)

    async def handle(event: TaskParsed, ctx: Context) -> TaskChecked:
        nodes = directory.require_online(rt.settings.node_timeout_s)
        fleet_max = max(status.max_circuit_qubits for status in nodes.values())
        split_max = split_capacity(FleetView.from_statuses(nodes, topology))
        async with heavy_lane(is_long(event.features)):
            return await off_loop(
                check, event, fleet_max, split_max, inline=is_small(event.circuit, event.features)
            )

    concurrency = laned_concurrency(rt.settings.heavy_lane, without=4)
    await rt.consume(Stage("logic", [TaskParsed], handle, concurrency=concurrency))
