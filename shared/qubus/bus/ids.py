"""Identifiers and seeds derived from exactly the inputs that decide them."""

from __future__ import annotations

import hashlib
import secrets
import time


def new_task_id(owner: str, now: float | None = None) -> str:
    """A unique task id, ``<owner>.<id>``: ``id`` sorts by submission time (ms, hex) then 40
    random bits."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{owner}.{ms:011x}{secrets.token_hex(5)}"


def idempotency_kv_key(owner: str, key: str) -> str:
    """The KV key for a client's idempotency key (hashed: any text is a valid key), per
    owner: another user's same key names another task."""
    return hashlib.sha256(f"{owner}/{key}".encode()).hexdigest()


def seed_for(task_id: str, purpose: str) -> int:
    """A 32-bit seed fixed by the task and what it seeds, so a re-run repeats its samples."""
    return int.from_bytes(hashlib.sha256(f"{task_id}/{purpose}".encode()).digest()[:4], "big")
