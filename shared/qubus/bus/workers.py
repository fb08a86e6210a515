"""CPU-heavy work off the event loop: in a separate worker process, under a wall-clock (and
optionally a CPU-time) limit and a memory limit (``WorkerPool``), or in a thread when the
circuit is large enough to be worth one (``off_loop``); heavy circuits (``is_heavy``) in a
lane of their own (``Lanes``; in threads: ``HeavySlot``, with ``is_long`` for parsing and
checking), so that a heavy task never delays a light one.

A hostile circuit (too large, too slow, a simulator crash) costs the worker process, never
the service: on a time-out the worker is killed and a fresh one takes the next job. A job
reports how far it has got with :func:`report_progress`; the service watches it while it waits
and may stop the job (the worker is killed, :class:`JobStopped`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import resource
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from qubus.bus.lifetime import dies_with_parent
from qubus.bus.messages import Features, wire_operations
from qubus.errors import SimulationError

T = TypeVar("T")

INLINE_MAX_BYTES = 8 * 1024
"""Largest circuit text (Cirq JSON of some 40 operations) worked on on the event loop: below
it, the work takes well under a millisecond and a thread hop (context copy, future, the
loop's wake-up) costs a good part of the stage's CPU."""

INLINE_MAX_WIRE_OPERATIONS = 40
"""Most operations of a circuit in the compact wire form (``qubus.circuits.ir.circuit_to_wire``)
worked on on the event loop: what ``INLINE_MAX_BYTES`` of Cirq JSON hold. The compact form takes
some 8 characters an operation, and a line for each distinct gate and qubit, so its length
tells little of its work."""


def is_short(wire: str) -> bool:
    """Whether a circuit's wire form is short enough to work on on the event loop: its text at
    most ``INLINE_MAX_BYTES``, and in the compact form, the operations it declares
    (``qubus.bus.messages.wire_operations``) at most ``INLINE_MAX_WIRE_OPERATIONS``."""
    if len(wire) > INLINE_MAX_BYTES:
        return False
    if not wire.startswith("["):
        return True
    operations = wire_operations(wire)
    return operations is not None and operations <= INLINE_MAX_WIRE_OPERATIONS


def is_small(wire: str, features: Features | None = None) -> bool:
    """Whether a circuit is small enough to work on on the event loop: short (``is_short``)
    and no ``CircuitOperation`` (gate name ``op`` in its ``features``; without them, its Cirq
    JSON type named in the text), whose repetitions a short text can hide."""
    if not is_short(wire):
        return False
    if features is None:
        return '"CircuitOperation"' not in wire
    return "op" not in features.gate_counts


INLINE_WORK = 2**12
"""Operations × state-vector amplitudes up to which a circuit with no reset and no classical
control is simulated on the sandbox's event loop (``is_tiny``): a 4-qubit circuit of 256
operations, an 8-qubit one of 16. The fastpath workload's 4-qubit circuits (10 operations)
cost the sandbox 1.1 ms of work (``benchmarks/stagework.py``), and the round trip to its
worker process some 0.6 ms more (the stage's CPU a task fell by that much without it:
``benchmarks/fastpath.py``)."""


def is_tiny(wire: str, features: Features) -> bool:
    """Whether simulating a circuit costs no more than about twice what sending it to a worker
    process does: small (``is_small``), at most ``INLINE_WORK`` operations × amplitudes, and
    nothing that makes a simulation run shot by shot (a reset, classical control; mid-circuit
    measurements are the caller's to rule out, on the circuit)."""
    operations = sum(features.gate_counts.values())
    return (
        is_small(wire, features)
        and not features.classical_control
        and "reset" not in features.gate_counts
        and operations * 2**features.qubits <= INLINE_WORK
    )


INLINE_EMULATION_S = 0.002
"""An emulation estimated (``qubus.devices.cost``, idle) at no more than this runs on its QPU
node's event loop (``is_quick``): the fastpath circuits' are 0.4–0.7 ms (their jobs 1.3–1.7 ms
of work with compilation, ``benchmarks/stagework.py``, and the round trip to the worker some
0.6 ms more: the QPU nodes' CPU a task fell by that much without it)."""


def is_quick(wire: str, estimate_s: float) -> bool:
    """Whether emulating a circuit estimated at ``estimate_s`` costs no more than about twice
    what sending it to a worker process does (its short text, ``is_short``, takes as little
    to read)."""
    return is_short(wire) and estimate_s <= INLINE_EMULATION_S


HEAVY_WORK = 2**24
"""Operations × state-vector amplitudes (``2^qubits``) above which a circuit is heavy: its ideal
simulation and ΔRepro take about a second or more on the development machine (18-qubit QFT,
801 operations: 6.3 s; 20-qubit qram, 45: 0.9 s; 17-qubit qec9xz, 61 operations, 2^23 work:
0.14 s; all on two busy cores)."""


LANED_CONCURRENCY = 32
"""Messages a stage with a heavy lane handles at once. A busy stage then finds several events
ready each time it wakes and works through them while its code and data are still in the CPU's
caches: with 32 instead of 8 (and fusion's 16 instead of 4), 16 1,500-task runs of
``benchmarks/fastpath.py``'s stack, alternated with 16 of the old setting, gave 74.3 tasks/s
against 69.5 on average, and the services' voluntary context switches fell from 9.2 to 7.0 a
task. An idle stack's pull requests rose from 107 to 156 messages a second into the server
(the stack's CPU 7.9 % and 7.6 % of one CPU, one 30 s run each; session 31), and fell to 87
once each worker held one request, not two (session 32, ``qubus.bus.natsclient.Pull``). A
light task is fetched and handled while up to 31 heavy ones are in hand (one running, the
others waiting for the lane; a waiting one costs its message's memory, and with replicas it
waits for this replica's lane even if another's is free). With 4, a light task behind four
heavy 18-qubit QFTs waited for one of them (5.3 s, ``benchmarks/lanes.py --heavy 4``)."""


def is_heavy(features: Features, *, points: int = 1) -> bool:
    """Whether a circuit (a sweep of ``points``) goes to its stage's heavy lane: more than
    ``HEAVY_WORK`` operations × amplitudes, or a ``CircuitOperation`` (gate name ``op``),
    whose repetitions its count hides."""
    operations = sum(features.gate_counts.values())
    return "op" in features.gate_counts or operations * 2**features.qubits * points > HEAVY_WORK


HEAVY_OPERATIONS = 1_000
"""Operations above which parsing or checking a circuit is heavy work (``is_long``): a legal
circuit of 9,900 operations took 6.6 s to parse and 2.9 s to check, one of 2,000 2.1 s and
3.6 s (two busy cores, load 15; ``benchmarks/lanes.py --front``)."""
HEAVY_CIRQ_JSON_BYTES = 256 * 1024
"""Cirq JSON longer than this (about 1,500 operations at some 170 bytes each) is heavy to
parse; shorter Cirq JSON is counted by its text, not decoded, to decide."""


def is_long(features: Features) -> bool:
    """Whether checking a parsed circuit is heavy work: more than ``HEAVY_OPERATIONS``
    operations, or a ``CircuitOperation`` (gate name ``op``), whose repetitions its count
    hides."""
    return "op" in features.gate_counts or sum(features.gate_counts.values()) > HEAVY_OPERATIONS


def laned_concurrency(heavy_lane: bool, *, without: int) -> int:
    """Messages a stage handles at once: ``LANED_CONCURRENCY`` with the heavy lane (beside the
    heavy job running, light ones are fetched and handled while others wait for the lane),
    else ``without``."""
    return LANED_CONCURRENCY if heavy_lane else without


class HeavySlot:
    """The heavy lane of a stage whose work runs in threads (parser, logic, noise): heavy jobs
    one at a time, while light ones go on beside them; without ``heavy_lane`` every job runs
    as it comes. ``async with slot(heavy): ...``."""

    def __init__(self, heavy_lane: bool) -> None:
        self._slot = asyncio.Semaphore(1) if heavy_lane else None

    def __call__(self, heavy: bool) -> contextlib.AbstractAsyncContextManager[Any]:
        if heavy and self._slot is not None:
            return self._slot
        return contextlib.nullcontext()


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
    gc.freeze()  # the service's objects, inherited: never collected here (``run_service``)
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
    ready in milliseconds rather than after another two-second import. A job goes to the
    worker and its answer comes back over one pipe, read on the event loop when it is
    readable: no helper threads, so a small job costs the service a pickle each way.

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
        self._worker: multiprocessing.process.BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._lock = asyncio.Lock()
        self._progress = self._context.Value("d", 0.0, lock=False)

    @property
    def worker_pid(self) -> int | None:
        """The current worker's process id (None before the first)."""
        return self._worker.pid if self._worker is not None else None

    def _ensure(self) -> multiprocessing.connection.Connection:
        if self._conn is None:
            ours, theirs = self._context.Pipe()
            self._worker = self._context.Process(
                target=_serve,
                args=(theirs, self._memory_mb, self._progress, dies_with_parent(signal.SIGKILL)),
                daemon=True,
            )
            self._worker.start()
            theirs.close()
            self._conn = ours
        return self._conn

    def start(self) -> None:
        """Fork the first worker now (before the event loop has threads of its own)."""
        self._ensure()

    def restart(self) -> None:
        self.close()
        self._ensure()

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        timeout_s: float,
        cpu_limit_s: float | None = None,
        watch: Callable[[float], Awaitable[bool]] | None = None,
        inline: bool = False,
    ) -> T:
        """Run ``fn(*args)`` in the worker; jobs run one at a time, in order.

        Args:
            fn: The job (a picklable function).
            args: Its arguments.
            timeout_s: Its wall-clock limit.
            cpu_limit_s: Its limit in CPU seconds of the worker, checked about every
                ``WATCH_INTERVAL_S``: a job that shares the cores with other processes gets
                fewer CPU seconds a second, and may take that much longer (up to
                ``timeout_s``).
            watch: Called about every ``WATCH_INTERVAL_S`` while the job runs with its
                progress (:func:`report_progress`); returning True stops the job.
            inline: Run the job on the event loop instead, with none of these limits: for a
                job known to take no more than about twice the worker's round trip
                (``is_quick``).

        Raises:
            SimulationError: ``<stage>.timeout`` past ``timeout_s`` or ``cpu_limit_s``, or when
                the worker died during the job; ``<stage>.memory`` when the job ran out of
                memory. Either way the worker is replaced.
            JobStopped: ``watch`` stopped the job (the worker is replaced).
        """
        if inline:
            return fn(*args)
        async with self._lock:
            self._progress.value = 0.0
            conn = self._ensure()
            pid = self.worker_pid
            assert pid is not None  # _ensure started it
            cpu_deadline = None if cpu_limit_s is None else cpu_seconds(pid) + cpu_limit_s
            conn.send((fn, args))
            answer = _answer(conn)
            deadline = time.monotonic() + timeout_s
            limit = f"{timeout_s:.3g} s"
            replace = True  # unless the job answered: its answer would be the next job's
            try:
                while True:
                    wait_s = deadline - time.monotonic()
                    if watch is not None or cpu_deadline is not None:
                        wait_s = min(wait_s, WATCH_INTERVAL_S)
                    done, _ = await asyncio.wait([answer], timeout=max(0.0, wait_s))
                    if done:
                        ok, value = answer.result()
                        replace = isinstance(value, MemoryError)
                        if ok:
                            return value
                        raise value
                    if time.monotonic() >= deadline:
                        raise TimeoutError
                    if cpu_deadline is not None and cpu_seconds(pid) >= cpu_deadline:
                        limit = f"{cpu_limit_s:.3g} s of CPU"
                        raise TimeoutError
                    if watch is not None and await watch(self._progress.value):
                        raise JobStopped(f"{self._job} stopped")
            except (TimeoutError, EOFError):
                raise SimulationError(
                    f"{self._job} exceeded its time limit of {limit}",
                    code=f"{self._stage}.timeout",
                ) from None
            except MemoryError:
                raise SimulationError(
                    f"{self._job} exceeded its memory limit of {self._memory_mb} MB",
                    code=f"{self._stage}.memory",
                ) from None
            finally:
                if replace:
                    self.restart()

    def close(self) -> None:
        """Kill the worker (its job, if any, is lost)."""
        if self._conn is not None:
            _unwatch(self._conn)
            self._conn.close()
            self._conn = None
        if self._worker is not None:
            self._worker.kill()
            self._worker.join()
            self._worker = None


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` so far, all its threads (Linux: from
    ``/proc/<pid>/stat``; a dead worker not yet joined still has its entry)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()  # the name, in (), may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _unwatch(conn: multiprocessing.connection.Connection) -> None:
    """Stop watching ``conn`` on the running event loop, if there is one (none: nothing was
    watched)."""
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop().remove_reader(conn.fileno())


def _answer(conn: multiprocessing.connection.Connection) -> asyncio.Future:
    """A future of the worker's answer on ``conn``: ``(True, value)``, ``(False, exception)``,
    or the exception ``EOFError`` if the worker died. Read when the pipe is readable; the
    pool stops watching the pipe when it closes it."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()
    fd = conn.fileno()

    def readable() -> None:
        loop.remove_reader(fd)
        if future.done():
            return
        try:
            # uvloop's add_reader leaves the pipe non-blocking: an answer larger than the
            # pipe's buffer (an 18-qubit circuit's distribution) would fail half-read. Its
            # first bytes are here and the worker is writing the rest: wait for them.
            os.set_blocking(fd, True)
            future.set_result(conn.recv())
        except (EOFError, OSError):
            future.set_exception(EOFError())

    loop.add_reader(fd, readable)
    return future


def _serve(
    conn: multiprocessing.connection.Connection,
    memory_mb: int,
    progress: Any,
    on_fork: Callable[[], None] | None,
) -> None:
    """The worker process: run each job received on ``conn`` and send back its answer."""
    _init_worker(memory_mb, progress, on_fork)
    while True:
        try:
            fn, args = conn.recv()
        except EOFError:  # the service closed the pipe
            return
        try:
            answer: tuple[bool, Any] = (True, fn(*args))
        except BaseException as exc:  # the job's failure is the service's to report
            answer = (False, exc)
        try:
            conn.send(answer)
        except Exception as exc:  # an answer that cannot be pickled
            conn.send((False, RuntimeError(f"{type(exc).__name__}: {exc}")))


class Lanes:
    """A stage's worker processes by weight: light jobs in one ``WorkerPool``, heavy ones
    (``is_heavy``) in another, so that a light job never waits behind a heavy one (each lane
    still runs its own jobs one at a time, in order). Without ``heavy_lane`` one pool runs
    every job in arrival order (one worker process less).

    Args:
        heavy_lane: Give heavy jobs a worker process of their own.
        memory_mb, stage, job: As ``WorkerPool``'s, for each lane.
    """

    def __init__(self, *, heavy_lane: bool, memory_mb: int, stage: str, job: str) -> None:
        self.light = WorkerPool(memory_mb=memory_mb, stage=stage, job=job)
        self.heavy = WorkerPool(memory_mb=memory_mb, stage=stage, job=job) if heavy_lane else None

    def pool(self, heavy: bool) -> WorkerPool:
        """The pool a job of this weight runs in."""
        return self.heavy if heavy and self.heavy is not None else self.light

    def start(self) -> None:
        """Fork every lane's worker now (before the event loop has threads of its own)."""
        for pool in self._pools():
            pool.start()

    def close(self) -> None:
        for pool in self._pools():
            pool.close()

    def _pools(self) -> list[WorkerPool]:
        return [self.light] if self.heavy is None else [self.light, self.heavy]
