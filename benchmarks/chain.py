"""The design's floor: the fastpath workload's hops through service processes that do no work,
against the bare Dask loop, side by side in one run.

``benchmarks/fastpath.py`` compares the whole stack with Dask. This asks what the comparison
would be if every stage's own work took no time: ``--hops`` (9, the services a task passes)
real service processes (``qubus.bus.service.run_service``: uvloop, the consumer, logging and
its bus copy, health, exactly as a stage runs) form a chain. Each consumes a ``parsed`` event
(a fastpath circuit's, as the parser stores it) on a durable consumer of its own, builds the
next hop's event from it with no work and publishes it, acknowledged, then acks its input.
That is what the design asks of every stage (``docs/architecture.md``, *The consumer
wrapper*): one event per task and stage on ``qubus.task.<task_id>.<event>``, stored before
the input is acknowledged. The chain does less than the stack: no key-value reads or writes, no
direct gets, no join, no allocation batch, fewer processes (``--hops`` against twelve), one
event per hop (the QPU publishes two).

The driver keeps ``--in-flight`` tasks in the chain (as ``fastpath.py --in-flight`` does) and times
``--tasks`` from the first publish to the last hop's event. Dask runs before and after, as in
``fastpath.py``. Prints both rates, their ratio (the ceiling of qubus's ratio to Dask, with
nothing but the bus left), and the CPU per task of the chain's processes and nats-server.

    python benchmarks/chain.py --tasks 3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import psutil
from fastpath import bus_traffic, cpu_seconds, qasm, quiet_logs, run_dask

from qubus.bus.connection import Bus
from qubus.bus.consumer import Context, Stage
from qubus.bus.limits import MAX_SHOTS
from qubus.bus.messages import TaskParsed
from qubus.bus.natsserver import NatsServer, free_ports
from qubus.bus.service import Runtime, run_service
from qubus.bus.tracing import TraceContext
from qubus.circuits.ir import circuit_features, circuit_to_wire, load_circuit
from qubus.cli.common import number_in

CONCURRENCY = 4
"""Each hop's messages in hand at once (the logic stage's)."""


def owner(hop: int) -> str:
    """The owner token of the tasks a hop consumes: hop ``k`` reads ``h<k>.*``."""
    return f"h{hop}"


def relay_main(hop: int, url: str, log_path: str) -> None:
    """One hop's service process: consume hop ``hop``'s events, publish hop ``hop + 1``'s."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ["QUBUS_NATS_URL"] = url

    async def relay(event: TaskParsed, ctx: Context) -> TaskParsed:
        _, task = event.task_id.split(".", 1)
        return event.model_copy(update={"task_id": f"{owner(hop + 1)}.{task}"})

    async def setup(rt: Runtime) -> None:
        subject = TaskParsed.subjects(f"{owner(hop)}.*")
        await rt.consume(
            Stage(f"hop{hop}", [TaskParsed], relay, subjects=[subject], concurrency=CONCURRENCY)
        )

    run_service(f"hop{hop}", setup)


def parsed_event(i: int, shots: int) -> TaskParsed:
    """Fastpath circuit ``i``'s ``parsed`` event at ``shots`` shots, owned by hop 0."""
    circuit = load_circuit(qasm(i), "qasm2")
    text = circuit_to_wire(circuit)
    features = circuit_features(circuit, text)
    return TaskParsed(
        task_id=f"{owner(0)}.t{i}", circuit=text, features=features, options={"shots": shots}
    )


async def drive(
    bus: Bus, args: argparse.Namespace, tasks: int, in_flight: int, offset: int
) -> float:
    """Pass ``tasks`` tasks through the chain, at most ``in_flight`` at once; the seconds from
    the first publish to the last task out."""
    done: dict[str, asyncio.Event] = {}

    async def out(msg) -> None:
        finished = done.get(msg.subject.split(".")[3])
        if finished is not None:
            finished.set()

    sub = await bus.nc.subscribe(TaskParsed.subjects(f"{owner(args.hops)}.*"), cb=out)
    events = [parsed_event(offset + i, args.shots) for i in range(tasks)]
    gate = asyncio.Semaphore(in_flight)

    async def one(event: TaskParsed) -> None:
        async with gate:
            finished = done[event.task_id.split(".")[1]] = asyncio.Event()
            await bus.publish_event(event, trace=TraceContext.new())
            await asyncio.wait_for(finished.wait(), 120)

    started = time.perf_counter()
    await asyncio.gather(*(one(event) for event in events))
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    return elapsed


async def run_chain(args: argparse.Namespace) -> dict:
    server = NatsServer(monitor_port=free_ports(1)[0])
    url = server.start()
    log_dir = Path(tempfile.mkdtemp(prefix="qubus-chain-"))
    context = multiprocessing.get_context("forkserver")
    relays = [
        context.Process(target=relay_main, args=(hop, url, str(log_dir / f"hop{hop}.log")))
        for hop in range(args.hops)
    ]
    bus = Bus(url, service="bench", instance="chain")
    try:
        await bus.connect()
        await bus.ensure_topology()
        for relay in relays:
            relay.start()
        await drive(bus, args, 16, 16, offset=10**6)  # every hop ready and warm
        processes = {
            "hops": [psutil.Process(r.pid) for r in relays],
            "nats-server": [psutil.Process(server.process.pid)],
        }
        before, traffic = cpu_seconds(processes), bus_traffic(server)
        elapsed = await drive(bus, args, args.tasks, args.in_flight, offset=0)
        after, moved = cpu_seconds(processes), bus_traffic(server)
    finally:
        for relay in relays:
            if relay.pid is not None:
                relay.terminate()
        for relay in relays:
            relay.join(30)
        await bus.close()
        server.stop()
    return {
        "hops": args.hops,
        "tasks": args.tasks,
        "tasks_per_s": args.tasks / elapsed,
        "hops_cpu_ms_per_task": 1000 * (after["hops"] - before["hops"]) / args.tasks,
        "server_cpu_ms_per_task": 1000
        * (after["nats-server"] - before["nats-server"])
        / args.tasks,
        "in_msgs_per_task": (moved["in_msgs"] - traffic["in_msgs"]) / args.tasks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=number_in(int, 1, None), default=3000)
    parser.add_argument("--hops", type=number_in(int, 1, 64), default=9)
    parser.add_argument("--in-flight", type=number_in(int, 1, None), default=64)
    parser.add_argument("--shots", type=number_in(int, 1, MAX_SHOTS), default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    quiet_logs()
    dask_before = run_dask(args.tasks, args.shots)
    chain = asyncio.run(run_chain(args))
    dask_after = run_dask(args.tasks, args.shots)
    dask = (dask_before["tasks_per_s"] + dask_after["tasks_per_s"]) / 2
    figures = {
        "chain": chain,
        "dask_tasks_per_s": [dask_before["tasks_per_s"], dask_after["tasks_per_s"]],
        "ratio": chain["tasks_per_s"] / dask,
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{args.tasks} tasks, {args.in_flight} in flight, through {args.hops} hops doing no work")
    print(
        f"  chain {chain['tasks_per_s']:7.1f} tasks/s   Dask {dask:7.1f} tasks/s "
        f"({dask_before['tasks_per_s']:.1f} before, {dask_after['tasks_per_s']:.1f} after)   "
        f"ratio {figures['ratio']:.2f}"
    )
    print(
        f"  CPU a task: hops {chain['hops_cpu_ms_per_task']:.2f} ms, nats-server "
        f"{chain['server_cpu_ms_per_task']:.2f} ms; {chain['in_msgs_per_task']:.1f} messages "
        "into the server a task"
    )


if __name__ == "__main__":
    main()
