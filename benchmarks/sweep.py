"""A 200-point sweep of a 6-qubit QAOA circuit: one sweep submission against 200 separate ones.

Both run through the whole pipeline of one private stack (nats-server and every service,
``qubus.cli.stack.Supervisor``), side by side in one run: the sweep (one ``SubmitRequest``
with ``sweep``: parsed, checked, evaluated, compiled, scored and placed once, each point run
and reported as task ``<sweep id>-<k>`` by the QPU node) and the same 200 circuits resolved
and submitted as 200 tasks at once. The time is from the first submission until the last
point's terminal event arrives (one core subscription on every task's end). The sweep runs
before and after the separate submissions and their mean is compared (the machine's other
load drifts during a run). Each run starts once every node has reported an empty queue
(``idle_fleet``). Also prints the stack's CPU seconds for each, and each run's
timeline: when (seconds from the first submission) each stage's event was stored, first and
last over the run's tasks, and when the client saw the first and last task end; and where the
sweep's chunks ran, each with the wall time the device model held its node (its modelled run ×
``QUBUS_TIME_SCALE``): the sweep cannot end sooner than its longest chunk's hold, which bounds
the speed-up at the separate submissions' time over it.

    python -m benchmarks.sweep [--points 200] [--shots 1000] [--node ibm_nairobi] [--json]

``--node`` pins both to one QPU node: the same modelled QPU time and the same emulator for
both, so the ratio compares what the pipeline does (without it each is placed by the scorer,
and a sweep is one long job on one node while separate tasks spread over the fleet).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cirq
import numpy as np
import sympy

from benchmarks.fastpath import Waiter, cpu_seconds, stack_processes
from qubus.bus import logs
from qubus.bus.config import Settings
from qubus.bus.ids import sweep_point_id
from qubus.bus.limits import MAX_SHOTS, MAX_SWEEP_POINTS
from qubus.bus.messages import SubmitRequest, SweepProgress, TaskAllocated
from qubus.bus.natsserver import NatsServer
from qubus.circuits import circuit_to_json
from qubus.cli.common import default_fleet, number_in
from qubus.cli.stack import Supervisor, stack_specs
from qubus.client.aio import Client
from qubus.scheduling.sweepchunks import latest_reports

EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0), (0, 3)]
"""The MaxCut graph: a ring of six with one chord."""


def qaoa_circuit(qubits: int = 6) -> cirq.Circuit:
    """QAOA (p = 1) for MaxCut on ``EDGES``, parameters ``gamma`` and ``beta``, in the
    CNOT-RZ-CNOT form a transpiled or OpenQASM circuit has."""
    q = cirq.LineQubit.range(qubits)
    gamma, beta = sympy.Symbol("gamma"), sympy.Symbol("beta")
    circuit = cirq.Circuit(cirq.H.on_each(*q))
    for a, b in EDGES:
        circuit.append([cirq.CNOT(q[a], q[b]), cirq.rz(2 * gamma).on(q[b]), cirq.CNOT(q[a], q[b])])
    circuit.append(cirq.rx(2 * beta).on_each(*q))
    circuit.append(cirq.measure(*q, key="m"))
    return circuit


def grid(points: int) -> list[dict[str, float]]:
    """``points`` distinct parameter sets: gamma over [0, π), beta over [0, π/2), on a grid
    of ``ceil(√points)`` gammas."""
    side = int(np.ceil(np.sqrt(points)))
    return [
        {"gamma": float(np.pi * (k % side) / side), "beta": float(np.pi / 2 * (k // side) / side)}
        for k in range(points)
    ]


@dataclass
class Run:
    """One timed run: when it started (``time.time``), its tasks and when each was seen to
    end."""

    started: float
    task_ids: list[str]
    ends: list[float]

    @property
    def elapsed_s(self) -> float:
        return max(self.ends) - self.started


async def timed(waiter: Waiter, submit, task_ids) -> Run:
    """Submit and wait until every task of ``task_ids(replies)`` has ended."""
    started = time.time()
    replies = await submit()
    ids = task_ids(replies)
    ends = await asyncio.gather(*(waiter.wait(task_id) for task_id in ids))
    failed = [end for _, end in ends if end != "completed"]
    if failed:
        raise SystemExit(f"{len(failed)} tasks did not complete: {failed[:3]}")
    return Run(started, ids, [ended for ended, _ in ends])


async def timeline(client: Client, run: Run, task_ids: list[str]) -> dict[str, list[float]]:
    """When each kind of event of ``task_ids`` was stored, first and last (seconds from the
    run's start; a sweep's progress reports by node), in the order they first appear; then
    when the client saw the run's first and last task end (``seen``)."""
    stored = await asyncio.gather(*(client.bus.task_events(task_id) for task_id in task_ids))
    times: dict[str, list[float]] = {}
    for events in stored:
        for event in events:
            name = event.event.EVENT
            if isinstance(event.event, SweepProgress):  # each chunk's node apart
                name = f"{name} {event.event.node}"
            times.setdefault(name, []).append(event.published - run.started)
    spans = {name: [min(t), max(t)] for name, t in sorted(times.items(), key=lambda i: min(i[1]))}
    spans["seen"] = [min(run.ends) - run.started, run.elapsed_s]
    return spans


def show_timeline(spans: dict[str, list[float]]) -> str:
    return ", ".join(
        f"{name} {a:.3f}" if b - a < 0.0005 else f"{name} {a:.3f}-{b:.3f}"
        for name, (a, b) in spans.items()
    )


async def sweep_chunks(client: Client, sweep_id: str) -> list[tuple[str, int, int, float]]:
    """Where the sweep's points ran: each allocation's node, first and last point, and the
    wall time its node was held for them (the chunk's modelled run × ``time_scale``, from its
    last ``SweepProgress``): no pipeline can end the sweep sooner than its longest hold."""
    events = [stored.event for stored in await client.events(sweep_id)]
    modelled = {
        index: report.emulated_s
        for index, report in latest_reports(
            e for e in events if isinstance(e, SweepProgress)
        ).items()
    }
    scale = Settings().time_scale
    chunks = []
    for event in events:
        if isinstance(event, TaskAllocated):
            whole = (0, len(event.options.sweep or ()))
            first, stop = (event.chunk.first, event.chunk.stop) if event.chunk else whole
            held = modelled.get(event.chunk.index if event.chunk else 0, 0.0) * scale
            chunks.append((event.node, first, stop - 1, held))
    return chunks


async def idle_fleet(client: Client, timeout_s: float = 30.0) -> None:
    """Return once every node has reported, since the call, an empty queue: each run is
    placed on statuses that show the fleet idle, not the last run's work (nodes report every
    ``STATUS_INTERVAL_S``, 2 s; a sweep placed on a stale queue gives the slow nodes more
    points)."""
    since = time.time()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        statuses = (await client.bus.node_statuses()).values()
        if statuses and all(
            s.updated_at > since and s.queue_depth == 0 and not s.busy for s in statuses
        ):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the fleet did not report an empty queue within {timeout_s} s")


async def run(args: argparse.Namespace) -> dict:
    server = NatsServer()
    url = server.start()
    log_dir = Path(tempfile.mkdtemp(prefix="qubus-bench-"))
    supervisor = Supervisor(url, stack_specs(default_fleet()), log_dir=log_dir)
    circuit = qaoa_circuit()
    points = grid(args.points)
    symbolic = circuit_to_json(circuit)
    resolved = [circuit_to_json(cirq.resolve_parameters(circuit, p)) for p in points]
    try:
        await supervisor.start()
        client = await Client.connect(url)
        waiter = Waiter()
        await waiter.start(client)
        sweep_ids: list[str] = []

        async def sweep(n: int) -> Run:
            request = SubmitRequest(
                circuit=symbolic, shots=args.shots, sweep=points[:n], node=args.node
            )

            def point_ids(reply) -> list[str]:
                sweep_ids.append(reply.task_id)
                return [sweep_point_id(reply.task_id, k) for k in range(n)]

            return await timed(waiter, lambda: client.submit(request), point_ids)

        async def separate(n: int) -> Run:
            requests = [
                SubmitRequest(circuit=text, shots=args.shots, node=args.node)
                for text in resolved[:n]
            ]
            return await timed(
                waiter,
                lambda: asyncio.gather(*(client.submit(r) for r in requests)),
                lambda replies: [reply.task_id for reply in replies],
            )

        await sweep(4)  # warm-up: every stage's first message, compilation caches
        await separate(4)
        processes = stack_processes(supervisor, server)
        figures: dict = {
            "points": args.points,
            "shots": args.shots,
            "node": args.node,
            "sweep_s": [],
        }
        for run_separate in (False, True, False):
            await idle_fleet(client)
            before = cpu_seconds(processes)
            ran = await (separate if run_separate else sweep)(args.points)
            elapsed = ran.elapsed_s
            # Listed again: a worker process forked during the run (one replacing a worker
            # that died or ran out of time) counts whole.
            processes = stack_processes(supervisor, server)
            after = cpu_seconds(processes)
            by_service = {name: after[name] - before[name] for name in after}
            cpu = sum(by_service.values())
            key = "separate" if run_separate else "sweep"
            if run_separate:
                figures["separate_s"], figures["separate_cpu_s"] = elapsed, cpu
            else:
                figures["sweep_s"].append(elapsed)
                figures["sweep_cpu_s"] = cpu
            figures[f"{key}_cpu_by_service"] = by_service
            busiest = sorted(by_service.items(), key=lambda item: -item[1])[:4]
            shares = ", ".join(f"{name} {seconds:.1f}" for name, seconds in busiest)
            print(f"{key}: {elapsed:.2f} s, stack CPU {cpu:.1f} s ({shares})", flush=True)
            # The sweep's own events (every stage's, then its chunks' reports and end); the
            # separate tasks' every event.
            spans = await timeline(
                client, ran, [sweep_ids[-1]] if not run_separate else ran.task_ids
            )
            figures.setdefault(f"{key}_timeline", []).append(spans)
            print(f"  timeline: {show_timeline(spans)}", flush=True)
            if not run_separate:
                chunks = await sweep_chunks(client, sweep_ids[-1])
                figures.setdefault("sweep_chunks", []).append(chunks)
                shown = ", ".join(f"{n} {a}-{b} (held {h:.3f} s)" for n, a, b, h in chunks)
                print(f"  chunks: {shown}", flush=True)
        await client.close()
    finally:
        await supervisor.stop()
        server.stop()
    figures["speedup"] = figures["separate_s"] / statistics.fmean(figures["sweep_s"])
    held = statistics.fmean(max(h for *_, h in chunks) for chunks in figures["sweep_chunks"])
    figures["sweep_held_s"] = held
    # No hold (QUBUS_TIME_SCALE=0): nothing but the pipeline bounds the speed-up.
    figures["speedup_bound"] = figures["separate_s"] / held if held > 0 else None
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=number_in(int, 1, MAX_SWEEP_POINTS), default=200)
    parser.add_argument("--shots", type=number_in(int, 1, MAX_SHOTS), default=1000)
    parser.add_argument("--node", help="pin every task to this QPU node")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logs.configure("bench", "bench", "warning")
    figures = asyncio.run(run(args))
    if args.json:
        print(json.dumps(figures))
        return
    sweep_s = statistics.fmean(figures["sweep_s"])
    placed = f"on {args.node}" if args.node else "placed by the scorer"
    print(
        f"{args.points}-point sweep of a 6-qubit QAOA circuit, {args.shots} shots a point, {placed}"
    )
    runs = ", ".join(f"{s:.2f}" for s in figures["sweep_s"])
    print(f"one sweep:            {sweep_s:8.2f} s  (runs: {runs})")
    print(f"separate submissions: {figures['separate_s']:8.2f} s")
    cpu = figures["sweep_cpu_s"], figures["separate_cpu_s"]
    print(f"stack CPU:            {cpu[0]:8.1f} s (sweep), {cpu[1]:.1f} s (separate)")
    print(f"speed-up:             {figures['speedup']:8.1f}x (goal: 10x)")
    if figures["speedup_bound"] is not None:
        print(
            f"held by the device model: {figures['sweep_held_s']:.2f} s (its longest chunk), "
            f"so at most {figures['speedup_bound']:.1f}x against these separate submissions"
        )


if __name__ == "__main__":
    main()
