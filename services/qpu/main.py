"""qpu: one process per QPU node. Runs the tasks allocated to it on a noisy emulator of the
device its calibration file describes, and keeps the node's calibration and queue depth
current in KV ``qubus_nodes``.

**Run order.** The node holds up to ``ORDER_WINDOW`` allocations at once and runs one at a
time: when it frees up, the waiting task of shortest expected run (its modelled run × the
time scale, or its emulation estimate if longer, from the allocation's score) starts, unless
one has waited over ``QUBUS_QPU_STARVE_AFTER_S`` since it was allocated: then the longest
waiting goes first (``qubus.scheduling.nodeorder``). A task waits for its turn after the
background jobs queued before it; each turn is logged (``qpu.turn``: the allocation's emulation
estimate, the wait, the tasks still waiting and the node's worst wait so far).

With ``QUBUS_DRIFT_PERIOD_S`` > 0, a node with a drift series (``ibm_perth``) replays its
daily calibration snapshots, one per period (``qubus.devices.drift``): each task runs on the
calibration current when it starts, and each new calibration is published at once. A task
allocated on a calibration that is no longer current gets its predicted fidelity recomputed
on the one it runs on.

With ``QUBUS_BACKGROUND_LOAD`` on, the node replays a real IBM backend's queue of other users'
jobs (``qubus.devices.load``): its status counts them in its queue depth, and each task waits for
the jobs queued when it was allocated, each taking the node's mean job time.

**Budget, progress and cancel.** A task's emulation may use ``BUDGET_MARGIN`` × its estimated
cost on an idle machine (``qubus.devices.cost``, at least ``MIN_BUDGET_S``) in CPU seconds of
the node's worker process before it fails with ``qpu.timeout``: on a loaded machine the run
gets fewer CPU seconds a second and its wall-clock limit stretches with it (up to
``MAX_SLOWDOWN`` × the budget). The estimate comes with the allocation (the noise service
made it for every node and marked the nodes a task is too large for unfit); for an
allocation without one, or made on another calibration, the node estimates it itself and
refuses a task whose idle estimate is over ``QUBUS_QPU_MAX_EMULATION_S`` or the worker's
memory (``qpu.too_large``, the estimate in the message). While it runs, the node publishes
``progress`` (shots of finished trajectories) and checks about once a second whether the
task was cancelled: a cancelled run's worker is killed and the task stays ``cancelled``.

Re-placement (``qubus_services.allocator``): the node runs only a task's current allocation
and acknowledges superseded ones, and cancelled ones (``qubus cancel``), without running them;
it stores a result only while its allocation is still the task's last (a publish the server
refuses otherwise, ``Nats-Expected-Last-Subject-Sequence`` on the task's allocations);
and instead of running a task whose prediction, recomputed on a calibration newer than the
allocation's, fell below the task's fidelity floor or by more than ``QUBUS_REPLACE_DROP``, it
publishes ``replace`` (at most ``QUBUS_MAX_REPLACEMENTS`` times per task; never for a task
pinned to the node).

**Split runs** (``TaskAllocated.split``, ``qubus.network.splitplan``). Only the plan's lead node
receives the allocation. It reserves the plan's EPR pairs from the link service by
request/reply on ``qubus.link.reserve`` (one ``EprReserve`` per pair of nodes, ``count`` = the
remote gates between their parts, ``ideal`` = the task's ``ideal_links``; the link service
answers the same reservation to a redelivered task), then runs the whole split circuit in its
worker process (``qubus.network.distributed.run_split``: each part with its node's noise on the
calibration that node last published, every remote gate with the mean fidelity of the pairs
reserved for its node pair). The reservation samples the pairs of one shot; every shot needs
as many fresh ones, so the lead node is held for shots × their latency plus the slowest part's
modelled run time (``emulated_s``); the other nodes' queues are not blocked and their
calibrations are not rechecked. The run's time budget comes from the plan's emulation estimate
(``SplitPlan.emulation_s``, ``qubus.devices.cost.time_budget``; the allocator chooses no plan
over the node's limits). ``TaskCompleted`` carries ``ebits`` and ``nodes``, and
``predicted_fidelity`` is ``run_split``'s prediction with the reserved pairs' fidelities.

**Sweeps** (``TaskOptions.sweep``, ``qubus.circuits.sweeps``) fan out here, as late as they
can: the node runs its chunk of the sweep's points (``TaskAllocated.chunk``, all of them
without one; ``qubus.scheduling.sweepchunks``) in batches, one worker call each, holds the
node for one job of the chunk's shots, publishes each point's ``completed`` as its own task
``<sweep id>-<k>`` and after each batch the chunk's ``SweepProgress``; the next batch is
emulated while the node is held for the current one. The run starts before the sandbox has
stored every point's ideal distribution (``eval.ideals``, after the ``eval.sandbox`` of a sample
that placed the sweep); the node awaits them (one ordered consumer of the sweep's
``eval.ideals``, ``failed``, ``rejected`` and ``cancelled``) before publishing its first batch,
measures each point against its own and predicts the points' fidelity as the mean over every
point on its noise budget (``eval.noise``). If the sweep ends first the node publishes no
point; if neither comes within the chunk's expected hold plus ``QUBUS_ACK_WAIT_S`` (a sandbox
that died between its publications has its message delivered again by then), it gives the
chunk back to be delivered again after ``QUBUS_ACK_WAIT_S``, and on its last delivery the sweep
fails with ``qpu.ideals_missing``. Before each batch it stops if the sweep was cancelled and
leaves out points already ended (cancelled one by one, run before a redelivery, or by the node
a re-placed chunk left); before publishing one it drops it and stops if its chunk has been
re-placed on another node. The node that sees every chunk ended publishes the sweep's own
``completed``, stored once whichever node it is (de-duplication id ``<sweep id>.completed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import cirq
import numpy as np
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue

from qubus.bus import codec
from qubus.bus.connection import (
    BUCKET_NODES,
    RESERVE_SUBJECT,
    STREAM,
    NotLatest,
    node_key,
    stored_event,
)
from qubus.bus.consumer import Context, Stage
from qubus.bus.ids import seed_for, sweep_point_id, task_subject
from qubus.bus.logs import get_logger
from qubus.bus.messages import (
    EprReservation,
    EprReserve,
    ErrorInfo,
    NoiseEvaluation,
    SplitPlan,
    SweepChunk,
    SweepIdeals,
    SweepProgress,
    TaskAllocated,
    TaskCancelled,
    TaskCompleted,
    TaskEvent,
    TaskFailed,
    TaskProgress,
    TaskRejected,
    TaskReplace,
    TaskRunning,
)
from qubus.bus.metrics import QPU_QUEUE
from qubus.bus.service import Runtime
from qubus.bus.workers import JobStopped, WorkerPool, is_quick, report_progress
from qubus.circuits import circuit_from_wire
from qubus.client.aio import request_reply
from qubus.devices.compile import compile_for_device
from qubus.devices.cost import (
    Budget,
    EmulationCost,
    emulation_cost,
    refuse_too_large,
    time_budget,
)
from qubus.devices.drift import DriftReplay
from qubus.devices.emulation import JOB_OVERHEAD_S, emulate, emulated_runtime_s
from qubus.devices.fidelity import (
    hellinger_fidelity,
    hellinger_of_model,
    mean_predicted_fidelity,
)
from qubus.devices.load import BackgroundLoad
from qubus.devices.prediction import predict_fidelity
from qubus.devices.profiles import Device, device_of, load_device, status_of
from qubus.devices.sweeps import run_points
from qubus.errors import QubusError, Retry
from qubus.network.distributed import SplitRun, run_split
from qubus.network.splitplan import partition_of
from qubus.scheduling.allocation import replacement_reason
from qubus.scheduling.nodeorder import RunOrder
from qubus.scheduling.replacement import (
    allocation_subject,
    latest_allocation,
    qpu_consumer,
    replaced_by,
)
from qubus.scheduling.sweepchunks import FIRST_BATCH_POINTS, batch_points, sweep_end

log = get_logger()
STATUS_INTERVAL_S = 0.25
"""How often a node looks at its queue and writes its status if anything in it changed. Fusion
scores every node by the queue depth it last wrote, and the allocator places a batch by those
scores: at 2 s the allocator sent a second's tasks (some 80) after one stale depth, and a
300-task fastpath run either spread them or piled them on the ion traps (52–57 against 67–83
tasks/s, queue waits 635–787 against 193–362 ms p50; session 21)."""
STATUS_HEARTBEAT_S = 2.0
"""How often a node writes its status when nothing in it changed (its age tells the fleet
that the node is alive: ``QUBUS_NODE_TIMEOUT_S``)."""
ORDER_WINDOW = 16
"""Allocations a node holds at once (across its replicas) and orders by expected run time
(``qubus.scheduling.nodeorder``); the rest wait in the stream, in order."""
RESERVE_TIMEOUT_S = 10.0
"""How long the lead node of a split run waits for the link service's reservation."""
SWEEP_ENDS = (SweepIdeals, TaskFailed, TaskRejected, TaskCancelled)
"""The events a sweep's node awaits before publishing its first batch: every point's ideal
distribution, or the sweep's end before them (its ``failed`` in the sandbox's second call)."""


class IdealsMissing(Retry):
    """The sandbox has stored neither a sweep's ideal distributions nor its end within the
    node's wait: the node gives the chunk back to be delivered again (its last delivery fails
    the sweep with this code)."""

    code = "qpu.ideals_missing"


@functools.lru_cache(maxsize=4)
def _circuit(wire: str) -> cirq.Circuit:
    """The circuit of its wire form, decoded once per worker process: ``estimate``,
    ``execute`` and ``predict_on`` of one task read the same text (nothing downstream mutates
    the circuit)."""
    return circuit_from_wire(wire)


def execute(
    device: Device,
    wire: str,
    shots: int,
    seed: int,
    noiseless: bool,
    ideal: Mapping[str, float] | None,
) -> tuple[dict[str, int], float, float | None]:
    """Compile and emulate (in the worker process).

    Args:
        ideal: If given, the task's ideal distribution, to predict this run's fidelity.

    Returns:
        The counts, the modelled run time, and with ``ideal`` the predicted Hellinger fidelity
        of this run: on ``device``'s calibration (``qubus.devices.prediction.predict_fidelity``), or
        for a noiseless run that of ``shots`` samples of the ideal distribution itself.
    """
    compiled = compile_for_device(_circuit(wire), device)
    counts = emulate(
        compiled,
        device,
        shots,
        seed=seed,
        noiseless=noiseless,
        progress=lambda done, total: report_progress(done / total),
    )
    predicted = None
    if ideal is not None and noiseless:
        p = np.fromiter(ideal.values(), dtype=float, count=len(ideal))
        predicted = hellinger_of_model(p, p, shots)
    elif ideal is not None:
        predicted = predict_on(device, wire, shots, ideal)
    return counts, emulated_runtime_s(compiled, device, shots), predicted


def estimate(device: Device, wire: str, shots: int, noiseless: bool) -> EmulationCost:
    """The emulation's estimated cost on ``device`` (in the worker process, whose compilation
    cache :func:`execute` then reuses)."""
    compiled = compile_for_device(_circuit(wire), device)
    return emulation_cost(compiled, shots, noiseless=noiseless)


def execute_split(
    plan: SplitPlan,
    devices: Sequence[Device],
    wire: str,
    link_fidelity: Mapping[tuple[str, str], float],
    shots: int,
    seed: int,
    noiseless: bool,
    ideal: Mapping[str, float],
) -> SplitRun:
    """Run a split plan (in the worker process): ``qubus.network.distributed.run_split`` of the
    plan's partition, part ``i`` on ``devices[i]``, with the Werner fidelity of the pairs per pair
    of nodes (sorted) and the task's ideal distribution."""
    circuit = circuit_from_wire(wire)
    partition = partition_of(circuit, plan)
    return run_split(
        circuit,
        partition,
        devices,
        link_fidelity,
        shots,
        seed=seed,
        noiseless=noiseless,
        ideal=ideal,
    )


def predict_on(device: Device, wire: str, shots: int, ideal: Mapping[str, float]) -> float:
    """The predicted Hellinger fidelity of ``shots`` shots of the circuit on ``device``'s
    calibration (``qubus.devices.prediction.predict_fidelity``; the circuit and its compilation
    are cached: after ``execute`` neither is made again)."""
    compiled = compile_for_device(_circuit(wire), device)
    return predict_fidelity(compiled, device, ideal, shots=shots)


@dataclass
class SweepBatch:
    """A batch of a sweep chunk's points on a QPU node.

    Attributes:
        points: The batch's points (indexes into the sweep).
        todo: The points to run: index, task id ``<sweep id>-<k>`` and seed.
        ended: The completions stored already for the batch's points that had ended
            before it came (the others of them were cancelled one by one).
        emulation: The worker call running ``todo`` (None if there is nothing to run).
    """

    points: range
    todo: list[tuple[int, str, int]]
    ended: list[TaskCompleted]
    emulation: asyncio.Future[tuple[list[dict[str, int]], float]] | None

    async def emulated(self) -> tuple[list[dict[str, int]], float]:
        """Each point of ``todo``'s counts and their modelled run time (``run_points``)."""
        return ([], 0.0) if self.emulation is None else await self.emulation


async def dropped(batch: SweepBatch | None) -> None:
    """Let a batch's worker call end (the worker runs its calls in turn), its result or its
    error dropped: the node stops before publishing it."""
    if batch is not None and batch.emulation is not None:
        with contextlib.suppress(Exception):
            await batch.emulation


def carried_estimate(event: TaskAllocated, current: Device) -> float:
    """The emulation estimate the allocation carries for the node's current calibration (the
    noise service made it for this node); 0 without one, or if it was made on another
    calibration."""
    allocated = event.score.emulation_s if event.score is not None else 0.0
    return allocated if event.calibration_revision == current.revision else 0.0


class QpuNode:
    """One QPU node's handler and status: it runs the tasks allocated to it on its device's
    current calibration and reports its calibration, queue depth and whether it is busy.

    Args:
        rt: The service's runtime (its bus and settings).
        device: The node's device, as its calibration file describes it.
        replay: The node's drift replay, if drifting.
        load: The node's background load, if replayed.
        pool: The worker process that compiles and emulates.
        nodes: KV ``qubus_nodes``, where the status is published.

    Attributes:
        consumer: The durable consumer of the node's allocations.
    """

    def __init__(
        self,
        rt: Runtime,
        device: Device,
        replay: DriftReplay | None,
        load: BackgroundLoad | None,
        pool: WorkerPool,
        nodes: KeyValue,
    ) -> None:
        self._bus = rt.bus
        self._settings = rt.settings
        self._device = device
        self._replay = replay
        self._load = load
        self._pool = pool
        self._nodes = nodes
        self.consumer = qpu_consumer(device.id)
        self._order = RunOrder(rt.settings.qpu_starve_after_s)
        self._busy = False
        self._jobs = 0
        self._job_s = 0.0
        self._revision = ""
        self._written: tuple[object, ...] = ()  # what the status last written said
        self._written_at = float("-inf")  # and when (time.monotonic)

    def _calibration(self) -> Device:
        """The device as calibrated now: the drift replay's current snapshot, if drifting."""
        return self._replay.device_at(time.monotonic()) if self._replay else self._device

    def _mean_job_s(self) -> float:
        """Mean modelled duration of the node's tasks; before the first, its per-job overhead."""
        return self._job_s / self._jobs if self._jobs else JOB_OVERHEAD_S[self._device.kind]

    async def publish_status(self) -> None:
        """Put the node's status in KV ``qubus_nodes`` if it changed or the last one is
        ``STATUS_HEARTBEAT_S`` old, logging a new calibration."""
        current = self._calibration()
        if current.revision != self._revision:
            self._revision = current.revision
            log.info(
                "qpu.calibration",
                revision=current.revision,
                calibrated_at=current.calibrated_at,
                usable_qubits=len(current.usable_qubits),
            )
        depth = 0
        try:
            info = await self._bus.js.consumer_info(STREAM, self.consumer)
            depth = info.num_pending + info.num_ack_pending
        except Exception:  # before the consumer exists, or while reconnecting
            log.debug("qpu.queue_depth_unknown", exc_info=True)
        background = self._load.jobs_at(time.time()) if self._load else 0
        QPU_QUEUE.labels(current.id).set(depth + background)
        mean_job_s = self._mean_job_s()
        said = (current.revision, depth, background, self._busy, mean_job_s)
        now = time.monotonic()
        if said == self._written and now - self._written_at < STATUS_HEARTBEAT_S:
            return
        status = status_of(
            current,
            queue_depth=depth + background,
            mean_job_s=mean_job_s,
            busy=self._busy,
            instance=self._bus.instance,
            background_jobs=background,
        )
        await self._nodes.put(node_key(self._device.id), codec.encode(status))
        self._written, self._written_at = said, now

    async def _wait_for_background(self, ctx: Context) -> None:
        """Hold the task until the other users' jobs queued when it arrived have run."""
        if self._load is None:
            return
        arrival = ctx.started - ctx.queue_wait_s  # when the allocation was stored
        start = self._load.start_after(
            arrival, job_s=self._mean_job_s(), time_scale=self._settings.time_scale
        )
        wait_s = start - time.time()
        if wait_s > 0:
            log.info(
                "qpu.background_wait", jobs=self._load.jobs_at(arrival), wait_s=round(wait_s, 3)
            )
            await asyncio.sleep(wait_s)

    async def _recheck(
        self, event: TaskAllocated, current: Device
    ) -> tuple[float, TaskReplace | None]:
        """The task's prediction on the current calibration, and the ``replace`` to publish
        instead of running it if that prediction no longer justifies the allocation."""
        predicted = await self._pool.run(
            predict_on,
            current,
            event.circuit,
            event.options.shots,
            event.ideal,
            timeout_s=self._settings.sandbox_timeout_s,
        )
        reason = replacement_reason(
            allocated=event.predicted_fidelity,
            predicted=predicted,
            floor=event.options.fidelity_floor,
            max_drop=self._settings.replace_drop,
        )
        pinned = event.options.node is not None
        if reason is None or pinned or event.attempt >= self._settings.max_replacements:
            return predicted, None
        log.info("qpu.replace", reason=reason, attempt=event.attempt)
        replace = TaskReplace(
            task_id=event.task_id,
            node=self._device.id,
            attempt=event.attempt,
            reason=reason,
            predicted_fidelity=predicted,
            calibration_revision=current.revision,
        )
        return predicted, replace

    async def _budget(self, event: TaskAllocated, current: Device, noiseless: bool) -> Budget:
        """The run's time budget (``qubus.devices.cost.time_budget``: CPU seconds of the
        worker, so that it stretches with the machine's load): from the noise service's
        estimate for this node, carried by the allocation (that service already refused a node
        the task is too large for); or, for an allocation without one or made on another
        calibration, from the node's own estimate, refusing the task if its idle estimate is
        over the node's limit (``qpu.too_large``)."""
        allocated = carried_estimate(event, current)
        if allocated > 0:
            return time_budget(allocated)  # the estimate is on the turn's line (``qpu.turn``)
        cost = await self._pool.run(
            estimate,
            current,
            event.circuit,
            event.options.shots,
            noiseless,
            timeout_s=self._settings.sandbox_timeout_s,
        )
        log.info("qpu.estimate", estimate=cost.describe(), budget_cpu_s=round(cost.budget.cpu_s, 1))
        refuse_too_large(
            cost,
            max_s=self._settings.qpu_max_emulation_s,
            memory_mb=self._settings.sandbox_memory_mb,
        )
        return cost.budget

    @contextlib.asynccontextmanager
    async def _running(
        self, event: TaskAllocated, ctx: Context, *, unseen: bool = False
    ) -> AsyncIterator[bool]:
        """The node is busy with the task: ``running`` is published, ``busy`` reported; yields
        whether the task is to run.

        For an allocation ``unseen`` (``_run`` did not look at the task's events), ``running``
        is stored only while the allocation is still the task's last event: one round trip
        where reading first took two, on every task's path. If it is not the last, the task
        runs only if it is still wanted (``_wanted``), and ``running`` is published then."""
        self._busy = True
        try:
            now = time.time()
            running = TaskRunning(
                task_id=event.task_id,
                node=self._device.id,
                queue_wait_s=max(0.0, now - ctx.started + ctx.queue_wait_s),
            )
            # Started now, in the task's turn, not when the node took the allocation in hand.
            after = (task_subject(event.task_id, ">"), ctx.sequence) if unseen else None
            try:
                await self._bus.publish_event(running, trace=ctx.trace, started=now, after=after)
            except NotLatest:
                if not await self._wanted(event, ctx):
                    yield False
                    return
                await self._bus.publish_event(running, trace=ctx.trace, started=now)
            yield True
        finally:
            self._busy = False

    def _watch(self, event: TaskAllocated, ctx: Context) -> Callable[[float], Awaitable[bool]]:
        """The running emulation's watch: it publishes ``progress`` (shots done) as it grows
        and stops the emulation once the task is cancelled."""
        shots = event.options.shots
        reported = 0

        async def watch(fraction: float) -> bool:
            nonlocal reported
            done = min(shots, int(fraction * shots))
            if done > reported:
                reported = done
                await ctx.publish(
                    TaskProgress(
                        task_id=event.task_id, node=self._device.id, shots_done=done, shots=shots
                    )
                )
            return await self._bus.last_event(event.task_id, TaskCancelled) is not None

        return watch

    async def _occupy(self, modelled_s: float, since: float) -> None:
        """Hold the QPU for the job (``_hold``) and count it."""
        await self._hold(modelled_s, since)
        self._count(modelled_s)

    async def _hold(self, modelled_s: float, since: float) -> None:
        """Hold the QPU until ``modelled_s`` (× the time scale) has passed since the run
        began at ``since`` (``time.monotonic``: when its turn came). The node's own work runs
        inside that time: its checks of the allocation, its ``running`` event and the
        emulation. The node is busy for the modelled duration, or for that work if it takes
        longer, not for both one after the other (the checks and the event took 4.5–6.1 ms of
        a 23–36 ms turn under load, session 21)."""
        held_s = modelled_s * self._settings.time_scale - (time.monotonic() - since)
        if held_s > 0:
            await asyncio.sleep(held_s)

    def _count(self, modelled_s: float) -> None:
        """Count a job of ``modelled_s`` in the node's mean job time."""
        self._jobs += 1
        self._job_s += modelled_s

    async def _reserve(
        self, event: TaskAllocated, plan: SplitPlan
    ) -> tuple[dict[tuple[str, str], float], float]:
        """The plan's EPR pairs from the link service: per pair of the plan's nodes (sorted)
        the mean fidelity of its reserved pairs (1 where it needs none), and the time to
        generate them in turn for every shot (the reservation samples one shot's pairs)."""
        requests = [
            EprReserve(
                task_id=event.task_id, a=a, b=b, count=count, ideal=event.options.ideal_links
            )
            for a, b, count in plan.pairs
        ]
        replies = await asyncio.gather(
            *(
                request_reply(
                    self._bus.nc, RESERVE_SUBJECT, r, EprReservation, timeout=RESERVE_TIMEOUT_S
                )
                for r in requests
            )
        )
        fidelity = dict.fromkeys(itertools.combinations(sorted(plan.nodes), 2), 1.0)
        for reply in replies:
            fidelity[tuple(sorted((reply.a, reply.b)))] = statistics.fmean(reply.fidelities)
        return fidelity, event.options.shots * sum(reply.latency_s for reply in replies)

    async def _plan_devices(self, plan: SplitPlan) -> list[Device]:
        """The plan's nodes' devices: this node's current calibration, and the one each other
        node last published.

        Raises:
            QubusError: ``split.node_unknown`` for a node that has never reported.
        """
        statuses = await self._bus.node_statuses()
        here = self._device.id
        missing = [n for n in plan.nodes if n != here and n not in statuses]
        if missing:
            raise QubusError(
                f"split plan nodes {missing} have no status", code="split.node_unknown"
            )
        return [self._calibration() if n == here else device_of(statuses[n]) for n in plan.nodes]

    async def _run_split_task(
        self, event: TaskAllocated, plan: SplitPlan, ctx: Context, began: float
    ) -> TaskCompleted:
        """Reserve the plan's pairs, run the split circuit and hold the node meanwhile."""
        devices = await self._plan_devices(plan)
        noiseless = self._settings.noiseless or event.options.noiseless
        seed = seed_for(event.task_id, "qpu")
        budget = time_budget(plan.emulation_s)
        log.info(
            "qpu.estimate",
            estimate_s=round(plan.emulation_s, 4),
            budget_cpu_s=round(budget.cpu_s, 1),
        )
        async with self._running(event, ctx):
            link_fidelity, latency_s = await self._reserve(event, plan)
            log.info("qpu.split_reserved", pairs=plan.ebits, latency_s=round(latency_s, 4))
            run = await self._pool.run(
                execute_split,
                plan,
                devices,
                event.circuit,
                link_fidelity,
                event.options.shots,
                seed,
                noiseless,
                event.ideal,
                timeout_s=budget.wall_s,
                cpu_limit_s=budget.cpu_s,
            )
            await self._occupy(latency_s + run.run_s, began)
        return TaskCompleted(
            task_id=event.task_id,
            node=self._device.id,
            counts=run.counts,
            shots=event.options.shots,
            seed=seed,
            predicted_fidelity=run.predicted_fidelity,
            measured_fidelity=hellinger_fidelity(run.counts, event.ideal),
            emulated_s=latency_s + run.run_s,
            calibration_revision=devices[0].revision,
            allocated_fidelity=event.predicted_fidelity,
            ebits=run.ebits,
            nodes=run.nodes,
        )

    async def _point_end(self, task_id: str) -> TaskCompleted | TaskCancelled | None:
        """How a sweep point has ended already (its ``completed`` from an earlier run of its
        chunk, or its ``cancelled``), or None if it has not."""
        stored = await self._bus.last_message(task_subject(task_id, ">"))
        if stored is None:
            return None
        if stored.subject.endswith(f".{TaskCancelled.EVENT}"):
            return TaskCancelled(task_id=task_id)
        return codec.decode(stored.data, TaskCompleted)

    async def _start_batch(
        self,
        event: TaskAllocated,
        points: list[dict[str, float]],
        batch: range,
        current: Device,
        noiseless: bool,
    ) -> SweepBatch:
        """Look up how the batch's points have ended already and start emulating the others
        (one worker call, ``qubus.devices.sweeps.run_points``; the worker runs its calls in
        turn, so this one starts once the batch before it has been emulated)."""
        ids = [sweep_point_id(event.task_id, k) for k in batch]
        ends = await asyncio.gather(*(self._point_end(task_id) for task_id in ids))
        todo = [
            (k, task_id, seed_for(task_id, "qpu"))
            for k, task_id, end in zip(batch, ids, ends, strict=True)
            if end is None
        ]
        emulation = None
        if todo:
            emulation = asyncio.ensure_future(
                self._pool.run(
                    run_points,
                    current,
                    event.circuit,
                    [points[k] for k, _, _ in todo],
                    event.options.shots,
                    [seed for _, _, seed in todo],
                    noiseless,
                    timeout_s=self._settings.sandbox_timeout_s * len(todo),
                )
            )
        ended = [end for end in ends if isinstance(end, TaskCompleted)]
        return SweepBatch(batch, todo, ended, emulation)

    async def _sweep_cancelled(self, event: TaskAllocated, report: SweepProgress) -> bool:
        """Whether the sweep has been cancelled (then logs how far its chunk got)."""
        if await self._bus.last_event(event.task_id, TaskCancelled) is None:
            return False
        log.info("qpu.sweep_cancelled", done=report.done, points=report.points)
        return True

    async def _sweep_ideals(
        self, event: TaskAllocated
    ) -> tuple[list[dict[str, float]], float] | None:
        """Every point's ideal distribution (``SweepIdeals``), once the sandbox has stored
        them, and the fidelity predicted for the node's points: the mean over every point of
        the node's noise budget (as fusion predicts on a sample of them,
        ``qubus.devices.fidelity.mean_predicted_fidelity``; the allocation's if the noise
        evaluation is no longer stored). None if the sweep ended first (``failed`` when a
        point's numerics fail in the sandbox's second call, ``rejected``, ``cancelled``).

        Read from one ordered consumer of the sweep's ``SWEEP_ENDS`` subjects (those stored,
        then those to come), not looked for again and again.

        Raises:
            IdealsMissing: neither has been stored within the chunk's expected hold
                (``_expected_s``) plus ``QUBUS_ACK_WAIT_S``, after which JetStream has
                delivered again the message of a sandbox that died between its two
                publications.
        """
        wait_s = self._expected_s(event) + self._settings.ack_wait_s
        stored = await self._sweep_end_event(event.task_id, wait_s)
        if not isinstance(stored, SweepIdeals):
            log.info("qpu.sweep_ended_before_ideals", ended=stored.EVENT)
            return None
        noise = await self._bus.last_event(event.task_id, NoiseEvaluation)
        own = [p for p in noise.predictions if p.node == self._device.id] if noise else []
        if not own:
            return stored.ideals, event.predicted_fidelity
        shots = event.options.shots
        return stored.ideals, mean_predicted_fidelity(own[0], stored.ideals, shots)

    async def _sweep_end_event(self, task_id: str, wait_s: float) -> TaskEvent:
        """The first of the sweep's ``SWEEP_ENDS`` events, stored or to come within ``wait_s``.

        Raises:
            IdealsMissing: none within ``wait_s``.
        """
        subjects = [cls.subjects(task_id) for cls in SWEEP_ENDS]
        sub = await self._bus.js.subscribe(
            subjects[0],
            stream=STREAM,
            ordered_consumer=True,
            config=ConsumerConfig(
                filter_subjects=subjects, deliver_policy=DeliverPolicy.LAST_PER_SUBJECT
            ),
        )
        stored = None
        try:
            async with asyncio.timeout(wait_s):
                while stored is None:  # None: not a valid task event, which no stage published
                    stored = stored_event(await sub.next_msg(timeout=None))
        except TimeoutError:
            raise IdealsMissing(
                f"the sandbox stored neither the sweep's ideal distributions nor its end "
                f"within {wait_s:.1f} s of its run",
                delay_s=self._settings.ack_wait_s,
            ) from None
        finally:
            await sub.unsubscribe()
        return stored.event

    async def _run_sweep(
        self, event: TaskAllocated, points: list[dict[str, float]], ctx: Context, began: float
    ) -> TaskCompleted | TaskFailed | None:
        """Run a chunk of a sweep's points (``TaskAllocated.chunk``; all of them without
        one) in batches (``qubus.scheduling.sweepchunks.batch_points``; one worker call
        each, ``qubus.devices.sweeps.run_points``), holding the node for one job of the
        chunk's shots. Once the node has been held through a batch's shots, each of its
        points' ``completed`` is published as task ``<sweep id>-<k>``, then the chunk's
        ``SweepProgress``. The next batch is emulated while the node is held for this one,
        so the emulation adds to the hold only where it takes longer. Before starting a
        batch the node stops if the sweep was cancelled (the batch in hand still ends; the
        points not run end with the sweep), and leaves out the points that have ended
        already (cancelled one by one, or completed by an earlier run of this chunk); before
        publishing one, it drops it and stops if the chunk has been re-placed on another
        node (this node stopped reporting long enough, ``qubus_services.allocator``).

        The run starts without the points' ideal distributions, which the sandbox stores
        after the sweep's placement (``SweepIdeals``): they are awaited before the first
        batch is published (``_sweep_ideals``), for each point's measured fidelity and the
        points' predicted fidelity (the mean over every point on this node's noise budget;
        the allocation's is over a sample of them). Not recomputed on a newer calibration.

        Raises:
            IdealsMissing: the ideal distributions have not come within the node's wait (the
                batch being emulated is dropped; no point is published).

        Returns:
            The sweep's own ``completed`` once every chunk has ended (``_end_sweep``), else
            None; None if the sweep was cancelled, ended before its ideal distributions (a
            point's numerics failed in the sandbox) or the chunk was re-placed.
        """
        chunk = event.chunk or SweepChunk(index=0, chunks=1, first=0, stop=len(points))
        current = self._calibration()
        noiseless = self._settings.noiseless or event.options.noiseless
        report = SweepProgress(
            task_id=event.task_id,
            node=self._device.id,
            chunk=chunk.index,
            chunks=chunk.chunks,
            points=chunk.stop - chunk.first,
            done=0,
            completed=0,
            fidelity_sum=0.0,
            predicted_fidelity=event.predicted_fidelity,
            emulated_s=JOB_OVERHEAD_S[current.kind],
        )
        ideals = asyncio.ensure_future(self._sweep_ideals(event))
        try:
            async with self._running(event, ctx):
                if await self._sweep_cancelled(event, report):
                    return None
                first = range(chunk.first, min(chunk.first + FIRST_BATCH_POINTS, chunk.stop))
                batch: SweepBatch | None = await self._start_batch(
                    event, points, first, current, noiseless
                )
                while batch is not None:
                    counts, modelled_s = await batch.emulated()
                    report = report.model_copy(
                        update={
                            "done": report.done + len(batch.points),
                            "completed": report.completed + len(batch.ended) + len(counts),
                            "emulated_s": report.emulated_s + modelled_s,
                        }
                    )
                    size = len(batch.points)
                    if batch.todo:
                        size = batch_points(
                            modelled_s / len(batch.todo) * self._settings.time_scale
                        )
                    following = range(batch.points.stop, min(batch.points.stop + size, chunk.stop))
                    stop = bool(following) and await self._sweep_cancelled(event, report)
                    upcoming = None
                    if following and not stop:
                        upcoming = await self._start_batch(
                            event, points, following, current, noiseless
                        )
                    try:
                        known = await ideals
                    except IdealsMissing:
                        await dropped(upcoming)
                        raise
                    if known is None:
                        await dropped(upcoming)
                        return None
                    point_ideals, predicted = known
                    ran = [
                        TaskCompleted(
                            task_id=task_id,
                            node=self._device.id,
                            counts=point_counts,
                            shots=event.options.shots,
                            seed=seed,
                            predicted_fidelity=predicted,
                            measured_fidelity=hellinger_fidelity(point_counts, point_ideals[k]),
                            emulated_s=modelled_s / len(batch.todo),
                            calibration_revision=current.revision,
                            allocated_fidelity=event.predicted_fidelity,
                            nodes=[self._device.id],
                        )
                        for (k, task_id, seed), point_counts in zip(batch.todo, counts, strict=True)
                    ]
                    measured = sum(c.measured_fidelity for c in batch.ended + ran)
                    report = report.model_copy(
                        update={
                            "fidelity_sum": report.fidelity_sum + measured,
                            "predicted_fidelity": predicted,
                        }
                    )
                    # The points' results exist once the node has run their shots.
                    await self._hold(report.emulated_s, began)
                    if await self._superseded(event, ctx, "qpu.sweep_chunk_moved"):
                        await dropped(upcoming)
                        return None
                    await asyncio.gather(*(ctx.publish(completed) for completed in ran))
                    await ctx.publish(report)
                    if stop:
                        return None
                    batch = upcoming
                self._count(report.emulated_s)
        finally:
            ideals.cancel()
        return await self._end_sweep(event, current)

    async def _end_sweep(
        self, event: TaskAllocated, current: Device
    ) -> TaskCompleted | TaskFailed | None:
        """The sweep's own end, if every chunk has reported all its points ended
        (``qubus.scheduling.sweepchunks.sweep_end``), else None: ``completed`` without counts,
        with the mean measured and predicted fidelity of its completed points, every chunk's
        node and their modelled time summed; ``failed`` (``sweep.cancelled``) if every point
        was cancelled one by one. Chunks ending at once may both see the end: the event
        carries the de-duplication id ``<sweep id>.completed`` (or ``.failed``) whichever
        node publishes it, so it is stored once."""
        stored = await self._bus.task_events(event.task_id)
        if any(s.event.TERMINAL for s in stored):
            return None  # a chunk run again after the sweep ended (redelivered)
        end = sweep_end(s.event for s in stored if isinstance(s.event, SweepProgress))
        if end is None:
            return None
        if not end.completed:
            return TaskFailed(
                task_id=event.task_id,
                stage="qpu",
                error=ErrorInfo(
                    code="sweep.cancelled",
                    message="every point of the sweep was cancelled",
                ),
            )
        return TaskCompleted(
            task_id=event.task_id,
            node=self._device.id,
            counts={},
            shots=event.options.shots,
            seed=seed_for(event.task_id, "qpu"),
            predicted_fidelity=end.predicted_sum / end.completed,
            measured_fidelity=end.measured_sum / end.completed,
            emulated_s=end.emulated_s,
            calibration_revision=current.revision,
            allocated_fidelity=event.predicted_fidelity,
            nodes=end.nodes,
        )

    async def _untouched(self, event: TaskAllocated, ctx: Context) -> bool:
        """Whether the allocation in hand is still the task's last stored event: then it has
        been neither placed again nor cancelled, and one read spares the two that tell which
        (``_wanted``). A sweep is looked at whatever came after its allocation: its sandbox's
        ``failed`` can be stored before it."""
        if event.options.sweep is not None:
            return False
        latest = await self._bus.last_message(task_subject(event.task_id, ">"))
        return latest is not None and latest.sequence == ctx.sequence

    async def _wanted(self, event: TaskAllocated, ctx: Context) -> bool:
        """Whether the task is still to run here: not placed again, and not ended (``_ended``)
        while it waited."""
        if await self._superseded(event, ctx, "qpu.superseded"):
            return False
        ended = await self._ended(event.task_id)
        if ended is not None:
            log.info("qpu.ended_before_run", ended=ended)
            return False
        return True

    async def _ended(self, task_id: str) -> str | None:
        """The event that ended the task before its turn came, or None: ``cancelled``, or for
        a sweep, whose sandbox's second call can end after its scoring, ``failed`` (a point's
        numerics) or ``rejected``. Then the node neither runs it nor publishes ``running``."""
        for cls in (TaskCancelled, TaskFailed, TaskRejected):
            if await self._bus.last_message(cls.subjects(task_id)) is not None:
                return cls.EVENT
        return None

    async def _superseded(self, event: TaskAllocated, ctx: Context, why: str) -> bool:
        """Whether the task (or a sweep's chunk) has been allocated again since ``event``
        (then logs ``why``): the node skips it, or a sweep's chunk drops the result of a batch
        that outlived its allocation (the node stopped long enough for the allocator to place
        the chunk elsewhere; a task's own result is published on that condition,
        ``_complete``)."""
        latest = await replaced_by(self._bus, event, unless_sequence=ctx.sequence)
        if latest is None:
            return False
        log.info(why, attempt=event.attempt, now_on=latest.node)
        return True

    async def handle(self, event: TaskAllocated, ctx: Context) -> TaskFailed | TaskReplace | None:
        """Run the task's current allocation (after the background jobs queued before it, in
        its turn among the tasks waiting for the node), split or on the node's current
        calibration; or ``replace`` it."""
        await self._wait_for_background(ctx)
        expected_s = self._expected_s(event)
        async with self._order.turn(expected_s, ctx.started - ctx.queue_wait_s) as waited_s:
            log.info(
                "qpu.turn",
                expected_s=round(expected_s, 3),
                waited_s=round(waited_s, 3),
                still_waiting=self._order.waiting,
                worst_wait_s=round(self._order.worst_wait_s, 3),
                estimate_s=round(event.score.emulation_s, 4) if event.score else None,
            )
            result = await self._run(event, ctx, time.monotonic())
            if isinstance(result, TaskCompleted):
                # Stored before the turn passes on: the node's runs never overlap in the trace.
                # A sweep's own end is stored once, whichever of its chunks' nodes sees it.
                if event.options.sweep is not None:
                    await ctx.publish(result, msg_id=TaskEvent.msg_id(result))
                else:
                    await self._complete(result, event, ctx)
                return None
            return result

    async def _complete(self, result: TaskCompleted, event: TaskAllocated, ctx: Context) -> None:
        """Store the task's result while the allocation in hand is still its last: one
        conditional publish, which the server refuses once the allocator has placed the task
        again (the node stopped long enough meanwhile), and then the result is dropped. (One
        read of the task's last allocation after the run did this before, a race apart.)"""
        try:
            await ctx.publish(
                result, after=(task_subject(event.task_id, "allocated.*"), ctx.sequence)
            )
        except NotLatest:
            latest = await latest_allocation(self._bus, event.task_id)
            now_on = latest.node if latest is not None else None
            log.info("qpu.superseded_result", attempt=event.attempt, now_on=now_on)

    def _expected_s(self, event: TaskAllocated) -> float:
        """Wall-clock seconds the task should hold the node, to order it among the waiting
        tasks: its modelled run × the time scale, or the emulation's estimate if longer (both
        from the allocation's score; without one, the node's mean job)."""
        score = event.score
        modelled_s = score.expected_run_s if score and score.expected_run_s else self._mean_job_s()
        emulation_s = score.emulation_s if score else 0.0
        return max(modelled_s * self._settings.time_scale, emulation_s)

    async def _run(
        self, event: TaskAllocated, ctx: Context, began: float
    ) -> TaskCompleted | TaskFailed | TaskReplace | None:
        """``handle``'s work once the task's turn has come (at ``began``, ``time.monotonic``,
        from which the node is held: ``_hold``): nothing if the task was placed
        again or ended (``_ended``) while it waited.

        An allocation made on the node's current calibration, with its emulation estimate,
        is not looked at before it runs: nothing before its ``running`` event can refuse it,
        and that event is stored only while the allocation is the task's last (``_running``).
        """
        current = self._calibration()
        unseen = (
            event.split is None
            and event.options.sweep is None
            and carried_estimate(event, current) > 0
        )
        if (
            not unseen
            and not await self._untouched(event, ctx)
            and not await self._wanted(event, ctx)
        ):
            return None
        if event.split is not None:
            return await self._run_split_task(event, event.split, ctx, began)
        if event.options.sweep is not None:
            return await self._run_sweep(event, event.options.sweep, ctx, began)
        noiseless = self._settings.noiseless or event.options.noiseless
        # The allocation's prediction holds only on the calibration it was computed on.
        predicted = None
        if not noiseless and event.calibration_revision != current.revision:
            predicted, replace = await self._recheck(event, current)
            if replace is not None:
                return replace
        budget = await self._budget(event, current, noiseless)
        async with self._running(event, ctx, unseen=unseen) as wanted:
            if not wanted:
                return None
            seed = seed_for(event.task_id, "qpu")
            try:
                counts, modelled_s, noiseless_predicted = await self._pool.run(
                    execute,
                    current,
                    event.circuit,
                    event.options.shots,
                    seed,
                    noiseless,
                    event.ideal if noiseless else None,
                    timeout_s=budget.wall_s,
                    cpu_limit_s=budget.cpu_s,
                    watch=self._watch(event, ctx),
                    inline=is_quick(event.circuit, budget.estimate_s),
                )
            except JobStopped:
                log.info("qpu.cancelled_running", elapsed_s=round(time.monotonic() - began, 3))
                return None
            await self._occupy(modelled_s, began)
        if noiseless:
            predicted = noiseless_predicted
        elif predicted is None:
            predicted = event.predicted_fidelity
        else:
            log.info(
                "qpu.prediction_recomputed",
                allocated_revision=event.calibration_revision,
                revision=current.revision,
                allocated_fidelity=event.predicted_fidelity,
                predicted_fidelity=predicted,
            )
        return TaskCompleted(
            task_id=event.task_id,
            node=self._device.id,
            counts=counts,
            shots=event.options.shots,
            seed=seed,
            predicted_fidelity=predicted,
            measured_fidelity=hellinger_fidelity(counts, event.ideal),
            emulated_s=modelled_s,
            calibration_revision=current.revision,
            allocated_fidelity=event.predicted_fidelity,
            nodes=[self._device.id],
        )


def emulation_pool(memory_mb: int) -> WorkerPool:
    """The node's worker pool: its failures are the QPU stage's (``qpu.timeout``,
    ``qpu.memory``), not the sandbox's."""
    return WorkerPool(memory_mb=memory_mb, stage="qpu", job="emulation")


async def setup(rt: Runtime) -> None:
    if rt.node is None:
        raise SystemExit("the qpu service needs --node ID (one process per QPU node)")
    settings = rt.settings
    device = load_device(rt.node)
    replay = DriftReplay.for_node(
        device.id, period_s=settings.drift_period_s, start=time.monotonic()
    )
    load = (
        BackgroundLoad.for_node(device.id, period_s=settings.load_period_s, start=time.time())
        if settings.background_load
        else None
    )
    if load is not None:
        log.info("qpu.background_load", backend=load.backend, period_s=load.period_s)
    pool = emulation_pool(settings.sandbox_memory_mb)
    pool.start()
    rt.stack.callback(pool.close)
    node = QpuNode(rt, device, replay, load, pool, await rt.bus.kv(BUCKET_NODES))
    await rt.consume(
        Stage(
            node.consumer,
            [TaskAllocated],
            node.handle,
            subjects=[allocation_subject(device.id)],
            concurrency=ORDER_WINDOW,
            max_ack_pending=ORDER_WINDOW,
        )
    )
    await node.publish_status()
    periods = [STATUS_INTERVAL_S] + [r.period_s for r in (replay, load) if r is not None]
    rt.every(min(periods), node.publish_status)
