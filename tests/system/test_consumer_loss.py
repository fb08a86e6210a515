"""A stage whose durable consumer is deleted notices, creates it again after its last recorded
acknowledgement floor, and does not replay history: no task gets a second terminal event."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from qubus.bus.connection import BUCKET_CONSUMERS, STREAM
from qubus.bus.ids import split_task_subject
from qubus.bus.messages import SubmitRequest
from qubus.scheduling.replacement import qpu_consumer

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

NODE = "ibm_nairobi"
STACK_FLEET = (NODE,)
# A one-second de-duplication window: a replayed history would be stored again at once.
STACK_SETTINGS = {"QUBUS_DUPLICATE_WINDOW_S": "1"}
VICTIMS = ("parser", "fusion", qpu_consumer(NODE))


async def terminal_events(client) -> Counter[str]:
    """How many terminal events each task has in the stream."""
    info = await client.bus.js.stream_info(STREAM, subjects_filter="qubus.task.*.>")
    counts: Counter[str] = Counter()
    for subject, n in (info.state.subjects or {}).items():
        task_id, tail = split_task_subject(subject)
        if tail.split(".")[0] in ("completed", "rejected", "failed"):
            counts[task_id] += n
    return counts


async def recorded_floors(client) -> dict[str, int]:
    kv = await client.bus.kv(BUCKET_CONSUMERS)
    return {name: int((await kv.get(name)).value) for name in VICTIMS}


async def test_deleted_consumers_are_recreated_from_their_floor_without_replaying(client, dev_qasm):
    text = (dev_qasm / "qasmbench__bell_n4.qasm").read_text()
    before = await client.run([SubmitRequest(circuit=text, shots=100) for _ in range(3)])
    assert all(r["status"] == "done" for r in before), [r["error"] for r in before]
    for _ in range(100):  # every victim has recorded a floor past the first tasks
        try:
            floors = await recorded_floors(client)
        except Exception:  # not recorded yet
            floors = {}
        if floors and min(floors.values()) > 0:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the stages never recorded their floors")
    await asyncio.sleep(1.5)  # past the de-duplication window

    for name in VICTIMS:
        await client.bus.js.delete_consumer(STREAM, name)
    after = await client.run([SubmitRequest(circuit=text, shots=100) for _ in range(3)])
    assert all(r["status"] == "done" for r in after), [r["error"] for r in after]

    for name in VICTIMS:
        info = await client.bus.js.consumer_info(STREAM, name)
        assert info.config.opt_start_seq > floors[name]  # not from the start of the stream
    await asyncio.sleep(2.0)  # anything replayed would have been stored by now
    counts = await terminal_events(client)
    assert all(counts[r["task_id"]] == 1 for r in before + after), counts
    assert set(counts.values()) == {1}, counts
