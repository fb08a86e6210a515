"""The order in which a QPU node runs the tasks waiting for it: shortest first, bounded.

When a node frees up it starts the waiting task of shortest expected run, so a long task does
not hold the short ones queued behind it; a task that has waited longer than the bound
(``starve_after_s``) goes first instead, the longest waiting first, so a long task is not
starved either. Ties keep the order the tasks came in. A running task is never interrupted.

:func:`next_to_run` is the rule, shared by the scheduling benchmark's simulated nodes
(``qubus.scheduling.schedsim.Queues``) and the live QPU nodes; :class:`RunOrder` applies it to
a live node's handlers, which wait for their turn concurrently (``qubus_services.qpu``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar


class Waiting(Protocol):
    """A task waiting for a node."""

    @property
    def run_s(self) -> float:
        """Its expected run time there."""
        ...

    @property
    def since(self) -> float:
        """When it began waiting (the clock of ``now`` in :func:`next_to_run`)."""
        ...


W = TypeVar("W", bound=Waiting)


def next_to_run(waiting: Sequence[W], now: float, starve_after_s: float) -> W:
    """The task to start at ``now``: the longest waiting of those that have waited over
    ``starve_after_s``, if any; else the shortest (ties: the first in ``waiting``)."""
    starving = [w for w in waiting if now - w.since > starve_after_s]
    if starving:
        return min(starving, key=lambda w: w.since)
    return min(waiting, key=lambda w: w.run_s)


@dataclass
class _Turn:
    run_s: float
    since: float
    granted: asyncio.Future[None] = field(repr=False)


class RunOrder:
    """One node's tasks taking turns: one runs at a time, the next chosen by
    :func:`next_to_run` among those waiting when the node frees up.

    Args:
        starve_after_s: A task waiting longer than this goes first.
        clock: The clock of the tasks' ``since`` (wall-clock seconds by default).

    Attributes:
        worst_wait_s: The longest any task has waited for its turn so far.
    """

    def __init__(self, starve_after_s: float, clock: Callable[[], float] = time.time) -> None:
        self._bound = starve_after_s
        self._clock = clock
        self._waiting: list[_Turn] = []
        self._busy = False
        self.worst_wait_s = 0.0

    @property
    def waiting(self) -> int:
        """Tasks waiting for their turn."""
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def turn(self, run_s: float, since: float) -> AsyncIterator[float]:
        """Waits for the task's turn and holds the node while the block runs; gives how long
        the task waited since ``since``.

        Args:
            run_s: The task's expected run time (seconds; only compared with the others').
            since: When the task began waiting, on the order's clock.
        """
        turn = _Turn(run_s, since, asyncio.get_running_loop().create_future())
        self._waiting.append(turn)
        self._grant()
        try:
            await turn.granted
        except BaseException:  # cancelled while waiting, or just as its turn came
            if turn in self._waiting:
                self._waiting.remove(turn)
            else:
                self._release()
            raise
        waited = max(0.0, self._clock() - since)
        self.worst_wait_s = max(self.worst_wait_s, waited)
        try:
            yield waited
        finally:
            self._release()

    def _release(self) -> None:
        self._busy = False
        self._grant()

    def _grant(self) -> None:
        if self._busy or not self._waiting:
            return
        turn = next_to_run(self._waiting, self._clock(), self._bound)
        self._waiting.remove(turn)
        self._busy = True
        turn.granted.set_result(None)
