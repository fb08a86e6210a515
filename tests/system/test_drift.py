"""A drifting node publishes each replayed calibration, and tasks run on the current one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from qubus.devices import drift_devices
from qubus.messages import SubmitRequest, TaskCompleted
from qubus.stack import Supervisor

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

NODE = "ibm_perth"
PERIOD_S = 0.5
DRIFT_ENV = {
    "QUBUS_ACK_WAIT_S": "3",
    "QUBUS_TIME_SCALE": "0.05",
    "QUBUS_NODE_TIMEOUT_S": "10",
    "QUBUS_DRIFT_PERIOD_S": str(PERIOD_S),
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    nats_url: str, tmp_path_factory: pytest.TempPathFactory, start_stack
) -> AsyncIterator[Supervisor]:
    log_dir = tmp_path_factory.mktemp("logs")
    async with start_stack(nats_url, log_dir, [NODE], DRIFT_ENV) as supervisor:
        yield supervisor


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
