"""Per-client quotas at the ingress: tasks and shots in flight (submitted, not yet ended).

Each user's tasks in flight are one entry of KV ``qubus_quota``: the key is the user, the value
the msgpack map ``{task id: [shots, claimed at]}``. Ingestion claims a task's place before it
publishes the task's ``ingested`` event, with a compare-and-set update of that entry, and
releases it when its ``quota`` stage sees the task's terminal event (``completed``,
``rejected``, ``failed``, ``cancelled``). So the count is exact across an ingestion restart
(it lives in the bus, not in the process) and across replicas (each update names the revision
it read; a replica that lost the race reads the entry again), and both a claim and a release
are idempotent (a map keyed by task id: a redelivered terminal event or a repeated submission
changes nothing). A check costs one KV update per submission and one per terminal event
(fewer in a burst: the edits of one user that arrive during an update share the next one),
without reading the task stream.

Limits (stated in ``docs/architecture.md``): a process that dies between claiming a place and
storing the ``ingested`` event leaves a place no terminal event will release; a user at a
limit has such places (older than ``STALE_S``, their task never stored) dropped, at most once
per ``STALE_S``. Between a task's terminal event and its release lies the ``quota`` stage's
lag (milliseconds on a quiet stack). On a bus without authentication every client is
``anon`` and shares one quota.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgpack
import nats.js.errors
from nats.js.kv import KeyValue

from qubus.bus.batches import Batches
from qubus.errors import QubusError

Edit = Callable[[dict[str, list[float]]], Awaitable[bool]]
"""A change to one user's places: it edits the map in place and says whether it changed it,
or raises ``QubusError`` to refuse."""

STALE_S = 30.0
"""A place claimed this long ago whose task was never stored is dropped when its user is at a
limit."""


@dataclass(frozen=True)
class QuotaLimits:
    """How much one user may have in flight.

    Attributes:
        tasks: Tasks submitted and not yet ended.
        shots: Shots of those tasks (a sweep's shots times its points).
        exempt: Users without limits (the operator).
    """

    tasks: int
    shots: int
    exempt: frozenset[str] = frozenset()

    def admit(self, user: str, in_flight: dict[str, list[float]], shots: int) -> None:
        """Refuse a new task of ``shots`` for ``user``, who has ``in_flight``, past a limit.

        Raises:
            QubusError: ``quota.tasks`` (as many tasks in flight as allowed) or ``quota.shots``
                (the task's shots would take the user's shots in flight over the limit).
        """
        if user in self.exempt:
            return
        if len(in_flight) >= self.tasks:
            raise QubusError(
                f"user {user} has {len(in_flight)} tasks in flight, the most allowed "
                f"(QUBUS_QUOTA_TASKS={self.tasks}); submit again when some have ended",
                code="quota.tasks",
            )
        held = int(sum(place[0] for place in in_flight.values()))
        if held + shots > self.shots:
            raise QubusError(
                f"user {user} has {held} shots in flight; {shots} more would pass the limit "
                f"of {self.shots} (QUBUS_QUOTA_SHOTS); submit again when some tasks have ended"
                + (" or with fewer shots" if shots > self.shots else ""),
                code="quota.shots",
            )


@dataclass
class QuotaLedger:
    """Every user's tasks in flight, in KV ``qubus_quota`` (see the module).

    Args:
        kv: The bucket.
        limits: The limits ``claim`` enforces.
        stored: Whether a task's ``ingested`` event is stored (to drop stale places).
    """

    kv: KeyValue
    limits: QuotaLimits
    stored: Callable[[str], Awaitable[bool]]
    _entries: dict[str, tuple[int, dict[str, list[float]]]] = field(default_factory=dict)
    _pruned: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._batches: Batches[Edit] = Batches(self._apply)

    async def claim(self, user: str, task_id: str, shots: int) -> None:
        """Hold a place for ``task_id`` (``shots``) in ``user``'s quota; nothing if it holds one.

        Raises:
            QubusError: ``quota.tasks`` or ``quota.shots`` (``QuotaLimits.admit``).
        """

        async def add(places: dict[str, list[float]]) -> bool:
            if task_id in places:
                return False
            try:
                self.limits.admit(user, places, shots)
            except QubusError:
                if not await self._drop_stale(user, places):
                    raise
                self.limits.admit(user, places, shots)
            places[task_id] = [shots, time.time()]
            return True

        await self._batches.submit(user, add)

    async def release(self, user: str, task_id: str, *, linger_s: float = 0.0) -> None:
        """Give back ``task_id``'s place; nothing if it holds none. With ``linger_s``, wait that
        long first, so that the releases of that while share one update."""

        async def remove(places: dict[str, list[float]]) -> bool:
            return places.pop(task_id, None) is not None

        await self._batches.submit(user, remove, linger_s=linger_s)

    async def _apply(self, user: str, batch: list[Edit]) -> list[Exception | None]:
        """Apply ``batch`` to ``user``'s entry and store it, naming the revision it read; on a
        conflict (another replica wrote first) read it again and repeat. The entry as this
        process last wrote it is tried first; a refusal or a decision to change nothing is
        taken only on the entry read afresh (another replica may have added or released
        places since). Returns each edit's refusal, or None.

        The edits of a batch are those that arrived while the entry's last update was in
        flight (``qubus.bus.batches``): a burst of submissions from one user costs one round
        trip per burst, not per submission."""
        cached = self._entries.get(user)
        revision, places = cached if cached is not None else await self._read(user)
        fresh = cached is None
        while True:
            draft = dict(places)
            outcomes: list[bool | Exception] = []
            for edit in batch:
                try:
                    outcomes.append(await edit(draft))
                except QubusError as exc:
                    outcomes.append(exc)
            if not fresh and not all(outcome is True for outcome in outcomes):
                (revision, places), fresh = await self._read(user), True
                continue
            if any(outcome is True for outcome in outcomes):
                value = msgpack.packb(draft)
                try:
                    if revision == 0:
                        revision = await self.kv.create(user, value)
                    else:
                        revision = await self.kv.update(user, value, last=revision)
                except nats.js.errors.KeyWrongLastSequenceError:
                    (revision, places), fresh = await self._read(user), True
                    continue
                self._entries[user] = (revision, draft)
            return [o if isinstance(o, Exception) else None for o in outcomes]

    async def _read(self, user: str) -> tuple[int, dict[str, list[float]]]:
        try:
            entry = await self.kv.get(user)
            places = msgpack.unpackb(entry.value) if entry.value else {}
            self._entries[user] = (entry.revision or 0, places)
        except nats.js.errors.KeyNotFoundError:  # never written (``create`` makes it)
            self._entries[user] = (0, {})
        return self._entries[user]

    async def _drop_stale(self, user: str, places: dict[str, list[float]]) -> bool:
        """Drop ``user``'s places older than ``STALE_S`` whose task was never stored (at most
        once per ``STALE_S``); whether any was dropped."""
        now = time.time()
        if now - self._pruned.get(user, 0.0) < STALE_S:
            return False
        self._pruned[user] = now
        old = [task_id for task_id, (_, at) in places.items() if now - at > STALE_S]
        found = await asyncio.gather(*(self.stored(task_id) for task_id in old))
        stale = [task_id for task_id, is_stored in zip(old, found, strict=True) if not is_stored]
        for task_id in stale:
            del places[task_id]
        return bool(stale)
