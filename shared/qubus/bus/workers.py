"""CPU-heavy work off the event loop: in a separate worker process, under a wall-clock and a
memory limit (``WorkerPool``), or in a thread when the circuit is large enough to be worth
one (``off_loop``).

A hostile circuit (too large, too slow, a simulator crash) costs the worker process, never
the service: on a time-out the worker is killed and a fresh one takes the next job. A job
reports how far it has got with :func:`report_progress`; the service watches it while it waits
and may stop the job (the worker is killed, :class:`JobStopped`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.pool
import resource
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from qubus.bus.lifetime import dies_with_parent
from qubus.bus.messages import Features
from qubus.errors import SimulationError

T = TypeVar("T")

INLINE_MAX_BYTES = 8 * 1024
"""Largest circuit text (Cirq JSON of some 40 operations) worked on on the event loop: below
it, the work takes well under a millisecond and a thread hop (context copy, future, the
loop's wake-up) costs a good part of the stage's CPU."""


def is_small(circuit_json: str, features: Features) -> bool:
    """Whether a circuit is small enough to work on on the event loop: short Cirq JSON and no
    ``CircuitOperation`` (gate name ``op``), whose repetitions a short text can hide."""
    return len(circuit_json) <= INLINE_MAX_BYTES and "op" not in features.gate_counts


async def off_loop(fn: Callable[..., T], *args: Any, inline: bool, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``: on the event loop if ``inline`` (see ``is_small``), in a
    thread otherwise, so that heartbeats and other messages go on while a large circuit is
    worked on."""
    if inline:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


WATCH_INTERVAL_S = 1.0
"""How often :meth:`WorkerPool.run` shows a running job's progress to its ``watch``."""

_progress: Any = None
"""In a worker process: the pool's shared progress value (a fraction of the job)."""


class JobStopped(Exception):
    """The job's ``watch`` asked to stop it; its worker was killed."""


def report_progress(fraction: float) -> None:
    """Record how far the current job has got (0 to 1); nothing outside a worker process."""
    if _progress is not None:
        _progress.value = fraction


def _init_worker(memory_mb: int, progress: Any, on_fork: Callable[[], None] | None) -> None:
    """Detach the forked worker from the service's signal handling, then cap its memory.

    The fork inherits the event loop's signal wake-up fd: without this, the SIGTERM that
    replaces an overrunning worker would be delivered to the service's loop as well and stop
    the service. ``on_fork`` (``dies_with_parent``) has the worker killed with its service,
    which a worker busy with a long job would otherwise outlive.
    """
    global _progress
    _progress = progress
    if on_fork is not None:
        on_fork()
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class WorkerPool:
    """One worker process at a time, replaced whenever a job overruns or kills it.

    Workers are forked from the service (which has already imported cirq), so a new one is
    ready in milliseconds rather than after another two-second import.

    Args:
        memory_mb: Address-space limit of the worker (``RLIMIT_AS``).
        stage: The stage whose jobs the pool runs (``sandbox``, ``qpu``): the codes of its
            errors are ``<stage>.timeout`` and ``<stage>.memory``, so a failure names the stage.
        job: What a job is, in messages (``simulation``, ``emulation``).
    """

    def __init__(self, *, memory_mb: int, stage: str, job: str) -> None:
        self._memory_mb = memory_mb
        self._stage = stage
        self._job = job
        self._context = multiprocessing.get_context("fork")
        self._pool: multiprocessing.pool.Pool | None = None
        self._lock = asyncio.Lock()
        self._progress = self._context.Value("d", 0.0, lock=False)

    def _ensure(self) -> multiprocessing.pool.Pool:
        if self._pool is None:
            self._pool = self._context.Pool(
                1,
                initializer=_init_worker,
                initargs=(self._memory_mb, self._progress, dies_with_parent(signal.SIGKILL)),
            )
        return self._pool

    def start(self) -> None:
        """Fork the first worker now (before the event loop has threads of its own)."""
        self._ensure()

    def restart(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        self._ensure()

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        timeout_s: float,
        watch: Callable[[float], Awaitable[bool]] | None = None,
    ) -> T:
        """Run ``fn(*args)`` in the worker; jobs run one at a time, in order.

        Args:
            fn: The job (a picklable function).
            args: Its arguments.
            timeout_s: Its wall-clock limit.
            watch: Called about every ``WATCH_INTERVAL_S`` while the job runs with its
                progress (:func:`report_progress`); returning True stops the job.

        Raises:
            SimulationError: ``<stage>.timeout`` past ``timeout_s``, or when the worker died
                during the job (the pool's replacement never answers for it);
                ``<stage>.memory`` when the job ran out of memory. Either way the worker is
                replaced.
            JobStopped: ``watch`` stopped the job (the worker is replaced).
        """
        async with self._lock:
            self._progress.value = 0.0
            result = self._ensure().apply_async(fn, args)
            deadline = time.monotonic() + timeout_s
            try:
                while True:
                    wait_s = deadline - time.monotonic()
                    if watch is not None:
                        wait_s = min(wait_s, WATCH_INTERVAL_S)
                    try:
                        return await asyncio.to_thread(result.get, max(0.0, wait_s))
                    except multiprocessing.TimeoutError:
                        if time.monotonic() >= deadline:
                            raise
                    if watch is not None and await watch(self._progress.value):
                        await asyncio.to_thread(self.restart)
                        raise JobStopped(f"{self._job} stopped")
            except multiprocessing.TimeoutError:
                await asyncio.to_thread(self.restart)
                raise SimulationError(
                    f"{self._job} exceeded its time limit of {timeout_s:.3g} s",
                    code=f"{self._stage}.timeout",
                ) from None
            except MemoryError:
                await asyncio.to_thread(self.restart)
                raise SimulationError(
                    f"{self._job} exceeded its memory limit of {self._memory_mb} MB",
                    code=f"{self._stage}.memory",
                ) from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
