"""A poison task harms nobody else: hostile submissions are refused at the ingress with a
code, and a bad message that reaches a stage fails only its own task."""

from __future__ import annotations

import asyncio
import json

import msgpack
import pytest

from qubus.bus.connection import H_MSG_ID, H_TYPE, SUBMIT_SUBJECT
from qubus.bus.ids import new_task_id
from qubus.bus.messages import SubmitRequest, TaskScored
from qubus.bus.tracing import TraceContext
from qubus.errors import InvalidPayload

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

STACK_FLEET = ("ibm_nairobi",)
STACK_SETTINGS = {"QUBUS_BATCH_WINDOW_MS": "1000"}


async def refusal_code(client, body: bytes) -> str:
    reply = await client.bus.nc.request(
        SUBMIT_SUBJECT, body, timeout=10, headers={"Content-Type": "application/json"}
    )
    return reply.headers["Nats-Service-Error-Code"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"circuit": "OPENQASM 2.0;", "deadline_s": Infinity}', "payload.invalid"),
        (b'{"circuit": "OPENQASM 2.0;", "fidelity_floor": NaN}', "payload.invalid"),
        (b'{"circuit": "OPENQASM 2.0;", "shots": true}', "payload.invalid"),
        (b'{"circuit": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "payload.too_deep"),
    ],
    ids=["infinite-deadline", "nan-floor", "boolean-shots", "nested-100k-deep"],
)
async def test_hostile_submissions_are_refused_at_the_ingress_with_a_code(client, body, code):
    assert await refusal_code(client, body) == code


async def test_a_wildcard_task_id_reads_nothing(client):
    with pytest.raises(InvalidPayload) as refused:
        await client.wait(">", timeout=5)
    assert refused.value.code == "task_id.invalid"


async def test_a_poisoned_event_in_a_batch_fails_only_its_own_task(client, dev_qasm):
    """Four good scored tasks and one whose deadline is infinite (stored by a client that
    bypassed the ingress) reach the allocator in one batch: the poisoned one is rejected by
    the allocator with a code, the four others run."""
    text = (dev_qasm / "qasmbench__bell_n4.qasm").read_text()
    [seed] = await client.run([SubmitRequest(circuit=text, shots=200)], timeout=120)
    assert seed["status"] == "done", seed["error"]
    scored = await client.bus.last_event(seed["task_id"], TaskScored)
    good = [scored.model_copy(update={"task_id": new_task_id()}) for _ in range(4)]
    poison = scored.model_dump(mode="json")
    poison["task_id"] = new_task_id()
    poison["options"]["deadline_s"] = float("inf")

    await asyncio.gather(
        *(client.bus.publish_event(event, trace=TraceContext.new()) for event in good[:2]),
        client.bus.js.publish(
            f"qubus.task.{poison['task_id']}.scored",
            msgpack.packb(poison),
            headers={H_TYPE: TaskScored.TYPE, H_MSG_ID: f"{poison['task_id']}.scored"},
        ),
        *(client.bus.publish_event(event, trace=TraceContext.new()) for event in good[2:]),
    )
    ends = {
        event.task_id: (await client.wait(event.task_id, timeout=120))[-1].event for event in good
    }
    poisoned = (await client.wait(poison["task_id"], timeout=60))[-1].event
    assert {end.EVENT for end in ends.values()} == {"completed"}, ends
    assert poisoned.EVENT == "rejected"
    assert poisoned.stage == "allocator" and poisoned.error.code == "payload.invalid"
    assert "deadline_s" in poisoned.error.message
    decided = [
        e.event
        for task in good
        for e in await client.events(task.task_id)
        if e.event.EVENT == "allocated"
    ]
    assert max(d.batch_size for d in decided) >= 2  # they were decided in one batch


async def test_a_json_body_of_the_wrong_shape_in_a_stage_fails_only_its_task(client):
    """A message a stage cannot decode is rejected naming the stage and never redelivered."""
    task_id = new_task_id()
    await client.bus.js.publish(
        f"qubus.task.{task_id}.scored",
        json.dumps({"task_id": task_id, "circuit": 7}).encode(),
        headers={H_TYPE: TaskScored.TYPE, H_MSG_ID: f"{task_id}.scored"},
    )
    [end] = [e.event for e in await client.wait(task_id, timeout=60) if e.event.TERMINAL]
    assert end.EVENT == "rejected" and end.stage == "allocator"
    assert end.error.code == "payload.undecodable"
