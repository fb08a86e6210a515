"""Long emulations on a QPU node: refused up front when their cost estimate is over the node's
limit, reporting progress while they run, and stopped at the node when cancelled."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from qubus.bus.messages import SubmitRequest

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

STACK_FLEET = ["quantinuum_h1_1"]
STACK_SETTINGS = {"QUBUS_QPU_MAX_EMULATION_S": "120"}
QRAM = "qasmbench__qram_n20.qasm"


def layers(n_qubits: int, depth: int) -> str:
    """A brickwork circuit of ``depth`` layers of H and CX on ``n_qubits`` qubits."""
    body = ""
    for layer in range(depth):
        body += "".join(f"h q[{i}];\n" for i in range(n_qubits))
        body += "".join(f"cx q[{i}],q[{i + 1}];\n" for i in range(layer % 2, n_qubits - 1, 2))
    return (
        f'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[{n_qubits}];\ncreg c[{n_qubits}];\n'
        f"{body}measure q -> c;\n"
    )


async def events_of(client, task_id: str) -> list[str]:
    return [stored.event.EVENT for stored in await client.events(task_id)]


async def test_an_emulation_over_the_limit_is_refused_with_its_estimate(client, stack, dev_qasm):
    request = SubmitRequest(circuit=(dev_qasm / QRAM).read_text(), shots=100_000)
    [record] = await client.run([request], timeout=120)
    assert record["status"] == "rejected", record
    assert record["error"]["code"] == "qpu.too_large"
    message = record["error"]["message"]
    shape = r"trajectories of 20 qubits, \d+ operations × \d+ trajectories: about"
    assert re.search(shape, message)
    assert "over its limit of 120 s" in message


async def test_a_running_emulation_reports_progress_and_stops_when_cancelled(
    client, stack, qubus_cli, nats_url
):
    # 36 layers: some 9 s alone (its trajectories share most of their gates; 12 layers took
    # 1 s), long enough to be cancelled while it runs
    reply = await client.submit(SubmitRequest(circuit=layers(14, 36), shots=40_000))
    task_id = reply.task_id
    deadline = time.monotonic() + 180
    while "progress" not in await events_of(client, task_id):
        assert time.monotonic() < deadline, await events_of(client, task_id)
        assert "completed" not in await events_of(client, task_id)
        await asyncio.sleep(0.5)
    code, out, err = await qubus_cli(nats_url, "status", task_id)
    assert code == 3 and re.fullmatch(r"running \(\d+/40000 shots\)\n", out), (out, err)

    code, out, err = await qubus_cli(nats_url, "cancel", task_id)
    assert (code, out) == (0, f"cancelled {task_id}\n"), err
    cancelled = time.monotonic()
    node = "quantinuum_h1_1"
    while (await client.bus.node_statuses())[node].busy:
        assert time.monotonic() - cancelled < 20, "the node is still running the cancelled task"
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)  # a run that went on would complete well after this
    events = await events_of(client, task_id)
    assert "cancelled" in events and "completed" not in events
    assert stack.children[f"qpu:{node}"].restarts == 0
