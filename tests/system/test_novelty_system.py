"""Novelty through the real stack: kept in JetStream, the same for every replica and restart."""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import pytest

from qubus.bus import codec
from qubus.bus.connection import BUCKET_FEATURES, Bus
from qubus.bus.messages import SubmitRequest, TaskChecked, TaskParsed, TaskScored
from qubus.circuits.novelty import COMPONENTS, FeatureRecord, novelty
from qubus.client.aio import Client
from qubus.scheduling.scoring import DEFAULT_WEIGHTS
from qubus_services.parser.main import SeenCircuits

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]


async def _completed(client: Client, text: str) -> dict[str, object]:
    """Run a circuit to its end; its parsed, checked and scored events by name."""
    reply = await client.submit(SubmitRequest(circuit=text, shots=200))
    events = {stored.event.EVENT: stored.event for stored in await client.wait(reply.task_id)}
    assert "completed" in events, events
    return events


async def test_first_circuit_is_new_a_repeat_is_not_and_another_is_partly_new(client, dev_qasm):
    text = (dev_qasm / "qasmbench__cat_state_n4.qasm").read_text()
    first = await _completed(client, text)
    parsed = first["parsed"]
    assert isinstance(parsed, TaskParsed)
    assert parsed.novelty == 1.0
    assert len(parsed.feature_vector) == len(COMPONENTS)
    checked, scored = first["checked"], first["scored"]
    assert isinstance(checked, TaskChecked) and isinstance(scored, TaskScored)
    assert (checked.novelty, checked.feature_vector) == (1.0, parsed.feature_vector)
    eligible = [score for score in scored.scores if score.eligible]
    assert eligible and all(
        score.terms["novelty"] == pytest.approx(DEFAULT_WEIGHTS.w_novelty) for score in eligible
    )

    again = await _completed(client, text)
    assert again["parsed"].novelty == 0.0
    assert again["checked"].novelty == 0.0

    # Kept in JetStream under the circuit's fingerprint, attributed to the first task.
    kv = await client.bus.js.key_value(BUCKET_FEATURES)
    entry = await kv.get(parsed.features.fingerprint)
    record = codec.decode(entry.value, FeatureRecord)
    assert record.task_id == parsed.task_id and record.vector == parsed.feature_vector

    other = await _completed(client, (dev_qasm / "qasmbench__qaoa_n3.qasm").read_text())
    assert 0.0 < other["parsed"].novelty < 1.0


async def test_a_restarted_parser_still_knows_every_circuit_seen(client, stack, dev_qasm):
    seen = (dev_qasm / "qasmbench__bell_n4.qasm").read_text()
    await _completed(client, seen)
    exits = stack.children["parser"].exits
    os.kill(stack.pid("parser"), signal.SIGKILL)

    # Waits in the stream until the new parser process has read the bucket back.
    assert (await _completed(client, seen))["parsed"].novelty == 0.0
    assert stack.children["parser"].exits == exits + 1
    # A new circuit is compared with what the process before the restart stored.
    unseen = (dev_qasm / "qasmbench__grover_n2.qasm").read_text()
    assert (await _completed(client, unseen))["parsed"].novelty < 1.0


async def test_replicas_recording_at_once_compare_each_circuit_with_exactly_the_ones_before_it(
    nats_url,
):
    """Two replicas' ``SeenCircuits`` store 60 circuits concurrently: each circuit's novelty is
    the novelty against the vectors stored before it, in the bucket's order, whichever replica
    recorded it and however far its watcher had got."""
    buses = [Bus(nats_url, service="parser", instance=f"replica-{i}") for i in range(2)]
    replicas = []
    for bus in buses:
        await bus.connect()
        await bus.ensure_topology()
        replicas.append(SeenCircuits(bus, window_s=3600))
        await replicas[-1].start()
    rng = np.random.default_rng(5)
    vectors = [rng.random(len(COMPONENTS)).round(3).tolist() for _ in range(60)]
    try:
        values = await asyncio.gather(
            *(
                replicas[i % 2].record(f"anon.nov{i}", f"nov-{i}", vector)
                for i, vector in enumerate(vectors)
            )
        )
        kv = await buses[0].kv(BUCKET_FEATURES)
        # every entry of the bucket, earlier tests' included: revision → vector
        stored = {
            revision: codec.decode(value, FeatureRecord).vector
            for revision, value in await buses[0].kv_values(BUCKET_FEATURES)
        }
        revisions = [(await kv.get(f"nov-{i}")).revision for i in range(len(vectors))]
    finally:
        for replica, bus in zip(replicas, buses, strict=True):
            await replica.stop()
            await bus.close()
    expected = []
    for vector, revision in zip(vectors, revisions, strict=True):
        before = [other for at, other in stored.items() if at < revision]
        expected.append(novelty(vector, before))
    assert values == pytest.approx(expected, abs=1e-12)
