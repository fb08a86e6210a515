"""qubus's noise model against aer's, exactly: both output distributions as density matrices.

Usage:
    python benchmarks/aer_exact.py [--node ibm_hanoi] [--estimate] [--trajectories T] [CIRCUIT ...]

A CIRCUIT is a dev file name, ``bvN`` (Bernstein–Vazirani on N qubits, hidden string all ones,
the shape of ``qasmbench__bv_n14``) or ``qecN`` (``qasmbench__qec9xz_n17`` cut to N blocks of
three data qubits: 3N data and 3N − 1 ancillas; qec3 is its structure). Default: bv4–bv10,
qec2.

Each circuit is compiled for the node by qubus; qubus's exact noisy distribution is its
density matrix (``emulation.emulated_distribution``, allowed up to ``EXACT_QUBITS`` here), aer's
is its ``density_matrix`` method in double precision on the translation of
``emulate_vs_aer.qiskit_circuit``, both with readout errors. aer runs twice: with the fake
backend's gate durations and with the profile's (``emulate_vs_aer.noise_model``). Printed per
circuit: width, its cx count and how many run in the calibration's shorter direction, the
Hellinger fidelity against the ideal of qubus and of both aer runs, and each aer run's
difference and total variation distance from qubus. No shot or trajectory noise: a difference
is the noise models'.

The only difference of the two aer runs is the depolarizing of a cx run the shorter way (the
relaxation adds up to the moment's on both), so for a circuit with one ideal outcome
:func:`shorter_way_loss` estimates it to first order where no density matrix fits:
``--estimate`` prints that alone (the dev circuits of 14 and 17 qubits; with ``--trajectories
T`` the second estimate from the mean of T of qubus's trajectories), and the exact runs print
both beside the exact figures, the second from qubus's exact distribution, to check them.
Without ``--estimate``, ``--trajectories T`` adds, for registers wider than
``emulation.DENSITY_MATRIX_QUBITS`` (which ``emulate`` runs as trajectories), the Hellinger
fidelity of the mean of T of qubus's trajectories' distributions
(``emulation.emulated_trajectory_distributions``) with its bootstrap spread: whether the
trajectories estimate qubus's exact distribution without bias.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import cirq
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from emulate_vs_aer import (  # noqa: E402
    DEV,
    aer_distribution,
    distribution_fidelity,
    fake_backend,
    noise_model,
    qiskit_circuit,
)

from qubus.circuits import parse_qasm  # noqa: E402
from qubus.circuits.simulate import ideal_distribution, measurement_keys  # noqa: E402
from qubus.devices import emulation  # noqa: E402
from qubus.devices.compile import compile_for_device  # noqa: E402
from qubus.devices.profiles import load_device  # noqa: E402

EXACT_QUBITS = 12
"""Widest register simulated here (a 12-qubit density matrix: 4^12 entries, 270 MB)."""
DEFAULT = ("bv4", "bv6", "bv8", "bv10", "qec2")


def bernstein_vazirani(n: int) -> str:
    """Bernstein–Vazirani on ``n`` qubits with hidden string all ones, as qasmbench's bv_n14."""
    lines = ["OPENQASM 2.0;", 'include "qelib1.inc";', f"qreg q[{n}];", f"creg c[{n - 1}];"]
    lines += [f"h q[{i}];" for i in range(n - 1)] + [f"x q[{n - 1}];", f"h q[{n - 1}];"]
    lines += [f"cx q[{i}],q[{n - 1}];" for i in range(n - 1)]
    lines += [f"h q[{i}];" for i in range(n - 1)]
    lines += [f"measure q[{i}] -> c[{i}];" for i in range(n - 1)]
    return "\n".join(lines)


def syndrome_cut(blocks: int) -> str:
    """qasmbench's qec9xz_n17 (Shor's code: ``blocks`` = 3) with ``blocks`` blocks of three
    data qubits: the logical state, two Z-parity ancillas per block measured, then every data
    qubit in the X basis onto one ancilla per pair of neighbouring blocks. One ideal outcome."""
    data, ancillas = 3 * blocks, 3 * blocks - 1
    lines = ["OPENQASM 2.0;", 'include "qelib1.inc";', f"qreg q0[{data}];"]
    lines += [f"qreg q1[{ancillas}];", f"creg c0[{ancillas}];", "h q0[0];"]
    lines += [f"cx q0[0],q0[{3 * b}];" for b in range(1, blocks)]
    lines += [f"h q0[{3 * b}];" for b in range(blocks)]
    for b in range(blocks):
        lines += [f"cx q0[{3 * b}],q0[{3 * b + 1}];", f"cx q0[{3 * b}],q0[{3 * b + 2}];"]
    for b in range(blocks):
        for j in range(2):
            a = 2 * b + j
            lines += [f"cx q0[{3 * b + j}],q1[{a}];", f"cx q0[{3 * b + j + 1}],q1[{a}];"]
    lines += [f"measure q1[{a}] -> c0[{a}];" for a in range(2 * blocks)]
    lines += [f"h q0[{i}];" for i in range(data)]
    for b in range(blocks - 1):
        lines += [f"cx q0[{i}],q1[{2 * blocks + b}];" for i in range(3 * b, 3 * b + 6)]
    lines += [f"measure q1[{a}] -> c0[{a}];" for a in range(2 * blocks, ancillas)]
    return "\n".join(lines)


def source(name: str) -> str:
    """The OpenQASM text of a CIRCUIT argument."""
    if name.startswith("bv"):
        return bernstein_vazirani(int(name[2:]))
    if name.startswith("qec"):
        return syndrome_cut(int(name[3:]))
    return (DEV / name).read_text()


def shorter_way_loss(
    compiled,  # noqa: ANN001
    device,  # noqa: ANN001
    backend,  # noqa: ANN001
    ideal: dict[str, float],
    noisy: np.ndarray | None = None,
) -> tuple[int, float | None, float | None]:
    """The cx the calibration runs shorter than the profile's edge duration, and the relative
    fidelity loss their larger depolarizing in aer's backend-duration model costs, to first
    order, for a Clifford circuit with one ideal outcome (else None): each of the 15
    two-qubit Paulis after such a cx, carried through the rest of the circuit
    (``cirq.PauliString.after``), XORs the measured bits with a pattern, and comes with the
    extra depolarizing probability / 15. Two estimates: the outcome is lost whenever the
    pattern is not empty; and, given qubus's ``noisy`` distribution, the ideal outcome's
    probability becomes that of the ideal XOR the pattern (the noise elsewhere can make the
    same pattern, which the Pauli then undoes).
    """
    ops = list(compiled.circuit.all_operations())
    gates = [op for op in ops if not cirq.is_measurement(op)]
    last = {op.gate.key: tuple(q.x for q in op.qubits) for op in ops if cirq.is_measurement(op)}
    columns = emulation.bit_qubits(last, measurement_keys(compiled.circuit))
    bit = {cirq.LineQubit(q): 1 << (len(columns) - 1 - k) for k, q in enumerate(columns)}
    clifford = len(ideal) == 1 and all(cirq.has_stabilizer_effect(op) for op in gates)
    target = int(next(iter(ideal)), 2)
    count, lost, moved = 0, 0.0, 0.0
    for index, op in enumerate(gates):
        pair = tuple(q.x for q in op.qubits)
        if len(pair) != 2:
            continue
        edge = device.edge(*pair)
        shorter_ns = backend.target["cx"][pair].duration * 1e9
        if shorter_ns >= edge.duration_ns - 1:
            continue
        count += 1
        if not clifford:
            continue
        qubits = [device.qubits[q] for q in pair]
        extra = emulation.completing_depolarizing(
            edge.error, shorter_ns, qubits
        ) - emulation.completing_depolarizing(edge.error, edge.duration_ns, qubits)
        for a, b in list(itertools.product([cirq.I, cirq.X, cirq.Y, cirq.Z], repeat=2))[1:]:
            after = cirq.PauliString({op.qubits[0]: a, op.qubits[1]: b}).after(gates[index + 1 :])
            pattern = sum(m for q, m in bit.items() if after.get(q) in (cirq.X, cirq.Y))
            if pattern:
                lost += extra / 15
                if noisy is not None:
                    moved += extra / 15 * (1 - noisy[target ^ pattern] / noisy[target])
    if not clifford:
        return count, None, None
    return count, lost, moved if noisy is not None else None


def trajectory_mean(compiled, device, trajectories: int) -> np.ndarray:  # noqa: ANN001
    """The mean of qubus's trajectories' distributions (``emulated_trajectory_distributions``)."""
    total = None
    for row in emulation.emulated_trajectory_distributions(compiled, device, trajectories, seed=5):
        total = row if total is None else total + row
    return total / trajectories


def hellinger(dense: np.ndarray, ideal: dict[str, float]) -> float:
    """Hellinger fidelity of a dense distribution (first bit most significant) to the ideal."""
    return float(sum(np.sqrt(max(dense[int(k, 2)], 0.0) * p) for k, p in ideal.items()) ** 2)


def qubus_distribution(compiled, device) -> np.ndarray:  # noqa: ANN001
    """qubus's exact noisy distribution of the measured bits as a dense vector."""
    saved = emulation.DENSITY_MATRIX_QUBITS
    emulation.DENSITY_MATRIX_QUBITS = EXACT_QUBITS
    try:
        exact = emulation.emulated_distribution(compiled, device)
    finally:
        emulation.DENSITY_MATRIX_QUBITS = saved
    if exact is None:
        raise SystemExit("not a terminal-measurement circuit of at most 12 qubits")
    width = sum(w for _k, w in measurement_keys(compiled.circuit))
    dense = np.zeros(2**width)
    for bits, p in exact.items():
        dense[int(bits, 2)] = p
    return dense


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("circuits", nargs="*", default=DEFAULT)
    parser.add_argument("--node", default="ibm_hanoi")
    parser.add_argument(
        "--estimate",
        action="store_true",
        help="only the first-order shorter-way loss (with --trajectories: also from the "
        "patterns of qubus's trajectories' mean)",
    )
    parser.add_argument("--trajectories", type=int, default=None, metavar="T")
    args = parser.parse_args()
    print(f"$ python benchmarks/aer_exact.py {' '.join(sys.argv[1:])}")
    device = load_device(args.node)
    backend = fake_backend(args.node)
    models = {"backend": noise_model(backend), "profile": noise_model(backend, device)}
    for name in args.circuits:
        logical = parse_qasm(source(name))
        ideal = ideal_distribution(logical)
        compiled = compile_for_device(logical, device)
        cx = sum(len(op.qubits) == 2 for op in compiled.circuit.all_operations())
        started = time.perf_counter()
        if not args.estimate:
            noisy = qubus_distribution(compiled, device)
        elif args.trajectories:
            noisy = trajectory_mean(compiled, device, args.trajectories)
        else:
            noisy = None
        ours_s = time.perf_counter() - started
        count, lost, moved = shorter_way_loss(compiled, device, backend, ideal, noisy)
        head = f"{name:30} {len(compiled.physical_qubits):2}q cx {cx:3} ({count:3} shorter way)"
        if args.estimate:
            line = f"{head}  first-order loss {lost:.4f}"
            if moved is not None:
                line += (
                    f", with the patterns of qubus's {args.trajectories} trajectories "
                    f"{moved:.4f} (their fidelity {hellinger(noisy, ideal):.4f})"
                )
            print(line, flush=True)
            continue
        ours = noisy
        line = f"{head}  qubus {hellinger(ours, ideal):.5f} ({ours_s:.1f} s)"
        fidelity = {}
        for durations, model in models.items():
            timing = device if durations == "profile" else None
            started = time.perf_counter()
            theirs = aer_distribution(qiskit_circuit(compiled, backend, timing), model)
            aer_s = time.perf_counter() - started
            fidelity[durations] = hellinger(theirs, ideal)
            line += (
                f"  aer/{durations} {hellinger(theirs, ideal):.5f} "
                f"Δ {hellinger(ours, ideal) - hellinger(theirs, ideal):+.5f} "
                f"TV {0.5 * np.abs(ours - theirs).sum():.1e} ({aer_s:.1f} s)"
            )
        if args.trajectories and len(compiled.physical_qubits) > emulation.DENSITY_MATRIX_QUBITS:
            support = np.array([int(bits, 2) for bits in ideal])
            rows = np.array(
                [
                    row[support]
                    for row in emulation.emulated_trajectory_distributions(
                        compiled, device, args.trajectories, seed=5
                    )
                ]
            )
            mean, spread = distribution_fidelity(rows, np.array(list(ideal.values())), 5)
            line += f"  qubus {args.trajectories} trajectories {mean:.5f} ± {spread:.5f}"
        if lost is not None:
            relative = 1 - fidelity["backend"] / hellinger(ours, ideal)
            line += (
                f"  relative Δ to aer/backend {relative:.4f}, first-order {lost:.4f}, "
                f"with patterns {moved:.4f}"
            )
        print(line, flush=True)


if __name__ == "__main__":
    main()
