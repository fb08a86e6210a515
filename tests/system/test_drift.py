"""A drifting node publishes each replayed calibration, and tasks run on the current one."""

from __future__ import annotations

import asyncio
import time

import pytest

from qubus.bus.messages import SubmitRequest, TaskCompleted
from qubus.devices.profiles import drift_devices

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

NODE = "ibm_perth"
PERIOD_S = 0.5
STACK_FLEET = [NODE]
STACK_SETTINGS = {
    "QUBUS_DRIFT_PERIOD_S": str(PERIOD_S),
}


async def test_replayed_calibrations_are_published_in_order_and_used(client, dev_qasm):
    snapshots = {d.revision: i for i, d in enumerate(drift_devices(NODE))}
    seen: list[str] = []
    deadline = time.monotonic() + 8 * PERIOD_S
    while time.monotonic() < deadline:
        status = (await client.bus.node_statuses())[NODE]
        if not seen or seen[-1] != status.calibration_revision:
            seen.append(status.calibration_revision)
        await asyncio.sleep(PERIOD_S / 4)
    # Every published revision is one of the node's real snapshots, in replay order.
    indices = [snapshots[revision] for revision in seen]
    assert len(indices) >= 3, seen
    assert indices == sorted(indices)

    request = SubmitRequest(
        circuit=(dev_qasm / "qasmbench__bell_n4.qasm").read_text(), shots=300, node=NODE
    )
    [record] = await client.run([request], timeout=60)
    assert record["status"] == "done", record["error"]
    completed = await client.bus.last_event(record["task_id"], TaskCompleted)
    assert completed is not None and completed.calibration_revision in snapshots
