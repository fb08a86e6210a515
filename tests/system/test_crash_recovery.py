"""A service killed with SIGKILL mid-flight loses no task and duplicates no result."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from qubus.bus.messages import SubmitRequest

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

TASKS = 10


@pytest.mark.parametrize("victim", ["qpu:ibm_nairobi", "sandbox"])
async def test_sigkilled_service_restarts_and_every_task_completes_exactly_once(
    client, stack, dev_qasm, victim
):
    text = (dev_qasm / "qasmbench__bell_n4.qasm").read_text()
    requests = [SubmitRequest(circuit=text, shots=4000, node="ibm_nairobi") for _ in range(TASKS)]
    replies = await asyncio.gather(*(client.submit(r) for r in requests))

    # Kill the victim once the first task has reached it, so others are still in flight.
    first = replies[0].task_id
    reached = "running" if victim.startswith("qpu") else "checked"
    for _ in range(600):
        if any(reached == e.event.EVENT for e in await client.events(first)):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail(f"task {first} never reached {reached}")
    exits = stack.children[victim].exits
    os.kill(stack.pid(victim), signal.SIGKILL)

    traces = await asyncio.gather(*(client.wait(r.task_id, timeout=180) for r in replies))
    assert stack.children[victim].exits == exits + 1
    for trace in traces:
        names = [stored.event.EVENT for stored in trace]
        assert names.count("completed") == 1, names
        assert "failed" not in names and "rejected" not in names
    # Nothing arrives late: each task's stream record still holds exactly one result.
    for reply in replies:
        names = [stored.event.EVENT for stored in await client.events(reply.task_id)]
        assert names.count("completed") == 1
