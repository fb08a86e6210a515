"""Chaos, abuse and soak: hostile input, killed services and servers, and hours of steady load.

Usage:
    python benchmarks/chaos.py --tasks 1000 --hostile 10000      # the issue's scale, ~10 minutes
    python benchmarks/chaos.py --tasks 200 --hostile 300         # a quick one, ~2 minutes
    python benchmarks/chaos.py --cluster --tasks 1000            # 3 servers, one killed
    python benchmarks/chaos.py --soak 30 [--load 0.8]            # memory and latency per minute
    python benchmarks/chaos.py --soak 30 --capacity-from 40 --capacity-step 5 --step-seconds 60

Each run starts its own nats-server (or cluster) and stack (every service a process, as `qubus
up` runs them) in a temporary directory, removed at the end.

Default run, in two phases:

1. **hostile input** (``--hostile`` submissions, cycling through the kinds below, one at a
   time) while ``--tasks`` good tasks are in flight: random bytes, truncated msgpack, wrong
   types, non-finite numbers, JSON nested 100,000 deep, a 1 KB Cirq JSON ``CircuitOperation``
   repeated 10^9 times, a 1 KB OpenQASM program expanding into 999,999 operations, a
   wildcard task id, and a poison event stored past the ingress; one stage's durable consumer
   is deleted halfway;
2. **kills**, once ``--tasks`` more good tasks are accepted: every service SIGKILLed in turn,
   one SIGSTOPped past its ack wait, and the nats-server killed and restarted on its port and
   store, with the tasks in flight at each of these blows counted.

``--cluster``: three routed nats-servers, the stack on the first with every stream and bucket
in three replicas; with ``--tasks`` good tasks in flight the task stream's leader (moved off
the first server) is SIGKILLed.

``--soak MINUTES``: measures the stack's sustained capacity unless ``--capacity`` is given:
open-loop submission in steps of ``--step-seconds``, from ``--capacity-from`` tasks/s up by
``--capacity-step``, until a step's completions fall behind (fewer than 95 % of its tasks
ended during it, the backlog grew, or its p99 more than doubled, past 1 s); the capacity is
the last step that held. Then it submits at ``--load`` times that for MINUTES, open loop (a
task's latency runs from when it was due): each minute the resident memory and CPU seconds of
every process (a service with its worker processes; pages shared with the fork server are
counted in each), the task stream's stored events, the backlog, the messages the stages got
redelivered (``$SRV.STATS``: a redelivery is work done twice, as an ack wait running out under
overload would cause), and the p50/p99 latency of the tasks due in that minute, with the
machine's load average; the redeliveries by stage at the end. At the end, for the slowest
1 % of the soak's tasks (at most 150) and 150 others drawn at random, each stage's mean queue (its
input stored to the stage starting on it, ``Qubus-Started``) and work (start to stored):
which queue an overload episode's latency sits in. ``--trace-ttl`` sets the services'
``QUBUS_TRACE_TTL_S`` and ``--retention`` their ``QUBUS_TASK_RETENTION_S`` (short ones show
the task stream's steady state, and the nats-server's memory with it, within a soak).

Good tasks are submitted ``--submitters`` at a time and all stay in flight until done; their
ends are read from the stream (lost: no terminal event in time; duplicated: more than one).
Prints tasks sent, completed, rejected, failed, lost and duplicated, hostile submissions by
outcome, service restarts (those not caused by our kills come from input), and the latency of a
normal task submitted right behind one of each hostile kind against one submitted alone.

SIGINT or SIGTERM stops the run and its stack (SIGINT also when a script started it with
``&``, which ignores it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import cirq
import msgpack
import nats.errors
import nats.js.errors

from qubus.bus import codec, logs
from qubus.bus.auth import ANONYMOUS
from qubus.bus.config import Settings
from qubus.bus.connection import H_MSG_ID, H_TYPE, STREAM, SUBMIT_SUBJECT, StoredEvent
from qubus.bus.ids import new_task_id, split_task_subject
from qubus.bus.messages import SubmitRequest, TaskCompleted, TaskScored, event_of
from qubus.bus.natsserver import NatsCluster, NatsServer, stream_led_elsewhere
from qubus.circuits import circuit_to_json
from qubus.cli.common import number_in
from qubus.cli.main import run_interruptible
from qubus.cli.stack import Supervisor, stack_specs
from qubus.client.aio import Client
from qubus.errors import QubusError

ROOT = Path(__file__).resolve().parent.parent
CIRCUIT = (ROOT / "examples" / "ghz.qasm").read_text()
FLEET = ("ibm_nairobi", "quantinuum_h1_1")
ENV = {"QUBUS_ACK_WAIT_S": "3", "QUBUS_TIME_SCALE": "0.01", "QUBUS_LOG_LEVEL": "warning"}
TERMINAL = ("completed", "rejected", "failed")
TERMINAL_SUBJECTS = (
    "qubus.task.*.*.completed.*",
    "qubus.task.*.*.rejected",
    "qubus.task.*.*.failed",
)
"""Every terminal event's subject (``completed`` names its node)."""
Figures = dict[str, object]
OnOneServer = Callable[[argparse.Namespace, Client, Supervisor, NatsServer], Awaitable[Figures]]
HOLD_SHARE = 0.95
"""A capacity step holds when at least this share of its tasks ended during it."""
STEP_LAG_S = 10.0
"""A capacity step's p99 is of the tasks due before its last STEP_LAG_S (the later ones have
had no time to end)."""
P99_FLOOR_S = 1.0
"""A capacity step's p99 may grow to this whatever the previous step's was."""
SETTLE_S = 900.0
"""How long good tasks may take to end after the last was submitted before the rest count
as lost."""


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


class Hostile:
    """Hostile submissions, one at a time: each kind's outcomes (the error code the ingress
    answered, ``accepted``, or ``no_reply`` within 30 s) and the slowest answer."""

    def __init__(self, client: Client, seed: int) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.outcomes: Counter[str] = Counter()
        self.sent = 0
        self.slowest_s = 0.0

    async def send(self, count: int) -> None:
        for _ in range(count):
            kind, body, content_type = hostile_bodies(self.rng)[self.sent % 9]
            self.sent += 1
            headers = {"Content-Type": content_type} if content_type else None
            started = time.monotonic()
            try:
                reply = await self.client.bus.nc.request(
                    SUBMIT_SUBJECT, body, timeout=30, headers=headers
                )
                code = (reply.headers or {}).get("Nats-Service-Error-Code", "accepted")
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                code = "no_reply"
            self.slowest_s = max(self.slowest_s, time.monotonic() - started)
            self.outcomes[f"{kind}: {code}"] += 1

    async def wildcard_id(self) -> None:
        """Ask for the events of task ``>`` (every task, if ids went unchecked)."""
        self.sent += 1
        try:
            await self.client.wait(">", timeout=5)
            self.outcomes["wildcard_id: accepted"] += 1
        except QubusError as exc:
            self.outcomes[f"wildcard_id: {exc.code}"] += 1


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


class Ends:
    """When each task's first terminal event arrived (``at``, a plain subscription: the
    latency clock; events published while the connection is down are missed) and, the
    record, each task's terminal events by kind as the task stream stores them (``stored``)."""

    def __init__(self, client: Client | None = None) -> None:
        self.client = client
        self.at: dict[str, float] = {}
        self.counts: Counter[tuple[str, str]] = Counter()

    @classmethod
    async def watching(cls, client: Client) -> Ends:
        ends = cls(client)
        for subject in TERMINAL_SUBJECTS:
            await client.bus.nc.subscribe(subject, cb=ends._seen)
        return ends

    async def _seen(self, msg: nats.aio.msg.Msg) -> None:
        self.at.setdefault(split_task_subject(msg.subject)[0], time.time())

    async def stored(self) -> Counter[tuple[str, str]]:
        """The terminal events the stream stores now, with every count read before kept (the
        largest: a second end stored later adds to it), so that a soak longer than the
        stream's retention still counts the tasks whose events have aged out, if it reads
        them within the retention (each minute)."""
        assert self.client is not None, "Ends.watching(client) reads the stream"
        self.counts |= await ends_in_stream(self.client)
        return self.counts


class Good:
    """Good tasks: submitted ``submitters`` at a time, all in flight until they end. Each has
    its own idempotency key and is sent again, after a growing pause, when the client gives
    up: ``Client.submit`` retries a silent ingress, ``bus.unavailable`` and a restarting
    ingestion (``ingestion.unavailable``) for 30 s; a refusal here is one that outlasted
    that."""

    def __init__(self, client: Client, submitters: int) -> None:
        self.client = client
        self.gate = asyncio.Semaphore(submitters)
        self.submitted: dict[str, float] = {}
        self.refused: Counter[str] = Counter()
        self.said: dict[str, str] = {}  # the first message of each refusal code
        self.unsubmitted = 0
        self.due: list[float] = []  # when each open-loop task was due, accepted or not

    async def one(self, due: float | None = None) -> None:
        """Submit one task; its latency runs from ``due`` (when an open-loop schedule wanted
        it sent, so a wait for a free submitter counts) or else from when it is sent."""
        request = SubmitRequest(circuit=CIRCUIT, shots=100, idempotency_key=uuid.uuid4().hex)
        if due is not None:
            self.due.append(due)
        async with self.gate:
            started = due or time.time()
            for attempt in range(8):
                try:
                    reply = await self.client.submit(request, timeout=20)
                    self.submitted[reply.task_id] = started
                    return
                except QubusError as exc:
                    self.refused[exc.code] += 1
                    self.said.setdefault(exc.code, exc.message)
                    await asyncio.sleep(min(0.25 * 2**attempt, 5.0))
        self.unsubmitted += 1

    async def submit(self, n: int) -> None:
        await asyncio.gather(*(self.one() for _ in range(n)))


async def ends_in_stream(client: Client) -> Counter[tuple[str, str]]:
    """How many terminal events of each kind (``completed``, ...) each task has in the
    task stream."""
    counts: Counter[tuple[str, str]] = Counter()
    for subject_filter in TERMINAL_SUBJECTS:
        for subject, n in (await stored_subjects(client, subject_filter)).items():
            task_id, tail = split_task_subject(subject)
            counts[task_id, event_of(tail)[0]] += n
    return counts


async def stored_subjects(client: Client, subject_filter: str) -> dict[str, int]:
    """Each subject of the task stream matching ``subject_filter``, with its events, read page
    by page: the server answers at most 100,000 subjects a request (nats-py's ``stream_info``
    asks once, so past 100,000 tasks the rest looked unended)."""
    found: dict[str, int] = {}
    while True:
        request = {"subjects_filter": subject_filter, "offset": len(found)}
        reply = await client.bus.nc.request(
            f"$JS.API.STREAM.INFO.{STREAM}", json.dumps(request).encode(), timeout=30
        )
        answer = json.loads(reply.data)
        if "error" in answer:
            raise nats.js.errors.APIError.from_error(answer["error"])
        page = answer["state"].get("subjects") or {}
        found.update(page)
        if not page or len(found) >= answer.get("total", 0):
            return found


async def settle(ends: Ends, ids: list[str], timeout: float) -> None:
    """Until every task of ``ids`` has a terminal event stored, or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ended = {task for task, _ in await ends.stored()}
        except (nats.errors.Error, TimeoutError):
            ended = set()  # a restarted or electing server: ask again
        if ended.issuperset(ids):
            return
        await asyncio.sleep(2.0)


def in_flight(good: Good, ends: Ends, at: float) -> int:
    """Good tasks accepted (submitted) before ``at`` and not ended by then."""
    return sum(1 for t, sent in good.submitted.items() if sent <= at < ends.at.get(t, 1e18))


async def outcome(good: Good, ends: Ends, restarts: int) -> Figures:
    """Tasks sent, how they ended, lost and duplicated, the most in flight at once, how long
    they took (first submission to last end), their latency, and service restarts."""
    ids = list(good.submitted)
    await settle(ends, ids, SETTLE_S)
    counts = await ends.stored()
    per_task = Counter({task: sum(counts[task, kind] for kind in TERMINAL) for task in ids})
    steps = sorted(
        [(good.submitted[t], 1) for t in ids] + [(ends.at[t], -1) for t in ids if t in ends.at]
    )
    running = peak = 0
    for _, step in steps:
        running += step
        peak = max(peak, running)
    took = [ends.at[t] - good.submitted[t] for t in ids if t in ends.at]
    return {
        "tasks_sent": len(ids) + good.unsubmitted,
        "never_accepted": good.unsubmitted,
        **{kind: sum(1 for task in ids if counts[task, kind]) for kind in TERMINAL},
        "lost": sum(1 for task in ids if per_task[task] == 0),
        "duplicated": sum(1 for task in ids if per_task[task] > 1),
        "submissions_sent_again": dict(good.refused),
        "refused_saying": good.said,
        "most_in_flight": peak,
        "seconds": round(steps[-1][0] - steps[0][0], 1) if steps else 0,
        "latency_p50_s": round(_percentile(took, 0.5), 2) if took else None,
        "latency_p99_s": round(_percentile(took, 0.99), 2) if took else None,
        "service_restarts_total": restarts,
    }


async def latency(client: Client) -> float:
    started = time.time()
    reply = await client.submit(SubmitRequest(circuit=CIRCUIT, shots=100))
    events = await client.wait(reply.task_id, timeout=300)
    return events[-1].published - started


def exits(stack: Supervisor) -> int:
    return sum(c.exits for c in stack.children.values())


async def kills(
    stack: Supervisor, server: NatsServer, ack_wait_s: float, flying: Callable[[], int]
) -> list[int]:
    """SIGKILL every service in turn, SIGSTOP one past its ack wait, restart the server;
    how many good tasks were in flight (``flying()``) at each of these blows."""
    done = []
    for label in list(stack.children):
        done.append(flying())
        os.kill(stack.pid(label), signal.SIGKILL)
        await stack.wait_ready(label, timeout=180)
        await asyncio.sleep(0.5)
    victim = stack.pid("parser")
    done.append(flying())
    os.kill(victim, signal.SIGSTOP)
    await asyncio.sleep(ack_wait_s * 2)
    os.kill(victim, signal.SIGCONT)
    done.append(flying())
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    await asyncio.sleep(1.0)
    server.restart_if_dead()
    return done


@contextlib.asynccontextmanager
async def stack_on(
    url: str, store: Path, env: dict[str, str]
) -> AsyncIterator[tuple[Client, Supervisor]]:
    """A stack of every service against the server at ``url``, and a client of it."""
    stack = Supervisor(url, stack_specs(FLEET), log_dir=store / "logs", env=env)
    try:
        await stack.start(timeout=180)
        client = await Client.connect(url)
        try:
            yield client, stack
        finally:
            await client.close()
    finally:
        await stack.stop()


async def on_one_server(args: argparse.Namespace, store: Path, body: OnOneServer) -> Figures:
    """``body`` run against a stack on one nats-server stored in ``store``."""
    server = NatsServer(str(store))
    try:
        env = {
            **ENV,
            "QUBUS_TRACE_TTL_S": str(args.trace_ttl),
            "QUBUS_TASK_RETENTION_S": str(args.retention),
        }
        async with stack_on(server.start(), store, env) as (client, stack):
            return await body(args, client, stack, server)
    finally:
        server.stop()


async def chaos(
    args: argparse.Namespace, client: Client, stack: Supervisor, server: NatsServer
) -> Figures:
    ends = await Ends.watching(client)
    abuse = Hostile(client, args.seed)
    alone, behind = [], []
    for _ in range(3):  # a normal task alone, then one right behind one of each hostile kind
        alone.append(await latency(client))
        await abuse.send(9)
        behind.append(await latency(client))
    # 1. hostile input beside good tasks; one consumer deleted halfway
    good = Good(client, args.submitters)
    started = time.monotonic()
    submitting = asyncio.create_task(good.submit(args.tasks))
    await abuse.send(args.hostile // 2)
    await client.bus.js.delete_consumer(STREAM, "parser")
    await abuse.send(args.hostile - args.hostile // 2)
    await abuse.wildcard_id()
    hostile_s = time.monotonic() - started
    await submitting
    first = await outcome(good, ends, exits(stack))
    scored = await client.bus.last_event(next(iter(good.submitted)), TaskScored)
    poison = await poison_past_ingress(client, scored)
    poison_end = (await client.wait(poison, timeout=120))[-1].event
    restarts_from_input = exits(stack)
    # 2. kills with good tasks in flight
    good = Good(client, args.submitters)
    await good.submit(args.tasks)  # all accepted (a killed ingress stalls its requests 20 s)
    blows = await kills(
        stack, server, float(ENV["QUBUS_ACK_WAIT_S"]), lambda: in_flight(good, ends, time.time())
    )
    second = await outcome(good, ends, exits(stack))
    return {
        "phase 1 (hostile input)": first,
        "phase 2 (kills)": second,
        "hostile_sent": abuse.sent,
        "hostile_seconds": round(hostile_s, 1),
        "hostile_slowest_reply_s": round(abuse.slowest_s, 3),
        "hostile_outcomes": dict(sorted(abuse.outcomes.items())),
        "hostile_accepted": sum(n for k, n in abuse.outcomes.items() if k.endswith(": accepted")),
        "poison_past_ingress": f"{poison_end.EVENT} by {getattr(poison_end, 'stage', '?')}: "
        f"{getattr(getattr(poison_end, 'error', None), 'code', '')}",
        "service_restarts_from_input": restarts_from_input,
        "services_killed": len(stack.children),
        "in_flight_at_each_blow": blows,
        "latency_alone_s": round(statistics.median(alone), 3),
        "latency_behind_hostile_s": round(statistics.median(behind), 3),
        "lost": first["lost"] + second["lost"],
        "duplicated": first["duplicated"] + second["duplicated"],
    }


async def on_a_cluster(args: argparse.Namespace, store: Path) -> Figures:
    """``cluster`` run against a stack on the first of three clustered nats-servers, every
    stream and bucket in three replicas."""
    servers = NatsCluster(store / "cluster")
    try:
        servers.start()
        await servers.wait_for_jetstream()
        env = {**ENV, "QUBUS_STREAM_REPLICAS": "3"}
        async with stack_on(servers.members[0].url, store, env) as (client, stack):
            return await cluster(args, client, stack, servers)
    finally:
        servers.stop()


async def cluster(
    args: argparse.Namespace, client: Client, stack: Supervisor, servers: NatsCluster
) -> Figures:
    ends = await Ends.watching(client)
    alone = statistics.median([await latency(client) for _ in range(3)])
    entry = servers.members[0]
    leader = await stream_led_elsewhere(client.bus.nc, STREAM, entry.name)
    (victim,) = [m for m in servers.members if m.name == leader]
    good = Good(client, args.submitters)
    await good.submit(args.tasks // 4)  # a quarter accepted, the rest sent during the kill
    submitting = asyncio.create_task(good.submit(args.tasks - args.tasks // 4))
    flying = in_flight(good, ends, time.time())
    os.killpg(victim.process.pid, signal.SIGKILL)
    await asyncio.to_thread(victim.process.wait)
    await submitting
    return {
        **await outcome(good, ends, exits(stack)),
        "server_killed": f"{victim.name}, the task stream's leader",
        "in_flight_at_the_kill": flying,
        "latency_alone_s": round(alone, 3),
    }


def _proc_mb(path: str, field: str) -> float:
    """The ``field`` line (in kB) of a ``/proc`` file, in MB; 0 for a process gone."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _rss_mb(pid: int) -> float:
    return _proc_mb(f"/proc/{pid}/status", "VmRSS:")


def _pss_mb(pid: int) -> float:
    """The proportional set size: a page shared by n processes counts 1/n in each. The services
    fork from one forkserver that imported cirq, numpy and the rest, so each one's resident
    size counts those shared pages again; the sum of their PSS does not."""
    return _proc_mb(f"/proc/{pid}/smaps_rollup", "Pss:")


def _children() -> dict[int, list[int]]:
    """Each process's children, from one read of ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def _tree(pid: int, children: dict[int, list[int]]) -> list[int]:
    """``pid`` and every process below it."""
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def _cpu_s(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` has used."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def per_process(
    stack: Supervisor, server: NatsServer, *measures: Callable[[int], float]
) -> list[dict[str, float]]:
    """Each of ``measures`` (``_rss_mb``, ``_pss_mb``, ``_cpu_s``) of each service process with
    its workers, and of the nats-server: one dict per measure, the process trees read once."""
    assert server.process is not None
    children = _children()
    trees = {label: _tree(stack.pid(label), children) for label in stack.children}
    trees["nats-server"] = [server.process.pid]
    return [{label: sum(map(m, tree)) for label, tree in trees.items()} for m in measures]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def open_loop(
    good: Good, rate: float, seconds: float, pending: set[asyncio.Task[None]]
) -> None:
    """Submit ``rate`` tasks a second for ``seconds``, each at its due time whether or not
    earlier ones were answered (submissions not yet answered are left in ``pending``)."""
    started = time.time()
    launched = 0
    while launched / rate < seconds:
        task = asyncio.create_task(good.one(started + launched / rate))
        pending.add(task)
        task.add_done_callback(pending.discard)
        launched += 1
        await asyncio.sleep(max(0.0, started + launched / rate - time.time()))


def window_latencies(good: Good, ends: Ends, start: float, stop: float, now: float) -> list[float]:
    """Latencies of the open-loop tasks due in ``[start, stop)``; one not accepted or not
    ended by ``now`` counts as infinitely long."""
    took = [
        ends.at[task] - due if task in ends.at and ends.at[task] <= now else float("inf")
        for task, due in good.submitted.items()
        if start <= due < stop
    ]
    unaccepted = sum(1 for due in good.due if start <= due < stop) - len(took)
    return took + [float("inf")] * unaccepted


def step_held(due: int, ended: int, growth: int, p99: float, previous_p99: float | None) -> bool:
    """Whether a capacity step kept up: at least ``HOLD_SHARE`` of its ``due`` tasks' worth
    ended during it, the backlog grew by at most the rest, and its p99 is finite and at most
    twice the previous step's or ``P99_FLOOR_S``, whichever is more (below that floor the
    p99 is the pipeline's own latency, not a queue)."""
    bound = max(2 * previous_p99, P99_FLOOR_S) if previous_p99 is not None else float("inf")
    return (
        ended >= HOLD_SHARE * due
        and growth <= (1 - HOLD_SHARE) * due
        and p99 < float("inf")
        and p99 <= bound
    )


async def sustained_capacity(
    client: Client, ends: Ends, args: argparse.Namespace
) -> tuple[float, list[dict[str, object]], Good]:
    """The highest rate the stack keeps up with for ``args.step_seconds``, stepping up from
    ``args.capacity_from`` by ``args.capacity_step`` tasks/s until a step fails.

    Each step's p99 is of the tasks due in all but its last ``STEP_LAG_S``, one not ended at
    the step's end counted as infinite; ``step_held`` says whether it kept up. The capacity is
    the last held step's rate (or its ended rate, if lower); the backlog of the failed step is
    drained before this returns.

    Raises:
        SystemExit: The first step already failed (start lower).
    """
    good = Good(client, 64)
    pending: set[asyncio.Task[None]] = set()
    steps: list[dict[str, object]] = []
    rate, capacity, previous_p99 = args.capacity_from, None, None
    while True:
        start = time.time()
        backlog_before = in_flight(good, ends, start) + len(pending)
        await open_loop(good, rate, args.step_seconds, pending)
        stop = time.time()
        due = sum(1 for t in good.due if start <= t < stop)
        ended = sum(1 for at in ends.at.values() if start <= at < stop)
        took = window_latencies(good, ends, start, stop - STEP_LAG_S, stop)
        p99 = _percentile(took, 0.99) if took else float("inf")
        growth = in_flight(good, ends, stop) + len(pending) - backlog_before
        held = step_held(due, ended, growth, p99, previous_p99)
        steps.append(
            {
                "rate": round(rate, 1),
                "due": due,
                "ended_per_s": round(ended / (stop - start), 1),
                "backlog_growth": growth,
                "p50_ms": _ms(_percentile(took, 0.5)) if took else None,
                "p99_ms": _ms(p99),
                "load": round(os.getloadavg()[0], 1),
                "held": held,
            }
        )
        print(f"capacity step: {steps[-1]}", file=sys.stderr, flush=True)
        if not held:
            break
        capacity, previous_p99 = min(rate, ended / (stop - start)), p99
        rate += args.capacity_step
    await asyncio.gather(*pending)
    await settle(ends, list(good.submitted), SETTLE_S)
    if capacity is None:
        sys.exit(f"chaos: the first step ({args.capacity_from:g} tasks/s) did not hold: {steps[0]}")
    return capacity, steps, good


HOPS = {
    "parsed": ("ingested",),
    "checked": ("parsed",),
    "eval.sandbox": ("checked",),
    "eval.noise": ("checked",),
    "scored": ("eval.sandbox", "eval.noise"),
    "allocated": ("scored",),
    "running": ("allocated",),
    "completed": ("running",),
}
"""Each pipeline event and the events its stage waits for (the later of them)."""


def hop_seconds(events: list[StoredEvent], due: float) -> dict[str, tuple[float, float]]:
    """Per event of one task, the seconds from its input's storing to its stage starting on
    it (a queue), and from then to its storing (the stage's work; a QPU node's ``completed``
    is started with its ``running``, so its work is the run from ``running`` on);
    ``ingested``'s wait runs from when the task was due (the submitter's own wait and the
    request's way)."""
    at = {stored.event.EVENT: stored for stored in events}
    ready = {
        name: max(at[i].published for i in inputs)
        for name, inputs in HOPS.items()
        if all(i in at for i in inputs)
    }
    ready["ingested"] = due
    hops = {}
    for name, since in ready.items():
        if name in at:
            began = max(since, at[name].started or at[name].published)
            hops[name] = (began - since, at[name].published - began)
    return hops


async def where_waited(client: Client, good: Good, ends: Ends, sample: int) -> Figures:
    """Mean queue and work milliseconds per stage of the slowest 1 % of the ended tasks (at
    most ``sample`` of them) and of ``sample`` others drawn at random, and the nodes they ran
    on: which stage's queue an overload episode's latency sits in (from the tasks' stored
    events: a trace TTL shorter than the soak leaves only the result's, a retention shorter than
    it nothing of the first minutes' tasks)."""
    took = sorted(
        (ends.at[task] - due, task) for task, due in good.submitted.items() if task in ends.at
    )
    slowest = [task for _, task in took[-max(1, min(sample, len(took) // 100)) :]]
    rest = [task for _, task in took[: len(took) - len(slowest)]]
    groups = {
        "slowest_1%": slowest,
        "others": random.Random(1).sample(rest, min(sample, len(rest))),
    }
    figures: Figures = {}
    for group, tasks in groups.items():
        sums: dict[str, list[float]] = {}
        nodes: Counter[str] = Counter()
        for task in tasks:
            events = await client.events(task)
            nodes.update(s.event.node for s in events if isinstance(s.event, TaskCompleted))
            for hop, (wait, work) in hop_seconds(events, good.submitted[task]).items():
                total = sums.setdefault(hop, [0.0, 0.0, 0])
                total[0] += wait
                total[1] += work
                total[2] += 1
        figures[group] = {
            hop: {"queue_ms": round(1000 * w / n), "work_ms": round(1000 * k / n)}
            for hop, (w, k, n) in sums.items()
        } | {"nodes": dict(nodes)}
    return figures


def _ms(seconds: float) -> int | None:
    """Whole milliseconds; None for an infinite latency (a task not ended)."""
    return None if seconds == float("inf") else round(1000 * seconds)


async def task_stream(client: Client) -> dict[str, int]:
    """The task stream's stored events, MB and distinct subjects."""
    reply = await client.bus.nc.request(f"$JS.API.STREAM.INFO.{STREAM}", b"", timeout=10)
    state = json.loads(reply.data)["state"]  # nats-py's StreamState lacks num_subjects
    return {  # the server leaves a field out when it is 0
        "events": state.get("messages", 0),
        "mb": state.get("bytes", 0) // 2**20,
        "subjects": state.get("num_subjects", 0),
    }


async def redeliveries(client: Client, stack: Supervisor) -> dict[str, int]:
    """Messages each stage got redelivered so far, summed over its instances (``$SRV.STATS``;
    an instance counts from its start)."""
    replies = await client.services("STATS", timeout=5.0, expected=len(stack.children))
    counts: Counter[str] = Counter()
    for reply in replies:
        for endpoint in reply.get("endpoints") or []:
            data = endpoint.get("data") or {}
            if "redelivered" in data:  # a stage's (a request subject's has none)
                counts[endpoint["name"]] += data["redelivered"]
    return dict(sorted(counts.items()))


async def soak(
    args: argparse.Namespace, client: Client, stack: Supervisor, server: NatsServer
) -> Figures:
    ends = await Ends.watching(client)
    if args.capacity:
        measured, steps, stepping = args.capacity, [], None
    else:
        measured, steps, stepping = await sustained_capacity(client, ends, args)
    rate = args.load * measured
    good = Good(client, 64)
    pending: set[asyncio.Task[None]] = set()
    rows: list[dict[str, object]] = []
    measures = (_rss_mb, _pss_mb, _cpu_s)
    readings = [per_process(stack, server, *measures)]  # each minute's
    stored = [await task_stream(client)]
    redelivered = [await redeliveries(client, stack)]
    started = time.time()
    for minute in range(args.soak):
        await open_loop(good, rate, started + 60 * (minute + 1) - time.time(), pending)
        # off the loop that submits on schedule: it reads /proc for every process
        readings.append(await asyncio.to_thread(per_process, stack, server, *measures))
        stored.append(await task_stream(client))
        await ends.stored()  # before the minute's tasks can age out (--retention)
        redelivered.append(await redeliveries(client, stack))
        backlog = in_flight(good, ends, time.time()) + len(pending)
        rows.append(
            {
                "minute": minute + 1,
                "backlog": backlog,
                "load": round(os.getloadavg()[0], 1),
                "redelivered": sum(redelivered[-1].values()) - sum(redelivered[-2].values()),
            }
        )
        print(f"minute {minute + 1}: {stored[-1]}, {readings[-1][0]}", file=sys.stderr, flush=True)
    await asyncio.gather(*pending)
    figures = await outcome(good, ends, exits(stack))
    figures["where_tasks_waited"] = await where_waited(client, good, ends, sample=150)
    for minute, row in enumerate(rows):
        took = window_latencies(
            good, ends, started + 60 * minute, started + 60 * (minute + 1), float("inf")
        )
        took = [t for t in took if t < float("inf")]
        row.update(
            submitted=sum(
                1 for at in good.submitted.values() if 0 <= at - started - 60 * minute < 60
            ),
            ended=len(took),
            p50_ms=_ms(_percentile(took, 0.5)) if took else None,
            p99_ms=_ms(_percentile(took, 0.99)) if took else None,
        )
    sizes, shares, cpu = zip(*readings, strict=True)
    labels = list(sizes[0])
    return {
        **figures,
        "capacity_steps": steps,
        "capacity_steps_outcome": await outcome(stepping, ends, exits(stack)) if stepping else None,
        "capacity_tasks_per_s": round(measured, 1),
        "soak_rate_tasks_per_s": round(rate, 1),
        "latency_per_minute": rows,
        "rss_mb_per_minute": {label: [round(s[label]) for s in sizes] for label in labels},
        "rss_mb_total_per_minute": [round(sum(s.values())) for s in sizes],
        "pss_mb_per_minute": {label: [round(s[label]) for s in shares] for label in labels},
        "pss_mb_total_per_minute": [round(sum(s.values())) for s in shares],
        "cpu_s_per_minute": {
            label: [
                round(max(0.0, after[label] - before[label]), 1)
                for before, after in itertools.pairwise(cpu)
            ]
            for label in labels
        },
        "task_stream_per_minute": stored,
        "redelivered_by_stage": {
            stage: count - redelivered[0].get(stage, 0) for stage, count in redelivered[-1].items()
        },
    }


def _table(title: str, columns: dict[str, str], rows: list[dict[str, object]]) -> None:
    """``rows`` under ``title``: one column per key of ``columns``, headed by its value."""
    print(f"\n{title}\n" + "  ".join(columns.values()))
    for row in rows:
        print("  ".join(f"{row[key]!s:>{len(head)}}" for key, head in columns.items()))


HEADINGS = {
    "rss_mb_per_minute": "resident MB at the start and after each minute",
    "pss_mb_per_minute": "proportional MB (shared pages split among their sharers), likewise",
    "cpu_s_per_minute": "CPU seconds used in each minute",
}
"""The per-process series ``_print`` prints as tables, with their headings."""


def _print(figures: Figures) -> None:
    for key, value in figures.items():
        if key == "capacity_steps":
            _table(
                "capacity steps",
                {"rate": "tasks/s", "due": "due", "ended_per_s": "ended/s"}
                | {"backlog_growth": "backlog growth", "p50_ms": "p50 ms", "p99_ms": "p99 ms"}
                | {"load": "load", "held": "held"},
                value,  # type: ignore[arg-type]
            )
        elif key == "latency_per_minute":
            _table(
                "latency of the tasks due in each minute",
                {"minute": "minute", "submitted": "submitted", "ended": "ended"}
                | {"p50_ms": "p50 ms", "p99_ms": "p99 ms", "backlog": "backlog at its end"}
                | {"load": "load average (1 min, at its end)", "redelivered": "redelivered"},
                value,  # type: ignore[arg-type]
            )
        elif key == "where_tasks_waited":
            slow, others = value["slowest_1%"], value["others"]  # type: ignore[index]
            _table(
                "mean ms per stage: slowest 1 % of tasks / others (queue: input stored to start)",
                {"hop": "event       ", "sq": "slow queue", "sw": "slow work"}
                | {"oq": "others queue", "ow": "others work"},
                [
                    {"hop": hop}
                    | {"sq": slow[hop]["queue_ms"], "sw": slow[hop]["work_ms"]}
                    | {
                        "oq": others.get(hop, {}).get("queue_ms"),
                        "ow": others.get(hop, {}).get("work_ms"),
                    }
                    for hop in ("ingested", *HOPS)
                    if hop in slow
                ],
            )
            print(f"ran on: slowest {slow['nodes']}, others {others['nodes']}")
        elif key == "task_stream_per_minute":
            print("\ntask stream at the start and after each minute")
            for field in ("events", "mb", "subjects"):
                print(f"{field:>24}: " + " ".join(f"{row[field]:>5}" for row in value))  # type: ignore[attr-defined]
        elif key in HEADINGS:
            print(f"\n{HEADINGS[key]}")
            for label, series in value.items():  # type: ignore[attr-defined]
                print(f"{label:>24}: " + " ".join(f"{mb:>5}" for mb in series))
        elif isinstance(value, dict):
            print(f"{key}:")
            for inner, v in value.items():
                print(f"{inner:>40}: {v}")
        else:
            print(f"{key:>28}: {value}")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    rate = number_in(float, 0, None, low_open=True)
    parser.add_argument(
        "--tasks", type=int, default=200, help="good tasks per phase, all in flight"
    )
    parser.add_argument("--hostile", type=int, default=300, help="hostile submissions")
    parser.add_argument(
        "--submitters", type=int, default=32, help="submissions awaiting an answer at once"
    )
    parser.add_argument("--seed", type=int, default=1)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--cluster", action="store_true", help="a 3-node cluster, one server killed")
    mode.add_argument(
        "--soak", type=number_in(int, 1, None), metavar="MINUTES", help="steady load for MINUTES"
    )
    parser.add_argument("--load", type=rate, default=0.8, help="soak rate, share of capacity")
    parser.add_argument("--capacity", type=rate, help="tasks/s (measured when not given)")
    parser.add_argument(
        "--capacity-from", type=rate, default=30.0, help="first capacity step, tasks/s"
    )
    parser.add_argument(
        "--capacity-step", type=rate, default=5.0, help="tasks/s added at each step"
    )
    parser.add_argument(
        "--step-seconds", type=number_in(int, 20, None), default=60, help="each step's length"
    )
    parser.add_argument(
        "--trace-ttl",
        type=number_in(int, 0, None),
        default=Settings().trace_ttl_s,
        metavar="S",
        help="QUBUS_TRACE_TTL_S of the services: how long trace-only events are stored",
    )
    parser.add_argument(
        "--retention",
        type=number_in(int, 600, None),
        default=Settings().task_retention_s,
        metavar="S",
        help="QUBUS_TASK_RETENTION_S of the services: how long the task stream keeps an event "
        "(at least the 600 s de-duplication window)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logs.configure("chaos", "chaos", "error")  # not a line per retried submission
    store = Path(tempfile.mkdtemp(prefix="qubus-chaos-"))
    started = time.monotonic()
    try:
        if args.cluster:
            figures = await on_a_cluster(args, store)
        else:
            figures = await on_one_server(args, store, soak if args.soak else chaos)
    finally:
        shutil.rmtree(store, ignore_errors=True)
    figures["run_seconds"] = round(time.monotonic() - started)
    figures["load_average_at_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(figures))
    else:
        _print(figures)
    checked = [figures, figures.get("capacity_steps_outcome") or figures]
    sys.exit(0 if all(f["lost"] == 0 and f["duplicated"] == 0 for f in checked) else 1)  # type: ignore[index]


if __name__ == "__main__":
    run_interruptible(main())  # SIGTERM, and SIGINT in a script's `&`, stop the stack too
