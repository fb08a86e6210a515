"""A circuit goes through every real service process; bad input gets structured errors."""

from __future__ import annotations

import asyncio
import json
import os

import cirq
import msgpack
import nats.errors
import psutil
import pytest

from qubus.bus import codec
from qubus.bus.connection import BUCKET_NODES, EPR_SUBJECT, SUBMIT_SUBJECT, node_key
from qubus.bus.messages import (
    EprReply,
    EprRequest,
    NodeStatus,
    SubmitRequest,
    TaskAllocated,
    TaskCompleted,
)
from qubus.cli.stack import Supervisor
from qubus.client.aio import Client
from qubus.devices.profiles import DEFAULT_FLEET
from qubus.errors import QubusError

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

PIPELINE = [
    "ingested",
    "parsed",
    "checked",
    "eval.sandbox",
    "eval.noise",
    "scored",
    "allocated",
    "running",
    "completed",
]


def assert_all_running(stack: Supervisor) -> None:
    dead = {
        label: c.process.exitcode
        for label, c in stack.children.items()
        if c.process.exitcode is not None
    }
    assert dead == {}
    assert all(c.restarts == 0 for c in stack.children.values())


async def test_dev_circuit_runs_end_to_end_and_its_trace_shows_every_stage(client, dev_qasm):
    path = dev_qasm / "qasmbench__cat_state_n4.qasm"
    request = SubmitRequest(circuit=path.read_text(), shots=2000, source=path.name)
    [record] = await client.run([request], timeout=120)

    assert record["status"] == "done", record["error"]
    assert sum(record["counts"].values()) == 2000
    assert set(record["ideal_counts"]) == {"0000", "1111"}
    assert record["nodes"] and record["nodes"][0] in {"ibm_nairobi", "quantinuum_h2_2"}
    assert 0.5 < record["measured_fidelity"] <= 1.0
    assert 0.5 < record["predicted_fidelity"] <= 1.0
    assert record["source"] == path.name
    events = [row["event"] for row in record["stages"]]
    assert sorted(events) == sorted(PIPELINE)
    assert events[0] == "ingested" and events[-1] == "completed"
    services = {row["event"]: row["service"] for row in record["stages"]}
    assert services["eval.sandbox"] == "sandbox" and services["completed"] == "qpu"

    trace = await client.events(record["task_id"])
    assert len({stored.trace_id for stored in trace}) == 1
    # The node's time budget comes from the noise service's estimate, through the allocation.
    [allocated] = [s.event for s in trace if isinstance(s.event, TaskAllocated)]
    assert allocated.score is not None and allocated.score.emulation_s > 0


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux's scheduling policies")
async def test_the_services_and_their_workers_run_under_batch_scheduling(stack):
    """Each service sets ``SCHED_BATCH`` as it starts (``QUBUS_SCHED_BATCH``, on by default),
    and the worker processes it starts inherit it; the supervisor itself keeps the default."""
    pids = [c.process.pid for c in stack.children.values()]
    workers = [w.pid for pid in pids for w in psutil.Process(pid).children(recursive=True)]
    assert workers  # the services' worker processes (the sandbox's, each node's)
    assert {os.sched_getscheduler(pid) for pid in pids + workers} == {os.SCHED_BATCH}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


async def test_pinned_node_runs_there(client, dev_qasm):
    path = dev_qasm / "qasmbench__bell_n4.qasm"
    request = SubmitRequest(circuit=path.read_text(), shots=500, node="quantinuum_h2_2")
    [record] = await client.run([request], timeout=120)
    assert record["status"] == "done", record["error"]
    assert record["nodes"] == ["quantinuum_h2_2"]


async def test_noiseless_task_runs_without_noise_beside_a_noisy_one(client, dev_qasm):
    text = (dev_qasm / "qasmbench__cat_state_n4.qasm").read_text()
    clean, noisy = await client.run(
        [
            SubmitRequest(circuit=text, shots=2000, node="ibm_nairobi", noiseless=True),
            SubmitRequest(circuit=text, shots=2000, node="ibm_nairobi"),
        ],
        timeout=120,
    )
    assert clean["status"] == noisy["status"] == "done", (clean["error"], noisy["error"])
    assert clean["nodes"] == noisy["nodes"] == ["ibm_nairobi"]
    assert set(clean["counts"]) == {"0000", "1111"}
    assert clean["measured_fidelity"] > 0.995  # only finite sampling: 1000 ± 22 each
    assert len(noisy["counts"]) > 2 and noisy["measured_fidelity"] < 0.99
    completed = await client.bus.last_event(clean["task_id"], TaskCompleted)
    # The prediction for a noiseless run is the finite-shot ceiling, not the device's noise.
    assert completed is not None and 0.999 < completed.predicted_fidelity < 1.0
    assert completed.allocated_fidelity is not None and completed.allocated_fidelity < 0.99


async def test_same_idempotency_key_gives_the_same_task(client, dev_qasm):
    text = (dev_qasm / "qasmbench__deutsch_n2.qasm").read_text()
    first = await client.submit(SubmitRequest(circuit=text, idempotency_key="k-1"))
    second = await client.submit(SubmitRequest(circuit=text, idempotency_key="k-1"))
    assert second.task_id == first.task_id and second.duplicate and not first.duplicate
    events = await client.wait(first.task_id, timeout=120)
    assert [e.event.EVENT for e in events].count("ingested") == 1


async def test_malformed_qasm_is_rejected_with_its_line(client, dev_qasm, stack):
    path = dev_qasm / "qasmbench__vqe_uccsd_n4.qasm"
    [record] = await client.run([SubmitRequest(circuit=path.read_text())], timeout=60)
    assert record["status"] == "rejected"
    assert record["error"]["line"] is not None and record["error"]["line"] > 0
    assert record["error"]["code"].startswith("qasm.")
    assert [row["event"] for row in record["stages"]] == ["ingested", "rejected"]
    assert_all_running(stack)


async def test_wrong_payload_type_gets_a_structured_error(client, stack):
    body = json.dumps({"circuit": 42, "shots": "many"}).encode()
    reply = await client.bus.nc.request(
        SUBMIT_SUBJECT, body, timeout=5, headers={"Content-Type": "application/json"}
    )
    assert reply.headers["Nats-Service-Error-Code"] == "payload.invalid"
    error = json.loads(reply.data)
    assert set(error) == {"code", "message", "line", "column"}
    assert "circuit" in error["message"] and "shots" in error["message"]
    assert_all_running(stack)


async def test_random_bytes_get_a_structured_error(client, stack):
    reply = await client.bus.nc.request(SUBMIT_SUBJECT, os.urandom(512) + b"\xc1", timeout=5)
    assert reply.headers["Nats-Service-Error-Code"] in {"payload.undecodable", "payload.not_a_map"}
    assert msgpack.unpackb(reply.data)["code"] == reply.headers["Nats-Service-Error-Code"]
    assert_all_running(stack)


async def test_oversized_submission_is_refused(client):
    with pytest.raises(QubusError) as refused:
        await client.submit(SubmitRequest(circuit="// " + "x" * 300_000))
    assert refused.value.code == "payload.too_large"


async def test_services_still_serve_after_bad_input(client, dev_qasm, stack):
    path = dev_qasm / "qasmbench__deutsch_n2.qasm"
    [record] = await client.run([SubmitRequest(circuit=path.read_text())], timeout=120)
    assert record["status"] == "done"
    assert_all_running(stack)


async def test_json_client_submits_without_msgpack(client: Client, dev_qasm):
    body = json.dumps({"circuit": (dev_qasm / "qasmbench__deutsch_n2.qasm").read_text()}).encode()
    reply = await client.bus.nc.request(
        SUBMIT_SUBJECT, body, timeout=5, headers={"Content-Type": "application/json"}
    )
    task_id = json.loads(reply.data)["task_id"]
    events = await client.wait(task_id, timeout=120)
    assert events[-1].event.EVENT == "completed"


async def test_cirq_json_circuit_runs_unchanged(client):
    q = cirq.NamedQubit.range(2, prefix="q_")
    circuit = cirq.Circuit(cirq.X(q[0]), cirq.CNOT(q[0], q[1]), cirq.measure(*q, key="m"))
    [record] = await client.run([SubmitRequest(circuit=cirq.to_json(circuit))], timeout=120)
    assert record["status"] == "done", record["error"]
    assert max(record["counts"], key=record["counts"].get) == "11"
    assert record["ideal_counts"] == {"11": 1000}


async def test_link_service_answers_epr_requests_from_the_werner_model(client):
    request = EprRequest(a="ibm_nairobi", b="quantinuum_h1_1", hold_s=0.001)
    reply = await client.bus.nc.request(EPR_SUBJECT, codec.encode(request), timeout=5)
    pair = codec.decode(reply.data, EprReply)
    assert pair.path[0] == "ibm_nairobi" and pair.path[-1] == "quantinuum_h1_1"
    assert len(pair.path) >= 2 and pair.attempts >= len(pair.path) - 1
    assert 0.25 < pair.fidelity < 1.0 and pair.latency_s > 0


async def test_epr_request_between_unlinked_nodes_is_a_structured_error(client):
    request = EprRequest(a="ibm_nairobi", b="nowhere")
    reply = await client.bus.nc.request(EPR_SUBJECT, codec.encode(request), timeout=5)
    assert reply.headers["Nats-Service-Error-Code"].startswith("link.")


async def test_qubus_nodes_lists_the_running_nodes_and_the_topologys_links(
    client, qubus_cli, nats_url
):
    code, out, err = await qubus_cli(nats_url, "nodes", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert {row["node"] for row in listed["nodes"]} == {"ibm_nairobi", "quantinuum_h2_2"}
    # The default topology: a ring over the default fleet, published by the link service.
    ring = {
        tuple(sorted(pair))
        for pair in zip(DEFAULT_FLEET, DEFAULT_FLEET[1:] + DEFAULT_FLEET[:1], strict=True)
    }
    assert {(link["a"], link["b"]) for link in listed["links"]} == ring
    for link in listed["links"]:
        assert 0.25 < link["expected_fidelity"] <= link["f0"] and link["expected_latency_s"] > 0
    code, out, err = await qubus_cli(nats_url, "nodes")
    assert code == 0, err
    assert "LINK" in out and f"{listed['links'][0]['a']} - {listed['links'][0]['b']}" in out


async def test_an_idle_node_rewrites_its_status_only_as_a_heartbeat(client):
    """A node looks at its queue every ``STATUS_INTERVAL_S`` but writes its status only when
    something in it changed, or every ``STATUS_HEARTBEAT_S``: an unchanged status is never
    written again sooner than a heartbeat (less a look, for the timing of the looks). A change
    (a task of an earlier test ending late) is written at once and is not counted."""
    from qubus_services.qpu.main import STATUS_HEARTBEAT_S, STATUS_INTERVAL_S

    def said(status: NodeStatus) -> dict:
        return status.model_dump(exclude={"updated_at"})

    kv = await client.bus.kv(BUCKET_NODES)
    key = node_key("ibm_nairobi")
    for _ in range(100):  # until the node is idle: nothing queued, not running
        status = codec.decode((await kv.get(key)).value, NodeStatus)
        if status.queue_depth == 0 and not status.busy:
            break
        await asyncio.sleep(STATUS_INTERVAL_S)
    watcher = await kv.watch(key, include_history=False)
    window = 2.25 * STATUS_HEARTBEAT_S  # 18 looks at the queue
    written = [status]
    deadline = asyncio.get_running_loop().time() + window
    try:
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                entry = await watcher.updates(timeout=left)
            except nats.errors.TimeoutError:
                break
            if entry is not None:  # the watcher starts with the write already read
                status = codec.decode(entry.value, NodeStatus)
                if status.updated_at != written[-1].updated_at:
                    written.append(status)
    finally:
        await watcher.stop()
    rewrites = [
        later.updated_at - earlier.updated_at
        for earlier, later in zip(written, written[1:], strict=False)
        if said(earlier) == said(later)
    ]
    assert rewrites, written  # an idle node's heartbeat came within the window
    assert min(rewrites) >= STATUS_HEARTBEAT_S - STATUS_INTERVAL_S, rewrites
