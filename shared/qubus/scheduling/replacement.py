"""Where allocations wait, and which allocation of a task is current: what re-placement reads.

A task's allocation is one message on ``qubus.task.<id>.allocated.<node>``, consumed by the
node's durable consumer ``qpu-<node>`` one at a time. A re-placement publishes a new
allocation (``TaskAllocated.attempt`` + 1) instead of withdrawing the old one, so the current
allocation of a task is its last message on ``qubus.task.<id>.allocated.*``; a node skips
any other. A sweep cut into chunks (``TaskAllocated.chunk``) has one allocation per chunk, and
a chunk is re-placed alone: its current allocation is its own latest attempt.
"""

from __future__ import annotations

import nats.errors
import nats.js.errors
from nats.js.api import ConsumerConfig, DeliverPolicy

from qubus.bus import codec
from qubus.bus.connection import STREAM, Bus
from qubus.bus.ids import ANY_TASK, task_subject
from qubus.bus.messages import TaskAllocated
from qubus.bus.tracing import TraceContext

READ_TIMEOUT_S = 5.0


def qpu_consumer(node: str) -> str:
    """The durable consumer through which QPU node ``node`` takes its allocations."""
    return f"qpu-{node}"


def allocation_subject(node: str) -> str:
    """The subject of every allocation to ``node``."""
    return f"qubus.task.{ANY_TASK}.allocated.{node}"


async def latest_allocation(
    bus: Bus, task_id: str, *, unless_sequence: int | None = None
) -> TaskAllocated | None:
    """The task's current allocation (its last on any node), or None if it has none; also
    None if it is the message stored at ``unless_sequence`` (the caller holds it already and
    is spared decoding it again)."""
    stored = await bus.last_message(task_subject(task_id, "allocated.*"))
    if stored is None or stored.sequence == unless_sequence:
        return None
    return codec.decode(stored.data, TaskAllocated)


async def chunk_allocations(bus: Bus, task_id: str) -> dict[int, TaskAllocated]:
    """Each chunk's current allocation (its latest attempt) of a sweep cut into chunks, by
    chunk index, read from the sweep's stored events."""
    current: dict[int, TaskAllocated] = {}
    for stored in await bus.task_events(task_id):
        event = stored.event
        if isinstance(event, TaskAllocated) and event.chunk is not None:
            seen = current.get(event.chunk.index)
            if seen is None or event.attempt > seen.attempt:
                current[event.chunk.index] = event
    return current


async def replaced_by(
    bus: Bus, event: TaskAllocated, *, unless_sequence: int | None = None
) -> TaskAllocated | None:
    """The allocation that has taken ``event``'s place since (a later attempt of the task, or
    for a chunk of a sweep a later attempt of that chunk), or None while ``event`` is current.

    One read while nothing has been re-placed (the task's last allocation, as
    ``latest_allocation``, with ``unless_sequence``); the sweep's events once one of its
    chunks has been (a re-placement is the last allocation stored, attempt 1 or more).
    """
    latest = await latest_allocation(bus, event.task_id, unless_sequence=unless_sequence)
    if latest is not None and event.chunk is not None and latest.chunk is not None:
        if latest.attempt == 0:
            return None  # no chunk of the sweep has been re-placed
        if latest.chunk.index != event.chunk.index:
            latest = (await chunk_allocations(bus, event.task_id)).get(event.chunk.index)
    return latest if latest is not None and latest.attempt != event.attempt else None


async def allocated_to(bus: Bus, task_id: str, node: str) -> bool:
    """Whether the task was ever allocated to ``node``: a node's event about a task it was
    never given is its forgery and not believed (``qubus.bus.messages.believed``)."""
    return await bus.last_message(task_subject(task_id, f"allocated.{node}")) is not None


async def outstanding_allocations(bus: Bus, node: str) -> list[tuple[TaskAllocated, TraceContext]]:
    """The allocations to ``node`` it has not acknowledged (queued, or being run), oldest
    first, each with its trace context.

    Read from the stream after the node consumer's acknowledgement floor; empty when the
    node has no consumer yet.
    """
    try:
        info = await bus.js.consumer_info(STREAM, qpu_consumer(node))
    except nats.js.errors.NotFoundError:
        return []
    if not (info.num_pending or 0) + (info.num_ack_pending or 0):
        return []
    sub = await bus.js.subscribe(
        allocation_subject(node),
        stream=STREAM,
        ordered_consumer=True,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=info.ack_floor.stream_seq + 1,
        ),
    )
    allocations = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=READ_TIMEOUT_S)
            except nats.errors.TimeoutError:
                break
            event = codec.decode(msg.data, TaskAllocated)
            allocations.append((event, TraceContext.extract(msg.headers)))
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return allocations
