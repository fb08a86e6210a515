"""Hostile input harms nobody else: poison submissions and circuits that expand into huge
ones are refused at the ingress with a code, and a bad message that reaches a stage (stored by
a client that bypassed the ingress) fails only its own task, once."""

from __future__ import annotations

import asyncio
import json

import cirq
import msgpack
import pytest

from benchmarks.chaos import definition_bomb, repetition_bomb
from qubus.bus.auth import ANONYMOUS
from qubus.bus.connection import H_MSG_ID, H_TYPE, SUBMIT_SUBJECT
from qubus.bus.ids import new_task_id
from qubus.bus.messages import (
    SubmitRequest,
    TaskChecked,
    TaskEvent,
    TaskIngested,
    TaskOptions,
    TaskScored,
)
from qubus.bus.tracing import TraceContext
from qubus.circuits import circuit_features
from qubus.errors import InvalidPayload, QubusError

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


@pytest.mark.parametrize("task_id", [">", "*.*", "anon.*", "anon.>", "*.t1", "t1"])
async def test_a_wildcard_or_ownerless_task_id_reads_nothing(client, task_id):
    with pytest.raises(InvalidPayload) as refused:
        await client.wait(task_id, timeout=5)
    assert refused.value.code == "task.invalid_id"


async def test_a_poisoned_event_in_a_batch_fails_only_its_own_task(client, dev_qasm):
    """Four good scored tasks and one whose deadline is infinite (stored by a client that
    bypassed the ingress) reach the allocator in one batch: the poisoned one is rejected by
    the allocator with a code, the four others run."""
    text = (dev_qasm / "qasmbench__bell_n4.qasm").read_text()
    [seed] = await client.run([SubmitRequest(circuit=text, shots=200)], timeout=120)
    assert seed["status"] == "done", seed["error"]
    scored = await client.bus.last_event(seed["task_id"], TaskScored)
    good = [scored.model_copy(update={"task_id": new_task_id(ANONYMOUS)}) for _ in range(4)]
    poison = scored.model_dump(mode="json")
    poison["task_id"] = new_task_id(ANONYMOUS)
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
    task_id = new_task_id(ANONYMOUS)
    await client.bus.js.publish(
        f"qubus.task.{task_id}.scored",
        json.dumps({"task_id": task_id, "circuit": 7}).encode(),
        headers={H_TYPE: TaskScored.TYPE, H_MSG_ID: f"{task_id}.scored"},
    )
    [end] = [e.event for e in await client.wait(task_id, timeout=60) if e.event.TERMINAL]
    assert end.EVENT == "rejected" and end.stage == "allocator"
    assert end.error.code == "payload.undecodable"


async def publish_raw(client, event: TaskEvent) -> None:
    """Store an event as a client that bypassed the ingress would."""
    await client.bus.publish_event(event, trace=TraceContext.new())


BOMBS = {
    "cirq-json-1e5": (repetition_bomb(10**5), "cirq-json"),
    "cirq-json-1e9": (repetition_bomb(10**9), "cirq-json"),
    "qasm-999999": (definition_bomb(), "qasm2"),
}


@pytest.mark.parametrize("name", BOMBS)
async def test_small_texts_that_expand_into_huge_circuits_are_refused_at_the_ingress(client, name):
    text, fmt = BOMBS[name]
    with pytest.raises(QubusError) as refused:
        await client.submit(SubmitRequest(circuit=text, format=fmt))
    assert refused.value.code == "circuit.too_large"


async def test_every_stage_refuses_a_bomb_it_is_handed_and_a_normal_task_still_runs(
    client, dev_qasm
):
    """Bombs stored past the ingress are rejected by the stage that reads them, once (never
    retried); a normal task submitted behind them completes."""
    options = TaskOptions(shots=100)
    parsed = {}
    for name, (text, fmt) in BOMBS.items():
        task_id = new_task_id(ANONYMOUS)
        parsed[task_id] = name
        await publish_raw(
            client,
            TaskIngested(task_id=task_id, format=fmt, text=text, options=options, submitted_at=0),
        )
    features = circuit_features(cirq.Circuit())
    checked = new_task_id(ANONYMOUS)
    await publish_raw(
        client,
        TaskChecked(
            task_id=checked,
            circuit=repetition_bomb(10**9),
            features=features,
            options=options,
            checks=[],
            logic_score=1.0,
        ),
    )
    text = (dev_qasm / "qasmbench__bell_n4.qasm").read_text()
    [normal] = await client.run([SubmitRequest(circuit=text, shots=200)], timeout=120)
    assert normal["status"] == "done", normal["error"]

    for task_id in [*parsed, checked]:
        events = [e.event for e in await client.wait(task_id, timeout=60)]
        end = events[-1]
        assert end.EVENT == "rejected", (task_id, end)
        assert end.error.code == "circuit.too_large"
        expected = {"parser"} if task_id in parsed else {"sandbox", "noise"}
        assert end.stage in expected


async def test_a_result_too_large_to_publish_is_rejected_at_once_not_retried(client):
    """2 KB of OpenQASM within the operation limit whose parsed circuit is too large for the
    bus: 5,000 qubits of a register with a 2,000-character name, each measured (10 MB in
    either wire form, over the 8 MiB payload: each qubit's name is written once). Rejected on
    the first delivery, where it used to be parsed again on each of five and then fail as
    ``internal.error``."""
    name = "q" * 2000
    lines = ["OPENQASM 2.0;", 'include "qelib1.inc";', f"qreg {name}[5000];", "creg c[5000];"]
    lines += [f"measure {name} -> c;"]
    reply = await client.submit(SubmitRequest(circuit="\n".join(lines), shots=10))
    events = [e.event for e in await client.wait(reply.task_id, timeout=120)]
    assert [e.EVENT for e in events] == ["ingested", "rejected"]
    assert events[-1].stage == "parser" and events[-1].error.code == "payload.too_large"
