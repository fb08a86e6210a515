"""The numpy density-matrix simulation of small noisy registers against cirq's simulator."""

from __future__ import annotations

import cirq
import numpy as np
import pytest

from benchmarks.sweep import grid, qaoa_circuit
from qubus.circuits import load_circuit
from qubus.circuits.sweeps import resolved
from qubus.devices.compile import compile_for_device
from qubus.devices.densitymatrix import DensityMatrix
from qubus.devices.emulation import (
    DENSITY_MATRIX_QUBITS,
    _final_probabilities,
    emulate,
    noisy_moments,
)
from qubus.devices.profiles import load_device

GATES = [cirq.H, cirq.X, cirq.S, cirq.T, cirq.rx(0.3), cirq.ry(1.1), cirq.rz(-0.7)]


def random_noisy_circuit(n: int, seed: int) -> cirq.Circuit:
    """Random one- and two-qubit gates, each followed by one of the emulator's channels."""
    rng = np.random.default_rng(seed)
    q = cirq.LineQubit.range(n)
    ops: list[cirq.Operation] = []
    for _ in range(12):
        a, b = (int(x) for x in rng.choice(n, size=2, replace=False))
        gate = [cirq.CNOT, cirq.CZ, cirq.ISWAP**0.5][rng.integers(3)]
        ops.append(gate(q[a], q[b]) if rng.random() < 0.5 else GATES[rng.integers(7)](q[a]))
        kind = rng.integers(5)
        if kind == 0:
            ops.append(cirq.depolarize(float(rng.random() * 0.2), n_qubits=2).on(q[a], q[b]))
        elif kind == 1:
            ops.append(cirq.depolarize(float(rng.random() * 0.2)).on(q[a]))
        elif kind == 2:
            ops.append(cirq.amplitude_damp(float(rng.random() * 0.3)).on(q[a]))
        elif kind == 3:
            ops.append(cirq.phase_damp(float(rng.random() * 0.3)).on(q[b]))
        else:
            ops.append(cirq.reset(q[b]))
    return cirq.Circuit(ops)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_density_matrix_is_cirqs(n: int, seed: int) -> None:
    circuit = (
        random_noisy_circuit(max(n, 2), seed)
        if n > 1
        else cirq.Circuit(
            cirq.H(cirq.LineQubit(0)),
            cirq.amplitude_damp(0.3).on(cirq.LineQubit(0)),
            cirq.phase_damp(0.2).on(cirq.LineQubit(0)),
            cirq.depolarize(0.1).on(cirq.LineQubit(0)),
        )
    )
    qubits = cirq.LineQubit.range(max(n, 1))
    index = {q: i for i, q in enumerate(qubits)}
    rho = DensityMatrix(len(qubits))
    for op in circuit.all_operations():
        rho.apply(op, index)
    body = circuit + cirq.Circuit(cirq.I.on_each(*qubits))
    expected = (
        cirq.DensityMatrixSimulator(dtype=np.complex128)
        .simulate(body, qubit_order=qubits)
        .final_density_matrix
    )
    size = 2 ** len(qubits)
    np.testing.assert_allclose(rho.tensor.reshape(size, size), expected, atol=1e-12)
    np.testing.assert_allclose(rho.probabilities().sum(), 1.0, atol=1e-12)


def test_a_compiled_noisy_circuit_has_cirqs_distribution() -> None:
    text = (
        'OPENQASM 2.0; include "qelib1.inc"; qreg q[4]; creg c[4]; h q[0]; cx q[0], q[1];'
        " cx q[1], q[3]; cx q[3], q[2]; rz(0.4) q[0]; h q[0]; measure q -> c;"
    )
    device = load_device("ibm_nairobi")
    compiled = compile_for_device(load_circuit(text, "qasm2"), device)
    assert len(compiled.physical_qubits) <= DENSITY_MATRIX_QUBITS
    noisy = cirq.Circuit(noisy_moments(compiled, device))
    body = cirq.Circuit(op for op in noisy.all_operations() if not cirq.is_measurement(op))
    qubits = sorted(noisy.all_qubits())
    index = {q: i for i, q in enumerate(qubits)}
    rho = DensityMatrix(len(qubits))
    for op in body.all_operations():
        rho.apply(op, index)
    expected = (
        cirq.DensityMatrixSimulator(dtype=np.complex128)
        .simulate(body, qubit_order=qubits)
        .final_density_matrix
    )
    np.testing.assert_allclose(rho.probabilities(), np.real(np.diag(expected)), atol=1e-12)


def test_a_classically_controlled_operation_is_refused() -> None:
    q = cirq.LineQubit(0)
    with pytest.raises(TypeError, match="neither unitary nor a channel"):
        DensityMatrix(1).apply(cirq.X(q).with_classical_controls("m"), {q: 0})


def ring(n: int) -> cirq.Circuit:
    """A QAOA-like ring of ``n`` qubits, measured."""
    q = cirq.LineQubit.range(n)
    circuit = cirq.Circuit(cirq.H.on_each(*q))
    for a in range(n):
        b = (a + 1) % n
        circuit.append([cirq.CNOT(q[a], q[b]), cirq.rz(0.3 + a).on(q[b]), cirq.CNOT(q[a], q[b])])
    circuit.append([cirq.rx(0.7).on_each(*q), cirq.measure(*q, key="m")])
    return circuit


@pytest.mark.parametrize("node", ["ibm_nairobi", "quantinuum_h1_1", "ionq_aria"])
def test_the_fused_emulation_is_cirqs_on_compiled_circuits(node: str) -> None:
    """One product per gate (relaxation, gate and depolarizing fused, one-qubit work held
    back to the next gate) gives cirq's simulation of every channel, Kraus operator by Kraus
    operator, to 1e-9, up to the largest register emulated as a density matrix."""
    device = load_device(node)
    text = (
        'OPENQASM 2.0; include "qelib1.inc"; qreg q[5]; creg c[5]; h q[0]; cx q[0], q[1];'
        " reset q[2]; cx q[1], q[3]; cx q[3], q[2]; rz(0.4) q[0]; h q[0]; x q[4];"
        " measure q[0] -> c[0]; measure q[1] -> c[1]; measure q[2] -> c[2];"
    )
    widest = min(DENSITY_MATRIX_QUBITS, device.max_circuit_qubits)
    circuits = [load_circuit(text, "qasm2"), ring(widest)]
    circuits += [resolved(qaoa_circuit(), p) for p in grid(9)[::4]]
    for circuit in circuits:
        compiled = compile_for_device(circuit, device)
        ours, qubits = _final_probabilities(compiled, device)
        noisy = cirq.Circuit(noisy_moments(compiled, device))
        body = cirq.Circuit(op for op in noisy.all_operations() if not cirq.is_measurement(op))
        body.append(cirq.I.on_each(*(set(qubits) - body.all_qubits())))
        expected = (
            cirq.DensityMatrixSimulator(dtype=np.complex128)
            .simulate(body, qubit_order=qubits)
            .final_density_matrix
        )
        np.testing.assert_allclose(ours, np.real(np.diag(expected)), atol=1e-9)


@pytest.mark.parametrize("node", ["ibm_nairobi", "ionq_aria"])
def test_a_readout_kept_for_a_compilation_shape_is_the_readout_made_afresh(node: str) -> None:
    """Circuits of one structure share a compilation shape and so its readout (the bits of
    each basis state, the qubit behind each bit): emulating one reads the same counts with
    the readout kept as made afresh."""
    from dataclasses import replace

    from qubus.devices import emulation

    device = load_device(node)
    q = cirq.LineQubit.range(3)
    emulation._readouts._entries.clear()
    shapes = set()
    reads = (
        [cirq.measure(q[2], key="b"), cirq.measure(q[0], q[1], key="a")],
        [cirq.measure(q[1], q[0], key="m")],  # another structure: another shape
    )
    for k, angle in enumerate((0.1, 0.7, 2.9, -1.3)):
        circuit = cirq.Circuit(
            cirq.H(q[0]),
            cirq.CNOT(q[0], q[1]),
            cirq.rz(angle)(q[1]),
            cirq.CNOT(q[1], q[2]),
            reads[k % 2],
        )
        compiled = compile_for_device(circuit, device)
        shapes.add(compiled.shape)
        afresh = emulate(replace(compiled, shape=None), device, 500, seed=k)
        assert emulate(compiled, device, 500, seed=k) == afresh  # made, then kept
        assert emulate(compiled, device, 500, seed=k) == afresh  # read back
    assert None not in shapes and len(emulation._readouts._entries) == len(shapes) == 2
