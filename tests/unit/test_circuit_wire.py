"""Tests of the circuit's wire form between the stages (``qubus.circuits.ir.circuit_to_wire``):
compact where the circuit allows it, Cirq JSON otherwise, read back exactly, and forged texts
refused."""

from __future__ import annotations

import hashlib
import json

import cirq
import pytest
import sympy

from qubus.circuits import (
    circuit_features,
    circuit_from_wire,
    circuit_to_json,
    circuit_to_wire,
    load_circuit,
)
from qubus.errors import InvalidPayload

FASTPATH = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[4];
creg c[4];
h q[0];
cx q[0], q[1];
cx q[1], q[2];
cx q[2], q[3];
rz(0.123456789012) q[0];
h q[0];
measure q -> c;
"""


def _read_back(circuit: cirq.Circuit) -> str:
    """The circuit's wire form, after checking that it reads back as the circuit, with every
    gate and qubit of the same type and number (its Cirq JSON unchanged)."""
    wire = circuit_to_wire(circuit)
    read = circuit_from_wire(wire)
    assert read == circuit
    assert circuit_to_json(read) == circuit_to_json(circuit)
    return wire


def test_the_dev_set_travels_compact_but_classical_control_and_reads_back_exactly(dev_circuits):
    compact = 0
    for circuit in dev_circuits:
        wire = _read_back(circuit)
        controlled = any(cirq.control_keys(op) for op in circuit.all_operations())
        assert wire.startswith("[") is not controlled
        compact += not controlled
        if not controlled:
            assert len(wire) < len(circuit_to_json(circuit)) / 2
    assert compact >= 40


def test_a_fastpath_circuit_is_under_two_fifths_of_its_cirq_json():
    circuit = load_circuit(FASTPATH, "qasm2")
    wire = _read_back(circuit)
    assert len(wire) < 0.4 * len(circuit_to_json(circuit))
    head, *lines = wire.split("\n")
    assert json.loads(head)[:3] == [1, 4, 10]
    assert len(lines) == 4 + 7  # 4 qubits; h, cx, rz and a measurement for each of 4 bits


def test_pauli_gates_keep_their_kind_of_operation():
    a, b = cirq.LineQubit.range(2)
    circuit = cirq.Circuit(cirq.X(a), cirq.Z(b), cirq.Y(a), cirq.X(a) ** 0.5, cirq.CZ(a, b))
    assert type(next(circuit.all_operations())) is cirq.SingleQubitPauliStringGateOperation
    assert _read_back(circuit).startswith("[")
    # A Pauli gate in a plain GateOperation would read back as the other kind: Cirq JSON.
    assert _read_back(cirq.Circuit(cirq.GateOperation(cirq.X, [a]))).startswith("{")


@pytest.mark.parametrize(
    "circuit",
    [
        cirq.Circuit(cirq.X(cirq.LineQubit(0)).with_tags("t")),
        cirq.Circuit([cirq.Moment(cirq.H(cirq.LineQubit(0))).with_tags("t")]),
        cirq.Circuit(
            cirq.measure(cirq.LineQubit(0), key="m"),
            cirq.X(cirq.LineQubit(1)).with_classical_controls("m"),
        ),
        cirq.Circuit(cirq.CircuitOperation(cirq.FrozenCircuit(cirq.H(cirq.LineQubit(0))))),
        cirq.Circuit(cirq.rz(sympy.Symbol("theta"))(cirq.LineQubit(0))),
        cirq.Circuit(cirq.MatrixGate(cirq.unitary(cirq.H)).on(cirq.LineQubit(0))),
        cirq.Circuit(cirq.IdentityGate(qid_shape=(3,)).on(cirq.LineQid(0, dimension=3))),
    ],
    ids=[
        "tagged op",
        "tagged moment",
        "classical control",
        "sub-circuit",
        "symbol",
        "matrix",
        "qutrit",
    ],
)
def test_what_has_no_compact_form_travels_as_cirq_json(circuit):
    wire = circuit_to_wire(circuit)
    assert wire == circuit_to_json(circuit)
    assert circuit_from_wire(wire) == circuit


def test_a_frozen_circuit_travels_as_cirq_json_and_reads_back_unfrozen():
    frozen = cirq.FrozenCircuit(cirq.H(cirq.LineQubit(0)))
    assert circuit_to_wire(frozen) == circuit_to_json(frozen)
    assert circuit_from_wire(circuit_to_wire(frozen)) == frozen.unfreeze()


def test_the_compact_form_is_canonical_and_keeps_every_number_as_written():
    a, b = cirq.NamedQubit("a"), cirq.GridQubit(0, 1)
    h = cirq.H
    shared = cirq.Circuit(h(a), h(b), cirq.CNOT(a, b))
    apart = cirq.Circuit(cirq.HPowGate()(a), cirq.HPowGate()(b), cirq.CNOT(a, b))
    assert next(shared.all_operations()).gate is not next(apart.all_operations()).gate
    assert circuit_to_wire(shared) == circuit_to_wire(apart)
    assert _read_back(shared).count("HPowGate") == 1
    # Equal gates written otherwise are gates of their own: each reads back as written.
    zeros = cirq.Circuit(cirq.rz(0.0)(a), cirq.rz(-0.0)(b), cirq.ZPowGate(exponent=1)(a))
    assert len(_read_back(zeros).split("\n")) == 1 + 2 + 3


def test_the_fingerprint_hashes_the_packed_circuits_wire_form():
    a, b = cirq.LineQubit.range(2)
    packed = cirq.Circuit(cirq.H(a), cirq.H(b))
    spread = cirq.Circuit([cirq.Moment(cirq.H(a)), cirq.Moment(cirq.H(b))])
    expected = hashlib.sha256(circuit_to_wire(packed).encode()).hexdigest()
    assert circuit_features(spread).fingerprint == expected


def test_a_submission_in_the_compact_form_is_not_cirq_json():
    with pytest.raises(InvalidPayload) as refused:
        load_circuit(circuit_to_wire(load_circuit(FASTPATH, "qasm2")), "cirq-json")
    assert refused.value.code == "cirq_json.invalid"


def _forged(head: list, *lines: object) -> str:
    return "\n".join([json.dumps(head), *(json.dumps(json.loads(cirq.to_json(v))) for v in lines)])


_A, _B = cirq.LineQubit.range(2)


@pytest.mark.parametrize(
    "text",
    [
        "[1, 1",  # not JSON
        "[1, 1, 1]",  # too few parts
        _forged([2, 1, 1, [[[0, 0]]]], _A, cirq.H),  # an unknown version
        _forged([1, 1, 2, [[[0, 0]]]], _A, cirq.H),  # more operations declared than given
        _forged([1, 1, 1, [[[1, 0]]]], _A, cirq.H),  # no such gate
        _forged([1, 1, 1, [[[0, 1]]]], _A, cirq.H),  # no such qubit
        _forged([1, 1, 1, [[[0, -1]]]], _A, cirq.H),  # a negative index
        _forged([1, 1, 1, [[[0, "0"]]]], _A, cirq.H),  # an index that is not a number
        _forged([1, 1, 1, [[0]]], _A, cirq.H),  # an operation that is not a list
        _forged([1, 1, 1, [[[0, 0]]]], cirq.H, cirq.H),  # a gate for a qubit
        _forged([1, 1, 1, [[[0, 0]]]], _A, _B),  # a qubit for a gate
        _forged([1, 1, 1, [[[0, 0]]]], cirq.LineQid(0, 3), cirq.H),  # a qutrit
        _forged([1, 1, 1, [[[0, 0]]]], _A, cirq.CNOT),  # too few qubits
        _forged([1, 2, 1, [[[0, 0, 0]]]], _A, _B, cirq.CNOT),  # one qubit twice
        _forged([1, 2, 2, [[[0, 0], [0, 0]]]], _A, _B, cirq.H),  # two on one qubit at once
        _forged([1, 1, 1, [[[0, 0]]]], _A, cirq.MeasurementGate(1, "m", qid_shape=(3,))),
        _forged([1, 1, 1, [[[0, 0]]]], _A, cirq.MatrixGate(cirq.unitary(cirq.H))),  # not plain
        "[1,1,1,[[[0,0]]]]\n"
        + '{"cirq_type": "NoSuchQubit", "name": "a"}\n'
        + cirq.to_json(cirq.H),
    ],
)
def test_a_forged_compact_form_is_refused(text):
    with pytest.raises(InvalidPayload) as refused:
        circuit_from_wire(text)
    assert refused.value.code == "cirq_json.invalid"


def test_a_compact_form_of_too_many_operations_is_refused_before_it_is_read(monkeypatch):
    from qubus.circuits import bounds

    monkeypatch.setattr(bounds, "MAX_OPERATIONS", 5)
    wire = circuit_to_wire(cirq.Circuit([cirq.H(_A), cirq.CNOT(_A, _B)] * 3))
    with pytest.raises(InvalidPayload) as refused:
        circuit_from_wire(wire)
    assert refused.value.code == "circuit.too_large"


def test_the_operations_are_read_from_the_head_without_decoding_it():
    from qubus.bus.messages import wire_operations

    circuit = load_circuit(FASTPATH, "qasm2")
    assert wire_operations(circuit_to_wire(circuit)) == 10
    assert wire_operations(circuit_to_json(circuit)) is None
    for text in ("[1,4", "[1,4,x,[]]", "[", ""):
        assert wire_operations(text) is None
