"""A NATS client that is not Python (Node's `nats` package) submits and reads results through
the subjects the README documents, and sees what the Python client sees.

``tests/foreign/submit.mjs`` knows only the README: JSON on ``qubus.submit``, then the task's
events from stream ``QUBUS_TASKS``. Its npm packages are installed with ``npm ci`` from the
committed lock file on first use and kept in ``tests/foreign/node_modules``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from qubus.client.aio import Client, task_record

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

FOREIGN = Path(__file__).resolve().parents[1] / "foreign"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NODE = shutil.which("node")
NPM = shutil.which("npm")

if NODE is None or NPM is None:
    pytest.skip(
        "the foreign-client test needs Node.js and npm on PATH (node, npm); CI has them",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """``tests/foreign/node_modules`` as the lock file pins it; ``npm ci`` runs only when it is
    missing or older than ``package-lock.json``."""
    installed = FOREIGN / "node_modules" / ".package-lock.json"
    lock = FOREIGN / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run(
            [NPM, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=FOREIGN,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"npm ci failed in {FOREIGN}:\n{done.stderr[-4000:]}"
    return installed.parent


async def run_foreign(nats_url: str, circuit: Path, *args: str) -> dict[str, Any]:
    """Run ``node submit.mjs`` and return the one JSON line it prints."""
    process = await asyncio.create_subprocess_exec(
        NODE,
        "submit.mjs",
        "--server",
        nats_url,
        *args,
        str(circuit),
        cwd=FOREIGN,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=150)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, stderr.decode()[-4000:]
    [line] = stdout.decode().splitlines()
    return json.loads(line)


async def test_node_client_submits_json_and_reads_the_same_result_as_python(
    nats_url, stack, client: Client, node_modules
):
    result = await run_foreign(nats_url, EXAMPLES / "ghz.qasm", "--shots", "1500")

    assert result["status"] == "done", result["error"]
    assert result["duplicate"] is False
    assert result["events"][0] == "ingested"
    assert result["events"][-1] == f"completed.{result['node']}"
    assert result["shots"] == 1500
    assert sum(result["counts"].values()) == 1500
    assert {"0000", "1111"} <= set(result["counts"])
    assert 0.0 < result["measured_fidelity"] <= 1.0
    assert 0.0 < result["predicted_fidelity"] <= 1.0

    events = await client.events(result["task_id"])
    record = task_record(result["task_id"], events)
    assert record["status"] == "done"
    assert record["source"] == "ghz.qasm"
    assert result["counts"] == record["counts"]
    assert result["measured_fidelity"] == record["measured_fidelity"]
    assert result["predicted_fidelity"] == record["predicted_fidelity"]
    assert result["node"] == record["nodes"][0]
    prefix = f"qubus.task.{result['task_id']}."
    assert result["events"] == [stored.subject.removeprefix(prefix) for stored in events]
    assert f"allocated.{result['node']}" in result["events"]


async def test_node_client_reads_a_rejected_circuit_with_its_line(nats_url, stack, node_modules):
    result = await run_foreign(nats_url, EXAMPLES / "broken.qasm")

    assert result["status"] == "rejected"
    assert result["events"][0] == "ingested" and result["events"][-1] == "rejected"
    error = result["error"]
    assert error["code"].startswith("qasm.")
    assert error["line"] == 8  # `measure q -> d;`: the undeclared register
    assert isinstance(error["column"], int) and error["column"] >= 1
    assert "d" in error["message"]
    assert result["counts"] is None and result["measured_fidelity"] is None


async def test_node_client_gets_a_refused_submission_as_a_json_error(
    nats_url, stack, node_modules, tmp_path
):
    circuit = tmp_path / "not-json.json"
    circuit.write_text('{"cirq_type": "Circuit", ')

    result = await run_foreign(nats_url, circuit)

    assert result["status"] == "refused" and result["task_id"] is None
    assert result["error"]["code"] == "cirq_json.invalid"
    assert "not JSON" in result["error"]["message"]
    assert set(result["error"]) == {"code", "message", "line", "column"}
