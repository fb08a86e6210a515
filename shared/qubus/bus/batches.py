"""Changes to one record that arrive together are written together.

A record every task changes (a user's quota entry, a node's fidelity calibration) costs the
bus one compare-and-set write per change when each is written alone. ``Batches`` collects the
changes of one key that arrive while that key's last write is in flight, or within a linger
after the first, and hands them to one write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

Apply = Callable[[str, list[T]], Awaitable[list[Exception | None]]]
"""Writes one key's batch of changes; returns each change's outcome in order: None when it
took effect (or needed none), else the exception its submitter gets."""


class Batches(Generic[T]):
    """Each key's changes, written a batch at a time.

    Args:
        apply: Writes a batch (``Apply``); an exception it raises is every change's outcome.
    """

    def __init__(self, apply: Apply[T]) -> None:
        self._apply = apply
        self._pending: dict[str, list[tuple[T, asyncio.Future[None]]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def submit(self, key: str, change: T, *, linger_s: float = 0.0) -> None:
        """Have ``change`` written to ``key`` and wait until it is. With ``linger_s``, wait
        that long first, so that the changes of that while share one write.

        Raises:
            Exception: the change's outcome (``Apply``).
        """
        done = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append((change, done))
        if linger_s > 0:
            await asyncio.sleep(linger_s)
        async with self._locks.setdefault(key, asyncio.Lock()):
            # Empty if an earlier holder took this change (its write may still be in flight:
            # shielded, it goes on when that holder is cancelled, and settles the others).
            batch = [] if done.done() else self._pending.pop(key, [])
            if batch:
                await asyncio.shield(self._write(key, batch))
        await done

    async def _write(self, key: str, batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        outcomes: list[Exception | None]
        try:
            outcomes = await self._apply(key, [change for change, _ in batch])
        except Exception as exc:  # the bus failed: every change of the batch failed with it
            outcomes = [exc] * len(batch)
        for (_, done), outcome in zip(batch, outcomes, strict=True):
            if done.done():  # its submitter was cancelled
                continue
            if outcome is None:
                done.set_result(None)
            else:
                done.set_exception(outcome)
