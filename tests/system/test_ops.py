"""Operations on a real stack: $SRV health replies, `qubus ps`, logs on the bus, `qubus trace`
with the allocation's score breakdown, and `qubus parse`."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import defaultdict
from contextlib import AsyncExitStack

import pytest

from qubus import __version__
from qubus.bus import codec
from qubus.bus.config import Settings
from qubus.bus.consumer import Context, Stage, StageRunner
from qubus.bus.health import PING_RESPONSE, STATS_RESPONSE, HealthResponder
from qubus.bus.logs import BusCopy, split_lines
from qubus.bus.messages import SubmitReply, SubmitRequest, TaskIngested, TaskOptions
from qubus.bus.service import Runtime
from qubus.bus.tracing import TraceContext
from qubus.cli.stack import ServiceSpec, Supervisor
from qubus.client.aio import Client
from qubus.errors import CircuitRejected

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

MALFORMED = "qasmbench__vqe_uccsd_n4.qasm"


def label(reply: dict) -> str:
    metadata = reply["metadata"]
    return ServiceSpec(metadata["service"], metadata.get("node")).label


def endpoint(stats: list[dict], service: str, name: str) -> dict:
    [instance] = [s for s in stats if s["metadata"]["service"] == service]
    [found] = [e for e in instance["endpoints"] if e["name"] == name]
    return found


async def run_one(client: Client, dev_qasm, name: str) -> dict:
    path = dev_qasm / name
    [record] = await client.run([SubmitRequest(circuit=path.read_text(), shots=200)], timeout=120)
    return record


async def test_every_service_instance_answers_ping(client, stack: Supervisor):
    replies = await client.services("PING", timeout=10, expected=len(stack.children))

    assert sorted(label(r) for r in replies) == sorted(stack.children)
    assert {r["type"] for r in replies} == {PING_RESPONSE}
    assert {r["version"] for r in replies} == {__version__}
    assert {r["name"] for r in replies if r["metadata"]["service"] == "qpu"} == {"qubus-qpu"}


async def test_one_instance_answers_by_name_and_id(client):
    [parser] = [r for r in await client.services("PING", timeout=2) if r["name"] == "qubus-parser"]
    for subject in ("$SRV.INFO.qubus-parser", f"$SRV.INFO.qubus-parser.{parser['id']}"):
        info = json.loads((await client.bus.nc.request(subject, b"", timeout=5)).data)
        assert info["id"] == parser["id"]
        assert info["endpoints"] == [
            {
                "name": "parser",
                "subject": "qubus.task.*.*.ingested",
                "queue_group": "parser",
                "metadata": {"kind": "consumer"},
            }
        ]


async def test_stats_count_the_messages_each_stage_handled(client, stack, dev_qasm):
    expected = len(stack.children)
    before = await client.services("STATS", timeout=10, expected=expected)
    record = await run_one(client, dev_qasm, "qasmbench__bell_n4.qasm")
    assert record["status"] == "done", record["error"]
    after = await client.services("STATS", timeout=10, expected=expected)

    assert len(after) == expected and {s["type"] for s in after} == {STATS_RESPONSE}
    for service, name in (("ingestion", "submit"), ("parser", "parser"), ("fusion", "fusion")):
        old, new = endpoint(before, service, name), endpoint(after, service, name)
        assert new["num_requests"] > old["num_requests"], (service, new)
        assert new["data"]["outcomes"].get("ok", 0) > old["data"]["outcomes"].get("ok", 0)
    parser = endpoint(after, "parser", "parser")
    assert parser["num_errors"] == 0 and parser["processing_time"] > 0
    assert (
        parser["data"]["lag"] == parser["data"]["num_pending"] + parser["data"]["num_ack_pending"]
    )
    assert all(s["uptime_s"] > 0 and s["logs"]["published"] > 0 for s in after)


async def test_qubus_ps_lists_every_instance_with_its_figures(qubus_cli, nats_url, stack):
    code, out, err = await qubus_cli(
        nats_url, "ps", "--json", "--timeout", "10", "--expect", str(len(stack.children))
    )
    assert code == 0, err
    rows = json.loads(out)["instances"]
    assert sorted(ServiceSpec(r["service"], r["node"]).label for r in rows) == sorted(
        stack.children
    )
    for row in rows:
        assert row["version"] == __version__ and row["uptime_s"] > 0
        assert row["handled"] >= 0 and row["errored"] >= 0 and row["redelivered"] >= 0
    lags = {row["service"]: row["lag"] for row in rows}
    # ingestion answers requests and frees quota places from a consumer of terminal events
    assert all(isinstance(lags[s], int) for s in ("ingestion", "parser", "qpu"))


async def test_a_tasks_log_lines_arrive_on_the_bus_and_in_the_log_stream(
    qubus_cli, client, nats_url, dev_qasm
):
    """At the default level a task's lines come from ingestion, its QPU node and fusion (each
    stage's ``stage.done`` is at debug)."""
    lines: list[dict] = []
    logged: defaultdict[tuple[str, str], asyncio.Event] = defaultdict(asyncio.Event)

    async def collect(msg) -> None:
        for text in split_lines(msg.data):
            line = json.loads(text) | {"subject": msg.subject}
            lines.append(line)
            if "task_id" in line:
                logged[line["service"], line["task_id"]].set()

    sub = await client.bus.nc.subscribe("qubus.log.>", cb=collect)
    try:
        record = await run_one(client, dev_qasm, "qasmbench__deutsch_n2.qasm")
        assert record["status"] == "done", record["error"]
        task_id = record["task_id"]
        for service in ("qpu", "fusion"):  # fusion counts the outcome after the result
            await asyncio.wait_for(logged[service, task_id].wait(), 10)
    finally:
        await sub.unsubscribe()
    mine = [line for line in lines if line.get("task_id") == task_id]
    assert {"ingestion", "qpu", "fusion"} <= {line["service"] for line in mine}
    owner = task_id.split(".")[0]  # the lines about a task are on its owner's subject
    assert all(line["subject"] == f"qubus.log.{line['service']}.{owner}" for line in mine)

    code, out, err = await qubus_cli(nats_url, "logs", "--task", task_id, "--json")
    assert code == 0, err
    stored = [json.loads(line) for line in out.splitlines()]
    assert stored and all(line["task_id"] == task_id for line in stored)
    assert {"ingestion", "qpu"} <= {line["service"] for line in stored}
    code, out, err = await qubus_cli(nats_url, "logs", "--task", task_id, "--service", "ingestion")
    assert code == 0, err
    assert out and all(" ingestion " in line for line in out.splitlines())


async def test_trace_json_shows_the_allocations_score_breakdown(
    qubus_cli, client, nats_url, dev_qasm
):
    record = await run_one(client, dev_qasm, "qasmbench__bell_n4.qasm")
    code, out, err = await qubus_cli(nats_url, "trace", record["task_id"], "--json")
    assert code == 0, err
    allocation = json.loads(out)["allocation"]

    decision = allocation["decision"]
    assert decision["node"] == record["nodes"][0] and decision["policy"] == "hyperscore"
    assert decision["reason"] and decision["ranking"][0][0] == decision["node"]
    scores = {score["node"]: score for score in allocation["scores"]}
    assert set(scores) == {"ibm_nairobi", "quantinuum_h2_2"}
    assert scores[decision["node"]]["eligible"] and scores[decision["node"]]["terms"]


async def test_parse_prints_features_and_cirq_json(qubus_cli, nats_url, dev_qasm):
    path = dev_qasm / "qasmbench__cat_state_n4.qasm"
    code, out, err = await qubus_cli(nats_url, "parse", str(path), "--json")
    assert code == 0, err
    parsed = json.loads(out)
    assert parsed["features"]["qubits"] == 4 and parsed["features"]["gate_counts"]["measure"]
    assert parsed["cirq"]["cirq_type"] == "Circuit"


async def test_parse_error_names_file_line_and_column(qubus_cli, nats_url, dev_qasm):
    path = dev_qasm / MALFORMED
    code, out, err = await qubus_cli(nats_url, "parse", str(path))
    assert code == 1 and out == ""
    assert err.startswith(f"{path}:225:") and err.rstrip().endswith("]")


async def test_log_copy_drops_lines_instead_of_blocking_when_its_queue_is_full(client):
    copy = BusCopy(maxsize=4)
    received: list[bytes] = []

    async def collect(msg) -> None:
        received.extend(split_lines(msg.data))

    sub = await client.bus.nc.subscribe("qubus.log.test-copy.~", cb=collect)
    await copy.start(client.bus.nc, "qubus.log.test-copy")
    try:
        for i in range(10):  # no await in between: the publisher cannot run
            copy.offer(f'{{"n": {i}}}')
        other = threading.Thread(target=copy.offer, args=('{"n": "thread"}',))
        other.start()
        other.join()
        assert copy.dropped == 6
    finally:
        await copy.stop()
    await client.bus.nc.flush()
    await sub.drain()
    assert copy.published == 4 and copy.dropped == 7
    assert received == [f'{{"n": {i}}}' for i in range(4)]  # in one message or several
    copy.offer("after stop")
    assert copy.dropped == 7


async def toy_handler(event: TaskIngested, ctx: Context) -> None:
    if event.text == "boom":
        raise RuntimeError("bug in the toy")
    if event.text == "reject":
        raise CircuitRejected("no good", code="test.rejected")


async def test_stage_runner_counts_each_outcome_and_stats_report_them(client):
    texts = ["fine", "boom", "reject"]
    subjects = [f"qubus.task.t.toy{n}.ingested" for n in range(len(texts))]
    stage = Stage("ops_toy", [TaskIngested], toy_handler, subjects=subjects)
    runner = StageRunner(client.bus, stage, ack_wait_s=2, max_deliver=1)
    health = HealthResponder(client.bus, service="toy", instance="toy.host-1")
    health.add(runner.endpoint)
    await runner.start()
    await health.start()
    try:
        for n, text in enumerate(texts):
            event = TaskIngested(
                task_id=f"t.toy{n}",
                format="qasm2",
                text=text,
                options=TaskOptions(shots=1),
                submitted_at=0,
            )
            await client.bus.publish_event(event, trace=TraceContext.new())
        for _ in range(200):
            if runner.endpoint.handled == 3:
                break
            await asyncio.sleep(0.05)
        reply = await client.bus.nc.request("$SRV.STATS.qubus-toy.toy_host-1", b"", timeout=5)
    finally:
        await health.stop()
        await runner.stop()
    [stats] = json.loads(reply.data)["endpoints"]
    assert stats["num_requests"] == 3 and stats["num_errors"] == 1
    assert stats["data"]["outcomes"] == {"ok": 1, "error": 1, "rejected": 1}
    assert stats["last_error"] == "RuntimeError: bug in the toy"
    assert stats["data"]["lag"] == 0


async def test_requests_are_handled_together_up_to_the_concurrency(client):
    """``Runtime.serve`` with ``concurrency``: that many requests are in hand at once, the next
    waits for a free place, and every one is answered."""
    in_hand, most = 0, 0
    release = asyncio.Event()

    async def slow(request: SubmitRequest, headers: dict[str, str]) -> SubmitReply:
        nonlocal in_hand, most
        in_hand += 1
        most = max(most, in_hand)
        await release.wait()
        in_hand -= 1
        return SubmitReply(task_id=f"anon.{request.circuit}", duplicate=False)

    subject = "qubus.test.serve"
    async with AsyncExitStack() as stack:
        health = HealthResponder(client.bus, service="toyserve", instance="toy.host-1")
        rt = Runtime("toyserve", Settings(), client.bus, None, stack, health)
        await rt.serve(subject, SubmitRequest, slow, concurrency=3)
        asked = [
            asyncio.create_task(
                client.bus.nc.request(subject, codec.encode(SubmitRequest(circuit=f"t{k}")), 10)
            )
            for k in range(5)
        ]
        for _ in range(200):
            if in_hand == 3:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # time for a fourth to come in, were there a place for it
        assert in_hand == 3
        release.set()
        replies = await asyncio.gather(*asked)
    assert most == 3
    answered = sorted(codec.decode(reply.data, SubmitReply).task_id for reply in replies)
    assert answered == [f"anon.t{k}" for k in range(5)]
