"""Tests of the public circuit API: loading, JSON on the wire, features and fingerprint."""

from __future__ import annotations

import json

import cirq
import pytest
import sympy

from qubus.circuits import (
    Features,
    circuit_features,
    circuit_from_json,
    circuit_to_json,
    circuit_to_wire,
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
    # Given the circuit's own wire form, the fingerprint is the same whether the moments are
    # already packed (the text is reused) or not (the packed circuit is encoded).
    for circuit in (packed, spread):
        assert circuit_features(circuit, circuit_to_wire(circuit)).fingerprint == fingerprint


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


def _read_by_cirq_and_qubus(dev_circuits: list[cirq.Circuit]) -> list[cirq.Circuit]:
    """Circuits of every kind the reader makes its own way or leaves to cirq: the dev set,
    classical control, shared sub-circuits (``VAL``/``REF``), tags, other qubit types, a
    gate outside ``_QUBIT_GATES``."""
    circuits = list(dev_circuits)
    a, b = cirq.LineQubit.range(2)
    shared = cirq.CircuitOperation(cirq.FrozenCircuit(cirq.H(a), cirq.CZ(a, b)), repetitions=3)
    circuits += [
        load_circuit(KNOWN, "qasm2"),
        cirq.Circuit(shared, shared, cirq.X(a).with_tags("t"), cirq.measure(a, b, key="m")),
        cirq.Circuit(
            [cirq.Moment(cirq.CX(*cirq.GridQubit.rect(1, 2))), cirq.Moment(), cirq.Moment()],
            tags=("tagged",),
        ),
        cirq.Circuit(cirq.MatrixGate(cirq.unitary(cirq.H)).on(a), cirq.XX(a, b) ** 0.3),
    ]
    return circuits


def test_the_reader_makes_what_cirq_reads(dev_circuits):
    circuits = _read_by_cirq_and_qubus(dev_circuits)
    assert len(circuits) > 40
    for circuit in circuits:
        text = circuit_to_json(circuit)
        read = circuit_from_json(text)
        assert read == cirq.read_json(json_text=text) == circuit
        assert circuit_to_json(read) == text  # the same types to the last number


def test_a_flat_circuit_is_made_without_the_walk_as_the_walk_makes_it(dev_circuits):
    from qubus.circuits.bounds import walk_cirq_json
    from qubus.circuits.ir import CirqJsonReader

    flat = 0
    for circuit in _read_by_cirq_and_qubus(dev_circuits):
        text = circuit_to_json(circuit)
        made = CirqJsonReader().flat_circuit(json.loads(text))
        walked = walk_cirq_json(json.loads(text), CirqJsonReader())[0]
        if made is None:
            continue
        flat += 1
        assert type(made) is type(walked) and made == walked
        assert circuit_to_json(made) == text
    assert flat >= 40  # the dev set but classical control; not tags, sub-circuits
    q = cirq.LineQubit.range(2)
    others = [
        cirq.Circuit(cirq.X(q[0]).with_tags("t")),
        cirq.Circuit([cirq.Moment(cirq.X(q[0])).with_tags("t")]),
        cirq.Circuit(cirq.X(q[0]).with_classical_controls("m")),
        cirq.Circuit(cirq.CircuitOperation(cirq.FrozenCircuit(cirq.X(q[0])), repetitions=2)),
        cirq.FrozenCircuit(cirq.X(q[0])),
    ]
    for other in others:
        assert CirqJsonReader().flat_circuit(json.loads(circuit_to_json(other))) is None
        assert circuit_from_json(circuit_to_json(other)) == other.unfreeze()


def test_a_flat_circuit_too_large_is_refused(monkeypatch):
    from qubus.circuits import bounds

    monkeypatch.setattr(bounds, "MAX_OPERATIONS", 5)
    q = cirq.LineQubit.range(2)
    text = circuit_to_json(cirq.Circuit([cirq.H(q[0]), cirq.CNOT(*q)] * 3))
    with pytest.raises(InvalidPayload) as refused:
        circuit_from_json(text)
    assert refused.value.code == "circuit.too_large"


def test_the_reader_hands_out_a_plain_value_read_before_and_keeps_every_number_as_written():
    q = cirq.LineQubit.range(2)
    first = circuit_from_json(circuit_to_json(cirq.Circuit(cirq.H(q[0]), cirq.CNOT(*q))))
    second = circuit_from_json(circuit_to_json(cirq.Circuit(cirq.H(q[0]), cirq.CNOT(*q))))
    for a, b in zip(first.all_operations(), second.all_operations(), strict=True):
        assert a is not b and a.gate is b.gate and a.qubits[0] is b.qubits[0]
    # Equal values written otherwise are other objects: each circuit writes back its own text.
    texts = [
        circuit_to_json(cirq.Circuit(cirq.ZPowGate(exponent=e)(q[0]))) for e in (0.0, -0.0, 1, 1.0)
    ]
    assert len(set(texts)) == 4
    for text in texts + texts:
        assert circuit_to_json(circuit_from_json(text)) == text


def test_the_writer_writes_what_cirq_writes(dev_circuits):
    a, b = cirq.LineQubit.range(2)
    theta = sympy.Symbol("theta")
    circuits = [
        *_read_by_cirq_and_qubus(dev_circuits),
        cirq.Circuit(cirq.rz(theta)(a), cirq.CZ(a, b) ** (theta / 2), cirq.X(a) ** 0.25),
    ]
    for circuit in circuits:
        assert circuit_to_json(circuit) == cirq.to_json(circuit, indent=None)


def _operation_json(gate: cirq.Gate, *qubits: cirq.Qid) -> str:
    op = {"cirq_type": "GateOperation", "gate": json.loads(cirq.to_json(gate))}
    op["qubits"] = [json.loads(cirq.to_json(q)) for q in qubits]
    return json.dumps(
        {"cirq_type": "Circuit", "moments": [{"cirq_type": "Moment", "operations": [op]}]}
    )


@pytest.mark.parametrize(
    "text",
    [
        _operation_json(cirq.CNOT, cirq.NamedQubit("a")),  # too few qubits
        _operation_json(cirq.CZ, cirq.NamedQubit("a"), cirq.NamedQubit("a")),  # one twice
        _operation_json(cirq.MeasurementGate(1, key="m", qid_shape=(3,)), cirq.LineQubit(0)),
        _operation_json(cirq.X, cirq.LineQid(0, dimension=3)),  # a qutrit
        circuit_to_json(cirq.Circuit(cirq.H(cirq.LineQubit(0)))).replace(
            '"operations": [',
            '"operations": ['
            + json.dumps(
                json.loads(_operation_json(cirq.X, cirq.LineQubit(0)))["moments"][0]["operations"][
                    0
                ]
            )
            + ", ",
        ),  # two operations on one qubit in one moment
    ],
)
def test_operations_cirq_refuses_are_refused(text):
    with pytest.raises(ValueError):
        cirq.read_json(json_text=text)
    with pytest.raises(InvalidPayload) as caught:
        circuit_from_json(text)
    assert caught.value.code == "cirq_json.invalid"


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
