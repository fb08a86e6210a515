"""Per-client quotas and a full task stream against a real stack: a submission past the tasks
or shots a user may have in flight is refused with ``quota.tasks``/``quota.shots`` (also after
ingestion restarts), a task's place comes back when it ends, and a stream at its limits
refuses a submission with ``stream.full``; the command line shows each as one line."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import msgpack
import pytest

from qubus.bus.auth import ANONYMOUS
from qubus.bus.connection import BUCKET_QUOTA, STREAM, TASK_STREAM_MAX_MSGS
from qubus.bus.ids import new_task_id
from qubus.bus.messages import SubmitRequest, TaskIngested
from qubus.bus.quota import STALE_S, QuotaLedger, QuotaLimits
from qubus.errors import QubusError

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

STACK_FLEET = ("ibm_nairobi",)
STACK_SETTINGS = {"QUBUS_QUOTA_TASKS": "3", "QUBUS_QUOTA_SHOTS": "1000"}


async def refused(client, request: SubmitRequest) -> str:
    with pytest.raises(QubusError) as refusal:
        await client.submit(request)
    return refusal.value.code


async def in_flight(client) -> dict:
    kv = await client.bus.js.key_value(BUCKET_QUOTA)
    return msgpack.unpackb((await kv.get(ANONYMOUS)).value)


def one_line(stderr: str, code: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"[{code}]"), stderr
    assert "Traceback" not in stderr


async def test_quotas_refuse_past_their_limits_survive_a_restart_and_free_at_the_end(
    client, stack, dev_qasm, qubus_cli, nats_url, tmp_path
):
    text = (dev_qasm / "qasmbench__bell_n4.qasm").read_text()
    path = tmp_path / "bell.qasm"
    path.write_text(text)
    # The parser stopped: every accepted task stays in flight until it resumes.
    os.kill(stack.pid("parser"), signal.SIGSTOP)
    try:
        first = SubmitRequest(circuit=text, shots=400, idempotency_key="quota-a")
        a = await client.submit(first)
        # A repeat holds no place of its own, below the limit or at it.
        again = await client.submit(first)
        assert again.duplicate and again.task_id == a.task_id
        assert list(await in_flight(client)) == [a.task_id]
        b = await client.submit(SubmitRequest(circuit=text, shots=400))
        assert await refused(client, SubmitRequest(circuit=text, shots=400)) == "quota.shots"
        c = await client.submit(SubmitRequest(circuit=text, shots=100))
        assert await refused(client, SubmitRequest(circuit=text, shots=50)) == "quota.tasks"
        again = await client.submit(first)
        assert again.duplicate and again.task_id == a.task_id
        assert sorted(await in_flight(client)) == sorted([a.task_id, b.task_id, c.task_id])

        # The count lives in the bus: a restarted ingestion refuses the same way.
        ingestion = stack.children["ingestion"]
        killed = stack.pid("ingestion")
        os.kill(killed, signal.SIGKILL)
        for _ in range(600):  # until the supervisor has started its successor
            if ingestion.process.pid not in (None, killed):
                break
            await asyncio.sleep(0.05)
        await stack.wait_ready("ingestion", timeout=60)
        assert await refused(client, SubmitRequest(circuit=text, shots=50)) == "quota.tasks"

        code, _, err = await qubus_cli(nats_url, "submit", str(path), "--shots", "50")
        assert code == 1
        one_line(err, "quota.tasks")
    finally:
        os.kill(stack.pid("parser"), signal.SIGCONT)

    for reply in (a, b, c):
        await client.wait(reply.task_id, timeout=120)
    for _ in range(200):  # the quota stage gives the places back after the terminal events
        if not await in_flight(client):
            break
        await asyncio.sleep(0.05)
    assert await in_flight(client) == {}
    [record] = await client.run([SubmitRequest(circuit=text, shots=900)], timeout=120)
    assert record["status"] == "done", record["error"]


async def test_a_full_task_stream_refuses_a_submission_with_stream_full(
    client, dev_qasm, qubus_cli, nats_url, tmp_path
):
    text = (dev_qasm / "qasmbench__bell_n4.qasm").read_text()
    path = tmp_path / "bell.qasm"
    path.write_text(text)
    info = await client.bus.js.stream_info(STREAM)
    config = info.config
    config.max_msgs = info.state.messages  # full now: DiscardPolicy.NEW refuses the next
    await client.bus.js.update_stream(config)
    try:
        assert await refused(client, SubmitRequest(circuit=text, shots=10)) == "stream.full"
        code, _, err = await qubus_cli(nats_url, "submit", str(path), "--shots", "10")
        assert code == 1
        one_line(err, "stream.full")
        assert "task stream is full" in err
        assert await in_flight(client) == {}  # the refused tasks hold no place
    finally:
        config.max_msgs = TASK_STREAM_MAX_MSGS
        await client.bus.js.update_stream(config)
    [record] = await client.run([SubmitRequest(circuit=text, shots=10)], timeout=120)
    assert record["status"] == "done", record["error"]


async def test_replicas_share_one_count_and_decide_on_fresh_entries(client):
    """Two ledgers (two ingestion replicas) on the same bucket: each refuses or releases only
    after reading what the other wrote."""
    kv = await client.bus.kv(BUCKET_QUOTA)

    async def never_stored(task_id: str) -> bool:
        return False

    limits = QuotaLimits(tasks=2, shots=10_000)
    a, b = QuotaLedger(kv, limits, never_stored), QuotaLedger(kv, limits, never_stored)
    await a.claim("bob", "bob.t1", 10)
    await a.claim("bob", "bob.t2", 10)
    with pytest.raises(QubusError) as refusal:
        await b.claim("bob", "bob.t3", 10)
    assert refusal.value.code == "quota.tasks"
    await a.release("bob", "bob.t2")
    await b.claim("bob", "bob.t3", 10)  # b's own copy still holds t2: it reads again
    await a.release("bob", "bob.t3")  # a never saw t3: it reads again
    assert sorted(msgpack.unpackb((await kv.get("bob")).value)) == ["bob.t1"]


async def test_a_place_whose_task_was_never_stored_is_dropped_at_the_limit(client):
    """A place claimed long ago by a process that died before storing its task frees itself
    when its user reaches the limit."""
    kv = await client.bus.kv(BUCKET_QUOTA)
    lost = new_task_id("carol")
    await kv.put("carol", msgpack.packb({lost: [10, time.time() - 2 * STALE_S]}))

    async def stored(task_id: str) -> bool:
        return await client.bus.last_event(task_id, TaskIngested) is not None

    ledger = QuotaLedger(kv, QuotaLimits(tasks=1, shots=10_000), stored)
    fresh = new_task_id("carol")
    await ledger.claim("carol", fresh, 10)
    assert list(msgpack.unpackb((await kv.get("carol")).value)) == [fresh]


async def test_a_burst_of_claims_from_one_user_is_stored_in_few_updates(client):
    """Claims that arrive while an update is in flight are applied together: 200 at once
    take far fewer than 200 updates, and exactly the limit's worth are admitted."""
    kv = await client.bus.kv(BUCKET_QUOTA)

    async def never_stored(task_id: str) -> bool:
        return False

    ledger = QuotaLedger(kv, QuotaLimits(tasks=150, shots=10**6), never_stored)
    before = (await client.bus.js.stream_info(f"KV_{BUCKET_QUOTA}")).state.last_seq
    outcomes = await asyncio.gather(
        *(ledger.claim("dave", f"dave.t{k}", 10) for k in range(200)), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, QubusError)]
    assert len(refused) == 50 and {o.code for o in refused} == {"quota.tasks"}
    assert len(msgpack.unpackb((await kv.get("dave")).value)) == 150
    updates = (await client.bus.js.stream_info(f"KV_{BUCKET_QUOTA}")).state.last_seq - before
    assert updates < 10  # one per burst of claims, not one per claim (150)


async def test_releases_within_the_linger_share_an_update(client):
    """Releases that come one after another, each within ``linger_s`` of the last, are stored
    together: 100 releases half a millisecond apart take a few updates, not 100."""
    kv = await client.bus.kv(BUCKET_QUOTA)

    async def stored(task_id: str) -> bool:
        return True

    ledger = QuotaLedger(kv, QuotaLimits(tasks=1000, shots=10**6), stored)
    await asyncio.gather(*(ledger.claim("erin", f"erin.t{k}", 10) for k in range(100)))
    before = (await client.bus.js.stream_info(f"KV_{BUCKET_QUOTA}")).state.last_seq

    async def release(k: int) -> None:
        await asyncio.sleep(k / 2000)
        await ledger.release("erin", f"erin.t{k}", linger_s=0.05)

    await asyncio.gather(*(release(k) for k in range(100)))
    assert msgpack.unpackb((await kv.get("erin")).value) == {}
    updates = (await client.bus.js.stream_info(f"KV_{BUCKET_QUOTA}")).state.last_seq - before
    assert updates < 10
