"""Ideal simulation and the bit-string convention."""

from __future__ import annotations

import math

import cirq
import numpy as np
import pytest

from qubus.circuits.simulate import (
    PACKED_WIDTH,
    counts_from_bits,
    ideal_distribution,
    measurement_keys,
    resets_as_swaps,
    sample_counts,
    terminal_only,
    unique_keys,
    without_fresh_resets,
)
from qubus.devices.fidelity import hellinger_fidelity
from qubus.errors import SimulationError

Q = [cirq.NamedQubit(f"q_{i}") for i in range(4)]
Q_CIRCUIT = cirq.Circuit(cirq.H(Q[0]), cirq.measure(Q[0], key="m"))


def test_keys_sort_naturally_and_define_the_bit_order() -> None:
    circuit = cirq.Circuit(
        cirq.X(Q[0]),
        cirq.measure(Q[0], key="c_10"),
        cirq.measure(Q[1], key="c_2"),
        cirq.measure(Q[2], Q[3], key="b"),
    )
    assert measurement_keys(circuit) == [("b", 2), ("c_2", 1), ("c_10", 1)]
    assert ideal_distribution(circuit) == {"0001": 1.0}


def test_multi_qubit_key_keeps_its_qubit_order_and_invert_mask() -> None:
    circuit = cirq.Circuit(
        cirq.X(Q[1]), cirq.measure(Q[1], Q[0], Q[2], key="c", invert_mask=(False, False, True))
    )
    assert ideal_distribution(circuit) == {"101": 1.0}


def test_terminal_circuit_is_marginalised_exactly() -> None:
    circuit = cirq.Circuit(
        cirq.H(Q[0]), cirq.CNOT(Q[0], Q[1]), cirq.H(Q[2]), cirq.measure(Q[1], key="c_0")
    )
    assert ideal_distribution(circuit) == pytest.approx({"0": 0.5, "1": 0.5})


def test_terminal_only_as_cirq_judges_terminal_measurements() -> None:
    bell = [cirq.H(Q[0]), cirq.CNOT(Q[0], Q[1])]
    terminal = cirq.Circuit(*bell, cirq.measure(Q[0], key="a"), cirq.measure(Q[1], key="b"))
    assert terminal_only(terminal) and terminal.are_all_measurements_terminal()
    mid = cirq.Circuit(cirq.measure(Q[0], key="a"), *bell, cirq.measure(Q[1], key="b"))
    assert not terminal_only(mid) and not mid.are_all_measurements_terminal()
    # a qubit measured while another is still worked on is terminal all the same
    early = cirq.Circuit(cirq.measure(Q[2], key="c"), *bell, cirq.measure(Q[1], key="b"))
    assert terminal_only(early) and early.are_all_measurements_terminal()
    twice = cirq.Circuit(*bell, cirq.measure(Q[0], key="a"), cirq.measure(Q[1], key="a"))
    assert not terminal_only(twice)
    reset = cirq.Circuit(cirq.ResetChannel()(Q[2]), *bell, cirq.measure(Q[0], key="a"))
    assert not terminal_only(reset) and terminal_only(reset, resets=True)
    controlled = cirq.Circuit(*bell, cirq.X(Q[2]).with_classical_controls("z"))
    assert not terminal_only(controlled, resets=True)


def test_negligible_outcomes_are_dropped() -> None:
    circuit = cirq.Circuit(cirq.ry(1e-7).on(Q[0]), cirq.measure(Q[0], key="c_0"))
    assert ideal_distribution(circuit) == pytest.approx({"0": 1.0})


def test_classical_control_is_simulated_exactly_by_deferring() -> None:
    circuit = cirq.Circuit(
        cirq.H(Q[0]),
        cirq.measure(Q[0], key="m"),
        cirq.X(Q[1]).with_classical_controls("m"),
        cirq.measure(Q[1], key="n"),
    )
    assert ideal_distribution(circuit) == pytest.approx({"00": 0.5, "11": 0.5})


def test_mid_circuit_reset_is_exact() -> None:
    circuit = cirq.Circuit(
        cirq.H(Q[0]),
        cirq.measure(Q[0], key="a"),
        cirq.reset(Q[0]),
        cirq.X(Q[0]),
        cirq.measure(Q[0], key="b"),
    )
    dist = ideal_distribution(circuit)
    assert set(dist) == {"01", "11"}
    assert dist["01"] == pytest.approx(0.5, abs=1e-9)


def test_resets_of_fresh_qubits_leave_the_distribution_exact() -> None:
    # Exported files start with `reset q;`: the distribution stays exact (not sampled).
    circuit = cirq.Circuit(
        cirq.reset(Q[0]),
        cirq.reset(Q[1]),
        cirq.ry(0.3).on(Q[0]),
        cirq.CNOT(Q[0], Q[1]),
        cirq.measure(Q[0], Q[1], key="c"),
    )
    p1 = (1 - math.cos(0.3)) / 2
    assert ideal_distribution(circuit) == pytest.approx({"00": 1 - p1, "11": p1}, abs=1e-6)
    # A reset after the qubit was used is kept: this one makes q_0 read 0.
    used = cirq.Circuit(cirq.X(Q[0]), cirq.reset(Q[0]), cirq.measure(Q[0], key="c"))
    assert without_fresh_resets(used) is used
    assert ideal_distribution(used) == {"0": 1.0}


def test_repeated_keys_resets_and_feedback_are_simulated_exactly() -> None:
    # m is measured twice (the last counts), the first m steers an X on q_1 and q_0 is reset
    # in between: exact (not sampled) through unique keys, SWAP resets and deferral.
    circuit = cirq.Circuit(
        cirq.H(Q[0]),
        cirq.measure(Q[0], key="m"),
        cirq.X(Q[1]).with_classical_controls("m"),
        cirq.reset(Q[0]),
        cirq.ry(0.7).on(Q[0]),
        cirq.measure(Q[0], key="m"),
        cirq.measure(Q[1], key="k"),
    )
    one = math.sin(0.35) ** 2  # P(m = 1) of the second measurement
    expected = {"00": 0.5 * (1 - one), "01": 0.5 * one, "10": 0.5 * (1 - one), "11": 0.5 * one}
    assert ideal_distribution(circuit) == pytest.approx(expected, abs=1e-6)
    renamed = unique_keys(circuit)
    assert [key for key, _ in measurement_keys(renamed)] == ["k", "m", "m__earlier_1"]
    assert resets_as_swaps(renamed) is not renamed and resets_as_swaps(Q_CIRCUIT) is Q_CIRCUIT


def test_circuit_without_measurements_has_the_empty_outcome() -> None:
    assert ideal_distribution(cirq.Circuit(cirq.H(Q[0]))) == {"": 1.0}


def test_too_many_qubits_is_an_expected_error() -> None:
    circuit = cirq.Circuit(cirq.H.on_each(*Q), cirq.measure(*Q, key="c"))
    with pytest.raises(SimulationError) as caught:
        ideal_distribution(circuit, max_qubits=3)
    assert caught.value.code == "sandbox.too_large"


def test_sampling_is_seeded_and_sums_to_the_shots() -> None:
    dist = {"00": 0.5, "11": 0.25, "01": 0.25}
    counts = sample_counts(dist, 1000, seed=3)
    assert counts == sample_counts(dist, 1000, seed=3)
    assert sum(counts.values()) == 1000
    assert hellinger_fidelity(counts, dist) > 0.99


def test_hellinger_fidelity_bounds() -> None:
    assert hellinger_fidelity({"0": 10, "1": 10}, {"0": 0.5, "1": 0.5}) == pytest.approx(1.0)
    assert hellinger_fidelity({"0": 10}, {"1": 1.0}) == 0.0
    assert hellinger_fidelity({"0": 1}, {"0": 0.5, "1": 0.5}) == pytest.approx(0.5)
    assert hellinger_fidelity({}, {"0": 1.0}) == 0.0


@pytest.mark.parametrize("width", [1, 6, PACKED_WIDTH, PACKED_WIDTH + 3])
def test_counts_are_the_bit_rows_counted_in_order(width: int) -> None:
    rng = np.random.default_rng(width)
    bits = (rng.random((500, width)) < 0.2).astype(np.uint8)
    bits[:100] = bits[0]  # one row repeated
    expected: dict[str, int] = {}
    for row in sorted("".join(map(str, r)) for r in bits):
        expected[row] = expected.get(row, 0) + 1
    counts = counts_from_bits(bits)
    assert counts == expected and list(counts) == list(expected)
    assert counts["".join(map(str, bits[0]))] >= 100
