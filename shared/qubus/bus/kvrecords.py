"""Typed records in KV buckets: a followed cache, and compare-and-set updates.

The score weights, the fidelity calibrations and the pilots are small records that many
replicas read on every task and few write. Readers keep them in a ``RecordCache`` that a KV
watcher keeps current (``qubus.bus.connection.KVFollower``), instead of a round trip per task;
writers change them with ``update_record``, a compare-and-set loop on the key's revision, so two
replicas (or a replica and an operator) writing at once never lose an update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import nats.js.errors
from nats.js.kv import KeyValue
from pydantic import ValidationError

from qubus.bus import codec
from qubus.bus.batches import Batches
from qubus.bus.connection import Bus, KVFollower
from qubus.bus.logs import get_logger
from qubus.bus.messages import Model
from qubus.errors import InvalidPayload, QubusError

log = get_logger()

M = TypeVar("M", bound=Model)

Change = Callable[[M | None], M | None]
"""A change to a record: the new record from the current one (None: there is none), or None
to leave the key as it is."""


def invalid(exc: ValidationError, what: str, *, code: str) -> QubusError:
    """A user's invalid record as an error naming each bad field in one line."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<record>'}: {e['msg']}" for e in exc.errors()
    )
    return QubusError(f"invalid {what}: {problems}", code=code)


async def read_record(kv: KeyValue, key: str, cls: type[M]) -> tuple[M, int] | None:
    """The record under ``key`` and its revision, or None if there is none (or it was deleted).

    Raises:
        InvalidPayload: The stored value is not a valid ``cls``.
    """
    try:
        entry = await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        return None
    return codec.decode(entry.value, cls), entry.revision


async def update_record(
    kv: KeyValue,
    key: str,
    cls: type[M],
    change: Change[M],
    *,
    known: tuple[M, int] | None = None,
) -> tuple[M, int] | None:
    """Replace the record under ``key`` with ``change(current)``, compare-and-set.

    ``change`` gets the current record (None if the key is absent) and returns the new one,
    or None to leave the key as it is. A concurrent write makes the loop read and call
    ``change`` again, so ``change`` must be a pure function of its argument.

    Args:
        known: The record and revision the caller believes current (a ``RecordCache``'s):
            the first attempt starts from it instead of reading the key; if it is stale the
            compare-and-set fails and the key is read.

    Returns:
        The stored record and its revision; the current ones (or None) if ``change`` returned
        None (with ``known``, possibly ``known`` itself).

    Raises:
        InvalidPayload: The stored value is not a valid ``cls``.
    """
    current, read = known, known is None
    while True:
        if read:
            current = await read_record(kv, key, cls)
        read = True  # every later attempt follows a failed compare-and-set
        record = change(None if current is None else current[0])
        if record is None:
            return current
        try:
            if current is None:
                revision = await kv.create(key, codec.encode(record))
            else:
                revision = await kv.update(key, codec.encode(record), last=current[1])
        except nats.js.errors.KeyWrongLastSequenceError:
            continue  # written in between: read it again
        return record, revision


class RecordCache(Generic[M]):
    """The latest record of every followed key of a bucket, with its revision.

    Args:
        bus: The connection.
        bucket: The bucket.
        cls: The records' type; an entry that does not decode as it is logged and skipped.
        keys: The keys to follow (a subject pattern).
        idle_s: Replace a watcher silent this long (``KVFollower``): these buckets are
            written rarely, so this only bounds how long a watcher lost with its server goes
            unnoticed.
    """

    def __init__(
        self, bus: Bus, bucket: str, cls: type[M], *, keys: str = ">", idle_s: float = 30.0
    ) -> None:
        self._bus = bus
        self._bucket = bucket
        self._cls = cls
        self._records: dict[str, tuple[M, int]] = {}
        self._batches: Batches[Change[M]] = Batches(self._write)
        self._follower = KVFollower(bus, bucket, self._on_entry, keys=keys, idle_s=idle_s)

    async def start(self) -> None:
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    def _on_entry(self, entry: KeyValue.Entry) -> None:
        if entry.operation is not None or not entry.value:
            self._records.pop(entry.key, None)
            return
        try:
            self._store(entry.key, codec.decode(entry.value, self._cls), entry.revision)
        except InvalidPayload:
            log.warning("kv.invalid_record", bucket=self._bucket, key=entry.key)

    def _store(self, key: str, record: M, revision: int) -> None:
        """Keep ``record`` unless a later revision is already held."""
        held = self._records.get(key)
        if held is None or held[1] < revision:
            self._records[key] = (record, revision)

    def get(self, key: str) -> tuple[M, int] | None:
        """The record under ``key`` as last delivered, with its revision."""
        return self._records.get(key)

    async def update(self, key: str, change: Change[M], *, linger_s: float = 0.0) -> None:
        """``update_record`` of ``key``, starting from the record held (no read while this
        process is the bucket's only writer of the key); the record written is held at once,
        before the watcher delivers it, so the next update starts from it too. Changes of the
        key that arrive while its last update is in flight, or within ``linger_s`` after this
        one, are written with it, in one update (``qubus.bus.batches``)."""
        await self._batches.submit(key, change, linger_s=linger_s)

    async def _write(self, key: str, changes: list[Change[M]]) -> list[Exception | None]:
        """Write ``changes`` to ``key``, one after another, in one update."""

        def all_of(record: M | None) -> M | None:
            changed = None
            for change in changes:
                if (after := change(record)) is not None:
                    record = changed = after
            return changed

        kv = await self._bus.kv(self._bucket)
        stored = await update_record(kv, key, self._cls, all_of, known=self._records.get(key))
        if stored is not None:
            self._store(key, *stored)
        return [None] * len(changes)

    async def fetch(self, key: str) -> tuple[M, int] | None:
        """``get``, or, for a key not delivered yet (just written, or the watcher is still
        replaying), the server's record."""
        held = self._records.get(key)
        if held is not None:
            return held
        stored = await read_record(await self._bus.kv(self._bucket), key, self._cls)
        if stored is not None:
            self._store(key, *stored)
        return stored
