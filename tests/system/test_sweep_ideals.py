"""A sweep whose sandbox's second publication (every point's ideal distribution,
``eval.ideals``) fails or never comes while its QPU node already runs it: the node publishes
no point without its ideal distribution, and the sweep ends once, with a code if it fails.
Sweeps of 1,000 points of 100 shots: the sandbox's second call takes long enough (~0.1 s) for
the sweep to be placed, or the sandbox killed, before it ends."""

from __future__ import annotations

import os
import signal

import pytest

from benchmarks.sweep import grid, qaoa_circuit
from qubus.bus.connection import STREAM
from qubus.bus.messages import SubmitRequest
from qubus.circuits import circuit_to_json
from qubus.client.aio import Client, status_of, task_record
from qubus.devices.sweeps import sample_points
from qubus.scheduling.sweepchunks import FIRST_BATCH_POINTS

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

POINTS = 1000
GHZ = (
    'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[3];\ncreg c[3];\n'
    "h q[0];\ncx q[0],q[1];\ncx q[1],q[2];\nmeasure q -> c;\n"
)


def sweep_request(points: list[dict[str, float]]) -> SubmitRequest:
    return SubmitRequest(
        circuit=circuit_to_json(qaoa_circuit()), shots=100, sweep=points, node="ibm_nairobi"
    )


async def stored_counts(client: Client, subject: str) -> dict[str, int]:
    """How many events the task stream holds on each subject matching ``subject``."""
    info = await client.bus.js.stream_info(STREAM, subjects_filter=subject)
    return dict(info.state.subjects or {})


async def point_completions(client: Client, sweep_id: str) -> dict[str, int]:
    """How many ``completed`` events each of the sweep's points has stored."""
    owner, _ = sweep_id.split(".")
    counts = await stored_counts(client, f"qubus.task.{owner}.*.completed.*")
    prefix = f"qubus.task.{sweep_id}-"
    return {subject: n for subject, n in counts.items() if subject.startswith(prefix)}


async def test_a_point_failing_its_numerics_in_the_second_call_fails_the_sweep_without_points(
    client, stack
) -> None:
    points = grid(POINTS)
    bad = POINTS // 2  # run after the node's first batches, and not in the sandbox's sample
    assert bad not in sample_points(POINTS) and bad >= 3 * FIRST_BATCH_POINTS
    points[bad] = {"gamma": 1e308, "beta": 0.3}  # rz(2·gamma): an angle that overflows
    reply = await client.submit(sweep_request(points))
    traces = await client.wait_sweep(reply.task_id, POINTS, timeout=180)

    sweep = await client.events(reply.task_id)
    record = task_record(reply.task_id, sweep)
    assert record["status"] == "failed" and record["error"]["code"] == "sandbox.numerical"
    assert str(points[bad]) in record["error"]["message"]
    events = [stored.event.EVENT for stored in sweep]
    assert "eval.sandbox" in events and "eval.ideals" not in events
    assert events.count("failed") == 1
    assert await point_completions(client, reply.task_id) == {}  # the node published none
    assert {status_of(t) for t in traces} == {"failed"}


async def test_a_sweep_that_failed_while_its_allocation_waited_is_never_started(
    client, stack
) -> None:
    """The node is busy with a long sweep (100 points of 10,000 shots: about 12 s at the
    tests' time scale) while a second sweep is placed on it and fails in the sandbox: when
    the second's turn comes the node neither runs it nor publishes its ``running``."""
    busy = SubmitRequest(
        circuit=circuit_to_json(qaoa_circuit()), shots=10_000, sweep=grid(100), node="ibm_nairobi"
    )
    started = await client.bus.nc.subscribe("qubus.task.*.*.running.*")
    try:
        blocker = (await client.submit(busy)).task_id
        while not (await started.next_msg(timeout=120)).subject.startswith(
            f"qubus.task.{blocker}."
        ):
            pass
    finally:
        await started.unsubscribe()
    points = grid(POINTS)
    points[POINTS // 2] = {"gamma": 1e308, "beta": 0.3}
    reply = await client.submit(sweep_request(points))
    await client.wait_sweep(reply.task_id, POINTS, timeout=120)
    # The second sweep failed while the node still ran the first: before its turn came.
    assert status_of(await client.events(blocker)) == "running"
    assert status_of(await client.wait(blocker, timeout=180)) == "done"
    # A task placed on the node after the blocker's end runs once the node has taken the
    # failed sweep's allocation in its turn.
    after = await client.submit(SubmitRequest(circuit=GHZ, shots=100, node="ibm_nairobi"))
    assert status_of(await client.wait(after.task_id, timeout=60)) == "done"

    events = [stored.event.EVENT for stored in await client.events(reply.task_id)]
    assert events.count("failed") == 1 and "running" not in events
    assert await point_completions(client, reply.task_id) == {}


async def test_a_sandbox_killed_between_its_publications_leaves_the_sweep_to_end_once(
    client, stack
) -> None:
    published = await client.bus.nc.subscribe("qubus.task.*.*.eval.sandbox")
    exits = stack.children["sandbox"].exits
    try:
        reply = await client.submit(sweep_request(grid(POINTS)))
        own = f"qubus.task.{reply.task_id}.eval.sandbox"
        while (await published.next_msg(timeout=120)).subject != own:
            pass
        os.kill(stack.pid("sandbox"), signal.SIGKILL)  # now in its second call
    finally:
        await published.unsubscribe()
    traces = await client.wait_sweep(reply.task_id, POINTS, timeout=240)

    assert stack.children["sandbox"].exits == exits + 1
    sweep = await client.events(reply.task_id)
    assert status_of(sweep) == "done"
    by_event = {stored.event.EVENT: stored for stored in sweep}
    # every point's distribution came from the sandbox that took the redelivered message
    assert by_event["eval.ideals"].instance != by_event["eval.sandbox"].instance
    assert [status_of(t) for t in traces] == ["done"] * POINTS
    assert sorted((await point_completions(client, reply.task_id)).values()) == [1] * POINTS
    ends = await stored_counts(client, f"qubus.task.{reply.task_id}.completed.*")
    assert list(ends.values()) == [1]


async def test_a_sweep_whose_ideals_never_come_fails_with_a_code_and_no_points(
    client, stack
) -> None:
    """The sandbox frozen (SIGSTOP) in its second call: its message is delivered again to no
    one who answers, and the node gives the chunk back after each wait until its last
    delivery fails the sweep."""
    published = await client.bus.nc.subscribe("qubus.task.*.*.eval.sandbox")
    sandbox = stack.pid("sandbox")
    try:
        reply = await client.submit(sweep_request(grid(POINTS)))
        own = f"qubus.task.{reply.task_id}.eval.sandbox"
        while (await published.next_msg(timeout=120)).subject != own:
            pass
        os.kill(sandbox, signal.SIGSTOP)
        traces = await client.wait_sweep(reply.task_id, POINTS, timeout=240)
    finally:
        os.kill(sandbox, signal.SIGCONT)
        await published.unsubscribe()

    sweep = await client.events(reply.task_id)
    record = task_record(reply.task_id, sweep)
    assert record["status"] == "failed" and record["error"]["code"] == "qpu.ideals_missing"
    events = [stored.event.EVENT for stored in sweep]
    assert "eval.ideals" not in events and events.count("failed") == 1
    assert await point_completions(client, reply.task_id) == {}
    assert {status_of(t) for t in traces} == {"failed"}
