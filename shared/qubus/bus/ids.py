"""Identifiers and seeds derived from exactly the inputs that decide them."""

from __future__ import annotations

import hashlib
import secrets
import time

from qubus.bus.messages import TASK_ID
from qubus.errors import InvalidPayload


def new_task_id(now: float | None = None) -> str:
    """A unique task id that sorts by submission time (ms, hex) then 40 random bits."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{ms:011x}{secrets.token_hex(5)}"


def idempotency_kv_key(key: str) -> str:
    """The KV key for a client's idempotency key (hashed: any text is a valid key)."""
    return hashlib.sha256(key.encode()).hexdigest()


def seed_for(task_id: str, purpose: str) -> int:
    """A 32-bit seed fixed by the task and what it seeds, so a re-run repeats its samples."""
    return int.from_bytes(hashlib.sha256(f"{task_id}/{purpose}".encode()).digest()[:4], "big")


def task_subject(task_id: str, tail: str) -> str:
    """The subject ``qubus.task.<task_id>.<tail>`` of a task's events.

    Raises:
        InvalidPayload: ``task_id.invalid`` when the id is not one plain subject token (a
            ``*`` or ``>`` would read every task's events).
    """
    if not TASK_ID.match(task_id):
        raise InvalidPayload(
            f"task id {task_id!r} must match {TASK_ID.pattern}", code="task_id.invalid"
        )
    return f"qubus.task.{task_id}.{tail}"
