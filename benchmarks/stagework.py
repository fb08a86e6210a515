"""The physics stages' own work on the fastpath workload, in one process: no bus, no worker.

For ``--tasks`` of ``benchmarks/fastpath.py``'s circuits (4-qubit GHZ-like, a distinct ``rz``
each), as the stages receive them (Cirq JSON), prints the CPU per task of each stage's own
function:

* ``noise``: the noise service's ``predict``, for every node of the default fleet (compile,
  emulation estimate, ESP, noise budget, modelled run time);
* ``sandbox``: ``qubus.devices.sandbox.evaluate`` (ideal distribution, checks, ΔRepro);
* ``qpu <node>``: the QPU node's job, ``execute`` (compile and emulate at ``--shots``).

Each figure is the best of ``--rounds`` passes, every pass over circuits no earlier pass saw
(so the compiled-circuit cache misses, as for distinct tasks), after a first pass that warms
the layout and routing caches, which every circuit of this structure shares, as in a running
stack. What it leaves out is what a stage adds around this work: the bus, the consumer,
logging (``benchmarks/hop.py``) and, where a job runs in a worker process, the round trip to
it.

    python benchmarks/stagework.py [--tasks 300] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from fastpath import qasm

from qubus.bus.limits import MAX_SHOTS
from qubus.bus.messages import TaskChecked, TaskOptions
from qubus.circuits.ir import circuit_features, circuit_to_json, load_circuit
from qubus.cli.common import number_in
from qubus.devices.profiles import DEFAULT_FLEET, load_device, status_of
from qubus.devices.sandbox import SandboxLimits, evaluate
from qubus_services.noise.main import predict
from qubus_services.qpu.main import execute

LIMITS = SandboxLimits(max_qubits=24, max_depth=100_000, max_outcomes=4096)


def best_ms(job: Callable[[str, int], object], rounds: list[list[str]]) -> float:
    """The least CPU milliseconds per circuit of ``job`` over each round's circuits."""
    best = float("inf")
    for circuits in rounds:
        started = time.process_time()
        for i, text in enumerate(circuits):
            job(text, i)
        best = min(best, (time.process_time() - started) / len(circuits))
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=number_in(int, 1, None), default=300)
    parser.add_argument("--rounds", type=number_in(int, 1, None), default=3)
    parser.add_argument("--shots", type=number_in(int, 1, MAX_SHOTS), default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    devices = [load_device(node) for node in DEFAULT_FLEET]
    statuses = [
        status_of(device, queue_depth=0, mean_job_s=0.0, busy=False, instance="stagework")
        for device in devices
    ]
    options = TaskOptions(shots=args.shots)
    features: dict[str, object] = {}

    def circuits(start: int) -> list[str]:
        texts = []
        for i in range(start, start + args.tasks):
            circuit = load_circuit(qasm(i), "qasm2")
            text = circuit_to_json(circuit)
            features[text] = circuit_features(circuit, text)
            texts.append(text)
        return texts

    def noise(text: str, i: int) -> None:
        checked = TaskChecked(
            task_id=f"bench.t{i}",
            circuit=text,
            features=features[text],
            options=options,
            checks=[],
            logic_score=1.0,
        )
        predict(checked, statuses, max_s=600.0, memory_mb=4096)

    def sandbox(text: str, i: int) -> None:
        evaluate(f"bench.t{i}", text, args.shots, LIMITS)

    jobs: dict[str, Callable[[str, int], object]] = {"noise": noise, "sandbox": sandbox}
    for device in devices:
        jobs[f"qpu {device.id}"] = lambda text, i, d=device: execute(
            d, text, args.shots, i, False, None
        )
    figures = {}
    for n, (name, job) in enumerate(jobs.items()):
        passes = args.rounds + 1  # each job's own circuits: no cache carries over between jobs
        warm, *rounds = (circuits((n * passes + k) * args.tasks) for k in range(passes))
        best_ms(job, [warm])
        figures[name] = best_ms(job, rounds)
    if args.json:
        print(json.dumps({"tasks": args.tasks, "shots": args.shots, "cpu_ms_per_task": figures}))
        return
    print(f"{args.tasks} fastpath circuits, {args.shots} shots, best of {args.rounds} rounds:")
    print("  CPU ms a task")
    for name, ms in figures.items():
        print(f"  {name:24s} {ms:6.3f}")


if __name__ == "__main__":
    main()
