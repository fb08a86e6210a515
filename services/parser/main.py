"""parser: ``ingested`` → ``parsed``. Source text to the cirq IR (in its wire form,
``qubus.circuits.ir.circuit_to_wire``), features, novelty.

Novelty is kept in JetStream: every circuit's feature vector is stored in KV
``qubus_features`` under its fingerprint, with a create that succeeds only for the first task
to bring that circuit. A circuit's novelty is computed against the entries stored before its
own (lower revisions), so every replica gives it the same value, and a restarted replica reads
them all back. ``SeenCircuits`` follows the bucket with a KV watcher and holds the vectors in
a ``NoveltyIndex``, a cache of the bucket: its last ``REFERENCES`` entries, within the bucket's
TTL (``QUBUS_TASK_RETENTION_S``, as long as the tasks are kept).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import NamedTuple

import nats.js.errors
from nats.js.kv import KeyValue

from qubus.bus import codec
from qubus.bus.connection import BUCKET_FEATURES, Bus, KVFollower
from qubus.bus.consumer import Context, Stage
from qubus.bus.logs import get_logger
from qubus.bus.messages import TaskIngested, TaskParsed
from qubus.bus.service import Runtime
from qubus.bus.workers import (
    HEAVY_CIRQ_JSON_BYTES,
    HEAVY_OPERATIONS,
    INLINE_MAX_BYTES,
    HeavySlot,
    laned_concurrency,
    off_loop,
)
from qubus.circuits import Features, circuit_features, circuit_to_wire, load_circuit
from qubus.circuits.novelty import VECTOR_VERSION, FeatureRecord, NoveltyIndex, feature_vector
from qubus.circuits.qasm.count import expanded_operations
from qubus.circuits.sweeps import check_points
from qubus.errors import InvalidPayload, QasmError, Retry

log = get_logger()


class SeenCircuits:
    """The feature vectors of every circuit parsed so far, by any replica (KV ``qubus_features``).

    Args:
        bus: The connection.
        window_s: How far back a circuit's novelty looks (``NoveltyIndex``): the bucket's TTL.
        catch_up_s: How long ``record`` waits for the watcher to deliver its own entry; past
            it the watcher is replaced (``KVFollower``) and the task retried.
    """

    def __init__(self, bus: Bus, *, window_s: float, catch_up_s: float = 10.0) -> None:
        self._bus = bus
        self._catch_up_s = catch_up_s
        self._index = NoveltyIndex(window_s)
        self._revision = 0
        self._advanced = asyncio.Event()  # set whenever an entry arrives
        self._follower = KVFollower(bus, BUCKET_FEATURES, self._on_entry)

    async def start(self) -> None:
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    def _on_entry(self, entry: KeyValue.Entry) -> None:
        if entry.operation is None and entry.value:
            self._add(entry.revision, entry.key, entry.value, entry.created.timestamp())
        else:
            self._index.remove(entry.key)
        self._revision = max(self._revision, entry.revision)
        self._advanced.set()

    async def _caught_up(self, revision: int) -> None:
        while self._revision < revision:
            self._advanced.clear()
            await self._advanced.wait()

    def _add(self, revision: int, key: str, value: bytes, created: float) -> None:
        try:
            record = codec.decode(value, FeatureRecord)
        except InvalidPayload:
            log.warning("features.invalid_record", key=key)
            return
        if record.version == VECTOR_VERSION:
            self._index.add(revision, key, record.vector, created)

    async def record(self, task_id: str, fingerprint: str, vector: Sequence[float]) -> float:
        """Store a task's circuit vector (first time only) and return the circuit's novelty.

        Returns:
            1 − the largest cosine similarity with the circuits stored before this one; 0.0
            when another task already stored the same circuit (same fingerprint).

        The novelty needs every entry stored before this one: the watcher delivers entries in
        revision order, so once it has delivered revision ``r − 1`` (usually before the create
        returns, on an idle parser) nothing is waited for; else it waits for the watcher.

        Raises:
            Retry: The watcher has not delivered the entries before this one within
                ``catch_up_s`` (it is replaced).
        """
        kv = await self._bus.kv(BUCKET_FEATURES)
        value = codec.encode(
            FeatureRecord(task_id=task_id, version=VECTOR_VERSION, vector=list(vector))
        )
        try:
            revision = await kv.create(fingerprint, value)
        except nats.js.errors.KeyWrongLastSequenceError:
            entry = await kv.get(fingerprint)
            if codec.decode(entry.value, FeatureRecord).task_id != task_id:
                return 0.0
            revision = entry.revision  # stored by an earlier delivery of this task
        try:
            async with asyncio.timeout(self._catch_up_s):
                await self._caught_up(revision - 1)
        except TimeoutError:
            self._follower.restart()
            raise Retry("the feature store watcher is behind", delay_s=1.0) from None
        return self._index.novelty(vector, before=revision)


def describe(event: TaskIngested, operations: int | None = None) -> tuple[str, Features]:
    """Parse the task's circuit (raises ``QasmError`` with line and column) and check that the
    task gives values to its parameters (``qubus.circuits.sweeps.check_points``); its wire
    form (``qubus.circuits.ir.circuit_to_wire``) and features. ``operations``: the OpenQASM
    text's count, when ``weight`` made it whole (not made again)."""
    circuit = load_circuit(event.text, event.format, operations=operations)
    check_points(circuit, event.options.sweep)
    wire = circuit_to_wire(circuit)
    return wire, circuit_features(circuit, wire)


INLINE_MAX_OPERATIONS = 200
"""Most operations a source parsed on the event loop may expand into (``inline``)."""


class Weight(NamedTuple):
    """How heavy a task's source is to parse (``weight``).

    Attributes:
        inline: Small enough to parse on the event loop.
        heavy: Heavy to parse: in its stage's heavy lane (``qubus.bus.workers.HeavySlot``).
        operations: The OpenQASM text's operations, counted whole (``describe`` does not count
            them again); None for Cirq JSON, or a count stopped early.
    """

    inline: bool
    heavy: bool
    operations: int | None = None


def weight(event: TaskIngested) -> Weight:
    """How heavy the task's source is to parse. OpenQASM is counted from its tokens (which
    stops early, past ``HEAVY_OPERATIONS``): inline up to ``INLINE_MAX_OPERATIONS`` in a short
    text, heavy past ``HEAVY_OPERATIONS``. Cirq JSON is judged by its text: inline if short and
    without a ``CircuitOperation`` (whose repetitions a short text can hide), heavy if it has
    one or is longer than ``HEAVY_CIRQ_JSON_BYTES``."""
    short = len(event.text) <= INLINE_MAX_BYTES
    if event.format == "cirq-json":
        repeated = "CircuitOperation" in event.text
        return Weight(short and not repeated, repeated or len(event.text) > HEAVY_CIRQ_JSON_BYTES)
    try:
        operations = expanded_operations(event.text, limit=HEAVY_OPERATIONS)
    except QasmError:  # parsed in a thread, which reports it
        return Weight(False, False)
    if operations > HEAVY_OPERATIONS:
        return Weight(False, True)
    return Weight(short and operations <= INLINE_MAX_OPERATIONS, False, operations)


async def setup(rt: Runtime) -> None:
    seen = SeenCircuits(rt.bus, window_s=rt.settings.task_retention_s)
    await seen.start()
    rt.stack.push_async_callback(seen.stop)

    heavy_lane = HeavySlot(rt.settings.heavy_lane)

    async def handle(event: TaskIngested, ctx: Context) -> TaskParsed:
        # Counting is linear in the text: a long one is counted in a thread.
        inline, heavy, operations = await off_loop(
            weight, event, inline=len(event.text) <= INLINE_MAX_BYTES
        )
        async with heavy_lane(heavy):
            circuit, features = await off_loop(describe, event, operations, inline=inline)
        vector = feature_vector(features)
        return TaskParsed(
            task_id=event.task_id,
            circuit=circuit,
            features=features,
            options=event.options,
            novelty=await seen.record(event.task_id, features.fingerprint, vector),
            feature_vector=vector,
        )

    concurrency = laned_concurrency(rt.settings.heavy_lane, without=4)
    await rt.consume(Stage("parser", [TaskIngested], handle, concurrency=concurrency))
