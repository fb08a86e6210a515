"""Where operations fall in time: ``measures`` and earliest-first packing (the moments too),
against cirq."""

from __future__ import annotations

import cirq

from qubus.circuits.packing import asap_layers, measures, packed, packed_depth

Q = [cirq.NamedQubit(f"q_{i}") for i in range(4)]


def test_measures_agrees_with_cirq_on_every_kind_of_operation() -> None:
    ops = [
        cirq.H(Q[0]),
        cirq.rz(0.3)(Q[0]),
        cirq.CNOT(Q[0], Q[1]),
        cirq.PhasedXZGate(x_exponent=0.5, z_exponent=0.1, axis_phase_exponent=0)(Q[0]),
        cirq.ResetChannel()(Q[0]),
        cirq.MatrixGate(cirq.unitary(cirq.X))(Q[0]),
        cirq.measure(Q[0], key="m"),
        cirq.measure_single_paulistring(cirq.X(Q[1]), key="p"),
        cirq.X(Q[1]).with_classical_controls("m"),
    ]
    assert [measures(op) for op in ops] == [cirq.is_measurement(op) for op in ops]
    assert [measures(op) for op in ops] == [False] * 6 + [True, True, False]


def _packed_by_cirq(ops: list[cirq.Operation]) -> list[int]:
    """The moment of each operation in ``cirq.Circuit(ops)`` (each tagged with its position,
    which changes nothing of where it goes, to be told from its equals)."""
    where = {}
    for index, moment in enumerate(cirq.Circuit(op.with_tags(i) for i, op in enumerate(ops))):
        for op in moment:
            where[op.tags[-1]] = index
    return [where[i] for i in range(len(ops))]


def test_operations_fall_where_cirq_packs_them(dev_circuits) -> None:
    """The dev set, and keys written, read, rewritten and read inside a sub-circuit."""
    circuits = list(dev_circuits)
    inner = cirq.FrozenCircuit(cirq.X(Q[3]).with_classical_controls("a"))
    circuits.append(
        cirq.Circuit(
            cirq.measure(Q[0], key="a"),
            cirq.H(Q[1]),
            cirq.X(Q[2]).with_classical_controls("a"),
            cirq.Z(Q[1]).with_classical_controls("a"),
            cirq.H(Q[2]),
            cirq.measure(Q[1], key="a"),  # after both reads of a
            cirq.CircuitOperation(inner),  # reads a: after its second measurement
            cirq.measure(Q[2], key="b").with_tags("t"),
            cirq.CNOT(Q[0], Q[3]),
        )
    )
    for circuit in circuits:
        ops = list(circuit.all_operations())
        assert asap_layers(ops) == _packed_by_cirq(ops)
        assert packed_depth(ops) == len(cirq.Circuit(ops))
        assert packed(ops) == cirq.Circuit(ops)
    assert packed_depth([]) == 0 == len(cirq.Circuit())
