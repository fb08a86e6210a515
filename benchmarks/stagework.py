"""The physics stages' own work on the fastpath workload, in one process: no bus, no worker.

For ``--tasks`` of ``benchmarks/fastpath.py``'s circuits (4-qubit GHZ-like, a distinct ``rz``
each), read from their Cirq JSON as the stages read them, prints the CPU per task of

* ``noise``: what the noise service's ``predict`` does for every node of the default fleet
  (compile, emulation estimate, ESP, noise budget, modelled run time);
* ``sandbox``: ``qubus.devices.sandbox.evaluate`` (ideal distribution, checks, ΔRepro);
* ``qpu <node>``: the QPU node's job, ``execute`` (compile and emulate at ``--shots``).

Each figure is the best of ``--rounds`` passes over the tasks, after one pass over other
circuits of the same structure (the layout and routing caches warm, as in a running stack;
the compiled-circuit cache misses, as for distinct circuits). What it leaves out is what a
stage adds around this work: the bus, the consumer, logging (``benchmarks/hop.py``) and, where
a job runs in a worker process, the round trip to it.

    python benchmarks/stagework.py [--tasks 300] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from fastpath import qasm

from qubus.circuits.ir import circuit_from_json, circuit_to_json, load_circuit
from qubus.devices.compile import compile_for_device
from qubus.devices.cost import emulation_cost
from qubus.devices.emulation import emulated_runtime_s
from qubus.devices.prediction import esp, noise_budget
from qubus.devices.profiles import DEFAULT_FLEET, load_device
from qubus.devices.sandbox import SandboxLimits, evaluate
from qubus_services.qpu.main import execute

LIMITS = SandboxLimits(max_qubits=24, max_depth=100_000, max_outcomes=4096)


def best_ms(job: Callable[[str, int], object], circuits: list[str], rounds: int) -> float:
    """The least CPU milliseconds per circuit of ``rounds`` passes of ``job`` over ``circuits``."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for i, text in enumerate(circuits):
            job(text, i)
        best = min(best, time.process_time() - started)
    return best / len(circuits) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shots", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    devices = [load_device(node) for node in DEFAULT_FLEET]
    texts = [circuit_to_json(load_circuit(qasm(i), "qasm2")) for i in range(2 * args.tasks)]
    warm, circuits = texts[args.tasks :], texts[: args.tasks]

    def noise(text: str, i: int) -> None:
        circuit = circuit_from_json(text)
        for device in devices:
            compiled = compile_for_device(circuit, device)
            emulation_cost(compiled, args.shots)
            esp(compiled, device)
            noise_budget(compiled, device)
            emulated_runtime_s(compiled, device, args.shots)

    def sandbox(text: str, i: int) -> None:
        evaluate(f"bench.t{i}", text, args.shots, LIMITS)

    jobs: dict[str, Callable[[str, int], object]] = {"noise": noise, "sandbox": sandbox}
    for device in devices:
        jobs[f"qpu {device.id}"] = lambda text, i, d=device: execute(
            d, text, args.shots, i, False, None
        )
    figures = {}
    for name, job in jobs.items():
        best_ms(job, warm, 1)
        figures[name] = best_ms(job, circuits, args.rounds)
    if args.json:
        print(json.dumps({"tasks": args.tasks, "shots": args.shots, "cpu_ms_per_task": figures}))
        return
    print(f"{args.tasks} fastpath circuits, {args.shots} shots, best of {args.rounds} rounds:")
    print("  CPU ms a task")
    for name, ms in figures.items():
        print(f"  {name:24s} {ms:6.3f}")


if __name__ == "__main__":
    main()
