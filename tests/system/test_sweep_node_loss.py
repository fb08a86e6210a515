"""A sweep cut into chunks on two like nodes, one of which stops reporting (its process
SIGSTOPped) while running its chunk: the allocator places that chunk on the other node, which
runs the points not yet run; the sweep ends once, every point stored once, and the stopped
node, resumed, adds nothing."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from benchmarks.sweep import grid, qaoa_circuit
from qubus.bus.connection import STREAM
from qubus.bus.ids import owner_of, split_task_subject, sweep_point_id
from qubus.bus.messages import SubmitRequest, SweepProgress, TaskAllocated
from qubus.circuits import circuit_to_json
from qubus.client.aio import Client, status_of, task_record

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

STACK_FLEET = ("ibm_nairobi", "ibm_hanoi")
# A 1,000-shot point holds a node for 0.14 s; a node counts as gone 4 s after its last
# status, and the allocator looks every 1.3 s.
STACK_SETTINGS = {"QUBUS_TIME_SCALE": "0.5", "QUBUS_NODE_TIMEOUT_S": "4"}
POINTS = 100


async def first_report(client: Client, sweep_id: str, chunk: int) -> SweepProgress:
    """The first progress report of the sweep's chunk ``chunk``."""
    for _ in range(1200):
        for stored in await client.events(sweep_id):
            if isinstance(stored.event, SweepProgress) and stored.event.chunk == chunk:
                return stored.event
        await asyncio.sleep(0.05)
    pytest.fail(f"chunk {chunk} of sweep {sweep_id} never reported")


async def completions_by_task(client: Client, sweep_id: str) -> dict[str, int]:
    """How many ``completed`` events the stream holds for the sweep and each of its points."""
    subject = f"qubus.task.{owner_of(sweep_id)}.*.completed.*"
    info = await client.bus.js.stream_info(STREAM, subjects_filter=subject)
    stored: dict[str, int] = {}
    for name, n in (info.state.subjects or {}).items():
        task_id, _ = split_task_subject(name)
        stored[task_id] = stored.get(task_id, 0) + n
    return stored


async def test_a_stopped_nodes_chunk_runs_on_the_other_node_and_the_sweep_ends_once(
    client, stack
) -> None:
    request = SubmitRequest(circuit=circuit_to_json(qaoa_circuit()), shots=1000, sweep=grid(POINTS))
    sweep_id = (await client.submit(request)).task_id
    report = await first_report(client, sweep_id, chunk=1)
    stopped = report.node
    (other,) = set(STACK_FLEET) - {stopped}
    process = stack.children[f"qpu:{stopped}"].process
    os.kill(process.pid, signal.SIGSTOP)
    try:
        traces = await client.wait_sweep(sweep_id, POINTS, timeout=240)
    finally:
        os.kill(process.pid, signal.SIGCONT)
    assert [status_of(t) for t in traces] == ["done"] * POINTS

    sweep = await client.events(sweep_id)
    assert status_of(sweep) == "done"
    allocated = [e.event for e in sweep if isinstance(e.event, TaskAllocated)]
    moved = [a for a in allocated if a.attempt == 1]
    assert [(a.chunk.index, a.node) for a in moved if a.chunk] == [(1, other)]
    assert f"moved from {stopped}" in moved[0].reason
    chunk = moved[0].chunk
    ran_on = [
        task_record(sweep_point_id(sweep_id, k), traces[k])["nodes"][0]
        for k in range(chunk.first, chunk.stop)
    ]
    # the points the stopped node had reported stay its own; the rest ran on the other node
    assert ran_on[: report.done] == [stopped] * report.done
    assert other in ran_on[report.done :]
    (completed,) = [e.event for e in sweep if e.event.EVENT == "completed"]
    assert other in completed.nodes

    await asyncio.sleep(3)  # the resumed node drops the batch it was running
    stored = await completions_by_task(client, sweep_id)
    points = [sweep_point_id(sweep_id, k) for k in range(POINTS)]
    assert {task_id: stored.get(task_id, 0) for task_id in [sweep_id, *points]} == dict.fromkeys(
        [sweep_id, *points], 1
    )
    assert process.is_alive() and stack.children[f"qpu:{stopped}"].restarts == 0
