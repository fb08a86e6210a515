"""Records kept in KV buckets: compare-and-set updates through a ``RecordCache``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from qubus.bus import codec
from qubus.bus.connection import BUCKET_PILOTS, Bus
from qubus.bus.kvrecords import RecordCache, read_record
from qubus.bus.messages import Model

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]


class Tally(Model):
    count: int
    writers: list[str]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    bus = Bus(nats_url, service="test", instance="records")
    await bus.connect()
    await bus.ensure_topology()
    try:
        yield bus
    finally:
        await bus.close()


def add(writer: str):
    def change(tally: Tally | None) -> Tally:
        held = tally or Tally(count=0, writers=[])
        return Tally(count=held.count + 1, writers=[*held.writers, writer])

    return change


async def test_updates_start_from_the_held_record_and_lose_nothing_to_another_writer(bus):
    """Two caches (two processes' views) update one key 40 times each, interleaved: every
    update is kept, whichever cache's held record was stale at the time."""
    caches = [RecordCache(bus, BUCKET_PILOTS, Tally, keys="tally") for _ in range(2)]
    for cache in caches:
        await cache.start()
    try:
        for _ in range(40):
            updates = (cache.update("tally", add(str(i))) for i, cache in enumerate(caches))
            await asyncio.gather(*updates)
        stored, _ = await read_record(await bus.kv(BUCKET_PILOTS), "tally", Tally)
    finally:
        for cache in caches:
            await cache.stop()
    assert stored.count == 80
    assert sorted(stored.writers) == ["0"] * 40 + ["1"] * 40


async def test_a_stale_held_record_is_read_again_and_what_is_written_is_held_at_once(bus):
    kv = await bus.kv(BUCKET_PILOTS)
    await kv.create("stale", codec.encode(Tally(count=1, writers=["writer"])))
    writer, stale = (RecordCache(bus, BUCKET_PILOTS, Tally, keys="stale") for _ in range(2))
    await writer.start()
    await stale.start()
    try:
        assert await stale.fetch("stale") is not None
        await stale.stop()  # its watcher gone: what it holds stays at the first revision
        for _ in range(3):
            await writer.update("stale", add("writer"))
        await stale.update("stale", add("stale"))
    finally:
        await writer.stop()
    stored, revision = await read_record(kv, "stale", Tally)
    assert stored.writers == ["writer"] * 4 + ["stale"]
    assert stale.get("stale") == (stored, revision)  # held by the write, not by a watcher


async def test_updates_of_a_key_within_the_linger_share_one_write(bus):
    """100 updates of one key at once, with a linger, are all kept and take a few writes,
    not 100; a change that returns None leaves the others of its batch in force."""
    kv = await bus.kv(BUCKET_PILOTS)
    cache = RecordCache(bus, BUCKET_PILOTS, Tally, keys="batched")
    await cache.start()
    try:
        before = (await bus.js.stream_info(f"KV_{BUCKET_PILOTS}")).state.last_seq
        changes = [add(str(k)) for k in range(100)] + [lambda tally: None]
        await asyncio.gather(*(cache.update("batched", c, linger_s=0.05) for c in changes))
        writes = (await bus.js.stream_info(f"KV_{BUCKET_PILOTS}")).state.last_seq - before
    finally:
        await cache.stop()
    stored, _ = await read_record(kv, "batched", Tally)
    assert stored.count == 100 and sorted(stored.writers) == sorted(str(k) for k in range(100))
    assert 1 <= writes < 5
