"""Partitioning circuits across QPUs: ebits, Kernighan–Lin against greedy, the lower bound."""

from __future__ import annotations

import math
from pathlib import Path

import cirq
import pytest

from qubus.circuits import parse_qasm
from qubus.errors import QubusError
from qubus.network.partition import (
    control_qubit,
    ebit_lower_bound,
    ebits_of,
    partition_circuit,
    split_form,
)

DEV = Path(__file__).parents[3] / "shared" / "data" / "qasm" / "dev"
CIRCUITS = [
    "qasmbench__ising_n10.qasm",
    "qasmbench__seca_n11.qasm",
    "qasmbench__hhl_n7.qasm",
    "mqtbench__vqe_su2_10_indep.qasm",
    "qasmbench__qec9xz_n17.qasm",
]
a, b, c, d = cirq.LineQubit.range(4)


def test_block_diagonal_gates_have_a_control_and_others_not() -> None:
    assert control_qubit(cirq.CNOT(b, a)) == b
    assert control_qubit(cirq.CZPowGate(exponent=0.3)(a, b)) == a
    assert control_qubit(cirq.ZZPowGate(exponent=0.2)(a, b)) == a
    assert control_qubit(cirq.ControlledGate(cirq.H).on(c, d)) == c
    assert control_qubit(cirq.CNOT(a, b).controlled_by(c).gate.on(b, c, a)) is None
    # Controlled on the second qubit only: X⊗|0⟩⟨0| + Y⊗|1⟩⟨1| is block-diagonal in b.
    gate = cirq.MatrixGate(
        cirq.kron(cirq.unitary(cirq.X), [[1, 0], [0, 0]])
        + cirq.kron(cirq.unitary(cirq.Y), [[0, 0], [0, 1]])
    )
    assert control_qubit(gate(a, b)) == b
    assert control_qubit(cirq.SWAP(a, b)) is None
    assert control_qubit(cirq.ISWAP(a, b)) is None


def test_ebits_count_remote_gates_of_the_split_form() -> None:
    circuit = cirq.Circuit(
        cirq.CZ(a, b),
        cirq.CZ(a, b),
        cirq.CNOT(b, c),
        cirq.ZZPowGate(exponent=0.25)(c, d),
        cirq.SWAP(a, d),
        cirq.measure(a, b, c, d, key="m"),
    )
    assert ebits_of(circuit, [(a, b), (c, d)]) == 1 + 3  # CNOT(b, c); the SWAP is 3 CNOTs
    assert ebits_of(circuit, [(a, d), (b, c)]) == 2 + 1  # the CZs and the rzz
    assert ebits_of(circuit, [(a, b, c, d), ()]) == 0
    toffoli = cirq.Circuit(cirq.CCX(a, b, c))
    cnots = sum(1 for op in split_form(toffoli).all_operations() if len(op.qubits) == 2)
    assert cnots >= 6  # Cirq's decomposition of a Toffoli, every two-qubit gate remote
    assert ebits_of(toffoli, [(a,), (b,), (c,)]) == cnots


def test_split_form_keeps_classical_controls_and_block_diagonal_gates() -> None:
    circuit = cirq.Circuit(
        cirq.measure(a, key="m"),
        cirq.SWAP(b, c).with_classical_controls("m"),
        cirq.CZPowGate(exponent=0.5)(b, c),
    )
    ops = list(split_form(circuit).all_operations())
    assert ops[-1] == cirq.CZPowGate(exponent=0.5)(b, c)
    swap_parts = ops[1:-1]
    assert swap_parts and all(
        cirq.control_keys(op) == {cirq.MeasurementKey("m")} for op in swap_parts
    )


def test_chain_is_cut_once_between_halves() -> None:
    qubits = cirq.LineQubit.range(6)
    chain = cirq.Circuit(cirq.CNOT(x, y) for x, y in zip(qubits, qubits[1:], strict=False))
    part = partition_circuit(chain, [3, 3])
    assert part.ebits == part.lower_bound == 1
    assert sorted(map(len, part.parts)) == [3, 3]


@pytest.mark.parametrize("name", CIRCUITS)
@pytest.mark.parametrize("k", [2, 3])
def test_kl_is_at_most_greedy_and_bound_at_most_both(name: str, k: int) -> None:
    circuit = parse_qasm((DEV / name).read_text())
    qubits = sorted(circuit.all_qubits())
    capacities = [math.ceil(len(qubits) / k)] * k
    greedy = partition_circuit(circuit, capacities, method="greedy", bound_time_s=0.5)
    kl = partition_circuit(circuit, capacities, bound_time_s=0.5)
    for part in (greedy, kl):
        assert sorted(q for p in part.parts for q in p) == qubits
        assert all(len(p) <= cap for p, cap in zip(part.parts, capacities, strict=True))
        assert part.ebits == ebits_of(circuit, part.parts)
        assert part.lower_bound <= part.ebits
    assert kl.ebits <= greedy.ebits
    assert (kl.method, greedy.method) == ("kl", "greedy")


def test_kernighan_lin_improves_on_greedy_where_greedy_is_poor() -> None:
    circuit = parse_qasm((DEV / "qasmbench__ising_n10.qasm").read_text())
    greedy = partition_circuit(circuit, [5, 5], method="greedy")
    kl = partition_circuit(circuit, [5, 5])
    assert kl.ebits < greedy.ebits
    assert kl.ebits == kl.lower_bound == 10  # an Ising chain split in the middle and at the ends


def test_bound_is_exact_on_small_circuits() -> None:
    circuit = parse_qasm((DEV / "qasmbench__hhl_n7.qasm").read_text())
    bound = ebit_lower_bound(circuit, [4, 4])
    assert bound.exact
    assert bound.value == partition_circuit(circuit, [4, 4]).ebits


def test_qubits_beyond_capacity_are_infeasible() -> None:
    circuit = cirq.Circuit(cirq.CNOT(a, b), cirq.CNOT(c, d))
    with pytest.raises(QubusError) as error:
        partition_circuit(circuit, [2, 1])
    assert error.value.code == "split.infeasible"
    with pytest.raises(ValueError):
        partition_circuit(circuit, [2, 2], method="spectral")


def test_empty_parts_are_allowed_when_one_qpu_holds_everything() -> None:
    circuit = cirq.Circuit(cirq.CNOT(a, b), cirq.CNOT(b, c))
    part = partition_circuit(circuit, [3, 3])
    assert part.ebits == part.lower_bound == 0
    assert sorted(map(len, part.parts)) == [0, 3]
