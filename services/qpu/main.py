"""qpu: one process per QPU node. Runs the tasks allocated to it, first in first out, on a
noisy emulator of the device its calibration file describes, and keeps the node's
calibration and queue depth current in KV ``qubus_nodes``.

With ``QUBUS_DRIFT_PERIOD_S`` > 0, a node with a drift series (``ibm_perth``) replays its
daily calibration snapshots, one per period (``qubus.drift``): each task runs on the
calibration current when it starts, and each new calibration is published at once.
"""

from __future__ import annotations

import asyncio
import time

from qubus import codec
from qubus.bus import BUCKET_NODES, STREAM, node_key
from qubus.circuits import circuit_from_json
from qubus.compile import compile_for_device
from qubus.consumer import Context, Stage
from qubus.devices import Device, load_device
from qubus.drift import DriftReplay
from qubus.fidelity import hellinger_fidelity
from qubus.ids import seed_for
from qubus.logs import get_logger
from qubus.messages import NodeStatus, TaskAllocated, TaskCompleted, TaskRunning
from qubus.noise import emulate, emulated_runtime_s
from qubus.service import Runtime
from qubus.workers import WorkerPool

log = get_logger()
STATUS_INTERVAL_S = 2.0


def execute(device: Device, circuit_json: str, shots: int, seed: int, noiseless: bool):
    """Compile and emulate; returns counts and the modelled run time. Runs in the worker."""
    compiled = compile_for_device(circuit_from_json(circuit_json), device)
    counts = emulate(compiled, device, shots, seed=seed, noiseless=noiseless)
    return counts, emulated_runtime_s(compiled, device, shots)


async def setup(rt: Runtime) -> None:
    if rt.node is None:
        raise SystemExit("the qpu service needs --node ID (one process per QPU node)")
    settings = rt.settings
    device = load_device(rt.node)
    replay = DriftReplay.for_node(
        device.id, period_s=settings.drift_period_s, start=time.monotonic()
    )
    consumer = f"qpu-{device.id}"
    pool = WorkerPool(memory_mb=settings.sandbox_memory_mb)
    pool.start()
    rt.stack.callback(pool.close)
    nodes = await rt.bus.kv(BUCKET_NODES)
    state = {"busy": False, "jobs": 0, "job_s": 0.0, "revision": ""}

    def calibration() -> Device:
        """The device as calibrated now: the drift replay's current snapshot, if drifting."""
        return replay.device_at(time.monotonic()) if replay else device

    async def publish_status() -> None:
        current = calibration()
        if current.revision != state["revision"]:
            state["revision"] = current.revision
            log.info(
                "qpu.calibration",
                revision=current.revision,
                calibrated_at=current.calibrated_at,
                usable_qubits=len(current.usable_qubits),
            )
        depth = 0
        try:
            info = await rt.bus.js.consumer_info(STREAM, consumer)
            depth = info.num_pending + info.num_ack_pending
        except Exception:  # before the consumer exists, or while reconnecting
            log.debug("qpu.queue_depth_unknown", exc_info=True)
        status = NodeStatus(
            node=current.id,
            kind=current.kind,
            n_qubits=current.n_qubits,
            max_circuit_qubits=current.max_circuit_qubits,
            device=current.model_dump(mode="json"),
            calibration_revision=current.revision,
            queue_depth=depth,
            mean_job_s=state["job_s"] / state["jobs"] if state["jobs"] else 0.0,
            busy=bool(state["busy"]),
            instance=rt.bus.instance,
            updated_at=time.time(),
        )
        await nodes.put(node_key(device.id), codec.encode(status))

    async def handle(event: TaskAllocated, ctx: Context) -> TaskCompleted:
        current = calibration()
        state["busy"] = True
        try:
            await ctx.publish(
                TaskRunning(task_id=event.task_id, node=device.id, queue_wait_s=ctx.queue_wait_s)
            )
            seed = seed_for(event.task_id, "qpu")
            counts, modelled_s = await pool.run(
                execute,
                current,
                event.circuit,
                event.options.shots,
                seed,
                settings.noiseless,
                timeout_s=settings.sandbox_timeout_s,
            )
            await asyncio.sleep(modelled_s * settings.time_scale)  # the QPU is occupied
            state["jobs"] += 1
            state["job_s"] += modelled_s
        finally:
            state["busy"] = False
        return TaskCompleted(
            task_id=event.task_id,
            node=device.id,
            counts=counts,
            shots=event.options.shots,
            seed=seed,
            predicted_fidelity=event.predicted_fidelity,
            measured_fidelity=hellinger_fidelity(counts, event.ideal),
            emulated_s=modelled_s,
            calibration_revision=current.revision,
        )

    await rt.consume(
        Stage(
            consumer,
            [TaskAllocated],
            handle,
            subjects=[f"qubus.task.*.allocated.{device.id}"],
            max_ack_pending=1,
        )
    )
    await publish_status()
    rt.every(
        min(STATUS_INTERVAL_S, replay.period_s) if replay else STATUS_INTERVAL_S, publish_status
    )
