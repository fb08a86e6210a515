"""A task's trace-only events expire after ``QUBUS_TRACE_TTL_S``; its result stays readable; the
task stream keeps events for ``QUBUS_TASK_RETENTION_S``."""

from __future__ import annotations

import asyncio
import json
import time

import nats.js.errors
import pytest
from nats.js.api import StreamConfig

from qubus.bus.connection import (
    BUCKET_FEATURES,
    BUCKET_WEIGHTS,
    H_TTL,
    PER_TASK_BUCKETS,
    STREAM,
    TASK_SUBJECTS,
    Bus,
)
from qubus.bus.ids import new_task_id, split_task_subject, task_subject
from qubus.bus.messages import SubmitRequest, TaskCancelled, TaskRunning, event_of
from qubus.bus.natsserver import NatsServer
from qubus.bus.tracing import TraceContext

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

TTL_S = 20
RETENTION_S = 3600
STACK_SETTINGS = {"QUBUS_TRACE_TTL_S": str(TTL_S), "QUBUS_TASK_RETENTION_S": str(RETENTION_S)}
EXPIRING = {"parsed", "checked", "eval.noise", "scored", "running"}
KEPT = {"ingested", "eval.sandbox", "allocated", "completed"}


async def stored_headers(client, task_id: str) -> dict[str, dict[str, str]]:
    """Each stored event of the task by its event name (the node left off), with its headers."""
    reader = client.read_stream(STREAM, task_subject(task_id, ">"), headers_only=True)
    return {
        event_of(split_task_subject(msg.subject)[1])[0]: dict(msg.headers or {})
        async for msg in reader
    }


async def test_trace_events_expire_and_the_result_stays(client, dev_qasm, qubus_cli, nats_url):
    path = dev_qasm / "qasmbench__cat_state_n4.qasm"
    [record] = await client.run([SubmitRequest(circuit=path.read_text(), shots=500)], timeout=120)
    assert record["status"] == "done", record["error"]
    task_id = record["task_id"]

    headers = await stored_headers(client, task_id)
    assert set(headers) == EXPIRING | KEPT
    assert {event for event, h in headers.items() if h.get(H_TTL) == str(TTL_S)} == EXPIRING

    deadline = time.monotonic() + 10 * TTL_S  # the server removes them once due
    while set(headers) != KEPT and time.monotonic() < deadline:
        await asyncio.sleep(2)
        headers = await stored_headers(client, task_id)
    assert set(headers) == KEPT

    code, out, err = await qubus_cli(nats_url, "result", task_id, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "done"
    assert sum(result["counts"].values()) == 500
    assert set(result["ideal_counts"]) == {"0000", "1111"}
    assert result["nodes"] == record["nodes"]

    code, out, err = await qubus_cli(nats_url, "feedback", task_id, "--rating", "4")
    assert code == 1
    assert "scores are no longer kept" in err and "[feedback.expired]" in err


async def test_the_stack_keeps_task_events_for_its_retention(client):
    assert (await client.bus.js.stream_info(STREAM)).config.max_age == RETENTION_S
    for bucket in PER_TASK_BUCKETS:  # an entry per task or circuit: kept as long
        assert (await client.bus.js.stream_info(f"KV_{bucket}")).config.max_age == RETENTION_S
    assert not (await client.bus.js.stream_info(f"KV_{BUCKET_WEIGHTS}")).config.max_age


async def test_a_new_retention_changes_the_stream_and_one_within_the_window_is_refused():
    server = NatsServer()
    bus = Bus(server.start(), service="up", instance="retention")
    try:
        await bus.connect()
        await bus.ensure_topology()
        assert (await bus.js.stream_info(STREAM)).config.max_age == 7 * 24 * 3600
        await bus.ensure_topology(duplicate_window_s=60, retention_s=120)
        assert (await bus.js.stream_info(STREAM)).config.max_age == 120
        features = await bus.js.stream_info(f"KV_{BUCKET_FEATURES}")
        assert features.config.max_age == 120
        await bus.ensure_topology(duplicate_window_s=60, retention_s=90)  # under a KV's 2 min
        features = await bus.js.stream_info(f"KV_{BUCKET_FEATURES}")
        assert features.config.max_age == 90 and features.config.duplicate_window <= 90
        with pytest.raises(nats.js.errors.APIError) as refused:  # what Settings checks first
            await bus.ensure_topology(duplicate_window_s=600, retention_s=120)
        assert refused.value.err_code == 10052  # duplicates window larger than max age
    finally:
        await bus.close()
        server.stop()


async def test_a_stream_without_message_ttls_keeps_every_event():
    """A task stream an earlier version made (no ``allow_msg_ttl``), which a service on a
    secured bus leaves as it is: its events are published without ``Nats-TTL``, which such a
    stream would refuse, and stored for the stream's age."""
    server = NatsServer()
    url = server.start()
    bus = Bus(url, service="qpu", instance="old-stream")
    try:
        await bus.connect()
        await bus.js.add_stream(StreamConfig(name=STREAM, subjects=[TASK_SUBJECTS]))
        await bus.ensure_topology(update=False, trace_ttl_s=1)
        task_id = new_task_id("anon")
        trace = TraceContext.new()
        assert await bus.publish_event(
            TaskRunning(task_id=task_id, node="ibm_nairobi", queue_wait_s=0.0), trace=trace
        )
        assert await bus.publish_event(TaskCancelled(task_id=task_id), trace=trace)
        await asyncio.sleep(2)
        running = await bus.js.get_last_msg(STREAM, TaskRunning.subjects(task_id))
        assert H_TTL not in (running.headers or {})
        assert await bus.last_event(task_id, TaskCancelled) is not None
    finally:
        await bus.close()
        server.stop()
