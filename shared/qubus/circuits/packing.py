"""Where operations fall in time: whether an operation measures, and the moment each of a
sequence takes when packed earliest-first, as cirq packs them, without building the moments
(a circuit's depth, its compiled schedule). Cirq only: the parser uses it and simulates
nothing."""

from __future__ import annotations

from collections.abc import Sequence

import cirq

_NOT_MEASUREMENTS = (cirq.EigenGate, cirq.PhasedXZGate, cirq.ResetChannel)
"""Gates that are never measurements: most of any circuit's, decided without cirq's protocol."""


def measures(op: cirq.Operation) -> bool:
    """``cirq.is_measurement(op)``, without cirq's protocol walk for the common gates (it ran
    some fifty times a compilation and emulation of a small circuit)."""
    if isinstance(op.gate, cirq.MeasurementGate):
        return True
    if isinstance(op.gate, _NOT_MEASUREMENTS):
        return False
    return cirq.is_measurement(op)


def asap_layers(ops: Sequence[cirq.Operation]) -> list[int]:
    """The moment each operation takes when ``cirq.Circuit(ops)`` packs them (cirq's EARLIEST
    strategy): the one after the last that shares a qubit with it, or a measurement key it
    writes or reads (control keys alone commute). As cirq places them, without building the
    moments: a quarter to half the time.
    """
    qubit_at: dict[cirq.Qid, int] = {}
    written_at: dict[cirq.MeasurementKey, int] = {}
    read_at: dict[cirq.MeasurementKey, int] = {}
    layers = []
    for op in ops:
        writes = cirq.measurement_key_objs(op) if measures(op) else ()
        reads = _control_keys(op)
        index = 1 + max((qubit_at.get(q, -1) for q in op.qubits), default=-1)
        for key in writes:
            index = max(index, written_at.get(key, -1) + 1, read_at.get(key, -1) + 1)
        for key in reads:
            index = max(index, written_at.get(key, -1) + 1)
        for q in op.qubits:
            qubit_at[q] = index
        for key in writes:
            written_at[key] = index
        for key in reads:
            read_at[key] = max(index, read_at.get(key, -1))
        layers.append(index)
    return layers


def asap_moments(ops: Sequence[cirq.Operation]) -> list[list[int]]:
    """The moments ``cirq.Circuit(ops)`` builds (``asap_layers``), each as the positions of its
    operations in ``ops``."""
    moments: list[list[int]] = []
    for position, index in enumerate(asap_layers(ops)):
        while len(moments) <= index:
            moments.append([])
        moments[index].append(position)
    return moments


def moment_of(ops: Sequence[cirq.Operation], positions: Sequence[int]) -> cirq.Moment:
    """The moment of ``ops[i]`` for ``i`` in ``positions`` (which share no qubit), made without
    cirq flattening them again."""
    return cirq.Moment(*(ops[i] for i in positions), _flatten_contents=False)


def packed(ops: Sequence[cirq.Operation]) -> cirq.Circuit:
    """``cirq.Circuit(ops)``, built from ``asap_moments`` (a quarter of cirq's time on a small
    circuit)."""
    return cirq.Circuit.from_moments(*(moment_of(ops, m) for m in asap_moments(ops)))


def packed_depth(ops: Sequence[cirq.Operation]) -> int:
    """``len(cirq.Circuit(ops))``: the depth of the operations packed earliest-first."""
    return 1 + max(asap_layers(ops), default=-1)


def _control_keys(op: cirq.Operation) -> frozenset[cirq.MeasurementKey] | tuple[()]:
    """``cirq.control_keys(op)``, without cirq's protocol for a plain gate operation (which
    has none: only wrappers such as classically controlled operations carry them)."""
    return () if type(op) is cirq.GateOperation else cirq.control_keys(op)
