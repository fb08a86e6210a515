"""A service killed with SIGKILL mid-flight loses no task and duplicates no result."""

from __future__ import annotations

import asyncio
import os
import signal

import nats.errors
import pytest

from qubus.bus.connection import SUBMIT_SUBJECT
from qubus.bus.messages import SubmitRequest
from qubus.bus.natsserver import NatsServer
from qubus.client.aio import Client
from qubus.errors import QubusError

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


async def test_a_submission_while_ingestion_restarts_is_retried_not_refused(
    client, stack, dev_qasm
):
    """Ingestion SIGKILLed with submissions in flight, and one sent while no ingestion process
    exists: the client tells a restarting ingestion (the stack's other services answer) from
    no stack, retries, and every task is accepted and completes once."""
    circuit = (dev_qasm / "qasmbench__bell_n4.qasm").read_text()
    exits = stack.children["ingestion"].exits
    in_flight = asyncio.gather(
        *(client.submit(SubmitRequest(circuit=circuit, shots=100), timeout=3) for _ in range(5))
    )
    os.kill(stack.pid("ingestion"), signal.SIGKILL)
    for _ in range(200):
        if stack.children["ingestion"].exits > exits:
            break
        await asyncio.sleep(0.01)
    # No ingestion process now: a bare request has no responder, as the client's first try.
    with pytest.raises(nats.errors.NoRespondersError):
        await client.bus.nc.request(SUBMIT_SUBJECT, b"", timeout=2)
    late = await client.submit(SubmitRequest(circuit=circuit, shots=100))
    replies = [*await in_flight, late]

    assert stack.children["ingestion"].exits == exits + 1
    assert len({r.task_id for r in replies}) == len(replies)
    for reply in replies:
        names = [s.event.EVENT for s in await client.wait(reply.task_id, timeout=120)]
        assert names.count("ingested") == 1 and names.count("completed") == 1, names


async def test_a_server_without_a_stack_refuses_a_submission_at_once():
    """No qubus service answers on this server: ``stack.unavailable``, not 30 s of retries."""
    server = NatsServer()
    try:
        client = await Client.connect(server.start())
        try:
            with pytest.raises(QubusError) as refused:
                await client.submit(SubmitRequest(circuit="OPENQASM 2.0;"))
            assert refused.value.code == "stack.unavailable"
        finally:
            await client.close()
    finally:
        server.stop()
