"""Split execution: partition quality, predicted against measured fidelity, split or wait.

Usage:
    python benchmarks/split.py [--shots 1000] [--seed 1] [--bound-time 2] [--max-run-qubits 10]
                               [--plot split_vs_wait.png]

Three figures, each with its goal:

1. **ebits.** Every dev circuit that parses and has a two-qubit gate, and generated circuits
   (``GENERATED``: brickwork layers of random gates plus random long-range CZs, seeded), split
   2 and 3 ways into equal capacities ``ceil(n/k)``: the ebits of the greedy baseline and of
   Kernighan–Lin (``qubus.network.partition``), the proven lower bound (``exact`` when the integer
   program was solved) and the gap kl − bound. Goal: kl ≤ greedy on every circuit.
2. **Predicted against measured fidelity.** Circuits of 4 to ``--max-run-qubits`` qubits with
   measurements, all terminal, split 2 ways over ibm_nairobi + quantinuum_h1_1 and 3 ways over
   those + ionq_aria (capacities ``min(usable, ceil(n/k))``), run noisy with ``--shots`` shots
   (``qubus.network.distributed.run_split``, seed ``--seed`` + row index) with link fidelity cycling
   over ``LINK_FIDELITIES``; measured = Hellinger fidelity of the counts against the ideal
   distribution, predicted = ``predict_split`` for the same shots. Each split runs by telegate
   and, where it teleports a qubit, by teledata too. Goal: mean |Δ| ≤ 0.05 over all runs.
3. **Split or wait** (a PNG). ``SCENARIO`` (9 qubits) does not fit either free QPU,
   ibm_nairobi (6 usable data qubits) or ibm_manila (4), but fits quantinuum_h1_1, which has
   a queue of L jobs. With the allocator's objective J = completion + λ·(1 − fidelity),
   λ = ``qubus.scheduling.scoring.FIDELITY_WEIGHT_S`` (100 s):

   * wait: completion = (L + 1) × the job's modelled run time on H1-1
     (``qubus.devices.emulation.emulated_runtime_s``; the queued jobs are taken to be as long),
     fidelity = ``qubus.devices.prediction.predict_fidelity`` on H1-1;
   * split now: completion = ebits × shots × the expected latency of one pair on a link with
     ``qubus.network.links.Topology.ring``'s default figures (fresh pairs for every shot, made one
     after another) + the slower part's run time; fidelity = ``predict_split`` at link
     fidelity F.

   The plot shows J_wait − J_split over F × L (positive: splitting wins) and the boundary.
   On these superconducting parts the devices' noise dominates the prediction, so the boundary
   moves little with F; the queue decides.

Runs take about 2 minutes on two cores with the defaults.
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

import cirq
import numpy as np
from matplotlib.figure import Figure

from qubus.circuits import parse_qasm
from qubus.circuits.simulate import ideal_distribution
from qubus.devices.compile import compile_for_device
from qubus.devices.emulation import emulated_runtime_s
from qubus.devices.fidelity import hellinger_fidelity
from qubus.devices.prediction import predict_fidelity
from qubus.devices.profiles import load_device
from qubus.errors import QubusError
from qubus.network.distributed import predict_split, run_split, split_program, usable_qubits
from qubus.network.links import Topology
from qubus.network.partition import ebit_lower_bound, partition_circuit
from qubus.scheduling.scoring import FIDELITY_WEIGHT_S

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "qasm" / "dev"
GENERATED = ((12, 11), (16, 12), (20, 13), (8, 14))
"""(qubits, seed) of the generated circuits; the 8-qubit one is also run."""
LINK_FIDELITIES = (0.9, 0.95, 0.99)
RUN_FLEETS = {
    2: ("ibm_nairobi", "quantinuum_h1_1"),
    3: ("ibm_nairobi", "quantinuum_h1_1", "ionq_aria"),
}
SCENARIO = "qasmbench__qpe_n9.qasm"
SPLIT_NODES = ("ibm_nairobi", "ibm_manila")
WAIT_NODE = "quantinuum_h1_1"
PLOT_FIDELITIES = np.linspace(0.7, 1.0, 16)
PLOT_QUEUE = np.arange(0, 21)


def generated(n: int, seed: int, layers: int = 4) -> cirq.Circuit:
    """Brickwork layers of random rotations and CZ^t, plus one random long-range CZ per layer."""
    rng = np.random.default_rng(seed)
    qubits = cirq.LineQubit.range(n)
    ops: list[cirq.Operation] = []
    for layer in range(layers):
        ops.extend(cirq.ry(rng.uniform(0, math.pi))(q) for q in qubits)
        ops.extend(
            cirq.CZPowGate(exponent=rng.uniform(0.2, 1))(qubits[i], qubits[i + 1])
            for i in range(layer % 2, n - 1, 2)
        )
        a, b = rng.choice(n, size=2, replace=False)
        ops.append(cirq.CZ(qubits[a], qubits[b]))
    ops.extend(cirq.measure(q, key=f"c_{i}") for i, q in enumerate(qubits))
    return cirq.Circuit(ops)


def circuits() -> list[tuple[str, cirq.Circuit]]:
    """Dev circuits that parse and have a two-qubit gate, then the generated ones."""
    found = []
    for path in sorted(DEV.glob("*.qasm*")):
        try:
            circuit = parse_qasm(path.read_text())
        except QubusError:
            continue
        if any(
            len(op.qubits) >= 2 and not cirq.is_measurement(op) for op in circuit.all_operations()
        ):
            found.append((path.name, circuit))
    found += [(f"generated_n{n}_seed{seed}", generated(n, seed)) for n, seed in GENERATED]
    return found


def ebits_table(rows: list[tuple[str, cirq.Circuit]], bound_time: float) -> bool:
    print("## ebits: greedy (baseline), Kernighan–Lin, lower bound; capacities ceil(n/k)")
    header = ("n", 3), ("k", 2), ("greedy", 7), ("kl", 5), ("bound", 6), ("exact", 6), ("gap", 4)
    print(f"{'circuit':44}", *(f"{name:>{width}}" for name, width in header))
    met, gaps, at_bound, total = True, [], 0, 0
    for name, circuit in rows:
        n = len(circuit.all_qubits())
        for k in (2, 3):
            capacities = [math.ceil(n / k)] * k
            kl = partition_circuit(circuit, capacities, bound_time_s=bound_time)
            greedy = partition_circuit(circuit, capacities, method="greedy", bound_time_s=0.0)
            bound = ebit_lower_bound(circuit, capacities, time_limit_s=bound_time)
            gap = kl.ebits - bound.value
            met &= kl.ebits <= greedy.ebits
            gaps.append(gap)
            at_bound += gap == 0
            total += 1
            print(
                f"{name[:44]:44} {n:3} {k:2} {greedy.ebits:7} {kl.ebits:5} {bound.value:6} "
                f"{'yes' if bound.exact else 'no':>6} {gap:4}"
            )
    mean_gap = statistics.mean(gaps)
    print(
        f"kl at the lower bound on {at_bound}/{total} splits; "
        f"gap mean {mean_gap:.2f}, max {max(gaps)}"
    )
    print(f"goal kl ≤ greedy on every circuit: {'met' if met else 'NOT met'}\n")
    return met


def fidelity_table(
    rows: list[tuple[str, cirq.Circuit]], shots: int, seed: int, max_qubits: int
) -> bool:
    print(f"## predicted vs measured Hellinger fidelity of noisy split runs, {shots} shots")
    header = (
        ("k", 2),
        ("scheme", 9),
        ("ebits", 5),
        ("F_link", 6),
        ("measured", 8),
        ("predicted", 9),
        ("|Δ|", 6),
        ("s", 5),
    )
    print(f"{'circuit':40}", *(f"{name:>{width}}" for name, width in header))
    fleets = {k: [load_device(node) for node in nodes] for k, nodes in RUN_FLEETS.items()}
    deltas: dict[str, list[float]] = {"telegate": [], "teledata": []}
    index = 0
    for name, circuit in rows:
        n = len(circuit.all_qubits())
        dynamic = any(op.classical_controls for op in circuit.all_operations())
        measured = circuit.has_measurements() and circuit.are_all_measurements_terminal()
        if not 4 <= n <= max_qubits or dynamic or not measured:
            continue
        for k, devices in fleets.items():
            capacities = [min(usable_qubits(d), math.ceil(n / k)) for d in devices]
            partition = partition_circuit(circuit, capacities, bound_time_s=0.5)
            fidelity = LINK_FIDELITIES[index % len(LINK_FIDELITIES)]
            links = {
                (a.id, b.id) if a.id < b.id else (b.id, a.id): fidelity
                for a in devices
                for b in devices
                if a != b
            }
            for scheme, delta_list in deltas.items():
                if scheme == "teledata" and not any(
                    split_program(circuit, partition, devices, links, scheme=scheme).teleported
                ):
                    continue  # the same run as telegate's
                started = time.perf_counter()
                run = run_split(
                    circuit, partition, devices, links, shots, seed=seed + index, scheme=scheme
                )
                elapsed = time.perf_counter() - started
                measured = hellinger_fidelity(run.counts, ideal_distribution(circuit))
                delta = abs(run.predicted_fidelity - measured)
                delta_list.append(delta)
                print(
                    f"{name[:40]:40} {k:2} {scheme:>9} {run.ebits:5} {fidelity:6.2f} "
                    f"{measured:8.3f} {run.predicted_fidelity:9.3f} {delta:6.3f} {elapsed:5.1f}"
                )
            index += 1
    for scheme, values in deltas.items():
        print(f"{scheme}: {len(values)} runs, mean |Δ| {statistics.mean(values):.3f}")
    every = [d for values in deltas.values() for d in values]
    mean = statistics.mean(every)
    print(f"all {len(every)} runs: mean |Δ| {mean:.3f}, largest {max(every):.3f}")
    print(f"goal mean |Δ| ≤ 0.05: {'met' if mean <= 0.05 else 'NOT met'}\n")
    return mean <= 0.05


def split_or_wait(shots: int, out: Path) -> None:
    print(f"## split now or wait: {SCENARIO} on {' + '.join(SPLIT_NODES)} or queued on {WAIT_NODE}")
    circuit = parse_qasm((DEV / SCENARIO).read_text())
    ideal = ideal_distribution(circuit)
    big = load_device(WAIT_NODE)
    compiled = compile_for_device(circuit, big)
    job_s = emulated_runtime_s(compiled, big, shots)
    wait_fidelity = predict_fidelity(compiled, big, ideal, shots=shots)
    devices = [load_device(node) for node in SPLIT_NODES]
    partition = partition_circuit(circuit, [usable_qubits(d) for d in devices])
    pair_s = Topology.ring(list(SPLIT_NODES)).links[0].expected_latency_s
    program = split_program(circuit, partition, devices, {tuple(sorted(SPLIT_NODES)): 1.0})
    run_s = program.runtime_s(devices, shots)
    split_s = partition.ebits * shots * pair_s + run_s
    key = tuple(sorted(SPLIT_NODES))
    split_fidelity = np.array(
        [predict_split(circuit, partition, devices, {key: f}, shots) for f in PLOT_FIDELITIES]
    )
    j_split = split_s + FIDELITY_WEIGHT_S * (1 - split_fidelity)
    j_wait = (PLOT_QUEUE + 1) * job_s + FIDELITY_WEIGHT_S * (1 - wait_fidelity)
    advantage = j_wait[:, None] - j_split[None, :]  # rows: queue length, columns: link fidelity
    print(
        f"wait: {job_s:.1f} s per job on {WAIT_NODE}, predicted fidelity {wait_fidelity:.3f}; "
        f"split: {partition.ebits} ebits × {shots} shots × {pair_s * 1e3:.1f} ms per pair + "
        f"{run_s:.1f} s run = {split_s:.1f} s, predicted fidelity {split_fidelity[0]:.3f} "
        f"(F = {PLOT_FIDELITIES[0]:.2f}) to {split_fidelity[-1]:.3f} (F = 1)"
    )
    for f, row in zip(PLOT_FIDELITIES[::5], advantage.T[::5], strict=True):
        wins = PLOT_QUEUE[row > 0]
        verdict = f"split wins from L = {wins[0]}" if wins.size else "waiting always wins"
        print(f"  F = {f:.2f}: {verdict} (L ≤ {PLOT_QUEUE[-1]})")
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    limit = np.abs(advantage).max()
    mesh = axes.pcolormesh(
        PLOT_FIDELITIES,
        PLOT_QUEUE,
        advantage,
        cmap="RdBu",
        vmin=-limit,
        vmax=limit,
        shading="nearest",
    )
    axes.contour(PLOT_FIDELITIES, PLOT_QUEUE, advantage, levels=[0], colors="black")
    figure.colorbar(mesh, ax=axes, label="J_wait − J_split (s); > 0: split wins")
    axes.set_xlabel("link (EPR pair) fidelity F")
    axes.set_ylabel(f"jobs queued on {WAIT_NODE}")
    axes.set_title(f"{SCENARIO}: split over {' + '.join(SPLIT_NODES)} or wait")
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    print(f"plot: {out.resolve()}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bound-time", type=float, default=2.0, help="ILP time limit, s")
    parser.add_argument("--max-run-qubits", type=int, default=10)
    parser.add_argument("--plot", type=Path, default=Path("split_vs_wait.png"))
    args = parser.parse_args()
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(
        f"seeds: runs {args.seed} + row index; generated circuits {[s for _, s in GENERATED]}; "
        f"Kernighan–Lin restarts seeded by qubus.network.partition.KL_SEED\n"
    )
    rows = circuits()
    started = time.perf_counter()
    ebits_met = ebits_table(rows, args.bound_time)
    fidelity_met = fidelity_table(rows, args.shots, args.seed, args.max_run_qubits)
    split_or_wait(args.shots, args.plot)
    print(
        f"goals: kl ≤ greedy {'met' if ebits_met else 'NOT met'}; "
        f"mean |Δ| ≤ 0.05 {'met' if fidelity_met else 'NOT met'} "
        f"({time.perf_counter() - started:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
