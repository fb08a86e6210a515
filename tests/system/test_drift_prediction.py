"""A task allocated on one calibration of a drifting node and run on a later one reports the
prediction of the calibration it ran on."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import cirq
import pytest

from qubus.bus.logs import split_lines
from qubus.bus.messages import SubmitRequest, TaskAllocated, TaskCompleted
from qubus.circuits import circuit_from_wire
from qubus.devices.compile import compile_for_device
from qubus.devices.prediction import predict_fidelity
from qubus.devices.profiles import Device, drift_devices

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

NODE = "ibm_perth"
PERIOD_S = 0.5
SHOTS = 300
STACK_FLEET = [NODE]
STACK_SETTINGS = {
    # A 300-shot Bell circuit holds the node ~0.54 s (its modelled ~1.08 s × 0.5), longer
    # than a calibration lasts: tasks queued behind it run on a later calibration.
    "QUBUS_TIME_SCALE": "0.5",
    "QUBUS_DRIFT_PERIOD_S": str(PERIOD_S),
}


def predicted_on(device: Device, circuit: cirq.Circuit, ideal: dict[str, float]) -> float:
    """The Hellinger fidelity predicted for SHOTS shots of the circuit on this calibration."""
    return predict_fidelity(compile_for_device(circuit, device), device, ideal, shots=SHOTS)


async def test_prediction_is_recomputed_on_the_calibration_the_task_ran_on(client, dev_qasm):
    snapshots = {device.revision: device for device in drift_devices(NODE)}
    recomputed_logs: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def collect(msg) -> None:
        for line in map(json.loads, split_lines(msg.data)):
            if line.get("event") == "qpu.prediction_recomputed" and "task_id" in line:
                recomputed_logs[line["task_id"]].set()

    text = (dev_qasm / "qasmbench__bell_n4.qasm").read_text()
    requests = [SubmitRequest(circuit=text, shots=SHOTS, node=NODE) for _ in range(4)]
    sub = await client.bus.nc.subscribe("qubus.log.qpu.*", cb=collect)
    try:
        records = await client.run(requests, timeout=120)
        recomputed = []
        for record in records:
            assert record["status"] == "done", record["error"]
            events = {type(s.event): s.event for s in await client.events(record["task_id"])}
            allocated, completed = events[TaskAllocated], events[TaskCompleted]
            # Both revisions are real snapshots: the allocation says which one it used.
            assert allocated.calibration_revision in snapshots
            assert completed.calibration_revision in snapshots
            assert completed.allocated_fidelity == allocated.predicted_fidelity
            circuit = circuit_from_wire(allocated.circuit)
            assert allocated.predicted_fidelity == pytest.approx(
                predicted_on(snapshots[allocated.calibration_revision], circuit, allocated.ideal)
            )
            if completed.calibration_revision == allocated.calibration_revision:
                assert completed.predicted_fidelity == allocated.predicted_fidelity
                continue
            assert completed.predicted_fidelity == pytest.approx(
                predicted_on(snapshots[completed.calibration_revision], circuit, allocated.ideal)
            )
            recomputed.append(record["task_id"])
        assert recomputed, "every task ran on the calibration it was allocated on"
        for task_id in recomputed:
            await asyncio.wait_for(recomputed_logs[task_id].wait(), 10)
    finally:
        await sub.unsubscribe()
