"""Sweeps against a real stack: one submission of a parameterised circuit whose points run and
report as tasks of the sweep, through the SDK, the asyncio client and the command line."""

from __future__ import annotations

import json

import pytest

import qubus
from benchmarks.sweep import grid, qaoa_circuit
from qubus.bus.ids import sweep_point_id
from qubus.bus.messages import (
    NoiseEvaluation,
    SandboxEvaluation,
    SubmitRequest,
    SweepIdeals,
    TaskAllocated,
    TaskCompleted,
)
from qubus.circuits import circuit_to_json
from qubus.client.aio import Client, status_of, task_record
from qubus.client.sync import TaskError
from qubus.devices.fidelity import hellinger_fidelity, mean_predicted_fidelity
from qubus.devices.sweeps import SAMPLE_POINTS, sample_points

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def session(nats_url: str, stack):
    with qubus.connect(nats_url) as q:
        yield q


def test_a_sweep_is_one_task_whose_points_run_as_tasks(session, nats_url) -> None:
    points = grid(4)
    sweep = session.submit_sweep(qaoa_circuit(), points, shots=300, node="ibm_nairobi")
    results = sweep.results(timeout=180)

    assert sweep.task_ids == [f"{sweep.task_id}-{k}" for k in range(4)]
    assert [r.task_id for r in results] == sweep.task_ids
    assert all(
        r.status == "done" and r.shots == 300 and r.nodes == ["ibm_nairobi"] for r in results
    )
    # gamma = beta = 0 leaves H on every qubit: all 64 outcomes; the others differ from it
    assert len(results[0].counts) > 40 and results[1].counts != results[0].counts
    assert all(0 < r.measured_fidelity <= 1 for r in results)
    assert sweep.status() == "done"
    # each point's trace: the sweep's shared stages, once, then its own end
    events = [row["event"] for row in results[2].trace]
    assert events[:2] == ["ingested", "parsed"] and events.count("parsed") == 1
    assert events[-1] == "completed" and "allocated" in events
    assert session.job(sweep.task_ids[3]).status() == "done"
    assert session.job(sweep.task_ids[3]).result(timeout=60).counts == results[3].counts


def test_an_ended_sweep_or_point_is_not_cancelled(session) -> None:
    sweep = session.submit_sweep(qaoa_circuit(), grid(2), shots=100)
    sweep.results(timeout=180)
    assert session.job(sweep.task_ids[1]).cancel() is False  # already ended
    assert sweep.cancel() is False


def test_points_that_miss_a_parameter_reject_the_sweep_and_each_point(session) -> None:
    sweep = session.submit_sweep(qaoa_circuit(), [{"gamma": 0.1}, {"gamma": 0.2}], shots=100)
    with pytest.raises(TaskError) as caught:
        sweep.results(timeout=120)
    assert caught.value.code == "sweep.parameters" and "missing ['beta']" in str(caught.value)
    assert sweep.status() == "rejected"
    assert session.job(sweep.task_ids[1]).status() == "rejected"


@pytest.mark.asyncio(loop_scope="module")
async def test_the_async_client_waits_for_a_sweep_with_one_reader(nats_url, stack) -> None:
    from qubus.bus.messages import SubmitRequest

    client = await Client.connect(nats_url)
    try:
        request = SubmitRequest(
            circuit=circuit_to_json(qaoa_circuit()), shots=100, sweep=grid(3), noiseless=True
        )
        reply = await client.submit(request)
        traces = await client.wait_sweep(reply.task_id, 3, timeout=180)
        assert [status_of(events) for events in traces] == ["done"] * 3
        point = sweep_point_id(reply.task_id, 2)
        assert (
            task_record(point, await client.wait(point))["counts"]
            == task_record(point, traces[2])["counts"]
        )
    finally:
        await client.close()


@pytest.mark.asyncio(loop_scope="module")
async def test_a_sweep_is_placed_on_a_sample_and_its_points_predicted_over_all(nats_url, stack):
    """The sandbox publishes a sample's ideal distributions, which fusion places the sweep
    with, then every point's (``eval.ideals``), against which the node measures each point
    and over which it predicts the points' fidelity."""
    client = await Client.connect(nats_url)
    try:
        request = SubmitRequest(
            circuit=circuit_to_json(qaoa_circuit()), shots=200, sweep=grid(20), node="ibm_nairobi"
        )
        reply = await client.submit(request)
        traces = await client.wait_sweep(reply.task_id, 20, timeout=180)
        sandbox = await client.bus.last_event(reply.task_id, SandboxEvaluation)
        ideals = await client.bus.last_event(reply.task_id, SweepIdeals)
        noise = await client.bus.last_event(reply.task_id, NoiseEvaluation)
        allocated = await client.bus.last_event(reply.task_id, TaskAllocated)
        completed = await client.bus.last_event(reply.task_id, TaskCompleted)
    finally:
        await client.close()
    assert sandbox and ideals and noise and allocated and completed
    assert len(ideals.ideals) == 20 and len(sandbox.sweep_ideals) == SAMPLE_POINTS
    assert sandbox.sweep_ideals == [ideals.ideals[k] for k in sample_points(20)]
    prediction = next(p for p in noise.predictions if p.node == "ibm_nairobi")
    sampled = mean_predicted_fidelity(prediction, sandbox.sweep_ideals, 200)
    every = mean_predicted_fidelity(prediction, ideals.ideals, 200)
    assert allocated.predicted_fidelity == pytest.approx(sampled) and sampled != every
    for k, events in enumerate(traces):
        record = task_record(sweep_point_id(reply.task_id, k), events)
        assert record["status"] == "done" and record["predicted_fidelity"] == pytest.approx(every)
        measured = hellinger_fidelity(record["counts"], ideals.ideals[k])
        assert record["measured_fidelity"] == pytest.approx(measured)
    assert completed.predicted_fidelity == pytest.approx(every)


async def submit_sweep(qubus_cli, nats_url: str, circuit, params, *options: str):
    """``qubus submit CIRCUIT --sweep PARAMS OPTIONS --wait --json``."""
    args = ["submit", str(circuit), "--sweep", str(params), *options, "--wait", "--json"]
    return await qubus_cli(nats_url, *args, timeout=240)


@pytest.mark.asyncio(loop_scope="module")
async def test_the_command_line_submits_a_sweep_file(qubus_cli, nats_url, stack, tmp_path):
    circuit = tmp_path / "qaoa.json"
    circuit.write_text(circuit_to_json(qaoa_circuit()))
    params = tmp_path / "params.json"
    params.write_text(json.dumps(grid(3)))
    code, out, err = await submit_sweep(qubus_cli, nats_url, circuit, params, "--shots", "50")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["status"] for r in records] == ["done"] * 3
    sweep_id = records[0]["task_id"].rsplit("-", 1)[0]
    assert [r["task_id"] for r in records] == [f"{sweep_id}-{k}" for k in range(3)]
    assert all(sum(r["counts"].values()) == 50 for r in records)

    params.write_text('[{"gamma": "x"}]')
    code, _, err = await qubus_cli(nats_url, "submit", str(circuit), "--sweep", str(params))
    assert code == 1 and err.strip().endswith("[sweep.invalid]") and "Traceback" not in err


QAOA_QASM = """OPENQASM 3.0;
include "stdgates.inc";
input float[64] gamma;
input float[64] beta;
qubit[3] q;
bit[3] m;
h q;
cx q[0], q[1]; rz(2 * gamma) q[1]; cx q[0], q[1];
cx q[1], q[2]; rz(2 * gamma) q[2]; cx q[1], q[2];
rx(2 * beta) q;
m = measure q;
"""


@pytest.mark.asyncio(loop_scope="module")
async def test_the_command_line_sweeps_an_openqasm3_program_with_inputs(
    qubus_cli, nats_url, stack, tmp_path
):
    circuit = tmp_path / "qaoa.qasm"
    circuit.write_text(QAOA_QASM)
    params = tmp_path / "params.json"
    params.write_text(json.dumps([{"gamma": 0.0, "beta": 0.0}, {"gamma": 0.4, "beta": 0.7}]))
    code, out, err = await submit_sweep(
        qubus_cli, nats_url, circuit, params, "--shots", "200", "--noiseless"
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["status"] for r in records] == ["done", "done"]
    # gamma = beta = 0 leaves H on every qubit: all eight outcomes, none favoured much
    assert len(records[0]["counts"]) == 8 and max(records[0]["counts"].values()) < 60
    assert records[1]["counts"] != records[0]["counts"]

    params.write_text(json.dumps([{"gamma": 0.1}]))  # beta missing: the parser says which
    code, out, err = await qubus_cli(
        nats_url, "submit", str(circuit), "--sweep", str(params), "--wait", timeout=240
    )
    assert code == 1 and "Traceback" not in err, err
    assert "missing ['beta']" in out and "sweep.parameters" in out, out
