"""Noisy emulation and fidelity prediction on the compiled circuit."""

from __future__ import annotations

import cirq
import pytest

from qubus.compile import compile_for_device
from qubus.devices import Device, load_device
from qubus.fidelity import fidelity_with_ideal, hellinger_fidelity
from qubus.noise import emulate, emulated_runtime_s, predict_fidelity
from qubus.simulate import ideal_distribution


def ghz(n: int) -> cirq.Circuit:
    q = [cirq.NamedQubit(f"q_{i}") for i in range(n)]
    return cirq.Circuit(
        cirq.H(q[0]),
        [cirq.CNOT(q[i], q[i + 1]) for i in range(n - 1)],
        [cirq.measure(x, key=f"c_{i}") for i, x in enumerate(q)],
    )


def scaled(device: Device, factor: float) -> Device:
    """The device with every gate error multiplied by ``factor``."""
    return device.model_copy(
        update={
            "edges": [e.model_copy(update={"error": e.error * factor}) for e in device.edges],
            "qubits": [
                q.model_copy(update={"one_qubit_error": q.one_qubit_error * factor})
                for q in device.qubits
            ],
        }
    )


def test_noisy_ghz_on_nairobi_matches_the_prediction() -> None:
    device = load_device("ibm_nairobi")
    circuit = ghz(5)
    ideal = ideal_distribution(circuit)
    compiled = compile_for_device(circuit, device)
    clean = hellinger_fidelity(emulate(compiled, device, 4000, seed=1, noiseless=True), ideal)
    noisy = hellinger_fidelity(emulate(compiled, device, 4000, seed=1), ideal)
    predicted = predict_fidelity(compiled, device, ideal)
    assert noisy < clean
    assert noisy == pytest.approx(predicted, abs=0.05)


def test_emulation_is_reproducible_with_a_seed() -> None:
    device = load_device("ibm_manila")
    compiled = compile_for_device(ghz(3), device)
    assert emulate(compiled, device, 500, seed=9) == emulate(compiled, device, 500, seed=9)
    assert sum(emulate(compiled, device, 500, seed=9).values()) == 500


def test_prediction_falls_as_gate_errors_grow() -> None:
    device = load_device("ibm_nairobi")
    compiled = compile_for_device(ghz(5), device)
    ideal = ideal_distribution(ghz(5))
    predictions = [
        predict_fidelity(compiled, scaled(device, factor), ideal) for factor in (0.5, 1, 2, 4)
    ]
    assert predictions == sorted(predictions, reverse=True)
    assert len(set(predictions)) == 4


def test_global_depolarizing_mix_is_kind_to_broad_distributions() -> None:
    uniform = {format(i, "03b"): 1 / 8 for i in range(8)}
    assert fidelity_with_ideal(0.3, uniform, 3) == pytest.approx(1.0)
    assert fidelity_with_ideal(1.0, {"00": 0.5, "11": 0.5}, 2) == pytest.approx(1.0)
    assert fidelity_with_ideal(0.5, {"000": 1.0}, 3) == pytest.approx(0.5 + 0.5 / 8)


def test_dynamic_circuit_emulates_with_noise() -> None:
    q = [cirq.NamedQubit(f"q_{i}") for i in range(2)]
    circuit = cirq.Circuit(
        cirq.H(q[0]),
        cirq.measure(q[0], key="m"),
        cirq.X(q[1]).with_classical_controls("m"),
        cirq.measure(q[1], key="n"),
    )
    device = load_device("ionq_aria")
    counts = emulate(compile_for_device(circuit, device), device, 1000, seed=2)
    assert hellinger_fidelity(counts, ideal_distribution(circuit)) > 0.95


def test_multi_qubit_key_gets_the_readout_errors_of_its_qubits() -> None:
    q = [cirq.NamedQubit(f"q_{i}") for i in range(3)]
    circuit = cirq.Circuit(cirq.X(q[0]), cirq.X(q[2]), cirq.measure(*q, key="c"))
    device = load_device("ibm_nairobi")
    compiled = compile_for_device(circuit, device)
    counts = emulate(compiled, device, 2000, seed=4)
    assert max(counts, key=counts.get) == "101"
    assert 0.7 < counts["101"] / 2000 < 0.99


def test_runtime_model_grows_with_shots_and_device_speed() -> None:
    ibm, ion = load_device("ibm_nairobi"), load_device("ionq_aria")
    fast = compile_for_device(ghz(4), ibm)
    slow = compile_for_device(ghz(4), ion)
    assert emulated_runtime_s(fast, ibm, 2000) > emulated_runtime_s(fast, ibm, 1000)
    assert emulated_runtime_s(slow, ion, 1000) > emulated_runtime_s(fast, ibm, 1000)
