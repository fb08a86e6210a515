"""What one pipeline hop costs with no work in it: the floor under every stage's CPU per task.

A task passes eight JetStream hops (ingestion's publish, then parser, logic, sandbox, noise,
fusion, allocator and a QPU node each take one event and publish the next). This starts a
private nats-server with the stack's topology, stores ``--tasks`` ``parsed`` events of a
4-qubit circuit (as the parser stores them), then runs one stage, ``qubus.bus.consumer``'s
real ``StageRunner`` with the logic stage's concurrency, whose handler does no work but build
the ``checked`` event from its input. Prints the stage process's and the nats-server's CPU per
hop (decode, trace, log, publish with its acknowledgement, ack; the server's storing and
delivering), the messages into the server per hop (pull requests, publishes, acks, log
lines: the server's ``/varz``), and the hops per second.

    python benchmarks/hop.py --tasks 3000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time

import psutil
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


async def one_round(
    bus: Bus, server: NatsServer, parsed: TaskParsed, round_: int, tasks: int
) -> dict[str, float]:
    for i in range(tasks):
        event = parsed.model_copy(update={"task_id": f"bench.r{round_}t{i:06d}"})
        await bus.publish_event(event, trace=TraceContext.new())
    done = asyncio.Event()
    seen = 0

    async def count(msg) -> None:
        nonlocal seen
        seen += 1
        if seen == tasks:
            done.set()

    sub = await bus.nc.subscribe(TaskChecked.subjects("bench.*"), cb=count)
    me, process = psutil.Process(), psutil.Process(server.process.pid)
    traffic = bus_traffic(server)["in_msgs"]
    before = (me.cpu_times(), process.cpu_times(), time.perf_counter())
    runner = StageRunner(
        bus,
        Stage(f"hop{round_}", [TaskParsed], relay, concurrency=CONCURRENCY),
        ack_wait_s=30.0,
        max_deliver=5,
    )
    await runner.start()
    await asyncio.wait_for(done.wait(), timeout=120)
    after = (me.cpu_times(), process.cpu_times(), time.perf_counter())
    traffic = bus_traffic(server)["in_msgs"] - traffic
    await runner.stop()
    await sub.unsubscribe()

    def spent(a, b) -> float:
        return (b.user + b.system) - (a.user + a.system)

    return {
        "stage_cpu_us": 1e6 * spent(before[0], after[0]) / tasks,
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
        parsed = parsed_event()
        rounds = [await one_round(bus, server, parsed, r, args.tasks) for r in range(args.rounds)]
    finally:
        await logs.BUS_COPY.stop()
        info = await bus.js.stream_info(STREAM)
        await bus.close()
        server.stop()
    return {"tasks": args.tasks, "stored_events": info.state.messages, "rounds": rounds}


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=number_in(int, 1, None), default=3000)
    parser.add_argument("--rounds", type=number_in(int, 1, None), default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # Log as a service does: every line rendered and written (to /dev/null, a file as a
    # service's log is), its bus copy published (to nobody).
    with open(os.devnull, "w") as devnull:
        with contextlib.redirect_stderr(devnull):
            logs.configure("bench", "hop")
        figures = asyncio.run(main(args))
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(
        f"{figures['tasks']} parsed events a round, one stage doing no work (concurrency "
        f"{CONCURRENCY})"
    )
    print(
        f"{'round':<6} {'stage CPU µs/hop':>18} {'server CPU µs/hop':>18} {'msgs in/hop':>12} "
        f"{'hops/s':>8}"
    )
    for i, row in enumerate(figures["rounds"], 1):
        print(
            f"{i:<6} {row['stage_cpu_us']:>18.0f} {row['server_cpu_us']:>18.0f} "
            f"{row['in_msgs']:>12.2f} {row['hops_per_s']:>8.0f}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    cli()
