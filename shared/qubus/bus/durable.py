"""Durable consumers that come back where they were after being deleted.

A stage's durable consumer holds its position in ``QUBUS_TASKS``. If it is deleted (by an
operator, a lost server store, a bad ``nats consumer rm``), creating it again from the start
of the stream would run every stage on seven days of events again, and those older than the
de-duplication window would be stored a second time (a second ``completed``). So every stage
records its consumer's acknowledgement floor (the stream sequence up to which everything it
takes has been acknowledged) in KV ``qubus_consumers`` every ``FLOOR_INTERVAL_S``, and a
consumer that is missing, when its stage starts or when a fetch finds it gone, is created
again from just after that floor (``DeliverPolicy.BY_START_SEQUENCE``). What is replayed is at
most the last interval's messages, whose results are recent enough to be de-duplicated.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import nats.errors
import nats.js.errors
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue

from qubus.bus.connection import BUCKET_CONSUMERS, STREAM, Bus, bus_unavailable
from qubus.bus.logs import get_logger

log = get_logger()

FLOOR_INTERVAL_S = 2.0
"""How often a stage records its consumer's acknowledgement floor."""


FLOOR_READ_TRIES = 15
"""How many times, a second apart, a stage tries to read its recorded floor: on a cluster, a
bucket just created has no leader for a few seconds and its reads time out meanwhile."""


async def recorded_floor(bus: Bus, name: str) -> int:
    """The last acknowledgement floor recorded for consumer ``name`` (0: none).

    Raises:
        nats.errors.Error: the bucket did not answer in ``FLOOR_READ_TRIES`` tries.
    """
    kv = await bus.kv(BUCKET_CONSUMERS)
    for _ in range(FLOOR_READ_TRIES - 1):
        try:
            return await _read_floor(kv, name)
        except nats.errors.Error as exc:
            if not bus_unavailable(exc):
                raise
            await asyncio.sleep(1.0)
    return await _read_floor(kv, name)


async def _read_floor(kv: KeyValue, name: str) -> int:
    try:
        entry = await kv.get(name)
    except nats.js.errors.KeyNotFoundError:
        return 0
    return int(entry.value or b"0")


async def record_floor(bus: Bus, name: str, last: int) -> int:
    """Record consumer ``name``'s acknowledgement floor if it moved past ``last``; returns it.

    Raises:
        nats.js.errors.NotFoundError: The consumer does not exist.
    """
    info = await bus.js.consumer_info(STREAM, name, timeout=2.0)
    floor = info.ack_floor.stream_seq if info.ack_floor else 0
    if floor > last:
        await (await bus.kv(BUCKET_CONSUMERS)).put(name, str(floor).encode())
    return max(floor, last)


async def ensure_durable(bus: Bus, config: ConsumerConfig, *, floor: int = 0) -> None:
    """Create the durable consumer ``config`` describes, or bring the existing one to it.

    An existing consumer keeps where it started. A missing one starts after the larger of
    ``floor`` and the floor recorded in KV (from the start of the stream if neither is known).
    """
    name = config.durable_name
    assert name is not None
    try:
        info = await bus.js.consumer_info(STREAM, name, timeout=2.0)
    except nats.js.errors.NotFoundError:
        info = None
    if info is not None:
        config = replace(
            config,
            deliver_policy=info.config.deliver_policy,
            opt_start_seq=info.config.opt_start_seq,
        )
    else:
        start = max(floor, await recorded_floor(bus, name))
        if start:
            config = replace(
                config, deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start + 1
            )
            log.warning("consumer.recreated", consumer=name, from_stream_seq=start + 1)
    try:
        await bus.js.add_consumer(STREAM, config)
    except nats.js.errors.BadRequestError:
        if info is not None:
            raise
        log.info("consumer.recreated_elsewhere", consumer=name)  # another replica was first


CONSUMER_GONE = (nats.js.errors.ServiceUnavailableError, nats.js.errors.NotFoundError)
"""What a fetch raises once its durable consumer has been deleted."""


async def consumer_missing(bus: Bus, name: str) -> bool:
    """Whether durable consumer ``name`` no longer exists (False if the server cannot say)."""
    try:
        await bus.js.consumer_info(STREAM, name, timeout=2.0)
    except nats.js.errors.NotFoundError:
        return True
    except nats.errors.Error:
        return False
    return False
