"""Tests of the public circuit API: loading, JSON on the wire, features and fingerprint."""

from __future__ import annotations

import cirq
import pytest

from qubus.circuits import (
    Features,
    circuit_features,
    circuit_from_json,
    circuit_to_json,
    load_circuit,
)
from qubus.errors import InvalidPayload, QasmError

KNOWN = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[4];
creg c[3];
h q[0];
cx q[0], q[1];
cx q[0], q[1];
ccx q[0], q[1], q[2];
rz(pi/4) q[2];
measure q[0] -> c[0];
if(c==1) x q[1];
measure q[1] -> c[1];
measure q[2] -> c[2];
"""


def test_features_of_known_circuit():
    features = circuit_features(load_circuit(KNOWN, "qasm2"))
    assert features.qubits == 3  # q[3] is declared but never used
    assert features.clbits == 3
    assert features.depth == 7  # h, cx, cx, ccx, measure q0, x (after it), measure q1
    assert features.gate_counts == {"ccx": 1, "cnot": 2, "h": 1, "measure": 3, "rz": 1, "x": 1}
    assert features.two_qubit_gates == 2
    assert features.multi_qubit_gates == 1
    assert features.measured_qubits == ["q_0", "q_1", "q_2"]
    assert features.classical_control is True
    assert features.interaction_graph == [("q_0", "q_1", 3), ("q_0", "q_2", 1), ("q_1", "q_2", 1)]
    assert len(features.fingerprint) == 64


def test_features_model_is_frozen_and_serialisable():
    features = circuit_features(load_circuit(KNOWN, "qasm3"))
    with pytest.raises(ValueError):
        features.depth = 1  # type: ignore[misc]
    assert Features.model_validate_json(features.model_dump_json()) == features


def test_fingerprint_depends_on_operations_not_on_moment_layout():
    a, b = cirq.LineQubit.range(2)
    packed = cirq.Circuit(cirq.H(a), cirq.H(b))
    spread = cirq.Circuit([cirq.Moment(cirq.H(a)), cirq.Moment(cirq.H(b))])
    changed = cirq.Circuit(cirq.H(a), cirq.X(b))
    fingerprint = circuit_features(packed).fingerprint
    assert circuit_features(spread).fingerprint == fingerprint
    assert circuit_features(changed).fingerprint != fingerprint
    # Given the circuit's own Cirq JSON, the fingerprint is the same whether the moments are
    # already packed (the JSON is reused) or not (the packed circuit is encoded).
    for circuit in (packed, spread):
        assert circuit_features(circuit, circuit_to_json(circuit)).fingerprint == fingerprint


def test_same_qasm_text_gives_same_fingerprint():
    assert (
        circuit_features(load_circuit(KNOWN, "qasm2")).fingerprint
        == circuit_features(load_circuit(KNOWN, "qasm2")).fingerprint
    )


def test_cirq_json_round_trip_through_load_circuit():
    circuit = load_circuit(KNOWN, "qasm2")
    text = circuit_to_json(circuit)
    assert "\n" not in text
    assert circuit_from_json(text) == circuit
    assert load_circuit(text, "cirq-json") == circuit


def test_frozen_circuit_json_is_accepted():
    circuit = load_circuit(KNOWN, "qasm2")
    assert circuit_from_json(cirq.to_json(circuit.freeze())) == circuit


@pytest.mark.parametrize(
    "text",
    ["not json", "{}", '{"cirq_type": "NoSuchThing"}', cirq.to_json(cirq.LineQubit(0))],
)
def test_bad_cirq_json_is_rejected_with_stable_code(text):
    with pytest.raises(InvalidPayload) as caught:
        load_circuit(text, "cirq-json")
    assert caught.value.code == "cirq_json.invalid"


def test_unknown_format_is_rejected():
    with pytest.raises(InvalidPayload) as caught:
        load_circuit(KNOWN, "quil")
    assert caught.value.code == "payload.format"


def test_qasm_format_errors_keep_their_position():
    with pytest.raises(QasmError) as caught:
        load_circuit("OPENQASM 2.0;\nqreg q[1];\nfoo q[0];", "qasm3")
    assert (caught.value.line, caught.value.column) == (3, 1)
