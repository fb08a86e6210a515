"""Split placement through the real stack: a forced split with perfect links and no noise
reproduces the ideal distribution, and a circuit no node holds is split by itself.

The fleet's two nodes, IBM Nairobi (7 qubits) and Manila (5), are neighbours in the link
service's default ring over the default fleet.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qubus.scheduling.replacement import latest_allocation

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

STACK_FLEET = ["ibm_nairobi", "ibm_manila"]
SHOTS = 2000


def ghz_file(directory: Path, n: int) -> str:
    """An OpenQASM 2 GHZ circuit on ``n`` qubits, measured."""
    lines = ["OPENQASM 2.0;", 'include "qelib1.inc";', f"qreg q[{n}];", f"creg c[{n}];", "h q[0];"]
    lines += [f"cx q[{i}],q[{i + 1}];" for i in range(n - 1)]
    lines.append("measure q -> c;")
    path = directory / f"ghz{n}.qasm"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


async def run_json(qubus_cli, nats_url: str, *args: str) -> dict:
    code, out, err = await qubus_cli(nats_url, "submit", *args, "--wait", "--json", timeout=180)
    record = json.loads(out)
    assert code == 0, (record["error"], err)
    return record


async def test_a_forced_noiseless_split_on_ideal_links_reproduces_the_ideal_counts(
    client, qubus_cli, nats_url, tmp_path
):
    record = await run_json(
        qubus_cli,
        nats_url,
        ghz_file(tmp_path, 4),
        "--split",
        "2",
        "--ideal-links",
        "--noiseless",
        "--shots",
        str(SHOTS),
    )
    assert sorted(record["nodes"]) == sorted(STACK_FLEET)
    assert record["ebits"] >= 1
    assert set(record["counts"]) == {"0000", "1111"}
    assert sum(record["counts"].values()) == SHOTS
    assert record["measured_fidelity"] > 0.99  # two equal outcomes, 2000 samples
    allocated = await latest_allocation(client.bus, record["task_id"])
    assert allocated is not None and allocated.split is not None
    assert allocated.node == allocated.split.nodes[0] and "2 parts asked for" in allocated.reason


async def test_a_circuit_wider_than_every_node_is_split_by_itself(
    client, qubus_cli, nats_url, tmp_path
):
    record = await run_json(
        qubus_cli, nats_url, ghz_file(tmp_path, 9), "--noiseless", "--shots", str(SHOTS)
    )
    assert sorted(record["nodes"]) == sorted(STACK_FLEET) and record["ebits"] >= 1
    assert sum(record["counts"].values()) == SHOTS  # noiseless QPUs, noisy links
    assert abs(record["measured_fidelity"] - record["predicted_fidelity"]) < 0.1
    code, out, err = await qubus_cli(nats_url, "trace", record["task_id"])
    assert code == 0, err
    assert "no single node can take the task; split over" in out and "EPR pairs" in out


async def test_a_circuit_wider_than_the_linked_nodes_together_is_rejected(
    client, qubus_cli, nats_url, tmp_path
):
    code, out, err = await qubus_cli(
        nats_url, "submit", ghz_file(tmp_path, 14), "--wait", "--json", timeout=120
    )
    record = json.loads(out)
    assert code == 1 and record["status"] == "rejected"
    assert record["error"]["code"] == "L008" and "together" in record["error"]["message"]
