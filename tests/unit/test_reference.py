"""Every accepted dev file has the ideal distribution of an independent reference.

The reference reads the file with qiskit's own parsers (``qiskit.qasm2.loads`` with the legacy
qelib1 instructions, ``qiskit.qasm3.loads`` for OpenQASM 3) and simulates it with qiskit-aer:
exactly (state vector) when every measurement is final, else by sampling ``SHOTS`` shots. Our
side is ``qubus.circuits.simulate.ideal_distribution(parse_qasm(text))``. Bit strings follow qubus's
convention (``qubus.circuits.simulate.measurement_keys``): one character per measured bit ``c[i]``
(key ``c_i``), keys in natural order, whatever qiskit's little-endian order of the same bits.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from qubus.circuits import parse_qasm, simulate
from qubus.circuits.simulate import ideal_distribution, measurement_keys

qiskit = pytest.importorskip("qiskit")
qasm2 = pytest.importorskip("qiskit.qasm2")
qasm3 = pytest.importorskip("qiskit.qasm3")
aer = pytest.importorskip("qiskit_aer")
pytest.importorskip("qiskit_qasm3_import")

DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "qasm" / "dev"
MALFORMED = "qasmbench__vqe_uccsd_n4.qasm"
FILES = sorted(p.name for p in DEV.glob("*.qasm*") if p.name != MALFORMED) if DEV.is_dir() else []

#: Shots of the reference for circuits with mid-circuit measurement, reset or control.
SHOTS = 20_000
#: Shots of our side where ``ideal_distribution`` samples (instead of its ``SAMPLED_SHOTS``):
#: it falls back to cirq's simulator there, about 2 ms a shot even for one qubit.
OUR_SHOTS = 2_000
#: Largest difference of one probability between two exact simulations (qsim is single
#: precision; the dev set differs by at most 5e-7).
EXACT_ATOL = 2e-6
#: Standard errors of the difference of two sampled frequencies allowed for one outcome.
SIGMAS = 5.0

#: qiskit's OpenQASM 3 importer rejects ``^`` in a condition. ``if ((a ^ b) == true) { x q; }``
#: is the same as an ``x`` under ``a`` followed by an ``x`` under ``b``.
_XOR_CONDITION = re.compile(r"if \(\((\w+\[\d+\]) \^ (\w+\[\d+\])\) == true\) \{\s*([^}]*)\}")


def _qiskit_circuit(text: str) -> qiskit.QuantumCircuit:
    if re.search(r"OPENQASM\s+3|stdgates\.inc", text):
        text = _XOR_CONDITION.sub(r"if (\1) { \3} if (\2) { \3}", text)
        return qasm3.loads(text)
    return qasm2.loads(text, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)


def _bit_names(qc: qiskit.QuantumCircuit) -> dict[object, str]:
    """Our measurement key for each classical bit of a qiskit circuit (``c[1]`` is ``c_1``)."""
    names = {}
    for clbit in qc.clbits:
        register, index = qc.find_bit(clbit).registers[0]
        names[clbit] = f"{register.name}_{index}"
    return names


def _is_static(qc: qiskit.QuantumCircuit) -> bool:
    """Whether every measurement is final and nothing is reset or classically controlled."""
    unitary_part = qc.remove_final_measurements(inplace=False)
    return not any(
        inst.operation.name in ("measure", "reset") or inst.operation.name.endswith("_else")
        for inst in unitary_part.data
    )


def _exact_reference(qc: qiskit.QuantumCircuit, keys: list[str]) -> dict[str, float]:
    names = _bit_names(qc)
    qubit_of = {}
    for inst in qc.data:
        if inst.operation.name == "measure":
            qubit_of[names[inst.clbits[0]]] = qc.find_bit(inst.qubits[0]).index
    unitary_part = qc.remove_final_measurements(inplace=False)
    unitary_part.save_probabilities()
    simulator = aer.AerSimulator(method="statevector")
    compiled = qiskit.transpile(unitary_part, simulator, optimization_level=0)
    probabilities = np.asarray(simulator.run(compiled).result().data()["probabilities"])
    outcomes = np.flatnonzero(probabilities > 1e-12)
    # qiskit's index is little-endian over qubits: qubit j is bit j of the index.
    bits = [(outcomes >> qubit_of[key]) & 1 for key in keys]
    dist: dict[str, float] = defaultdict(float)
    for i, outcome in enumerate(outcomes):
        dist["".join(str(column[i]) for column in bits)] += float(probabilities[outcome])
    return dict(dist)


def _sampled_reference(qc: qiskit.QuantumCircuit, keys: list[str]) -> dict[str, float]:
    simulator = aer.AerSimulator(seed_simulator=11, shot_branching_enable=True)
    compiled = qiskit.transpile(qc, simulator, optimization_level=0)
    counts = simulator.run(compiled, shots=SHOTS).result().get_counts()
    names = _bit_names(qc)
    dist: dict[str, float] = defaultdict(float)
    for outcome, n in counts.items():
        # Registers are printed last-declared first, each with its bit 0 rightmost.
        value = {}
        for register, bits in zip(reversed(qc.cregs), outcome.split(), strict=True):
            for index, bit in enumerate(reversed(bits)):
                value[names[register[index]]] = bit
        dist["".join(value[key] for key in keys)] += n / SHOTS
    return dict(dist)


@pytest.mark.parametrize("name", FILES)
def test_ideal_distribution_matches_qiskit_aer(name, monkeypatch):
    monkeypatch.setattr(simulate, "SAMPLED_SHOTS", OUR_SHOTS)
    text = (DEV / name).read_text()
    circuit = parse_qasm(text)
    keys = [key for key, _width in measurement_keys(circuit)]
    ours = ideal_distribution(circuit)
    qc = _qiskit_circuit(text)
    static = _is_static(qc)
    reference = (_exact_reference if static else _sampled_reference)(qc, keys)
    outcomes = set(ours) | set(reference)
    differences = {bits: abs(ours.get(bits, 0.0) - reference.get(bits, 0.0)) for bits in outcomes}
    if static and circuit.are_all_measurements_terminal():
        assert max(differences.values()) <= EXACT_ATOL, name
        return
    # Sampled on at least one side: each outcome within SIGMAS standard errors (ours counted
    # as sampled even where cirq.defer_measurements makes it exact, which only adds slack).
    for bits, difference in differences.items():
        p = (ours.get(bits, 0.0) + reference.get(bits, 0.0)) / 2
        error = math.sqrt(p * (1 - p) * (1 / SHOTS + 1 / OUR_SHOTS))
        assert difference <= SIGMAS * error + 1e-9, (name, bits, difference, error)


def test_every_accepted_dev_file_is_compared():
    assert len(FILES) == 43
