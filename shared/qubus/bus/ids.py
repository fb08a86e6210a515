"""Identifiers and seeds derived from exactly the inputs that decide them."""

from __future__ import annotations

import hashlib
import re
import secrets
import time

from qubus.errors import InvalidPayload

TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}\.[A-Za-z0-9_-]{1,64}$")
"""What a task id may be: ``<owner>.<id>``, two NATS subject tokens that are no wildcards
(``*``, ``>``): the user who submitted it (``qubus.bus.auth``), then the id proper."""
ANY_TASK = "*.*"
"""A subject pattern matching every task id."""
SWEEP_POINT = re.compile(r"^([A-Za-z0-9_-]{1,32}\.[0-9a-f]{21})-(0|[1-9][0-9]{0,5})$")
"""A sweep point's task id: its sweep's id (as ``new_task_id`` makes them), ``-``, its index."""


def new_task_id(owner: str, now: float | None = None) -> str:
    """A unique task id, ``<owner>.<id>``: ``id`` sorts by submission time (ms, hex) then 40
    random bits."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{owner}.{ms:011x}{secrets.token_hex(5)}"


def owner_of(task_id: str) -> str:
    """Who submitted the task: ``<owner>`` of ``<owner>.<id>`` (the id unchecked)."""
    return task_id.split(".", 1)[0]


def sweep_point_id(sweep_id: str, index: int) -> str:
    """The task id of point ``index`` (from 0) of sweep ``sweep_id``: ``<sweep id>-<index>``,
    still ``<owner>.<id>``."""
    return f"{sweep_id}-{index}"


def sweep_of(task_id: str) -> tuple[str, int] | None:
    """The sweep and point index of a sweep point's task id (``sweep_point_id``), or None for
    any other task id."""
    match = SWEEP_POINT.match(task_id)
    return None if match is None else (match.group(1), int(match.group(2)))


def is_sweep_point(task_id: str) -> bool:
    """Whether ``task_id`` is a sweep point's (``sweep_point_id``)."""
    return SWEEP_POINT.match(task_id) is not None


def submitted_at(task_id: str) -> float | None:
    """The Unix time ``new_task_id`` wrote into ``task_id`` (a sweep point's: its sweep's), or
    None for an id it did not make."""
    point = sweep_of(task_id)
    own_id = (point[0] if point else task_id).rpartition(".")[2]
    if len(own_id) != 21:
        return None
    try:
        return int(own_id[:11], 16) / 1000
    except ValueError:
        return None


def check_task_id(text: str) -> str:
    """``text``, if it can be a task id.

    Raises:
        InvalidPayload: ``task.invalid_id``: it cannot (no owner, a wildcard, a space, too
            long).
    """
    if not TASK_ID.match(text):
        raise InvalidPayload(
            f"{text!r} is not a task id (<owner>.<id>: 1-32 and 1-64 letters, digits, _ or -)",
            code="task.invalid_id",
        )
    return text


def idempotency_kv_key(owner: str, key: str) -> str:
    """The KV key for a client's idempotency key (hashed: any text is a valid key), per
    owner: another user's same key names another task."""
    return hashlib.sha256(f"{owner}/{key}".encode()).hexdigest()


def seed_for(task_id: str, purpose: str) -> int:
    """A 32-bit seed fixed by the task and what it seeds, so a re-run repeats its samples."""
    return int.from_bytes(hashlib.sha256(f"{task_id}/{purpose}".encode()).digest()[:4], "big")


def task_subject(task_id: str, tail: str) -> str:
    """The subject ``qubus.task.<task_id>.<tail>`` of a task's events.

    Raises:
        InvalidPayload: ``task.invalid_id`` when the id is not two plain subject tokens (a
            ``*`` or ``>`` would read other tasks' events).
    """
    return f"qubus.task.{check_task_id(task_id)}.{tail}"


def split_task_subject(subject: str) -> tuple[str, str]:
    """The task id and the tail of a task event's subject (the inverse of ``task_subject``).

    ``qubus.task.alice.t1.allocated.ibm_nairobi`` gives ``("alice.t1", "allocated.ibm_nairobi")``.
    """
    _, _, owner, own_id, tail = subject.split(".", 4)
    return f"{owner}.{own_id}", tail
