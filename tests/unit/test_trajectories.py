"""Noisy trajectories on qsim (``qubus.devices.trajectories``) against the exact density matrix."""

from __future__ import annotations

import weakref
from pathlib import Path

import cirq
import numpy as np
import pytest
import qsimcirq

from qubus.circuits import parse_qasm
from qubus.circuits.simulate import counts_from_bits, ideal_distribution
from qubus.devices import trajectories
from qubus.devices.compile import compile_for_device
from qubus.devices.emulation import (
    _readout_qubits,
    _register_circuit,
    emulate,
    emulated_distribution,
    read_out,
    readout_flips,
    readout_matrices,
)
from qubus.devices.fidelity import hellinger_fidelity
from qubus.devices.profiles import load_device
from qubus.devices.trajectories import (
    _as_mixture,
    _branching_pays,
    _Register,
    _translate,
    bit_columns,
    light_cone,
    sample_states,
    sample_trajectories,
    trajectory_count,
    trajectory_distributions,
    tree_states,
)

DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "qasm" / "dev"


def _noisy_five_qubits() -> cirq.Circuit:
    q = cirq.LineQubit.range(5)
    return cirq.Circuit(
        cirq.H(q[0]),
        [cirq.CNOT(q[i], q[i + 1]) for i in range(4)],
        cirq.rx(0.3).on_each(*q),
        cirq.measure(*q, key="m"),
    )


def _trajectory_counts(shots: int, trajectories: int) -> tuple[dict[str, int], dict[str, float]]:
    """Counts from trajectories of a 5-qubit noisy register, and the exact distribution."""
    device = load_device("ibm_nairobi")
    compiled = compile_for_device(_noisy_five_qubits(), device)
    circuit, keys = _register_circuit(compiled, device, noiseless=False)
    rng = np.random.default_rng(3)
    bits = sample_trajectories(circuit, keys, shots, trajectories=trajectories, rng=rng)
    bits = readout_flips(bits, _readout_qubits(compiled, keys), device, rng)
    return counts_from_bits(bits), emulated_distribution(compiled, device)


def test_one_trajectory_per_shot_samples_the_exact_noisy_distribution() -> None:
    counts, exact = _trajectory_counts(4000, 4000)
    # 32 outcomes at 4,000 shots: shot noise alone costs about 31/(8·4000) ≈ 0.001.
    assert hellinger_fidelity(counts, exact) > 0.995


def test_reused_trajectories_stay_unbiased() -> None:
    counts, exact = _trajectory_counts(4000, 250)
    assert sum(counts.values()) == 4000
    assert hellinger_fidelity(counts, exact) > 0.99


def test_the_mean_of_trajectory_distributions_is_the_exact_noisy_distribution() -> None:
    device = load_device("ibm_nairobi")
    compiled = compile_for_device(_noisy_five_qubits(), device)
    circuit, keys = _register_circuit(compiled, device, noiseless=False)
    flips = readout_matrices(_readout_qubits(compiled, keys), device)
    rows = [
        read_out(row, flips)
        for row in trajectory_distributions(circuit, keys, 1000, rng=np.random.default_rng(5))
    ]
    mean = np.mean(rows, axis=0)
    assert np.allclose([row.sum() for row in rows], 1.0, atol=1e-5)
    exact = emulated_distribution(compiled, device)
    ours = {format(i, "05b"): p for i, p in enumerate(mean)}
    assert hellinger_fidelity(ours, exact) > 0.999


def test_the_cached_translation_runs_the_same_trajectory_as_qsimcirqs() -> None:
    device = load_device("ibm_nairobi")
    compiled = compile_for_device(_noisy_five_qubits(), device)
    circuit, _ = _register_circuit(compiled, device, noiseless=False)
    body = cirq.Circuit(
        cirq.Moment(_as_mixture(op) for op in moment if not cirq.is_measurement(op))
        for moment in circuit
    )
    order = sorted(body.all_qubits())
    simulator = qsimcirq.QSimSimulator()
    theirs, _ = qsimcirq.QSimCircuit(body).translate_cirq_to_qtrajectory(order)
    for seed in (1, 2, 3):
        states = [
            simulator._sim_module.qtrajectory_simulate_fullstate(
                {**simulator.qsim_options, "c": c, "s": seed}, 0
            )
            for c in (theirs, _translate(body, order))
        ]
        np.testing.assert_allclose(states[0], states[1], atol=1e-6)


def _strongly_damped() -> cirq.Circuit:
    """Four qubits with amplitude damping strong enough that most trajectories draw some
    operator by the state (above the operators' lower bounds)."""
    q = cirq.LineQubit.range(4)
    return cirq.Circuit(
        cirq.H(q[0]),
        cirq.amplitude_damp(0.3).on(q[0]),
        [cirq.CNOT(q[i], q[i + 1]) for i in range(3)],
        cirq.depolarize(0.05, n_qubits=2).on(q[1], q[2]),
        cirq.amplitude_damp(0.2).on_each(*q),
        cirq.phase_damp(0.3).on_each(*q),
        cirq.rx(0.7).on_each(*q),
        cirq.CNOT(q[3], q[0]),
        cirq.amplitude_damp(0.4).on_each(*q),
        cirq.measure(*q, key="m"),
    )


def test_branched_trajectories_end_in_the_exact_noisy_distribution() -> None:
    circuit = _strongly_damped()
    register = _Register.of(circuit)
    trajectories = 50_000
    mean = np.zeros(16)
    groups = []
    for state, group in register.branches(trajectories, np.random.default_rng(4)):
        mean += register.probabilities(state) * len(group)
        groups.append(group)
    assert np.array_equal(np.sort(np.concatenate(groups)), np.arange(trajectories))
    assert len(groups) < trajectories / 4  # shared: a state per branch, not per trajectory
    rho = cirq.DensityMatrixSimulator().simulate(circuit[:-1]).final_density_matrix
    exact = np.real(np.diagonal(rho))
    # the mean of 50,000 trajectories: each probability within about 0.002 (drawing by the
    # bounds alone when a number falls above them puts some 0.13 off)
    assert np.abs(mean / trajectories - exact).max() < 0.01


def test_a_tree_holds_no_more_states_than_the_cost_model_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    computed: list[weakref.ref[np.ndarray]] = []
    run = trajectories._qsim_run

    def tracked(noisy: object, state: np.ndarray | int, seed: int) -> np.ndarray:
        out = run(noisy, state, seed)
        computed.append(weakref.ref(out))
        return out

    monkeypatch.setattr(trajectories, "_qsim_run", tracked)
    register = _Register.of(_strongly_damped())
    for count in (64, 1000):
        computed.clear()
        most = 0
        for state, _ in register.branches(count, np.random.default_rng(4)):
            most = max(most, sum(ref() is not None for ref in computed))
            del state
        # the held ones, the one just advanced from and the one yielded (running the largest
        # part first instead held 14 and 15)
        assert 3 <= most <= tree_states(count) + 2


def test_trajectories_branch_where_they_share_most_of_their_gates() -> None:
    device = load_device("ibm_hanoi")
    registers = {}
    for name in ("mqtbench__ghz_20_indep.qasm3", "qasmbench__bv_n14.qasm"):
        compiled = compile_for_device(parse_qasm((DEV / name).read_text()), device)
        circuit, _ = _register_circuit(compiled, device, noiseless=False)
        registers[name] = _Register.of(circuit)
    assert _branching_pays(registers["mqtbench__ghz_20_indep.qasm3"])
    assert not _branching_pays(registers["qasmbench__bv_n14.qasm"])


def test_sample_states_draws_each_state_in_proportion_and_never_a_weightless_one() -> None:
    rng = np.random.default_rng(3)
    weights = rng.random(2**10).astype(np.float32)
    weights[rng.random(weights.size) < 0.5] = 0.0
    weights[-1] = 0.0  # the last state of the last block
    draws = 200_000
    counts = np.bincount(sample_states(weights, draws, rng), minlength=weights.size)
    expected = draws * weights / weights.sum()
    assert not counts[weights == 0].any()
    kept = weights > 0
    chi2 = float(np.sum((counts[kept] - expected[kept]) ** 2 / expected[kept]))
    dof = int(kept.sum()) - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof)


def test_the_light_cone_drops_what_cannot_reach_a_measurement() -> None:
    a, b, c = cirq.LineQubit.range(3)
    circuit = cirq.Circuit(
        cirq.H(c),
        cirq.CNOT(b, c),
        cirq.H(a),
        cirq.CNOT(a, b),
        cirq.X(c),
        cirq.measure(a, b, key="m"),
    )
    cone = light_cone(circuit)
    assert cirq.X(c) not in cone.all_operations()
    assert {cirq.H(c), cirq.CNOT(b, c), cirq.CNOT(a, b)} <= set(cone.all_operations())


def test_trajectory_count_is_one_per_shot_on_narrow_registers_and_one_without_noise() -> None:
    assert trajectory_count(5, 4000, noisy=True) == 4000
    assert trajectory_count(20, 4000, noisy=True) < 4000
    assert trajectory_count(20, 4000, noisy=False) == 1


def test_a_dynamic_circuit_emulates_as_its_deferred_form() -> None:
    """``qiskit__example_if``: one qubit, resets, repeated measurements and classical control;
    noiselessly the counts follow the ideal distribution."""
    circuit = parse_qasm((DEV / "qiskit__example_if.qasm").read_text())
    device = load_device("ibm_nairobi")
    compiled = compile_for_device(circuit, device)
    counts = emulate(compiled, device, 2000, seed=5, noiseless=True)
    assert hellinger_fidelity(counts, ideal_distribution(circuit)) > 0.995
    noisy = emulate(compiled, device, 2000, seed=5)
    assert sum(noisy.values()) == 2000


def test_bit_columns_read_each_key_at_its_width_and_its_invert_mask() -> None:
    a, b, c = cirq.LineQubit.range(3)
    measured = [
        cirq.measure(a, b, key="m", invert_mask=(False, True)),
        cirq.measure(c, key="n"),
    ]
    # "m" is 3 wide (measured elsewhere on three qubits): its third bit reads 0 here
    states = np.array([0b000, 0b101, 0b011])
    columns = bit_columns(states, measured, [("m", 3), ("n", 1)], [a, b, c])
    assert columns.tolist() == [[0, 1, 0, 0], [1, 1, 0, 1], [0, 0, 0, 1]]
