"""The consumer wrapper's acknowledgement policy, against a real nats-server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from qubus.bus import codec
from qubus.bus.connection import H_MSG_ID, H_TYPE, Bus, NotLatest
from qubus.bus.consumer import Context, Stage, StageRunner
from qubus.bus.ids import is_sweep_point, new_task_id, sweep_point_id
from qubus.bus.messages import TaskCancelled, TaskIngested, TaskOptions, TaskParsed
from qubus.bus.tracing import TraceContext
from qubus.errors import CircuitRejected

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

FEATURES = {
    "qubits": 1,
    "clbits": 1,
    "depth": 1,
    "gate_counts": {"measure": 1},
    "two_qubit_gates": 0,
    "multi_qubit_gates": 0,
    "measured_qubits": ["q_0"],
    "classical_control": False,
    "interaction_graph": [],
    "fingerprint": "f",
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    bus = Bus(nats_url, service="test", instance="test-1")
    await bus.connect()
    await bus.ensure_topology()
    await bus.ensure_topology()  # idempotent
    try:
        yield bus
    finally:
        await bus.close()


def ingested(task_id: str, text: str) -> TaskIngested:
    return TaskIngested(
        task_id=task_id, format="qasm2", text=text, options=TaskOptions(shots=1), submitted_at=0.0
    )


async def handle(event: TaskIngested, ctx: Context) -> TaskParsed:
    """A toy stage whose behaviour is chosen by the event's text."""
    if event.text == "reject":
        raise CircuitRejected("no good", code="test.rejected")
    if event.text.startswith("flaky") and ctx.deliveries < int(event.text[5:]):
        raise RuntimeError("transient bug")
    return TaskParsed(task_id=event.task_id, circuit="{}", features=FEATURES, options=event.options)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runner(bus: Bus) -> AsyncIterator[StageRunner]:
    runner = StageRunner(bus, Stage("toy", [TaskIngested], handle), ack_wait_s=2, max_deliver=3)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


async def wait_for(bus: Bus, task_id: str, event: str, timeout: float = 30.0):
    for _ in range(int(timeout / 0.05)):
        events = await bus.task_events(task_id)
        found = [e for e in events if event == e.event.EVENT]
        if found:
            return found[0], events
        await asyncio.sleep(0.05)
    pytest.fail(f"{task_id}: no {event} event")


async def test_result_is_published_with_dedup_id_and_trace(bus, runner):
    trace = TraceContext.new()
    await bus.publish_event(ingested("t.ok1", "fine"), trace=trace)
    parsed, events = await wait_for(bus, "t.ok1", "parsed")
    assert parsed.trace_id == trace.trace_id
    assert parsed.service == "test" and parsed.started is not None
    raw = await bus.js.get_last_msg("QUBUS_TASKS", "qubus.task.t.ok1.parsed")
    assert raw.headers[H_MSG_ID] == "t.ok1.parsed"
    assert raw.headers[H_TYPE] == "task.parsed.v1"


async def test_a_stage_acknowledges_the_tasks_it_skips_unhandled(bus):
    """A sweep's points at a stage that counts ends: acknowledged, never decoded or handled."""
    sweep = new_task_id("t")
    handled: list[str] = []

    async def note(event: TaskIngested, ctx: Context) -> None:
        handled.append(event.task_id)

    stage = Stage("toy-skip", [TaskIngested], note, from_now=True, skip=is_sweep_point)
    skipping = StageRunner(bus, stage, ack_wait_s=2, max_deliver=3)
    await skipping.start()
    try:
        await bus.publish_event(
            ingested(sweep_point_id(sweep, 0), "fine"), trace=TraceContext.new()
        )
        await bus.publish_event(ingested(sweep, "fine"), trace=TraceContext.new())
        for _ in range(200):
            if skipping.endpoint.handled == 2:
                break
            await asyncio.sleep(0.05)
        assert handled == [sweep]
        assert skipping.endpoint.outcomes == {"skipped": 1, "ok": 1}
    finally:
        await skipping.stop()


async def test_republishing_an_event_is_deduplicated(bus):
    event = ingested("t.dup1", "fine")
    assert await bus.publish_event(event, trace=TraceContext.new()) is True
    assert await bus.publish_event(event, trace=TraceContext.new()) is False


async def test_a_conditional_publish_is_stored_only_while_its_subject_is_unchanged(bus):
    """``after``: the server stores the event only while the last message on the subject
    (wildcards allowed) is the one named: a QPU node's result, while its allocation is the
    task's last."""
    task_id, trace = "t.cond1", TraceContext.new()
    parsed = TaskParsed(
        task_id=task_id, circuit="{}", features=FEATURES, options=TaskOptions(shots=1)
    )
    await bus.publish_event(parsed, trace=trace, msg_id="c1")
    _, first = await bus.last_stored(task_id, TaskParsed)
    condition = (f"qubus.task.{task_id}.*", first)
    assert await bus.publish_event(TaskCancelled(task_id=task_id), trace=trace, after=condition)
    await bus.publish_event(parsed, trace=trace, msg_id="c2")  # the subject moves on
    _, last = await bus.last_stored(task_id, TaskParsed)
    condition = (f"qubus.task.{task_id}.parsed", first)
    with pytest.raises(NotLatest):
        await bus.publish_event(
            TaskCancelled(task_id=task_id), trace=trace, msg_id="x1", after=condition
        )
    assert (await bus.last_stored(task_id, TaskCancelled))[1] < last  # only the first stored
    condition = (f"qubus.task.{task_id}.parsed", last)
    assert await bus.publish_event(
        TaskCancelled(task_id=task_id), trace=trace, msg_id="x2", after=condition
    )


async def test_reads_by_subject_are_direct_gets_of_the_last_event(bus, runner):
    """On one server the task stream answers direct gets; a read by subject (wildcards
    allowed) returns the last event stored on it, with its sequence, or None."""
    info = await bus.js.stream_info("QUBUS_TASKS")
    assert info.config.allow_direct is True
    await bus.publish_event(ingested("t.read1", "first"), trace=TraceContext.new())
    await wait_for(bus, "t.read1", "parsed")
    last = await bus.last_message("qubus.task.t.read1.*")
    assert last is not None
    stored = await bus.js.get_last_msg("QUBUS_TASKS", "qubus.task.t.read1.parsed")
    assert last == (stored.data, stored.seq, stored.subject)
    event, sequence = await bus.last_stored("t.read1", TaskIngested)
    assert event.text == "first" and sequence < stored.seq
    assert await bus.last_message("qubus.task.t.read1.rejected") is None
    assert await bus.last_stored("t.nothing", TaskIngested) is None


async def test_expected_error_rejects_the_task(bus, runner):
    await bus.publish_event(ingested("t.rej1", "reject"), trace=TraceContext.new())
    rejected, events = await wait_for(bus, "t.rej1", "rejected")
    assert rejected.event.error.code == "test.rejected"
    assert rejected.event.stage == "toy"


async def test_invalid_payload_is_rejected_and_terminated(bus, runner):
    await bus.js.publish(
        "qubus.task.t.bad1.ingested",
        b"\x93not msgpack of a map",
        headers={H_TYPE: TaskIngested.TYPE, H_MSG_ID: "t.bad1.ingested"},
    )
    rejected, _ = await wait_for(bus, "t.bad1", "rejected")
    assert rejected.event.error.code.startswith("payload.")
    await asyncio.sleep(3)  # longer than ack_wait: a terminated message is not redelivered
    _, events = await wait_for(bus, "t.bad1", "rejected")
    assert [e.event.EVENT for e in events] == ["rejected"]


async def test_unexpected_error_is_retried_until_it_succeeds(bus, runner):
    redelivered = runner.endpoint.redelivered
    await bus.publish_event(ingested("t.flaky1", "flaky2"), trace=TraceContext.new())
    _, events = await wait_for(bus, "t.flaky1", "parsed")
    assert [e.event.EVENT for e in events] == ["ingested", "parsed"]
    assert runner.endpoint.redelivered == redelivered + 1  # the second delivery
    assert (await runner.endpoint.stats())["data"]["redelivered"] == redelivered + 1


async def test_persistent_error_fails_the_task_after_max_deliver(bus, runner):
    await bus.publish_event(ingested("t.flaky9", "flaky9"), trace=TraceContext.new())
    failed, events = await wait_for(bus, "t.flaky9", "failed", timeout=60)
    assert failed.event.error.code == "internal.error"
    assert "transient bug" in failed.event.error.message
    assert [e.event.EVENT for e in events] == ["ingested", "failed"]


async def test_message_of_unknown_type_is_rejected(bus, runner):
    await bus.js.publish(
        "qubus.task.t.odd1.ingested",
        codec.encode(ingested("t.odd1", "fine")),
        headers={H_TYPE: "task.ingested.v99", H_MSG_ID: "t.odd1.ingested"},
    )
    rejected, _ = await wait_for(bus, "t.odd1", "rejected")
    assert rejected.event.error.code == "payload.unexpected_type"


# A stage process that dies (exit 3) handling its task, as a crash or an out-of-memory kill
# would; it exits 0 after 8 s if nothing killed it.
CRASHING_STAGE = """
import asyncio, os, sys
from qubus.bus.connection import Bus
from qubus.bus.consumer import Stage, StageRunner
from qubus.bus.messages import TaskParsed

async def die(event, ctx):
    os._exit(3)

async def main():
    bus = Bus(sys.argv[1], service="test", instance="crashing")
    await bus.connect()
    stage = Stage("crashing", [TaskParsed], die, subjects=[f"qubus.task.{sys.argv[2]}.parsed"])
    await StageRunner(bus, stage, ack_wait_s=1, max_deliver=2).start()
    await asyncio.sleep(8)

asyncio.run(main())
"""


async def test_a_task_whose_every_delivery_kills_its_process_fails_as_a_dead_letter(bus, nats_url):
    parsed = TaskParsed(
        task_id="t.dead1", circuit="{}", features=FEATURES, options=TaskOptions(shots=1)
    )
    await bus.publish_event(parsed, trace=TraceContext.new())  # no other stage here takes it
    exits = []
    while not exits or exits[-1] == 3:
        assert len(exits) < 4, exits
        stage = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CRASHING_STAGE, nats_url, "t.dead1"
        )
        exits.append(await asyncio.wait_for(stage.wait(), 60))
    assert exits == [3, 3, 0]  # two deliveries (max_deliver) died; the third ended the task
    failed, events = await wait_for(bus, "t.dead1", "failed")
    assert failed.event.error.code == "stage.dead_letter" and failed.event.stage == "crashing"
    assert "after 2 deliveries" in failed.event.error.message
    assert [e.event.EVENT for e in events] == ["parsed", "failed"]


async def test_a_handler_running_past_the_ack_wait_is_kept_by_heartbeats(bus):
    """Three ack waits long, two messages at once: each is delivered once, not again when its
    ack wait runs out, because the runner tells JetStream it is still being worked on."""
    deliveries: list[tuple[str, int]] = []

    async def slow(event: TaskParsed, ctx: Context) -> None:
        deliveries.append((event.task_id, ctx.deliveries))
        await asyncio.sleep(3.5)

    subjects = ["qubus.task.t.beat1.parsed", "qubus.task.t.beat2.parsed"]
    stage = Stage("beats", [TaskParsed], slow, subjects=subjects, concurrency=2)
    runner = StageRunner(bus, stage, ack_wait_s=1, max_deliver=3)
    await runner.start()
    try:
        for task_id in ("t.beat1", "t.beat2"):
            parsed = TaskParsed(
                task_id=task_id, circuit="{}", features=FEATURES, options=TaskOptions(shots=1)
            )
            await bus.publish_event(parsed, trace=TraceContext.new())
        await asyncio.sleep(5)
    finally:
        await runner.stop()
    assert sorted(deliveries) == [("t.beat1", 1), ("t.beat2", 1)]
    info = await bus.js.consumer_info("QUBUS_TASKS", "beats")
    assert info.num_ack_pending == 0 and info.num_redelivered == 0
