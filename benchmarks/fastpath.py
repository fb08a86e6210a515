"""qubus against a bare Dask loop on small circuits, side by side in one run.

Usage:
    python benchmarks/fastpath.py --tasks 300
    python benchmarks/fastpath.py --tasks 3000 --skip-latency
    python benchmarks/fastpath.py --tasks 3000 --skip-latency --rounds 3
    python benchmarks/fastpath.py --tasks 300 --replicas parser=2
    python benchmarks/fastpath.py --tasks 600 --skip-latency --profile /tmp/prof

The workload: ``--tasks`` distinct 4-qubit GHZ-like circuits (a GHZ state, then an ``rz`` whose
angle is the task's own and a Hadamard on the first qubit), ``--shots`` (200) shots each.

1. **Dask**: a ``LocalCluster`` of 2 worker processes (one thread each) maps, per circuit,
   the ideal state-vector run and the noisy run (depolarizing noise, 1 % per gate, one qsim
   trajectory per shot) with qsimcirq: the physics alone, nothing else. It runs before and
   after qubus (the machine's other load drifts); qubus is compared with the mean of both.
   With ``--rounds N``, qubus runs N times, each on a fresh stack and followed by a Dask run,
   and the ratio is the median of the rounds' (each against the Dask runs around it).
2. **qubus**: a private nats-server and the whole stack (``qubus.cli.stack.Supervisor``,
   default fleet, default settings, ``--replicas`` as ``qubus up --replicas``) on the same
   machine, then:

   - throughput: every circuit submitted as ``qubus submit FILES --wait`` submits them (the
     issue's workload: every task in flight, as the Dask loop maps every circuit, with at most
     ``qubus.cli.tasks.SUBMITTING`` submissions awaiting their answer), or with at most
     ``--in-flight`` unfinished (64 until session 22), timed from the first submission to the
     last terminal event; the CPU seconds every stack process (and its
     worker processes) spent from the first submission until every stage has handled all it
     was given (the stages that follow a task's end may still be at work after the last task
     completes: since session 33), per service, divided by the tasks; with ``--profile``,
     each service process's CPU split by kind (its own work, the consumer, the codec, the nats
     client, logging, the loop and other threads: ``qubus.bus.sampler.KINDS``) from the samples of
     ``qubus.bus.sampler``, which the services take on their own CPU clock (worker processes
     are not sampled and not in that split); and each QPU node's jobs meanwhile (from its
     ``running`` and ``completed`` events as they arrive): their rate, the median time from one
     job's start to the next's and from a job's end to the next's start, and a task's median
     wait in its node's queue (``TaskRunning.queue_wait_s``);
   Services log at the default level (info), as ``qubus up`` runs them.
   - idle latency: ``--latency`` tasks one after another, ``qubus.submit`` to the ``completed``
     event's arrival; their traces give each stage's median time (``qubus trace``'s durations);
   - latency at half the saturation rate: ``--latency`` tasks submitted at fixed intervals, at
     half the throughput measured above.

Prints the tasks per second of both and their ratio, the latencies, and a per-stage table;
``--json`` prints one JSON object instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import signal
import statistics
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import psutil

from qubus.bus import codec, logs
from qubus.bus.connection import STREAM
from qubus.bus.ids import split_task_subject
from qubus.bus.limits import MAX_SHOTS
from qubus.bus.messages import (
    SubmitRequest,
    TaskCompleted,
    TaskFailed,
    TaskRejected,
    TaskRunning,
    event_of,
)
from qubus.bus.natsserver import NatsServer, free_ports
from qubus.bus.sampler import KINDS, by_service
from qubus.cli.common import default_fleet, number_in
from qubus.cli.stack import Supervisor, parse_replicas, stack_specs
from qubus.cli.tasks import SUBMITTING
from qubus.client.aio import Client, stage_rows

NOISE = 0.01
"""Depolarizing probability per gate of the Dask loop's noisy run."""


def angle(i: int) -> float:
    """Task ``i``'s own rz angle (distinct for every task)."""
    return 0.001 + i * math.pi / 7919


def qasm(i: int) -> str:
    """Task ``i``'s circuit as OpenQASM 2."""
    return (
        'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[4];\ncreg c[4];\n'
        "h q[0];\ncx q[0], q[1];\ncx q[1], q[2];\ncx q[2], q[3];\n"
        f"rz({angle(i):.12f}) q[0];\nh q[0];\nmeasure q -> c;\n"
    )


# ------------------------------------------------------------------ the bare Dask loop


def physics(i: int, shots: int) -> dict[str, int]:
    """The ideal distribution and ``shots`` noisy samples of task ``i``'s circuit (in a Dask
    worker): what any runner of this workload has to compute."""
    import cirq
    import qsimcirq

    q = cirq.LineQubit.range(4)
    gates = cirq.Circuit(
        cirq.H(q[0]),
        cirq.CNOT(q[0], q[1]),
        cirq.CNOT(q[1], q[2]),
        cirq.CNOT(q[2], q[3]),
        cirq.rz(angle(i))(q[0]),
        cirq.H(q[0]),
    )
    simulator = qsimcirq.QSimSimulator()
    state = simulator.simulate(gates).final_state_vector
    ideal = abs(state) ** 2
    noisy = (gates + cirq.measure(*q, key="m")).with_noise(cirq.depolarize(NOISE))
    samples = simulator.run(noisy, repetitions=shots).histogram(key="m")
    assert abs(ideal.sum() - 1) < 1e-4
    return {format(k, "04b"): v for k, v in samples.items()}


def run_dask(tasks: int, shots: int) -> dict[str, float]:
    """Tasks per second of the bare Dask loop (a new cluster of 2 workers, after a warm-up on
    each)."""
    from dask.distributed import Client as DaskClient
    from dask.distributed import LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        DaskClient(cluster) as client,
    ):
        client.gather(client.map(physics, [-1, -2], [shots, shots], pure=False))  # warm-up
        started = time.perf_counter()
        results = client.gather(client.map(physics, range(tasks), [shots] * tasks, pure=False))
        elapsed = time.perf_counter() - started
    assert all(sum(r.values()) == shots for r in results)
    return {"elapsed_s": elapsed, "tasks_per_s": tasks / elapsed}


def quiet_logs() -> None:
    """This script's own log lines at warning and above only, Dask's at error."""
    logs.configure("bench", "bench", "warning")
    logging.getLogger("distributed").setLevel(logging.ERROR)


# ------------------------------------------------------------------ qubus


@dataclass
class Waiter:
    """Every task's terminal event as it arrives (one core subscription for all tasks), and
    each QPU node's jobs: when its ``running`` and ``completed`` events arrived, and each
    task's wait in the node's queue (``TaskRunning.queue_wait_s``)."""

    ends: dict[str, tuple[float, str]] = field(default_factory=dict)
    events: dict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    jobs: dict[str, list[tuple[str, float]]] = field(default_factory=lambda: defaultdict(list))
    queued: dict[str, float] = field(default_factory=dict)

    async def start(self, client: Client) -> None:
        for end in (TaskCompleted, TaskRejected, TaskFailed):
            await client.bus.nc.subscribe(end.subjects(), cb=self._on_end)
        await client.bus.nc.subscribe(TaskRunning.subjects(), cb=self._on_running)

    async def _on_end(self, msg) -> None:
        now = time.time()
        task_id, tail = split_task_subject(msg.subject)
        event, node = event_of(tail)
        self.ends.setdefault(task_id, (now, event))
        self.events[task_id].set()
        if event == TaskCompleted.EVENT and node:
            self.jobs[node].append(("completed", now))

    async def _on_running(self, msg) -> None:
        task_id, tail = split_task_subject(msg.subject)
        self.jobs[event_of(tail)[1]].append(("running", time.time()))
        self.queued[task_id] = codec.decode(msg.data, TaskRunning).queue_wait_s

    async def wait(self, task_id: str, timeout: float = 600.0) -> tuple[float, str]:
        await asyncio.wait_for(self.events[task_id].wait(), timeout)
        return self.ends[task_id]

    def nodes(self, task_ids: Sequence[str], since: float) -> dict[str, dict[str, float]]:
        """Per QPU node, from ``since``: its jobs, their rate, the median time from one job's
        start to the next's and from a job's end to the next's start (the node's own work
        between two jobs), and (under ``all``) the median wait of ``task_ids`` in their node's
        queue."""
        figures = {}
        for node, seen in sorted(self.jobs.items()):
            seen = [(kind, at) for kind, at in seen if at >= since]
            starts = [at for kind, at in seen if kind == "running"]
            if len(starts) < 2:
                continue
            between = [
                b - a
                for (was, a), (now, b) in pairwise(seen)
                if (was, now) == ("completed", "running")
            ]
            figures[node] = {
                "jobs": len(starts),
                "jobs_per_s": (len(starts) - 1) / (starts[-1] - starts[0]),
                "start_to_start_p50_ms": 1000
                * statistics.median(b - a for a, b in pairwise(starts)),
                "between_jobs_p50_ms": 1000 * statistics.median(between) if between else 0.0,
            }
        waits = [self.queued[task_id] for task_id in task_ids if task_id in self.queued]
        if waits:
            figures["all"] = {"queue_wait_p50_ms": 1000 * statistics.median(waits)}
        return figures


async def one_task(
    client: Client,
    waiter: Waiter,
    i: int,
    shots: int,
    gate: asyncio.Semaphore | None = None,
    submitting: asyncio.Semaphore | None = None,
) -> tuple[str, float, str]:
    """Submit task ``i`` and wait for its end: (task id, latency s, terminal event). ``gate``
    is held until the task has ended, ``submitting`` until its submission is answered."""
    if gate is not None:
        await gate.acquire()
    try:
        started = time.time()
        async with submitting or contextlib.nullcontext():
            reply = await client.submit(SubmitRequest(circuit=qasm(i), shots=shots))
        ended, end = await waiter.wait(reply.task_id)
        return reply.task_id, ended - started, end
    finally:
        if gate is not None:
            gate.release()


def service_roots(supervisor: Supervisor) -> dict[str, list[psutil.Process]]:
    """Each service's own processes (its replicas, each QPU node) by service name, without
    their worker processes: the ones ``qubus.bus.sampler`` samples."""
    found: dict[str, list[psutil.Process]] = defaultdict(list)
    for child in supervisor.children.values():
        if child.process is not None and child.process.pid is not None:
            found[child.spec.name].append(psutil.Process(child.process.pid))
    return found


def stack_processes(supervisor: Supervisor, server: NatsServer) -> dict[str, list[psutil.Process]]:
    """Each service's processes (its replicas and their worker processes) by service name,
    and the nats-server's."""
    assert server.process is not None
    found: dict[str, list[psutil.Process]] = {"nats-server": [psutil.Process(server.process.pid)]}
    for name, roots in service_roots(supervisor).items():
        found[name] = [p for root in roots for p in (root, *root.children(recursive=True))]
    return found


def cpu_seconds(processes: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """User + system CPU seconds of each service's processes so far."""
    totals: dict[str, float] = {}
    for name, procs in processes.items():
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        totals[name] = total
    return totals


def signal_all(roots: dict[str, list[psutil.Process]], signum: int) -> None:
    """Send ``signum`` to every service process of ``roots`` (``service_roots``)."""
    for procs in roots.values():
        for proc in procs:
            proc.send_signal(signum)


def read_profiles(roots: dict[str, list[psutil.Process]], folder: Path, since: float) -> list[Path]:
    """The profile each service process of ``roots`` wrote to ``folder`` after ``since``
    (``qubus.bus.sampler``: ``<service>[-<node>]-<pid>.txt``), once every one has, within 30 s.
    """
    pids = [proc.pid for procs in roots.values() for proc in procs]
    deadline = time.time() + 30
    while True:
        paths = [path for pid in pids for path in folder.glob(f"*-{pid}.txt")]
        if len(pids) == sum(path.stat().st_mtime >= since for path in paths):
            return paths
        if time.time() > deadline:
            written = {
                int(path.stem.rsplit("-", 1)[1]) for path in paths if path.stat().st_mtime >= since
            }
            missing = ", ".join(str(pid) for pid in pids if pid not in written)
            raise TimeoutError(f"no profile in {folder} from process {missing}")
        time.sleep(0.1)


async def settled(client: Client, timeout_s: float = 120.0) -> float:
    """When every durable consumer of the task stream has handled all it was given (stages that
    follow a task's end, such as fusion's ``outcomes``, may still be at work when the last task
    completes; their work counts in the run's CPU), polled every 50 ms; the Unix time.

    Raises:
        TimeoutError: Still not settled after ``timeout_s``.
    """
    async with asyncio.timeout(timeout_s):
        while True:
            consumers = await client.bus.js.consumers_info(STREAM)
            if all(
                not info.num_pending and not info.num_ack_pending
                for info in consumers
                if info.config.durable_name
            ):
                return time.time()
            await asyncio.sleep(0.05)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stage_medians(traces: list[list[dict]]) -> dict[str, float]:
    """Each service's median time per task (ms) over the traces: the sum of its events'
    durations in one task (``qubus trace``)."""
    per_task: list[dict[str, float]] = []
    for rows in traces:
        spent: dict[str, float] = defaultdict(float)
        for row in rows:
            if row["event"] == "running":
                continue  # the QPU's one stage ends at completed; running is inside it
            spent[row["service"]] += row["duration_ms"]
        per_task.append(spent)
    services = sorted({s for spent in per_task for s in spent})
    return {s: statistics.median(spent.get(s, 0.0) for spent in per_task) for s in services}


def bus_traffic(server: NatsServer) -> dict[str, int]:
    """The nats-server's messages and bytes in (from clients) and out (to them) so far."""
    url = f"http://127.0.0.1:{server.monitor_port}/varz"
    with urllib.request.urlopen(url, timeout=5) as reply:
        varz = json.load(reply)
    return {key: varz[key] for key in ("in_msgs", "out_msgs", "in_bytes", "out_bytes")}


async def run_qubus(args: argparse.Namespace, *, latency: bool) -> dict:
    server = NatsServer(monitor_port=free_ports(1)[0])
    url = server.start()
    specs = stack_specs(default_fleet(), replicas=parse_replicas(args.replicas))
    env = {"QUBUS_PROFILE_DIR": str(args.profile)} if args.profile else {}
    log_dir = Path(tempfile.mkdtemp(prefix="qubus-bench-"))
    supervisor = Supervisor(url, specs, log_dir=log_dir, env=env)
    figures: dict = {}
    try:
        await supervisor.start()
        client = await Client.connect(url)
        waiter = Waiter()
        await waiter.start(client)
        offset = 1_000_000  # the warm-up's circuits are not the workload's
        await asyncio.gather(*(one_task(client, waiter, offset + i, args.shots) for i in range(8)))

        processes = stack_processes(supervisor, server)
        roots = service_roots(supervisor)
        if args.profile:
            signal_all(roots, signal.SIGUSR1)  # the samplers start counting afresh
        before, traffic = cpu_seconds(processes), bus_traffic(server)
        roots_before = cpu_seconds(roots)
        gate = asyncio.Semaphore(args.in_flight or args.tasks)
        submitting = asyncio.Semaphore(SUBMITTING)
        started = time.time()
        done = await asyncio.gather(
            *(one_task(client, waiter, i, args.shots, gate, submitting) for i in range(args.tasks))
        )
        last_end = max(ended for ended, _ in waiter.ends.values())
        elapsed = last_end - started
        settled_s = await settled(client) - last_end
        after, moved = cpu_seconds(processes), bus_traffic(server)
        roots_after = cpu_seconds(roots)
        if args.profile:
            asked = time.time()
            signal_all(roots, signal.SIGUSR2)  # each writes what it counted
            paths = read_profiles(roots, args.profile, asked - 1)
            figures["profile_ms_per_task"] = {
                name: {
                    kind: share * 1000 * (roots_after[name] - roots_before[name]) / args.tasks
                    for kind, share in shares.items()
                }
                for name, shares in by_service(paths).items()
            }
        ends = [end for _, _, end in done]
        nodes = waiter.nodes([task_id for task_id, _, _ in done], started)
        figures["throughput"] = {
            "tasks": args.tasks,
            "completed": ends.count("completed"),
            "elapsed_s": elapsed,
            "settled_s": settled_s,
            "tasks_per_s": args.tasks / elapsed,
            "p50_ms": 1000 * statistics.median(lat for _, lat, _ in done),
            "cpu_ms_per_task": {
                name: 1000 * (after[name] - before[name]) / args.tasks for name in sorted(after)
            },
            "bus_per_task": {key: (moved[key] - traffic[key]) / args.tasks for key in moved},
            "nodes": nodes,
        }
        if latency:
            base = 2 * offset
            idle = [
                await one_task(client, waiter, base + i, args.shots) for i in range(args.latency)
            ]
            latencies = [lat for _, lat, _ in idle]
            traces = [stage_rows(await client.events(task_id)) for task_id, _, _ in idle]
            figures["idle"] = {
                "tasks": args.latency,
                "p50_ms": 1000 * statistics.median(latencies),
                "p99_ms": 1000 * percentile(latencies, 0.99),
                "stage_ms": stage_medians(traces),
            }
            rate = figures["throughput"]["tasks_per_s"] / 2
            paced = []
            base = 3 * offset
            for i in range(args.latency):
                paced.append(asyncio.create_task(one_task(client, waiter, base + i, args.shots)))
                await asyncio.sleep(1 / rate)
            half = [lat for _, lat, _ in await asyncio.gather(*paced)]
            figures["half_rate"] = {
                "rate_per_s": rate,
                "p50_ms": 1000 * statistics.median(half),
                "p99_ms": 1000 * percentile(half, 0.99),
            }
        await client.close()
    finally:
        await supervisor.stop()
        server.stop()
    return figures


def round_figures(qubus: dict, dask_runs: list[dict[str, float]]) -> dict:
    """One round's rates: qubus's, and the Dask runs before and after it, with their ratio
    and qubus's CPU a task."""
    throughput = qubus["throughput"]
    cpu = throughput["cpu_ms_per_task"]
    dask = statistics.fmean(run["tasks_per_s"] for run in dask_runs)
    return {
        "qubus_tasks_per_s": throughput["tasks_per_s"],
        "dask_tasks_per_s": [run["tasks_per_s"] for run in dask_runs],
        "ratio": throughput["tasks_per_s"] / dask,
        "services_cpu_ms": sum(ms for name, ms in cpu.items() if name != "nats-server"),
        "server_cpu_ms": cpu["nats-server"],
    }


def report(figures: dict) -> None:
    dask, qubus = figures["dask"], figures["qubus"]["throughput"]
    print(f"workload: {qubus['tasks']} distinct 4-qubit circuits, {figures['shots']} shots each")
    runs = " and ".join(f"{rate:.1f}" for rate in dask["runs_tasks_per_s"])
    print(f"dask LocalCluster(2)  {dask['tasks_per_s']:8.1f} tasks/s  (runs around qubus: {runs})")
    print(
        f"qubus                 {qubus['tasks_per_s']:8.1f} tasks/s  ({qubus['elapsed_s']:.1f} s,"
        f" {qubus['completed']} completed, p50 {qubus['p50_ms']:.0f} ms"
        f" at {figures['in_flight']} in flight; every stage done {qubus['settled_s']:.2f} s"
        " after the last task)"
    )
    rounds = figures["rounds"]
    if len(rounds) == 1:
        print(f"ratio qubus/dask      {figures['ratio']:8.2f}")
    else:
        print(
            f"\n{'round':<6} {'qubus tasks/s':>14} {'dask before, after':>19} {'ratio':>6}", end=""
        )
        print(f" {'services CPU ms/task':>21} {'nats-server':>12}")
        for n, one in enumerate(rounds, 1):
            before, after = one["dask_tasks_per_s"]
            print(
                f"{n:<6} {one['qubus_tasks_per_s']:>14.1f} {before:>10.1f}, {after:>6.1f}"
                f" {one['ratio']:>6.2f} {one['services_cpu_ms']:>21.1f}"
                f" {one['server_cpu_ms']:>12.1f}"
            )
        print(f"median ratio qubus/dask {figures['ratio']:.2f}; the other figures are round 1's")
    idle = figures["qubus"].get("idle")
    if idle:
        half = figures["qubus"]["half_rate"]
        print(f"idle latency          p50 {idle['p50_ms']:.1f} ms, p99 {idle['p99_ms']:.1f} ms")
        print(
            f"at {half['rate_per_s']:.1f} tasks/s        p50 {half['p50_ms']:.1f} ms, "
            f"p99 {half['p99_ms']:.1f} ms (p99/p50 {half['p99_ms'] / half['p50_ms']:.2f})"
        )
    cpu = qubus["cpu_ms_per_task"]
    stages = idle["stage_ms"] if idle else {}
    print(f"\n{'service':<12} {'CPU ms/task (load)':>19} {'median stage ms (idle)':>23}")
    for name in sorted(set(cpu) | set(stages)):
        stage = f"{stages[name]:.1f}" if name in stages else "-"
        print(f"{name:<12} {cpu.get(name, 0.0):>19.1f} {stage:>23}")
    services = {name: ms for name, ms in cpu.items() if name != "nats-server"}
    print(f"{'services':<12} {sum(services.values()):>19.1f} {sum(stages.values()):>23.1f}")
    profile = figures["qubus"].get("profile_ms_per_task")
    if profile:
        print(f"\n{'CPU ms/task':<12}" + "".join(f"{kind:>14}" for kind in KINDS))
        for name, ms in sorted(profile.items()):
            print(f"{name:<12}" + "".join(f"{ms[kind]:>14.2f}" for kind in KINDS))
        total = {kind: sum(ms[kind] for ms in profile.values()) for kind in KINDS}
        print(f"{'services':<12}" + "".join(f"{total[kind]:>14.2f}" for kind in KINDS))
    nodes = dict(qubus["nodes"])
    waits = nodes.pop("all", {})
    head = f"{'start to start p50':>19} {'between jobs p50':>17}"
    print(f"\n{'QPU node':<16} {'jobs':>5} {'jobs/s':>7} {head}")
    for node, figure in nodes.items():
        start, between = figure["start_to_start_p50_ms"], figure["between_jobs_p50_ms"]
        print(
            f"{node:<16} {figure['jobs']:>5} {figure['jobs_per_s']:>7.1f}"
            f" {start:>16.1f} ms {between:>14.1f} ms"
        )
    if waits:
        print(f"a task's wait in its node's queue: p50 {waits['queue_wait_p50_ms']:.0f} ms")
    bus = qubus["bus_per_task"]
    print(
        f"\nnats-server per task under load: {bus['in_msgs']:.1f} messages in "
        f"({bus['in_bytes'] / 1024:.1f} KiB), {bus['out_msgs']:.1f} out "
        f"({bus['out_bytes'] / 1024:.1f} KiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=number_in(int, 1, None), default=300)
    parser.add_argument("--shots", type=number_in(int, 1, MAX_SHOTS), default=200)
    parser.add_argument(
        "--in-flight",
        type=number_in(int, 1, None),
        help="unfinished tasks at most (default: all, as `qubus submit FILES --wait`)",
    )
    parser.add_argument(
        "--latency", type=number_in(int, 1, None), default=40, help="tasks per latency run"
    )
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument(
        "--rounds",
        type=number_in(int, 1, None),
        default=1,
        help="qubus runs, each on a fresh stack with a Dask run after it (and one before the "
        "first); the ratio is the median of the rounds' (latency: the first round only)",
    )
    parser.add_argument("--replicas", default="", help="as `qubus up --replicas`: parser=2,...")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="sample where each service's CPU goes during the throughput run "
        "(qubus.bus.sampler: DIR/<service>-<pid>.txt, collapsed stacks; benchmarks/cpuprofile.py)",
    )
    args = parser.parse_args()
    if args.profile is not None:
        if not args.profile:
            parser.error("--profile: the folder must not be empty")
        args.profile = Path(args.profile).resolve()
        try:
            args.profile.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            parser.error(f"--profile: cannot make the folder {args.profile}: {exc.strerror}")
    quiet_logs()

    # Dask runs before and after each qubus round: the machine's speed drifts (the same code
    # has run at 1.04 and 1.53 times Dask's rate minutes apart), and each round is compared
    # with the mean of the two runs around it.
    dask_runs = [run_dask(args.tasks, args.shots)]
    runs, rounds = [], []
    for n in range(args.rounds):
        runs.append(asyncio.run(run_qubus(args, latency=n == 0 and not args.skip_latency)))
        dask_runs.append(run_dask(args.tasks, args.shots))
        rounds.append(round_figures(runs[-1], dask_runs[-2:]))
    figures = {
        "shots": args.shots,
        "in_flight": args.in_flight or args.tasks,
        "replicas": args.replicas,
        "dask": {
            "tasks_per_s": statistics.fmean(run["tasks_per_s"] for run in dask_runs[:2]),
            "runs_tasks_per_s": [run["tasks_per_s"] for run in dask_runs],
        },
        "qubus": runs[0],  # the first round's in full
        "rounds": rounds,
        "ratio": statistics.median(one["ratio"] for one in rounds),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        report(figures)


if __name__ == "__main__":
    main()
