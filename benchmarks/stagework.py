"""Every stage's own work on the fastpath workload, in one process: no bus, no worker.

For ``--tasks`` of ``benchmarks/fastpath.py``'s circuits (4-qubit GHZ-like, a distinct ``rz``
each), each given to a stage in the form it receives it, prints the CPU per task of the
stage's own functions:

* ``ingestion``: the size check of the OpenQASM text (``qubus.circuits.ingest.check_circuit``);
* ``parser``: its lane choice and parse (``weight``, ``describe``: the operation count, the
  parse, the wire form and features);
* ``logic``: its checks (``check``, which reads the circuit's wire form);
* ``sandbox``: ``qubus.devices.sandbox.evaluate`` (ideal distribution, checks, ΔRepro);
* ``noise``: the noise service's ``predict``, for every node of the default fleet (compile,
  emulation estimate, ESP, noise budget, modelled run time);
* ``fusion``: ``node_scores`` for every node (each budget on the ideal distribution, the
  scores);
* ``allocator``: a batch of one placed as the allocator places it (``task_request``, the
  policy's ``decide``, ``weigh_split`` against a split, ``allocation``);
* ``qpu <node>``: the QPU node's job, ``execute`` (compile and emulate at ``--shots``).

Each figure is the best of ``--rounds`` passes, every pass over circuits no earlier pass saw
(so the compiled-circuit cache misses, as for distinct tasks), after a first pass that warms
the layout and routing caches, which every circuit of this structure shares, as in a running
stack; a stage's input is made from the stages before it outside the timing. What it leaves
out is what a stage adds around this work: the bus, the consumer, logging
(``benchmarks/hop.py``), the key-value stores and direct reads, and where a job runs in a
worker process, the round trip to it.

    python benchmarks/stagework.py [--tasks 300] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastpath import qasm

from qubus.bus.config import Settings
from qubus.bus.limits import MAX_SHOTS
from qubus.bus.messages import TaskChecked, TaskIngested, TaskOptions, TaskParsed, TaskScored
from qubus.circuits.ingest import check_circuit
from qubus.cli.common import number_in
from qubus.devices.cost import Limits
from qubus.devices.profiles import DEFAULT_FLEET, load_device, status_of
from qubus.devices.sandbox import SandboxLimits, evaluate
from qubus.network.links import fleet_topology
from qubus.network.splitplan import FleetView, split_capacity
from qubus.scheduling.allocation import decide, get_policy
from qubus.scheduling.weights import DEFAULT_WEIGHTS
from qubus_services.allocator.main import allocation, task_request, weigh_split
from qubus_services.fusion.main import node_scores
from qubus_services.logic.main import check
from qubus_services.noise.main import predict
from qubus_services.parser.main import describe, weight
from qubus_services.qpu.main import execute

LIMITS = SandboxLimits(max_qubits=24, max_depth=100_000, max_outcomes=4096)


@dataclass(frozen=True)
class Job:
    """One stage's own work: ``make`` builds its input for circuit ``i`` (not timed), ``run``
    is what is timed."""

    make: Callable[[int], object]
    run: Callable[[object], object]


def best_ms(job: Job, rounds: list[range]) -> float:
    """The least CPU milliseconds per circuit of ``job`` over each round's circuits."""
    best = float("inf")
    for circuits in rounds:
        inputs = [job.make(i) for i in circuits]
        started = time.process_time()
        for value in inputs:
            job.run(value)
        best = min(best, (time.process_time() - started) / len(inputs))
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=number_in(int, 1, None), default=300)
    parser.add_argument("--rounds", type=number_in(int, 1, None), default=3)
    parser.add_argument("--shots", type=number_in(int, 1, MAX_SHOTS), default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = Settings()
    devices = [load_device(node) for node in DEFAULT_FLEET]
    statuses = {
        device.id: status_of(device, queue_depth=0, mean_job_s=0.0, busy=False, instance="bench")
        for device in devices
    }
    fleet = FleetView.from_statuses(statuses, fleet_topology(settings.topology))
    fleet_max = max(status.max_circuit_qubits for status in statuses.values())
    split_max = split_capacity(fleet)
    policy = get_policy(settings.policy)
    lam = settings.fidelity_weight_s
    limits = Limits(settings.qpu_max_emulation_s, settings.sandbox_memory_mb)
    options = TaskOptions(shots=args.shots)

    def task_id(i: int) -> str:
        return f"bench.t{i}"

    def ingested(i: int) -> TaskIngested:
        return TaskIngested(
            task_id=task_id(i), format="qasm2", text=qasm(i), options=options, submitted_at=0.0
        )

    @functools.cache
    def parsed(i: int) -> TaskParsed:
        wire, features = describe(ingested(i))  # the circuit as the parser sends it on
        return TaskParsed(task_id=task_id(i), circuit=wire, features=features, options=options)

    def checked(i: int) -> TaskChecked:
        return check(parsed(i), fleet_max, split_max)

    def evaluations(i: int) -> tuple:
        event = checked(i)
        ideal = evaluate(task_id(i), event.circuit, args.shots, LIMITS)
        noise = predict(event, list(statuses.values()), max_s=600.0, memory_mb=4096)
        return event, ideal, noise

    def scored(i: int) -> TaskScored:
        event, ideal, noise = evaluations(i)
        scores = node_scores(event, ideal, noise, statuses, DEFAULT_WEIGHTS)
        return TaskScored(
            task_id=task_id(i),
            circuit=event.circuit,
            options=options,
            ideal=ideal.ideal,
            scores=scores,
        )

    def place(event: TaskScored) -> None:
        (outcome,) = decide(policy, [task_request(event, deadline_s=None)], lam=lam)
        weigh_split(event, outcome, fleet, lam=lam, limits=limits)
        allocation(event, outcome)

    def circuit(i: int) -> str:
        return parsed(i).circuit

    jobs = {
        "ingestion": Job(qasm, lambda text: check_circuit(text, "qasm2")),
        "parser": Job(ingested, lambda event: describe(event, weight(event).operations)),
        "logic": Job(parsed, lambda event: check(event, fleet_max, split_max)),
        "sandbox": Job(
            lambda i: (task_id(i), circuit(i)),
            lambda job: evaluate(*job, args.shots, LIMITS),
        ),
        "noise": Job(
            checked,
            lambda event: predict(event, list(statuses.values()), max_s=600.0, memory_mb=4096),
        ),
        "fusion": Job(evaluations, lambda parts: node_scores(*parts, statuses, DEFAULT_WEIGHTS)),
        "allocator": Job(scored, place),
    }
    for device in devices:
        jobs[f"qpu {device.id}"] = Job(
            lambda i: (circuit(i), i),
            lambda job, d=device: execute(d, job[0], args.shots, job[1], False, None),
        )
    figures = {}
    for n, (name, job) in enumerate(jobs.items()):
        passes = args.rounds + 1  # each job's own circuits: no cache carries over between jobs
        warm, *rounds = (
            range((n * passes + k) * args.tasks, (n * passes + k + 1) * args.tasks)
            for k in range(passes)
        )
        best_ms(job, [warm])
        figures[name] = best_ms(job, rounds)
    if args.json:
        print(json.dumps({"tasks": args.tasks, "shots": args.shots, "cpu_ms_per_task": figures}))
        return
    print(f"{args.tasks} fastpath circuits, {args.shots} shots, best of {args.rounds} rounds:")
    print("  CPU ms a task")
    for name, ms in figures.items():
        print(f"  {name:24s} {ms:6.3f}")
    print(f"  {'all, one qpu job':24s} {own_work(figures):6.3f}")


def own_work(figures: dict[str, float]) -> float:
    """The stages' own work a task: every stage once, and the mean of the QPU nodes' jobs (a
    task runs on one)."""
    nodes = [ms for name, ms in figures.items() if name.startswith("qpu ")]
    rest = sum(ms for name, ms in figures.items() if not name.startswith("qpu "))
    return rest + sum(nodes) / len(nodes)


if __name__ == "__main__":
    main()
