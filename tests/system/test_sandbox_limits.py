"""Hostile circuits fail their tasks with a clear error; the sandbox service keeps serving."""

from __future__ import annotations

import pytest

from qubus.bus.messages import SubmitRequest

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

STACK_FLEET = ["quantinuum_h1_1"]
STACK_SETTINGS = {
    "QUBUS_SANDBOX_TIMEOUT_S": "1",
    "QUBUS_SANDBOX_MAX_QUBITS": "12",
    "QUBUS_SANDBOX_MAX_DEPTH": "200",
}


FEEDBACK = "if(c==1) x q[1];\nreset q[0];\nh q[0];\nmeasure q[0] -> c[0];\n"


def qasm(n_qubits: int, body: str) -> str:
    return (
        f'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[{n_qubits}];\ncreg c[{n_qubits}];\n'
        f"{body}measure q -> c;\n"
    )


async def test_hostile_circuits_fail_clearly_and_the_sandbox_serves_the_next(
    client, stack, dev_qasm
):
    hostile = {
        "sandbox.too_large": qasm(
            13, "h q[0];\n" + "".join(f"cx q[0],q[{i}];\n" for i in range(1, 13))
        ),
        "sandbox.too_deep": qasm(1, "h q[0];\n" * 201),
        # 5 rounds of feedback and reset: their exact form needs more qubits than the limit,
        # so the circuit is sampled shot by shot (tens of seconds); few enough for the QPU
        # nodes to emulate (15 rounds would be refused first as qpu.too_large: 34 qubits).
        "sandbox.timeout": qasm(2, "h q[0];\nh q[1];\nmeasure q -> c;\n" + FEEDBACK * 5),
    }
    records = await client.run(
        [SubmitRequest(circuit=text, shots=100) for text in hostile.values()], timeout=60
    )
    for code, record in zip(hostile, records, strict=True):
        assert record["status"] == "failed", record
        assert record["error"]["code"] == code
    assert "13 qubits exceed the sandbox's limit of 12" in records[0]["error"]["message"]
    assert "depth 202 exceeds the sandbox's limit of 200" in records[1]["error"]["message"]
    assert "time limit of 1 s" in records[2]["error"]["message"]

    normal = SubmitRequest(circuit=(dev_qasm / "qasmbench__bell_n4.qasm").read_text(), shots=500)
    [record] = await client.run([normal], timeout=60)
    assert record["status"] == "done", record["error"]
    sandbox = stack.children["sandbox"]
    assert sandbox.restarts == 0 and sandbox.process.exitcode is None
