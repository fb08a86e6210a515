"""What one pipeline hop costs with no work in it: the floor under every stage's CPU per task.

A task passes eight JetStream hops (ingestion's publish, then parser, logic, sandbox, noise,
fusion, allocator and a QPU node each take one event and publish the next). This starts a
private nats-server with the stack's topology, stores ``--tasks`` ``parsed`` events of a
4-qubit circuit (as the parser stores them), then runs one stage, ``qubus.bus.consumer``'s
real ``StageRunner`` with the logic stage's concurrency, whose handler does no work but build
the ``checked`` event from its input. Prints the stage process's and the nats-server's CPU per
hop (decode, trace, log, publish with its acknowledgement, ack; the server's storing and
delivering) with the stage's part in the kernel, the messages into the server per hop (pull
requests, publishes, acks, log lines: the server's ``/varz``), and the hops per second.

With ``--rate R``, another process publishes the events at R a second while the stage runs,
so that each arrives alone, as in the pipeline, where a stage is idle most of the time: the
stage then wakes for each event and for its publication's answer. The server's CPU then also
holds storing the events.

    python benchmarks/hop.py --tasks 3000 --rounds 3
    python benchmarks/hop.py --tasks 1000 --rounds 3 --rate 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import sys
import time

import psutil
import uvloop
from fastpath import bus_traffic

from qubus.bus import logs
from qubus.bus.connection import STREAM, Bus
from qubus.bus.consumer import Context, Stage, StageRunner
from qubus.bus.messages import TaskChecked, TaskParsed
from qubus.bus.natsserver import NatsServer, free_ports
from qubus.bus.tracing import TraceContext
from qubus.circuits.ir import circuit_features, circuit_to_wire, load_circuit
from qubus.cli.common import number_in

QASM = (
    'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[4];\ncreg c[4];\n'
    "h q[0];\ncx q[0], q[1];\ncx q[1], q[2];\ncx q[2], q[3];\nrz(0.3) q[3];\nmeasure q -> c;\n"
)
CONCURRENCY = 4  # the logic stage's (``laned_concurrency(..., without=4)``)


async def relay(event: TaskParsed, ctx: Context) -> TaskChecked:
    """A stage with nothing to do: the next event, built from the input."""
    return TaskChecked(
        task_id=event.task_id,
        circuit=event.circuit,
        features=event.features,
        options=event.options,
        checks=[],
        logic_score=1.0,
        novelty=event.novelty,
        feature_vector=event.feature_vector,
    )


def parsed_event() -> TaskParsed:
    """The ``parsed`` event of the 4-qubit circuit, as the parser stores it (task id to set)."""
    circuit = load_circuit(QASM, "qasm2")
    text = circuit_to_wire(circuit)
    features = circuit_features(circuit, text)
    return TaskParsed(task_id="bench.t0", circuit=text, features=features, options={"shots": 200})


def owner(round_: int) -> str:
    """The owner token of the round's task ids: each round's stage takes its own events only."""
    return f"bench{round_}"


async def publish_events(bus: Bus, round_: int, tasks: int, rate: float | None) -> None:
    """Store the round's ``parsed`` events, at ``rate`` a second (None: as fast as they go)."""
    parsed = parsed_event()
    start = time.perf_counter()
    for i in range(tasks):
        if rate is not None:
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        event = parsed.model_copy(update={"task_id": f"{owner(round_)}.t{i:06d}"})
        await bus.publish_event(event, trace=TraceContext.new())


def paced_publisher(url: str, round_: int, tasks: int, rate: float, ready, go) -> None:
    """A process of its own that publishes the round's events at ``rate`` a second (its CPU is
    not the stage's), once connected (``ready``) and told to (``go``)."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        logs.configure("bench", "hop-publisher")

    async def run() -> None:
        bus = Bus(url, service="bench", instance="hop-publisher")
        await bus.connect()
        ready.set()
        await asyncio.to_thread(go.wait)
        try:
            await publish_events(bus, round_, tasks, rate)
        finally:
            await bus.close()

    uvloop.run(run())


async def one_round(
    bus: Bus, server: NatsServer, round_: int, tasks: int, rate: float | None
) -> dict[str, float]:
    if rate is None:
        await publish_events(bus, round_, tasks, None)
    done = asyncio.Event()
    seen = 0

    async def count(msg) -> None:
        nonlocal seen
        seen += 1
        if seen == tasks:
            done.set()

    sub = await bus.nc.subscribe(TaskChecked.subjects(f"{owner(round_)}.*"), cb=count)
    publisher = None
    if rate is not None:
        spawn = multiprocessing.get_context("spawn")
        ready, go = spawn.Event(), spawn.Event()
        publisher = spawn.Process(
            target=paced_publisher, args=(bus.url, round_, tasks, rate, ready, go)
        )
        publisher.start()
        await asyncio.to_thread(ready.wait)
    me, process = psutil.Process(), psutil.Process(server.process.pid)
    traffic = bus_traffic(server)["in_msgs"]
    before = (me.cpu_times(), process.cpu_times(), time.perf_counter())
    runner = StageRunner(
        bus,
        Stage(
            f"hop{round_}",
            [TaskParsed],
            relay,
            subjects=[TaskParsed.subjects(f"{owner(round_)}.*")],  # not the earlier rounds'
            concurrency=CONCURRENCY,
        ),
        ack_wait_s=30.0,
        max_deliver=5,
    )
    await runner.start()
    if rate is not None:
        go.set()
    await asyncio.wait_for(done.wait(), timeout=120 + (tasks / rate if rate else 0))
    after = (me.cpu_times(), process.cpu_times(), time.perf_counter())
    traffic = bus_traffic(server)["in_msgs"] - traffic
    await runner.stop()
    await sub.unsubscribe()
    if publisher is not None:
        publisher.join()

    def spent(a, b) -> float:
        return (b.user + b.system) - (a.user + a.system)

    return {
        "stage_cpu_us": 1e6 * spent(before[0], after[0]) / tasks,
        "stage_system_us": 1e6 * (after[0].system - before[0].system) / tasks,
        "server_cpu_us": 1e6 * spent(before[1], after[1]) / tasks,
        "in_msgs": traffic / tasks,
        "hops_per_s": tasks / (after[2] - before[2]),
    }


async def main(args: argparse.Namespace) -> dict:
    server = NatsServer(monitor_port=free_ports(1)[0])
    url = server.start()
    bus = Bus(url, service="bench", instance="hop")
    await bus.connect()
    await bus.ensure_topology()
    await logs.BUS_COPY.start(bus.nc, logs.log_subject("bench").rsplit(".", 1)[0])
    try:
        rounds = [
            await one_round(bus, server, r, args.tasks, args.rate) for r in range(args.rounds)
        ]
    finally:
        await logs.BUS_COPY.stop()
        info = await bus.js.stream_info(STREAM)
        await bus.close()
        server.stop()
    return {
        "tasks": args.tasks,
        "rate": args.rate,
        "stored_events": info.state.messages,
        "rounds": rounds,
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=number_in(int, 1, None), default=3000)
    parser.add_argument("--rounds", type=number_in(int, 1, None), default=3)
    parser.add_argument(
        "--rate",
        type=number_in(float, 0.1, None),
        help="events a second, published by another process while the stage runs, so that "
        "each arrives alone as in the pipeline (default: all stored first, the stage saturated)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # Log as a service does: every line rendered and written (to /dev/null, a file as a
    # service's log is), its bus copy published (to nobody).
    with open(os.devnull, "w") as devnull:
        with contextlib.redirect_stderr(devnull):
            logs.configure("bench", "hop")
        figures = uvloop.run(main(args))  # the services' event loop (qubus.bus.service)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    arrival = "all stored first" if args.rate is None else f"arriving at {args.rate:g} a second"
    print(
        f"{figures['tasks']} parsed events a round ({arrival}), one stage doing no work "
        f"(concurrency {CONCURRENCY})"
    )
    print(
        f"{'round':<6} {'stage CPU µs/hop':>18} {'of it, kernel':>14} {'server CPU µs/hop':>18} "
        f"{'msgs in/hop':>12} {'hops/s':>8}"
    )
    for i, row in enumerate(figures["rounds"], 1):
        print(
            f"{i:<6} {row['stage_cpu_us']:>18.0f} {row['stage_system_us']:>14.0f} "
            f"{row['server_cpu_us']:>18.0f} {row['in_msgs']:>12.2f} {row['hops_per_s']:>8.0f}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    cli()
