"""Reads by subject from the task stream: a direct get against a JetStream API get.

A stage reads another stage's event of the same task by subject (``Bus.last_message``): the
fusion join, the QPU's check that its allocation is current, the forgery check on a node's
``completed``, eight reads per task. This starts a private nats-server, stores ``--tasks``
tasks' ``checked`` events (a 4-qubit circuit's, as the pipeline stores them), then reads each
task's last event by subject both ways, alternating rounds, and prints the client's and the
server's CPU per read and the reads per second.

    python benchmarks/reads.py --tasks 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import psutil

from qubus.bus import codec
from qubus.bus.connection import STREAM, Bus
from qubus.bus.messages import TaskChecked
from qubus.bus.natsserver import NatsServer
from qubus.bus.tracing import TraceContext
from qubus.circuits.ir import circuit_features, circuit_to_json, load_circuit

QASM = (
    'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[4];\ncreg c[4];\n'
    "h q[0];\ncx q[0], q[1];\ncx q[1], q[2];\ncx q[2], q[3];\nmeasure q -> c;\n"
)


async def read_all(bus: Bus, ids: list[str], *, direct: bool) -> float:
    """Seconds to read and decode every task's last ``checked`` event by subject, one read at
    a time: ``Bus.last_message`` (a direct get on one server) or nats-py's API get (what
    every read was before)."""
    started = time.perf_counter()
    for task_id in ids:
        subject = TaskChecked.subjects(task_id)
        if direct:
            data = (await bus.last_message(subject)).data
        else:
            data = (await bus.js.get_last_msg(STREAM, subject)).data
        assert codec.decode(data, TaskChecked).task_id == task_id
    return time.perf_counter() - started


async def main(args: argparse.Namespace) -> dict:
    server = NatsServer()
    url = server.start()
    bus = Bus(url, service="bench", instance="reads")
    await bus.connect()
    await bus.ensure_topology()
    circuit = load_circuit(QASM, "qasm2")
    features = circuit_features(circuit)
    ids = [f"bench.t{i:06d}" for i in range(args.tasks)]
    for task_id in ids:
        event = TaskChecked(
            task_id=task_id,
            circuit=circuit_to_json(circuit),
            features=features,
            options={"shots": 200},
            logic_score=1.0,
            checks=[],
        )
        await bus.publish_event(event, trace=TraceContext.new())
    me, nats_server = psutil.Process(), psutil.Process(server.process.pid)
    figures: dict[str, dict[str, list[float]]] = {}
    for _ in range(args.rounds):
        for way, direct in (("direct", True), ("api", False)):
            cpu = (me.cpu_times(), nats_server.cpu_times())
            elapsed = await read_all(bus, ids, direct=direct)
            after = (me.cpu_times(), nats_server.cpu_times())
            row = figures.setdefault(way, {"client_us": [], "server_us": [], "reads_per_s": []})
            for key, before, now in (
                ("client_us", cpu[0], after[0]),
                ("server_us", cpu[1], after[1]),
            ):
                spent = (now.user + now.system) - (before.user + before.system)
                row[key].append(1e6 * spent / len(ids))
            row["reads_per_s"].append(len(ids) / elapsed)
    info = await bus.js.stream_info(STREAM)
    await bus.close()
    server.stop()
    return {"tasks": args.tasks, "stored_events": info.state.messages, "reads": figures}


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = asyncio.run(main(args))
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{figures['tasks']} tasks' checked events stored; each read once per round")
    print(f"{'read':<8} {'client CPU µs/read':>20} {'server CPU µs/read':>20} {'reads/s':>10}")
    for way, row in figures["reads"].items():
        cells = [" / ".join(f"{v:.0f}" for v in row[key]) for key in row]
        print(f"{way:<8} {cells[0]:>20} {cells[1]:>20} {cells[2]:>10}")


if __name__ == "__main__":
    cli()
