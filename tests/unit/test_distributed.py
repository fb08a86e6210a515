"""Split execution: the telegate protocol reproduces the circuit, links and devices add noise."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import cirq
import numpy as np
import pytest

from qubus.circuits import parse_qasm
from qubus.circuits.simulate import ideal_distribution
from qubus.devices.fidelity import hellinger_fidelity
from qubus.devices.profiles import Device, load_device
from qubus.errors import QubusError
from qubus.network.distributed import (
    KEY_PREFIX,
    SplitProgram,
    predict_split,
    run_split,
    split_program,
    usable_qubits,
)
from qubus.network.partition import partition_circuit

DEV = Path(__file__).parents[3] / "shared" / "data" / "qasm" / "dev"
NODES = ("ibm_nairobi", "quantinuum_h1_1", "ionq_aria")


@cache
def fleet() -> tuple[Device, ...]:
    return tuple(load_device(node) for node in NODES)


def links(fidelity: float) -> dict[tuple[str, str], float]:
    return {(a, b): fidelity for a in NODES for b in NODES if a < b}


def random_circuit(n: int, depth: int, seed: int) -> cirq.Circuit:
    """Layers of random one-qubit rotations and two-qubit gates of several kinds, measured."""
    rng = np.random.default_rng(seed)
    qubits = cirq.LineQubit.range(n)
    kinds = [cirq.CNOT, cirq.CZ, cirq.CZ**0.3, cirq.ZZ**0.2, cirq.SWAP, cirq.ISWAP**0.5]
    ops: list[cirq.Operation] = []
    for _ in range(depth):
        for q in qubits:
            x, z, axis = rng.uniform(-1, 1, 3)
            ops.append(cirq.PhasedXZGate(x_exponent=x, z_exponent=z, axis_phase_exponent=axis)(q))
        order = rng.permutation(n)
        for i in range(0, n - 1, 2):
            gate = kinds[rng.integers(len(kinds))]
            ops.append(gate(qubits[order[i]], qubits[order[i + 1]]))
    ops.append(cirq.CCX(qubits[0], qubits[1], qubits[2]))
    ops.extend(cirq.measure(q, key=f"c_{i}") for i, q in enumerate(qubits))
    return cirq.Circuit(ops)


def exact_distribution(program: SplitProgram) -> dict[str, float]:
    """The distribution of the program's bit strings from one trajectory of cirq's simulator.

    The protocol's outcomes are random but its result is not: every trajectory leaves the
    data qubits in the circuit's final state (and the communication qubits in a product state).
    """
    readout = {
        op
        for op in program.circuit.all_operations()
        if cirq.is_measurement(op) and not cirq.measurement_key_name(op).startswith(KEY_PREFIX)
    }
    body = cirq.Circuit(op for op in program.circuit.all_operations() if op not in readout)
    qubits = sorted(program.circuit.all_qubits())
    body.append(cirq.I.on_each(*qubits))
    simulator = cirq.Simulator(seed=7, dtype=np.complex128)
    state = simulator.simulate(body, qubit_order=qubits).final_state_vector
    probs = (np.abs(state) ** 2).reshape((2,) * len(qubits))
    axes = [qubits.index(q) for q in program.bit_qubits]
    marginal = probs.sum(axis=tuple(i for i in range(len(qubits)) if i not in axes))
    marginal = np.transpose(marginal, [sorted(axes).index(axis) for axis in axes]).reshape(-1)
    return {format(i, f"0{len(axes)}b"): float(p) for i, p in enumerate(marginal) if p > 1e-12}


def split(circuit: cirq.Circuit, k: int):
    devices = fleet()[:k]
    n = len(circuit.all_qubits())
    capacities = [min(usable_qubits(d), math.ceil(n / k)) for d in devices]
    return partition_circuit(circuit, capacities, bound_time_s=0.5), devices


CASES = [
    ("qasmbench__qft_n4.qasm", 2),
    ("qasmbench__hhl_n7.qasm", 2),
    ("qasmbench__qpe_n9.qasm", 3),
    ("mqtbench__vqe_su2_10_indep.qasm", 3),
    ("qasmbench__adder_n10.qasm", 2),
    ("qasmbench__ising_n10.qasm", 3),
]


@pytest.mark.parametrize(("name", "k"), CASES)
def test_classical_feed_forward_protocol_reproduces_the_ideal_distribution(
    name: str, k: int
) -> None:
    circuit = parse_qasm((DEV / name).read_text())
    partition, devices = split(circuit, k)
    assert partition.ebits > 0
    program = split_program(
        circuit, partition, devices, links(1.0), noiseless=True, feed_forward="classical"
    )
    assert program.ebits == partition.ebits
    assert any(op.classical_controls for op in program.circuit.all_operations())
    # Data qubits plus one communication qubit per QPU used, however many pairs.
    used = sum(1 for part in partition.parts if part)
    assert len(program.circuit.all_qubits()) <= len(circuit.all_qubits()) + used
    got, want = exact_distribution(program), ideal_distribution(circuit)
    assert max(abs(got.get(s, 0) - want.get(s, 0)) for s in got.keys() | want.keys()) < 1e-6


@pytest.mark.parametrize(
    ("name", "k"), [("qasmbench__hhl_n7.qasm", 2), ("qasmbench__dnn_n8.qasm", 2)]
)
def test_teledata_reproduces_the_ideal_distribution_with_fewer_pairs(name: str, k: int) -> None:
    circuit = parse_qasm((DEV / name).read_text())
    partition, devices = split(circuit, k)
    program = split_program(
        circuit,
        partition,
        devices,
        links(1.0),
        noiseless=True,
        feed_forward="classical",
        scheme="teledata",
    )
    assert any(program.teleported)
    assert program.ebits < partition.ebits
    # At most two communication qubits per QPU (one holds a teleported qubit).
    assert len(program.circuit.all_qubits()) <= len(circuit.all_qubits()) + 2 * k
    got, want = exact_distribution(program), ideal_distribution(circuit)
    assert max(abs(got.get(s, 0) - want.get(s, 0)) for s in got.keys() | want.keys()) < 1e-6


@pytest.mark.parametrize("seed", [1, 2])
def test_protocol_reproduces_generated_twelve_qubit_circuits(seed: int) -> None:
    circuit = random_circuit(12, depth=4, seed=seed)
    partition, devices = split(circuit, 3)
    program = split_program(
        circuit, partition, devices, links(1.0), noiseless=True, feed_forward="classical"
    )
    got, want = exact_distribution(program), ideal_distribution(circuit)
    assert max(abs(got.get(s, 0) - want.get(s, 0)) for s in got.keys() | want.keys()) < 1e-6


def test_coherent_run_with_perfect_links_samples_the_ideal_distribution() -> None:
    circuit = parse_qasm((DEV / "qasmbench__adder_n10.qasm").read_text())  # one outcome
    partition, devices = split(circuit, 2)
    run = run_split(circuit, partition, devices, links(1.0), 300, seed=3, noiseless=True)
    assert run.counts == {next(iter(ideal_distribution(circuit))): 300}
    assert run.ebits == partition.ebits
    assert run.nodes == [d.id for d in devices]
    moved = run_split(
        circuit, partition, devices, links(1.0), 300, seed=3, noiseless=True, scheme="teledata"
    )
    assert moved.counts == run.counts
    assert moved.ebits < run.ebits
    small = parse_qasm((DEV / "qasmbench__qft_n4.qasm").read_text())
    partition, devices = split(small, 2)
    run = run_split(small, partition, devices, links(1.0), 4000, seed=4, noiseless=True)
    ideal = ideal_distribution(small)
    total_variation = sum(abs(run.counts.get(s, 0) / 4000 - p) for s, p in ideal.items()) / 2
    assert total_variation < 0.04


def test_werner_noise_lowers_fidelity_monotonically() -> None:
    circuit = random_circuit(6, depth=2, seed=5)
    partition, devices = split(circuit, 2)
    ideal = ideal_distribution(circuit)
    measured, predicted = [], []
    for fidelity in (1.0, 0.9, 0.75, 0.5):
        run = run_split(circuit, partition, devices, links(fidelity), 3000, seed=6, noiseless=True)
        measured.append(hellinger_fidelity(run.counts, ideal))
        predicted.append(run.predicted_fidelity)
    assert measured == sorted(measured, reverse=True)
    assert predicted == sorted(predicted, reverse=True)
    assert measured[0] - measured[-1] > 0.1


def test_predicted_fidelity_is_close_to_measured_on_a_small_split() -> None:
    circuit = parse_qasm((DEV / "qasmbench__qft_n4.qasm").read_text())
    partition, devices = split(circuit, 2)
    run = run_split(circuit, partition, devices, links(0.95), 4000, seed=8)
    measured = hellinger_fidelity(run.counts, ideal_distribution(circuit))
    predicted = predict_split(circuit, partition, devices, links(0.95), 4000)
    assert predicted == run.predicted_fidelity
    assert abs(predicted - measured) < 0.05
    noiseless = run_split(circuit, partition, devices, links(0.95), 4000, seed=8, noiseless=True)
    assert noiseless.predicted_fidelity > predicted


def test_missing_links_and_small_devices_are_refused() -> None:
    qubits = cirq.LineQubit.range(6)
    chain = cirq.Circuit(cirq.CNOT(q, r) for q, r in zip(qubits, qubits[1:], strict=False))
    devices = fleet()
    with pytest.raises(QubusError) as error:
        split_program(chain, partition_circuit(chain, [3, 3]), devices[:2], {})
    assert error.value.code == "split.no_link"
    manila = load_device("ibm_manila")
    ordered = (manila.id, devices[1].id)
    assert usable_qubits(manila) == manila.max_circuit_qubits - 1 == 4
    with pytest.raises(QubusError) as error:  # five data qubits and the communication qubit
        split_program(chain, partition_circuit(chain, [5, 1]), [manila, devices[1]], {ordered: 1.0})
    assert error.value.code == "device.too_small"


def test_link_errors_flip_the_target_or_hit_the_control_as_a_harmless_z() -> None:
    # A flipped copy of the control (X on the received half) makes the remote CNOT flip the
    # target; a Z on the half becomes a Z on the control, which is measured: harmless.
    a, b = cirq.NamedQubit("q_0"), cirq.NamedQubit("q_1")
    circuit = cirq.Circuit(
        cirq.X(a), cirq.CNOT(a, b), cirq.measure(a, key="c_0"), cirq.measure(b, key="c_1")
    )
    partition = partition_circuit(circuit, [1, 1])
    devices = fleet()[:2]
    fidelity, shots = 0.7, 20000
    run = run_split(circuit, partition, devices, links(fidelity), shots, seed=9, noiseless=True)
    flipped = 2 * (1 - fidelity) / 3  # X or Y on the pair
    assert abs(run.counts.get("10", 0) / shots - flipped) < 0.01
    assert set(run.counts) == {"11", "10"}
    assert run.predicted_fidelity == pytest.approx(1 - flipped, abs=0.005)
