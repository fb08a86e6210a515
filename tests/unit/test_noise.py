"""Noisy emulation and fidelity prediction on the compiled circuit."""

from __future__ import annotations

import math

import cirq
import numpy as np
import pytest

from qubus.bus import codec
from qubus.bus.messages import NodePrediction, NoiseBudget, NoiseEvaluation
from qubus.circuits.simulate import ideal_distribution, measurement_keys
from qubus.devices import fidelity
from qubus.devices.compile import compile_for_device
from qubus.devices.emulation import (
    DENSITY_MATRIX_QUBITS,
    depolarizing_probability,
    emulate,
    emulated_distribution,
    emulated_runtime_s,
    relaxation_process_fidelity,
)
from qubus.devices.fidelity import (
    budget_fidelities,
    budget_fidelity,
    expected_sqrt_poisson,
    fidelity_with_ideal,
    hellinger_fidelity,
    mean_predicted_fidelities,
    mean_predicted_fidelity,
)
from qubus.devices.prediction import noise_budget, predict_fidelity, walk_errors
from qubus.devices.profiles import Device, load_device


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


def test_gate_depolarizing_and_its_relaxation_add_up_to_the_reported_error() -> None:
    device = load_device("ibm_nairobi")
    for edge in device.edges:
        op = cirq.CNOT(cirq.LineQubit(edge.a), cirq.LineQubit(edge.b))
        relax = math.prod(
            relaxation_process_fidelity(edge.duration_ns, device.qubits[q])
            for q in (edge.a, edge.b)
        )
        lam = depolarizing_probability(op, device) * 16 / 15  # qiskit's parameter
        process = relax * (1 - lam) + lam / 16
        infidelity = 1 - (4 * process + 1) / 5
        # Where relaxation alone exceeds the reported error, no depolarizing is added.
        assert infidelity == pytest.approx(max(edge.error, 1 - (4 * relax + 1) / 5), rel=1e-9)


def test_prediction_of_a_basis_state_is_its_readout_and_decay_exactly() -> None:
    q = [cirq.NamedQubit(f"q_{i}") for i in range(2)]
    circuit = cirq.Circuit(cirq.X(q[0]), cirq.measure(*q, key="c"))
    device = load_device("quantinuum_h1_1")
    compiled = compile_for_device(circuit, device)
    a, b = (device.qubits[compiled.layout[str(x)]] for x in q)
    # The X pulse's X or Y error (2/3 of its depolarizing) flips the bit; a Z is harmless.
    flip = 2 / 3 * depolarizing_probability(next(compiled.circuit.all_operations()), device)
    one_reads_one = (1 - flip) * (1 - a.p10) + flip * a.p01
    expected = one_reads_one * (1 - b.p01)
    assert predict_fidelity(compiled, device, ideal_distribution(circuit)) == pytest.approx(
        expected, rel=1e-6
    )


def test_errors_outside_the_light_cone_of_the_measurements_do_not_count() -> None:
    q = [cirq.NamedQubit(f"q_{i}") for i in range(3)]
    measured = cirq.Circuit(cirq.H(q[0]), cirq.CNOT(q[0], q[1]), cirq.measure(q[0], q[1], key="c"))
    busy_spectator = measured + cirq.Circuit([cirq.H(q[2]), cirq.T(q[2])] * 5)
    device = load_device("ionq_aria")
    ideal = ideal_distribution(measured)
    assert predict_fidelity(
        compile_for_device(busy_spectator, device), device, ideal
    ) == pytest.approx(predict_fidelity(compile_for_device(measured, device), device, ideal))


def test_finite_shot_prediction_matches_the_noiseless_ceiling_of_a_broad_output() -> None:
    q = [cirq.NamedQubit(f"q_{i}") for i in range(8)]
    circuit = cirq.Circuit(cirq.H.on_each(*q), cirq.measure(*q, key="c"))
    device = load_device("quantinuum_h1_1")
    compiled = compile_for_device(circuit, device)
    ideal = ideal_distribution(circuit)
    ceilings = [
        hellinger_fidelity(emulate(compiled, device, 500, seed=s, noiseless=True), ideal)
        for s in range(5)
    ]
    predicted = predict_fidelity(compiled, device, ideal, shots=500)
    assert predict_fidelity(compiled, device, ideal) > 0.99
    assert predicted == pytest.approx(sum(ceilings) / len(ceilings), abs=0.01)
    assert predicted < 0.85


def test_a_noise_budget_sent_over_the_wire_predicts_what_the_model_predicts() -> None:
    # The noise service publishes the budget; fusion applies it to the sandbox's ideal.
    device = load_device("ibm_nairobi")
    circuit = ghz(4)
    ideal = ideal_distribution(circuit)
    compiled = compile_for_device(circuit, device)
    wire = codec.decode(
        codec.encode(
            NoiseEvaluation(
                task_id="u.t-1",
                predictions=[
                    NodePrediction(node=device.id, fits=True, budget=noise_budget(compiled, device))
                ],
            )
        ),
        NoiseEvaluation,
    )
    budget = wire.predictions[0].budget
    assert budget is not None and len(budget.confusion) == 4
    assert budget_fidelity(budget, ideal, shots=1000) == pytest.approx(
        predict_fidelity(compiled, device, ideal, shots=1000), rel=1e-12
    )
    assert budget_fidelity(budget, ideal) < 0.99
    with pytest.raises(ValueError, match="measures 4"):
        budget_fidelity(budget, {"000": 1.0})


def test_hellinger_fidelity_of_equal_distributions_is_at_most_one() -> None:
    # Six outcomes of 1/6 each: the overlap squared is a hair above 1 in floating point.
    uniform = {format(i, "03b"): 1 / 6 for i in range(6)}
    total = sum(uniform.values())
    assert sum(math.sqrt(p / total * p) for p in uniform.values()) ** 2 > 1.0
    assert hellinger_fidelity(uniform, uniform) == 1.0


def without_relaxation(device: Device) -> Device:
    """The device with T1 and T2 so long that nothing relaxes."""
    return device.model_copy(
        update={
            "qubits": [
                q.model_copy(update={"t1_us": 1e15, "t2_us": 1e15}) if q.t1_us else q
                for q in device.qubits
            ]
        }
    )


def test_the_exact_emulated_distribution_is_what_emulate_samples() -> None:
    device = load_device("ibm_nairobi")
    circuit = ghz(3)
    compiled = compile_for_device(circuit, device)
    exact = emulated_distribution(compiled, device)
    assert exact is not None and sum(exact.values()) == pytest.approx(1.0)
    counts = emulate(compiled, device, 40_000, seed=3)
    distance = sum(abs(counts.get(b, 0) / 40_000 - exact.get(b, 0.0)) for b in {*exact, *counts})
    assert distance / 2 < 0.01
    ideal = ideal_distribution(circuit)
    assert hellinger_fidelity(counts, ideal) == pytest.approx(
        hellinger_fidelity(exact, ideal), abs=0.005
    )


def test_the_emulator_has_no_exact_distribution_for_trajectory_runs() -> None:
    device = load_device("ionq_aria")
    compiled = compile_for_device(ghz(DENSITY_MATRIX_QUBITS + 1), device)
    assert emulated_distribution(compiled, device) is None


def test_gate_errors_of_a_clifford_circuit_are_predicted_as_correlated_flips() -> None:
    # GHZ: an X before a CNOT flips every later bit together, which leaves 0000 + 1111 as it
    # is; scrambling those bits (the previous model) would not. With only gate errors and
    # readout, the prediction is the emulator's exact value up to second-order terms.
    circuit = ghz(4)
    ideal = ideal_distribution(circuit)
    for node in ("ibm_nairobi", "ionq_aria"):
        device = without_relaxation(load_device(node))
        compiled = compile_for_device(circuit, device)
        budget = noise_budget(compiled, device)
        assert budget.scrambles == []
        assert [0, 1, 2, 3] in [axes for axes, _ in budget.flips]
        exact = hellinger_fidelity(emulated_distribution(compiled, device), ideal)
        assert predict_fidelity(compiled, device, ideal) == pytest.approx(exact, abs=3e-4)


def test_a_noise_budget_without_flips_decodes_as_before() -> None:
    budget = NoiseBudget.model_validate(
        {"scrambles": [[[0], 0.1]], "confusion": [[1.0, 0.0, 0.0, 1.0]] * 2}
    )
    assert budget.flips == []
    assert budget_fidelity(budget, {"00": 1.0}) == pytest.approx(0.9)


def test_an_injected_pauli_is_followed_to_the_bits_it_flips() -> None:
    device = load_device("quantinuum_h1_1")
    a, b, c = (cirq.NamedQubit(f"q_{i}") for i in range(3))
    circuit = cirq.Circuit(
        cirq.X(a),
        cirq.CNOT(a, b),
        cirq.measure(c, key="m"),  # measured, reset and reused: an error before is erased
        cirq.reset(c),
        cirq.CNOT(b, c),
        [cirq.measure(x, key=f"c_{i}") for i, x in enumerate((a, b, c))],
    )
    compiled = compile_for_device(circuit, device)
    assert [key for key, _ in measurement_keys(compiled.circuit)] == ["c_0", "c_1", "c_2", "m"]
    qa, qc = compiled.layout["q_0"], compiled.layout["q_2"]
    first = min(i for i, m in enumerate(compiled.circuit) if cirq.LineQubit(qa) in m.qubits)
    (read,) = (
        i
        for i, m in enumerate(compiled.circuit)
        for op in m
        if cirq.is_measurement(op) and cirq.measurement_key_name(op) == "m"
    )
    walk = walk_errors(
        compiled,
        device,
        [
            (first, qa, "X"),  # before CNOT(a, b) and CNOT(b, c): flips c_0, c_1, c_2
            (first, qa, "Z"),  # a is |1⟩ from then on: harmless
            (read, qc, "X"),  # after m, before the reset: erased
        ],
    )
    assert walk.paulis == [(0b0111, 0), (0, 0), (0, 0)]
    budget = noise_budget(compiled, device)
    assert sorted(walk.flips.values()) == sorted(chance for _, chance in budget.flips)
    with pytest.raises(ValueError):
        walk_errors(compiled, device, [(first, qa, "W")])


@pytest.mark.parametrize("width", [1, 3, 6])
def test_a_budget_kept_as_one_matrix_gives_what_its_steps_give(width, monkeypatch) -> None:
    """Up to ``CHANNEL_BITS`` a budget acts as one kept matrix (``fidelity._channel``); past
    it, step by step. Both give the same fidelities, for one distribution and for a stack."""
    rng = np.random.default_rng(width)
    budget = NoiseBudget(
        scrambles=[([k], 0.01 * (k + 1)) for k in range(width)]
        + [(list(range(width)), 0.03), (sorted({0, width - 1}), 0.02)],
        flips=[([k], 0.005) for k in range(width)] + [(sorted({0, width - 1}), 0.004)],
        confusion=[(1 - a, b, a, 1 - b) for a, b in rng.uniform(0.005, 0.05, size=(width, 2))],
    )
    ideals = []
    for _ in range(5):
        p = rng.dirichlet(np.ones(2**width))
        ideals.append({format(i, f"0{width}b"): float(v) for i, v in enumerate(p) if v > 1e-3})
    kept = [f for shots in (None, 500) for f in budget_fidelities(budget, ideals, shots=shots)]
    alone = budget_fidelity(budget, ideals[0], shots=500)
    monkeypatch.setattr(fidelity, "CHANNEL_BITS", 0)
    stepped = [f for shots in (None, 500) for f in budget_fidelities(budget, ideals, shots=shots)]
    assert kept == pytest.approx(stepped, abs=1e-12)
    assert alone == pytest.approx(budget_fidelity(budget, ideals[0], shots=500), abs=1e-12)
    assert len({round(f, 6) for f in kept}) == 10  # the points differ: nothing is shared


def test_the_expected_root_of_a_poisson_count_is_its_series() -> None:
    """``E[√X]`` is the sum of ``√k·P(k)`` to within rounding below ``_POISSON_SERIES_MAX``,
    and within the asymptotic expansion's 3e-5 above it, mixed in one array."""
    lam = np.array([[0.0, 1e-9, 0.3, 1.0, 2.5], [7.0, 24.99, 25.0, 49.0, 300.0]])
    k = np.arange(1000)
    log_factorial = np.array([math.lgamma(n + 1) for n in k])
    exact = np.array(
        [
            [
                float(np.exp(k * math.log(x) - x - log_factorial) @ np.sqrt(k)) if x else 0.0
                for x in row
            ]
            for row in lam
        ]
    )
    got = expected_sqrt_poisson(lam)
    assert got.shape == lam.shape
    series = lam < 25.0
    assert np.abs(got - exact)[series].max() < 1e-12
    assert np.abs(got - exact)[~series].max() < 3e-5


def test_every_node_s_fidelity_at_once_is_each_node_s_alone() -> None:
    """``mean_predicted_fidelities`` gives each prediction what ``mean_predicted_fidelity``
    gives it: budgets kept as matrices (``CHANNEL_BITS``) and budgets too wide for one, with a
    prediction without a budget among them."""
    rng = np.random.default_rng(7)

    def budget(width: int, scale: float) -> NoiseBudget:
        return NoiseBudget(
            scrambles=[([k], scale * (k + 1)) for k in range(width)] + [([0, width - 1], scale)],
            flips=[([k], scale / 2) for k in range(width)],
            confusion=[(1 - a, b, a, 1 - b) for a, b in rng.uniform(0.005, 0.05, size=(width, 2))],
        )

    def prediction(node: str, width: int | None, scale: float = 0.01) -> NodePrediction:
        held = None if width is None else budget(width, scale)
        return NodePrediction(node=node, fits=True, predicted_fidelity=0.8, budget=held)

    for width in (3, 7):
        ideals = []
        for _ in range(3):  # a sweep's points, some outcomes far below a shot's worth
            p = rng.dirichlet(np.full(2**width, 0.3))
            ideals.append({format(i, f"0{width}b"): float(v) for i, v in enumerate(p) if v > 1e-4})
        predictions = [
            prediction("a", width, 0.01),
            prediction("b", width, 0.02),
            prediction("d", None),
            prediction("e", width, 0.005),
        ]
        together = mean_predicted_fidelities(predictions, ideals, 200)
        alone = [mean_predicted_fidelity(p, ideals, 200) for p in predictions]
        assert together == pytest.approx(alone, abs=1e-12)
        assert together[2] == 0.8
        assert len({round(f, 6) for f in together}) == 4
    assert mean_predicted_fidelities([], [{"0": 1.0}], 100) == []


@pytest.mark.parametrize("node", ["ibm_nairobi", "quantinuum_h1_1"])
def test_a_budget_kept_for_a_compilation_shape_is_the_budget_computed_afresh(node) -> None:
    """Circuits of one structure share compilation shapes; what the walk reads of their
    one-qubit gates (Clifford or not, eigenstates tracked or not) differs by angle."""
    from dataclasses import replace

    from qubus.devices import prediction

    device = load_device(node)
    q = cirq.LineQubit.range(3)
    angles = [0.0, 1e-7, 0.1, math.pi / 4, math.pi / 2, math.pi, -math.pi / 2, 2.9]
    shapes = set()
    prediction._budgets._entries.clear()
    for angle in angles:
        for first, last in ((cirq.H, cirq.H), (cirq.X, cirq.S), (cirq.I, cirq.X**0.5)):
            circuit = cirq.Circuit(
                first(q[0]),
                cirq.CNOT(q[0], q[1]),
                cirq.rz(angle)(q[0]),  # entangled: only its images of X and Z tell
                cirq.ry(angle)(q[2]),
                cirq.CNOT(q[1], q[2]),
                last(q[0]),
                cirq.measure(*q, key="m"),
            )
            compiled = compile_for_device(circuit, device)
            shapes.add(compiled.shape)
            afresh = noise_budget(replace(compiled, shape=None), device)
            assert noise_budget(compiled, device) == afresh  # computed, then kept
            assert noise_budget(compiled, device) == afresh  # read back
    assert None not in shapes and len(shapes) < 3 * len(angles)
    assert len(prediction._budgets._entries) < 3 * len(angles)  # budgets are shared


@pytest.mark.parametrize("node", ["ibm_nairobi", "quantinuum_h1_1"])
def test_kept_gate_properties_give_the_operations_worked_out_afresh(node, dev_circuits) -> None:
    """``_ops`` keeps each gate's properties and each operation's depolarizing probability
    across circuits: what it reads back is what it works out with nothing kept, and another
    calibration (another revision) gets its own probabilities."""
    from qubus.devices import prediction

    device = load_device(node)
    other = load_device("quantinuum_h1_1" if node == "ibm_nairobi" else "ibm_nairobi")
    width = min(device.max_circuit_qubits, other.max_circuit_qubits)
    fitting = [c for c in dev_circuits if len(c.all_qubits()) <= width]
    compiled = [compile_for_device(circuit, device) for circuit in fitting]
    for circuit, here in zip(fitting, compiled, strict=True):
        prediction._gate_properties._entries.clear()
        prediction._depolarizing._entries.clear()
        afresh = prediction._ops(here, device)
        prediction._gate_properties._entries.clear()
        prediction._depolarizing._entries.clear()
        prediction._ops(compile_for_device(circuit, other), other)  # another kind's, kept first
        assert prediction._ops(here, device) == afresh  # worked out, kept
        assert prediction._ops(here, device) == afresh  # read back
    assert len(fitting) > 20 and len(prediction._gate_properties._entries) > 0
    worse = scaled(device, 2.0)
    first = compiled[0]
    before = [op.depolarizing for op in prediction._ops(first, device)[0]]
    after = [op.depolarizing for op in prediction._ops(first, worse)[0]]
    assert worse.revision != device.revision and after != before
