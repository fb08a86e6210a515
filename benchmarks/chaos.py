"""Chaos and abuse: hostile input and killed services while good tasks are in flight.

Usage:
    python benchmarks/chaos.py --tasks 200 --hostile 300        # a private stack, ~2 minutes
    python benchmarks/chaos.py --tasks 1000 --hostile 10000 --json

Starts its own nats-server and stack (every service a process, as `qubus up` runs them), then:

1. **hostile input** (``--hostile`` submissions, cycling through the kinds below) while good
   tasks run: random bytes, truncated msgpack, wrong types, non-finite numbers, JSON nested
   100,000 deep, a 1 KB Cirq JSON ``CircuitOperation`` repeated 10^9 times, a 1 KB OpenQASM
   program expanding into 999,999 operations, a wildcard task id, and poison events stored
   past the ingress; one stage's durable consumer is deleted halfway;
2. **kills**: every service SIGKILLed in turn, one SIGSTOPped past its ack wait, and the
   nats-server killed and restarted on its port and store, with good tasks in flight.

Prints tasks sent, completed, rejected, failed, lost (no terminal event in time) and
duplicated (more than one terminal event stored), hostile submissions by outcome, service
restarts (those not caused by our kills come from input), and the latency of a normal task
submitted right behind the bombs against one submitted alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import cirq
import msgpack

from qubus.bus import codec, logs
from qubus.bus.auth import ANONYMOUS
from qubus.bus.connection import H_MSG_ID, H_TYPE, STREAM, SUBMIT_SUBJECT
from qubus.bus.ids import new_task_id, split_task_subject
from qubus.bus.messages import SubmitRequest, TaskScored, event_of
from qubus.bus.natsserver import NatsServer
from qubus.circuits import circuit_to_json
from qubus.cli.stack import Supervisor, stack_specs
from qubus.client.aio import Client
from qubus.errors import QubusError

ROOT = Path(__file__).resolve().parent.parent
CIRCUIT = (ROOT / "examples" / "ghz.qasm").read_text()
FLEET = ("ibm_nairobi", "quantinuum_h1_1")
RESUBMITTED = {"n": 0}
ENV = {"QUBUS_ACK_WAIT_S": "3", "QUBUS_TIME_SCALE": "0.01", "QUBUS_LOG_LEVEL": "warning"}


def repetition_bomb(repetitions: int) -> str:
    """About 1 KB of Cirq JSON: three operations repeated ``repetitions`` times."""
    q = cirq.LineQubit.range(3)
    body = cirq.FrozenCircuit(cirq.H(q[0]), cirq.CNOT(q[0], q[1]), cirq.measure(q[2], key="m"))
    operation = cirq.CircuitOperation(body, repetitions=repetitions, use_repetition_ids=False)
    return circuit_to_json(cirq.Circuit(operation))


def definition_bomb() -> str:
    """About 1 KB of OpenQASM expanding into 999,999 operations, just under the parser's own
    limit: gate ``g<k>`` calls ``g<k-1>`` ten times, and each is called nine times."""
    lines = ["OPENQASM 2.0;", 'include "qelib1.inc";', "qreg q[2];", "gate g0 a,b { cx a,b; }"]
    lines += [f"gate g{k} a,b {{ " + f"g{k - 1} a,b; " * 10 + "}" for k in range(1, 6)]
    lines += [f"g{k} q[0],q[1];" for k in range(5, -1, -1) for _ in range(9)]
    return "\n".join(lines)


def hostile_bodies(rng: random.Random) -> list[tuple[str, bytes, str | None]]:
    """One body of each hostile kind: ``(kind, body, content type)``."""
    good = msgpack.packb({"circuit": CIRCUIT, "shots": 10})
    as_json = codec.JSON
    return [
        ("random_bytes", rng.randbytes(rng.randint(1, 2048)), None),
        ("truncated_msgpack", good[: rng.randint(1, len(good) - 1)], None),
        ("wrong_types", msgpack.packb({"circuit": 42, "shots": "many", "priority": []}), None),
        ("bool_shots", b'{"circuit": "OPENQASM 2.0;", "shots": true}', as_json),
        ("infinite_deadline", b'{"circuit": "OPENQASM 2.0;", "deadline_s": Infinity}', as_json),
        ("nan_floor", b'{"circuit": "OPENQASM 2.0;", "fidelity_floor": NaN}', as_json),
        ("deep_nesting", b'{"circuit": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", as_json),
        ("repetition_bomb", codec.encode(SubmitRequest(circuit=repetition_bomb(10**9))), None),
        ("definition_bomb", codec.encode(SubmitRequest(circuit=definition_bomb())), None),
    ]


async def hostile(client: Client, count: int, rng: random.Random) -> Counter[str]:
    """Send ``count`` hostile submissions; count each kind's outcome."""
    outcomes: Counter[str] = Counter()
    for i in range(count):
        kind, body, content_type = hostile_bodies(rng)[i % 9]
        headers = {"Content-Type": content_type} if content_type else None
        reply = await client.bus.nc.request(SUBMIT_SUBJECT, body, timeout=30, headers=headers)
        code = (reply.headers or {}).get("Nats-Service-Error-Code", "accepted")
        outcomes[f"{kind}: {code}"] += 1
    try:
        await client.wait(">", timeout=5)
        outcomes["wildcard_id: accepted"] += 1
    except QubusError as exc:
        outcomes[f"wildcard_id: {exc.code}"] += 1
    return outcomes


async def poison_past_ingress(client: Client, scored: TaskScored) -> str:
    """Store a scored event with an infinite deadline, as a client bypassing the ingress."""
    poison = scored.model_dump(mode="json")
    poison["task_id"] = new_task_id(ANONYMOUS)
    poison["options"]["deadline_s"] = float("inf")
    await client.bus.js.publish(
        f"qubus.task.{poison['task_id']}.scored",
        msgpack.packb(poison),
        headers={H_TYPE: TaskScored.TYPE, H_MSG_ID: f"{poison['task_id']}.scored"},
    )
    return poison["task_id"]


async def good_tasks(client: Client, n: int, in_flight: int) -> list[tuple[str, float]]:
    """Submit ``n`` small tasks, ``in_flight`` at a time; their ids and submission times."""
    gate = asyncio.Semaphore(in_flight)

    async def one() -> tuple[str, float]:
        # A request in flight to an ingestion process that is killed gets no answer: submit
        # again with the same idempotency key (never a second task).
        request = SubmitRequest(circuit=CIRCUIT, shots=100, idempotency_key=uuid.uuid4().hex)
        async with gate:
            started = time.time()
            for attempt in range(3):
                try:
                    reply = await client.submit(request, timeout=20)
                    break
                except QubusError:
                    if attempt == 2:
                        raise
                    RESUBMITTED["n"] += 1
            await client.wait(reply.task_id, timeout=600)
            return reply.task_id, started

    return await asyncio.gather(*(one() for _ in range(n)))


async def latency(client: Client) -> float:
    started = time.time()
    reply = await client.submit(SubmitRequest(circuit=CIRCUIT, shots=100))
    events = await client.wait(reply.task_id, timeout=300)
    return events[-1].published - started


async def kills(
    stack: Supervisor, server: NatsServer, ack_wait_s: float, *, restart_server: bool
) -> int:
    """SIGKILL every service in turn, SIGSTOP one past its ack wait, restart the server."""
    done = 0
    for label in list(stack.children):
        os.kill(stack.pid(label), signal.SIGKILL)
        done += 1
        await stack.wait_ready(label, timeout=120)
        await asyncio.sleep(0.5)
    victim = stack.pid("parser")
    os.kill(victim, signal.SIGSTOP)
    await asyncio.sleep(ack_wait_s * 2)
    os.kill(victim, signal.SIGCONT)
    if not restart_server:
        return done
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    await asyncio.sleep(1.0)
    server.restart_if_dead()
    return done


async def terminal_counts(client: Client) -> Counter[str]:
    info = await client.bus.js.stream_info(STREAM, subjects_filter="qubus.task.>")
    counts: Counter[str] = Counter()
    for subject, n in (info.state.subjects or {}).items():
        task_id, tail = split_task_subject(subject)
        if (event := event_of(tail)[0]) in ("completed", "rejected", "failed"):
            counts[f"{task_id} {event}"] += n
    return counts


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=200, help="good tasks per phase")
    parser.add_argument("--hostile", type=int, default=300, help="hostile submissions")
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--no-server-restart",
        dest="restart_server",
        action="store_false",
        help="leave the nats-server alone in the kill phase",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logs.configure("chaos", "chaos", "warning")
    rng = random.Random(args.seed)
    store = tempfile.mkdtemp(prefix="qubus-chaos-")
    server = NatsServer(store)
    url = server.start()
    stack = Supervisor(url, stack_specs(FLEET), log_dir=Path(store) / "logs", env=ENV)
    await stack.start(timeout=180)
    client = await Client.connect(url)
    figures: dict[str, object] = {}
    try:
        alone = [await latency(client) for _ in range(3)]
        # a normal task right behind one hostile submission of each kind, on an idle stack
        abuse = await hostile(client, 9, rng)
        behind = await latency(client)
        # 1. hostile input beside good tasks; one consumer deleted halfway
        good = asyncio.create_task(good_tasks(client, args.tasks, args.in_flight))
        abuse += await hostile(client, args.hostile // 2, rng)
        await client.bus.js.delete_consumer(STREAM, "parser")
        abuse += await hostile(client, args.hostile - args.hostile // 2, rng)
        sent = await good
        scored = await client.bus.last_event(sent[0][0], TaskScored)
        poison = await poison_past_ingress(client, scored)
        poison_end = (await client.wait(poison, timeout=120))[-1].event
        restarts_from_input = sum(c.restarts for c in stack.children.values())
        # 2. kills with good tasks in flight
        good = asyncio.create_task(good_tasks(client, args.tasks, args.in_flight))
        killed = await kills(
            stack, server, float(ENV["QUBUS_ACK_WAIT_S"]), restart_server=args.restart_server
        )
        sent += await good
        counts = await terminal_counts(client)
        ended = Counter(k.split()[1] for k in counts if k.split()[0] in {t for t, _ in sent})
        per_task = Counter(k.split()[0] for k, n in counts.items() for _ in range(n))
        figures = {
            "tasks_sent": len(sent),
            "completed": ended["completed"],
            "rejected": ended["rejected"],
            "failed": ended["failed"],
            "lost": sum(1 for task, _ in sent if per_task[task] == 0),
            "duplicated": sum(1 for task, _ in sent if per_task[task] > 1),
            "resubmitted_unanswered": RESUBMITTED["n"],
            "hostile_sent": sum(abuse.values()),
            "hostile_outcomes": dict(sorted(abuse.items())),
            "hostile_accepted": sum(n for k, n in abuse.items() if k.endswith(": accepted")),
            "poison_past_ingress": f"{poison_end.EVENT} by {getattr(poison_end, 'stage', '?')}: "
            f"{getattr(getattr(poison_end, 'error', None), 'code', '')}",
            "service_restarts_from_input": restarts_from_input,
            "services_killed": killed,
            "service_restarts_total": sum(c.restarts for c in stack.children.values()),
            "latency_alone_s": round(statistics.median(alone), 3),
            "latency_behind_bombs_s": round(behind, 3),
        }
    finally:
        await client.close()
        await stack.stop()
        server.stop()
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>28}: {value}")
    sys.exit(0 if figures.get("lost") == 0 and figures.get("duplicated") == 0 else 1)


if __name__ == "__main__":
    asyncio.run(main())
