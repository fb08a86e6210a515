"""The allocator on the real stack: scored tasks decided together in micro-batches, and tasks
queued on a QPU whose process stops re-placed on another node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from qubus.bus.messages import SubmitRequest, TaskAllocated, TaskCompleted, TaskReplace
from qubus.cli.stack import ServiceSpec, Supervisor

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

VICTIM = "quantinuum_h1_1"  # the highest predicted fidelity: greedy_fidelity sends it all
SURVIVOR = "ibm_nairobi"
STACK_FLEET = [SURVIVOR]
NODE_TIMEOUT_S = 5.0
STACK_SETTINGS = {
    "QUBUS_POLICY": "greedy_fidelity",
    "QUBUS_BATCH_WINDOW_MS": "1500",
    "QUBUS_NODE_TIMEOUT_S": str(NODE_TIMEOUT_S),
    # a 1,000-shot Bell circuit holds the trapped-ion node about 2 s
    "QUBUS_TIME_SCALE": "0.5",
}
TASKS = 4


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def victim(nats_url, stack, tmp_path_factory) -> AsyncIterator[Supervisor]:
    """The victim QPU in a supervisor of its own, so a test can stop it for good."""
    supervisor = Supervisor(
        nats_url,
        [ServiceSpec("qpu", VICTIM)],
        log_dir=tmp_path_factory.mktemp("victim-logs"),
        env=dict(stack.env),  # the stack's settings
    )
    await supervisor.start(timeout=120)
    try:
        yield supervisor
    finally:
        await supervisor.stop()


def bell(dev_qasm) -> SubmitRequest:
    return SubmitRequest(circuit=(dev_qasm / "qasmbench__bell_n4.qasm").read_text(), shots=1000)


async def wait_for_node(client, node: str) -> None:
    for _ in range(100):
        if node in await client.bus.node_statuses(max_age_s=NODE_TIMEOUT_S):
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"{node} never reported")


async def test_tasks_scored_within_the_window_are_decided_together(client, victim, dev_qasm):
    await wait_for_node(client, VICTIM)
    records = await client.run([bell(dev_qasm) for _ in range(TASKS)], timeout=120)
    assert all(r["status"] == "done" for r in records), [r["error"] for r in records]
    completions = [await client.bus.last_event(r["task_id"], TaskCompleted) for r in records]
    assert {c.node for c in completions} == {VICTIM}
    decisions = []
    for record in records:
        events = [e.event for e in await client.events(record["task_id"])]
        (allocated,) = [e for e in events if isinstance(e, TaskAllocated)]
        decisions.append(allocated)
    assert all(d.policy == "greedy_fidelity" and d.attempt == 0 for d in decisions)
    assert max(d.batch_size for d in decisions) >= 2, [d.batch_size for d in decisions]
    batched = [d for d in decisions if d.batch_size > 1]
    assert all(f"batch of {d.batch_size}" in d.reason for d in batched)
    assert all(d.score is not None and d.score.node == VICTIM for d in decisions)


async def test_fidelity_floor_and_deadline_travel_from_submission_to_the_decision(
    client, victim, dev_qasm
):
    strict = bell(dev_qasm).model_copy(update={"fidelity_floor": 0.9999})
    timely = bell(dev_qasm).model_copy(update={"deadline_s": 600.0})
    rejected, done = await client.run([strict, timely], timeout=120)
    assert rejected["status"] == "rejected"
    assert rejected["error"]["code"] == "alloc.no_fit"
    assert "below the task's floor 0.9999" in rejected["error"]["message"]
    assert done["status"] == "done", done["error"]
    allocated = [
        e.event for e in await client.events(done["task_id"]) if isinstance(e.event, TaskAllocated)
    ]
    assert allocated[0].options.deadline_s == 600.0 and allocated[0].deadline_met is True
    assert "meets its deadline" in allocated[0].reason


async def test_tasks_queued_on_a_stopped_qpu_are_replaced_and_complete_once(
    client, victim, dev_qasm
):
    await wait_for_node(client, VICTIM)
    replies = await asyncio.gather(*(client.submit(bell(dev_qasm)) for _ in range(TASKS)))
    # Stop the victim for good once it runs one of them: the others wait in its queue.
    for _ in range(600):
        events = [await client.events(r.task_id) for r in replies]
        if any(s.event.EVENT == "running" for trace in events for s in trace):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("no task started on the victim")
    await victim.stop()

    traces = await asyncio.gather(*(client.wait(r.task_id, timeout=120) for r in replies))
    replaced = 0
    for trace in traces:
        events = [s.event for s in trace]
        names = [e.EVENT for e in events]
        assert names.count("completed") == 1, names
        assert "failed" not in names and "rejected" not in names
        allocations = [e for e in events if isinstance(e, TaskAllocated)]
        assert allocations[0].node == VICTIM and allocations[0].attempt == 0
        (completed,) = [e for e in events if isinstance(e, TaskCompleted)]
        replaces = [e for e in events if isinstance(e, TaskReplace)]
        if not replaces:  # it ran on the victim before it stopped
            assert completed.node == VICTIM and len(allocations) == 1
            continue
        replaced += 1
        (replace,) = replaces
        assert replace.node == VICTIM and replace.attempt == 0
        assert "reported no status" in replace.reason
        assert [a.attempt for a in allocations] == [0, 1]
        assert allocations[1].node == SURVIVOR == completed.node
    assert replaced >= 1


async def test_a_preference_travels_to_the_decision_and_its_reason(client, victim, dev_qasm):
    (done,) = await client.run([bell(dev_qasm).model_copy(update={"prefer": "time"})], timeout=120)
    assert done["status"] == "done", done["error"]
    (allocated,) = [
        e.event for e in await client.events(done["task_id"]) if isinstance(e.event, TaskAllocated)
    ]
    assert allocated.options.prefer == "time"
    assert "prefers time (λ = 10 s)" in allocated.reason
