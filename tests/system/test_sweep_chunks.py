"""A sweep cut into chunks of points on several nodes, its progress, and cancelling a running
sweep or one of its points, against a real stack of two like nodes. The time scale is high
enough (0.5) that a sweep runs for seconds: a 1,000-shot point holds ``ibm_nairobi`` for
0.14 s."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest

from benchmarks.sweep import grid, qaoa_circuit
from qubus.bus.connection import STREAM
from qubus.bus.ids import owner_of, sweep_point_id
from qubus.bus.messages import SubmitRequest, SweepProgress
from qubus.circuits import circuit_to_json
from qubus.client.aio import Client, progress_of, status_of, task_record

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

STACK_FLEET = ("ibm_nairobi", "ibm_hanoi")
STACK_SETTINGS = {"QUBUS_TIME_SCALE": "0.5"}


def sweep_request(points: int, shots: int, **options) -> SubmitRequest:
    return SubmitRequest(
        circuit=circuit_to_json(qaoa_circuit()), shots=shots, sweep=grid(points), **options
    )


async def stored_count(client: Client, subject: str) -> int:
    """How many events the task stream holds on ``subject`` (wildcards allowed)."""
    info = await client.bus.js.stream_info(STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def wait_for_points(client: Client, sweep_id: str, at_least: int) -> dict[str, int]:
    """The sweep's progress once at least ``at_least`` points have ended."""
    for _ in range(1200):
        progress = progress_of(await client.events(sweep_id))
        if progress is not None and progress.get("points_done", 0) >= at_least:
            return progress
        await asyncio.sleep(0.05)
    pytest.fail(f"sweep {sweep_id} never reached {at_least} points")


async def test_a_sweep_is_cut_into_chunks_on_both_nodes_and_ends_once(client, stack) -> None:
    reply = await client.submit(sweep_request(40, 200))
    traces = await client.wait_sweep(reply.task_id, 40, timeout=240)
    records = [task_record(sweep_point_id(reply.task_id, k), t) for k, t in enumerate(traces)]
    assert [r["status"] for r in records] == ["done"] * 40
    assert all(sum(r["counts"].values()) == 200 for r in records)
    ran_on = [r["nodes"][0] for r in records]
    # two contiguous chunks, one per node, in the allocator's order (the policy's node first)
    first = ran_on[0]
    cut = ran_on.index(next(node for node in ran_on if node != first))
    assert set(ran_on) == set(STACK_FLEET) and set(ran_on[cut:]) == {ran_on[cut]}
    assert 10 <= cut <= 30

    sweep = await client.events(reply.task_id)
    assert status_of(sweep) == "done"
    allocated = [e.event for e in sweep if e.event.EVENT == "allocated"]
    assert sorted((a.chunk.first, a.chunk.stop) for a in allocated) == [(0, cut), (cut, 40)]
    reports = [e.event for e in sweep if isinstance(e.event, SweepProgress)]
    assert {r.node for r in reports} == set(STACK_FLEET)
    assert progress_of(sweep) == {"points_done": 40, "points": 40}
    (completed,) = [e.event for e in sweep if e.event.EVENT == "completed"]
    assert sorted(completed.nodes) == sorted(STACK_FLEET) and completed.counts == {}
    measured = [r["measured_fidelity"] for r in records]
    assert completed.measured_fidelity == pytest.approx(sum(measured) / 40)
    # stored once, though either node's chunk may have ended last
    assert await stored_count(client, f"qubus.task.{reply.task_id}.completed.*") == 1


async def test_a_sweep_runs_on_after_its_node_is_killed_and_ends_exactly_once(
    client, stack
) -> None:
    reply = await client.submit(sweep_request(60, 1000))
    await wait_for_points(client, reply.task_id, 10)
    exits = stack.children["qpu:ibm_nairobi"].exits
    os.kill(stack.pid("qpu:ibm_nairobi"), signal.SIGKILL)

    traces = await client.wait_sweep(reply.task_id, 60, timeout=240)
    assert stack.children["qpu:ibm_nairobi"].exits == exits + 1
    assert [status_of(t) for t in traces] == ["done"] * 60
    for k in range(60):  # every point's result stored once: a chunk run again skips it
        point = sweep_point_id(reply.task_id, k)
        assert await stored_count(client, f"qubus.task.{point}.completed.*") == 1
    assert await stored_count(client, f"qubus.task.{reply.task_id}.completed.*") == 1


async def test_a_cancelled_point_is_left_out_and_the_sweep_still_ends(client, stack) -> None:
    reply = await client.submit(sweep_request(30, 1000, node="ibm_nairobi"))
    last = sweep_point_id(reply.task_id, 29)
    assert await client.cancel(last) is True
    traces = await client.wait_sweep(reply.task_id, 30, timeout=240)
    assert [status_of(t) for t in traces] == ["done"] * 29 + ["cancelled"]
    assert await stored_count(client, f"qubus.task.{last}.completed.*") == 0
    assert task_record(last, traces[29])["counts"] is None
    sweep = await client.events(reply.task_id)
    assert status_of(sweep) == "done"
    reports = [e.event for e in sweep if isinstance(e.event, SweepProgress)]
    assert max(r.done for r in reports) == 30 and max(r.completed for r in reports) == 29
    assert await client.cancel(sweep_point_id(reply.task_id, 3)) is False  # already done


async def test_a_running_sweep_shows_its_progress_and_stops_when_cancelled(
    client, stack, qubus_cli, nats_url
) -> None:
    reply = await client.submit(sweep_request(200, 1000, node="ibm_nairobi"))
    sweep_id = reply.task_id
    await wait_for_points(client, sweep_id, 10)
    code, out, err = await qubus_cli(nats_url, "status", sweep_id, "--json")
    assert code != 0, err  # not finished
    status = json.loads(out)
    assert status["status"] == "running" and status["progress"]["points"] == 200
    assert 10 <= status["progress"]["points_done"] < 200
    code, out, _ = await qubus_cli(nats_url, "status", sweep_id)
    assert out.startswith("running (") and out.rstrip().endswith("/200 points)")
    code, out, _ = await qubus_cli(nats_url, "trace", sweep_id)
    assert "chunk 1/1 on ibm_nairobi: " in out

    code, out, err = await qubus_cli(nats_url, "cancel", sweep_id)
    assert code == 0 and out.strip() == f"cancelled {sweep_id}", err
    traces = await client.wait_sweep(sweep_id, 200, timeout=60)
    await asyncio.sleep(2.0)  # a batch in flight when it was cancelled may still end
    every_completion = f"qubus.task.{owner_of(sweep_id)}.*.completed.*"
    ran = await stored_count(client, every_completion)
    await asyncio.sleep(2.0)
    assert await stored_count(client, every_completion) == ran  # nothing runs on
    statuses = [status_of(await client.events(sweep_point_id(sweep_id, k))) for k in range(200)]
    done = statuses.count("done")
    assert 10 <= done < 190 and statuses == ["done"] * done + ["cancelled"] * (200 - done)
    assert status_of(traces[199]) == "cancelled"
    assert status_of(await client.events(sweep_id)) == "cancelled"
