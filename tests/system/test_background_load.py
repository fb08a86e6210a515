"""A node with background load reports a real backend's replayed queue in its status, the
allocator sees it, and the node's tasks wait behind it."""

from __future__ import annotations

import asyncio
import time

import pytest

from qubus.bus.messages import SubmitRequest, TaskRunning, TaskScored
from qubus.devices.emulation import JOB_OVERHEAD_S
from qubus.devices.load import load_series

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

NODE = "ibm_perth"  # replays ibm_perth's queue: 1,072 to 1,328 jobs over its first 300 bins
PERIOD_S = 0.5
TIME_SCALE = 0.001
STACK_FLEET = [NODE]
STACK_SETTINGS = {
    "QUBUS_TIME_SCALE": str(TIME_SCALE),
    "QUBUS_BACKGROUND_LOAD": "1",
    "QUBUS_LOAD_PERIOD_S": str(PERIOD_S),
}


def is_in_order_within(seen: list[int], series: tuple[int, ...]) -> bool:
    """Whether ``seen`` is a subsequence of ``series`` (each value found after the last)."""
    rest = iter(series)
    return all(value in rest for value in seen)


async def test_status_reports_the_replayed_queue_in_order(client):
    series = load_series()[NODE][:300]
    seen: list[int] = []
    deadline = time.monotonic() + 8 * PERIOD_S
    while time.monotonic() < deadline:
        status = (await client.bus.node_statuses())[NODE]
        assert status.queue_depth >= status.background_jobs
        if not seen or seen[-1] != status.background_jobs:
            seen.append(status.background_jobs)
        await asyncio.sleep(PERIOD_S / 4)
    assert len(seen) >= 3, seen
    assert is_in_order_within(seen, series), seen
    # No task has run yet: the node's job time is its kind's per-job overhead.
    assert status.mean_job_s == JOB_OVERHEAD_S["superconducting"]


async def test_task_waits_for_the_jobs_queued_when_it_arrived(client, dev_qasm):
    least = min(load_series()[NODE][:300])
    request = SubmitRequest(
        circuit=(dev_qasm / "qasmbench__bell_n4.qasm").read_text(), shots=300, node=NODE
    )
    [record] = await client.run([request], timeout=60)
    assert record["status"] == "done", record["error"]
    scored = await client.bus.last_event(record["task_id"], TaskScored)
    running = await client.bus.last_event(record["task_id"], TaskRunning)
    assert scored is not None and running is not None
    # The allocator saw the background jobs in the node's queue and their time.
    [score] = scored.scores
    assert score.queue_depth >= least
    assert score.expected_completion_s >= least * JOB_OVERHEAD_S["superconducting"]
    # At least `least` jobs of 1 modelled second each, at TIME_SCALE, were ahead of it.
    assert running.queue_wait_s >= least * JOB_OVERHEAD_S["superconducting"] * TIME_SCALE
