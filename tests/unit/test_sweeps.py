"""Sweeps without NATS: point ids, the parameter checks, every point's ideal distribution and
noisy runs, and the wire form of a sweep."""

from __future__ import annotations

import cirq
import pytest
import sympy

from benchmarks.sweep import grid, qaoa_circuit
from qubus.bus.ids import (
    TASK_ID,
    is_sweep_point,
    new_task_id,
    submitted_at,
    sweep_of,
    sweep_point_id,
)
from qubus.bus.messages import NodePrediction, SubmitRequest, TaskOptions
from qubus.circuits import circuit_to_json
from qubus.circuits.ingest import task_options
from qubus.circuits.simulate import ideal_distribution
from qubus.circuits.sweeps import (
    Resolver,
    check_points,
    representative,
    resolved,
)
from qubus.devices import sweepemulation
from qubus.devices.compile import compile_for_device
from qubus.devices.emulation import (
    DENSITY_MATRIX_QUBITS,
    JOB_OVERHEAD_S,
    _final_probabilities,
    emulate,
    emulated_runtime_s,
)
from qubus.devices.fidelity import budget_fidelities, budget_fidelity, mean_predicted_fidelity
from qubus.devices.prediction import noise_budget
from qubus.devices.profiles import load_device
from qubus.devices.sandbox import SandboxLimits, evaluate
from qubus.devices.sweeps import (
    BATCHED_MAX_QUBITS,
    SAMPLE_POINTS,
    PointCompiler,
    evaluate_sweep,
    point_compiler,
    run_points,
    sample_points,
    sweep_distributions,
    sweep_ideals,
)
from qubus.errors import CircuitRejected

LIMITS = SandboxLimits(max_qubits=20, max_depth=1000, max_outcomes=4096)


def test_a_point_id_is_a_task_id_that_names_its_sweep() -> None:
    sweep = new_task_id("alice", now=1_700_000_000.0)
    point = sweep_point_id(sweep, 199)
    assert TASK_ID.match(point) and point.startswith(f"{sweep}-")
    assert sweep_of(point) == (sweep, 199)
    assert sweep_of(sweep) is None and sweep_of("alice.t1-3") is None  # not a sweep's id
    assert is_sweep_point(point)
    assert not is_sweep_point(sweep) and not is_sweep_point("alice.t1-3")
    assert submitted_at(point) == submitted_at(sweep) == 1_700_000_000.0


def test_points_must_name_exactly_the_circuit_parameters() -> None:
    circuit = qaoa_circuit()
    check_points(circuit, [{"gamma": 0.1, "beta": 0.2}])
    with pytest.raises(CircuitRejected) as unresolved:
        check_points(circuit, None)
    assert unresolved.value.code == "circuit.unresolved"
    with pytest.raises(CircuitRejected, match="point 1 .*missing \\['beta'\\]") as missing:
        check_points(circuit, [{"gamma": 0.1, "beta": 0.2}, {"gamma": 0.3}])
    assert missing.value.code == "sweep.parameters"
    with pytest.raises(CircuitRejected, match="unknown \\['delta'\\]"):
        check_points(circuit, [{"gamma": 0.1, "beta": 0.2, "delta": 1.0}])
    with pytest.raises(CircuitRejected, match="no parameters"):
        check_points(cirq.resolve_parameters(circuit, {"gamma": 0, "beta": 0}), [{"gamma": 1.0}])


def test_a_sweep_travels_in_the_task_options() -> None:
    request = SubmitRequest(circuit="{}", shots=100, sweep=grid(3))
    options = task_options(request)
    assert options.sweep == grid(3) and options.total_shots == 300
    assert TaskOptions(shots=100).total_shots == 100
    assert representative(qaoa_circuit(), options) == resolved(qaoa_circuit(), grid(3)[0])
    with pytest.raises(ValueError, match="split cannot be combined with sweep"):
        SubmitRequest(circuit="{}", sweep=grid(2), split=2)
    with pytest.raises(ValueError):
        SubmitRequest(circuit="{}", sweep=[])


def test_the_sandbox_evaluates_every_point_and_the_first_in_full() -> None:
    circuit, points = qaoa_circuit(), grid(3)
    evaluation = evaluate_sweep("u.s", circuit_to_json(circuit), points, 100, LIMITS)
    alone = [
        evaluate("u.s", circuit_to_json(resolved(circuit, p)), 100, LIMITS).ideal for p in points
    ]
    assert len(evaluation.sweep_ideals) == 3
    for ideal, expected in zip(evaluation.sweep_ideals, alone, strict=True):
        assert ideal.keys() == expected.keys()
        assert all(ideal[k] == pytest.approx(expected[k], abs=1e-6) for k in ideal)
    assert evaluation.ideal == evaluation.sweep_ideals[0] and evaluation.repro_simulator == "cirq"
    # gamma = beta = 0: H on every qubit, every outcome equally likely
    assert evaluation.sweep_ideals[0] == pytest.approx(dict.fromkeys(alone[0], 1 / 64))


@pytest.mark.parametrize("points", [1, SAMPLE_POINTS, SAMPLE_POINTS + 1, 200, 1000])
def test_the_sample_is_the_first_point_the_last_and_others_evenly_spaced(points: int) -> None:
    sample = sample_points(points)
    assert sample[0] == 0 and sample[-1] == points - 1
    assert sample == sorted(set(sample)) and len(sample) == min(points, SAMPLE_POINTS)
    gaps = {b - a for a, b in zip(sample, sample[1:], strict=False)}
    assert max(gaps, default=1) - min(gaps, default=1) <= 1


def test_a_sample_and_the_other_points_give_every_points_ideal_distribution() -> None:
    """The sandbox publishes a sample's evaluation, then the others' distributions
    (``sweep_ideals``): together, what one evaluation of every point gives."""
    circuit, points = qaoa_circuit(), grid(40)
    text = circuit_to_json(circuit)
    whole = evaluate_sweep("u.s", text, points, 100, LIMITS)
    sample = sample_points(len(points))
    first = evaluate_sweep("u.s", text, [points[k] for k in sample], 100, LIMITS)
    others = [k for k in range(len(points)) if k not in sample]
    rest, norm_error = sweep_ideals(text, [points[k] for k in others], LIMITS)
    assert first.ideal == whole.ideal and first.repro == whole.repro
    parts = dict(zip(sample, first.sweep_ideals, strict=True))
    parts.update(zip(others, rest, strict=True))
    for k, ideal in enumerate(whole.sweep_ideals):
        assert parts[k].keys() == ideal.keys()
        assert all(parts[k][bits] == pytest.approx(p, abs=1e-12) for bits, p in ideal.items())
    assert max(first.norm_error, norm_error) == pytest.approx(whole.norm_error, abs=1e-12)
    assert sweep_ideals(text, [], LIMITS) == ([], 0.0)


def test_a_nodes_predicted_fidelity_is_the_mean_over_the_points_or_its_esp() -> None:
    circuit, points = qaoa_circuit(), grid(20)
    ideals = evaluate_sweep("u.s", circuit_to_json(circuit), points, 100, LIMITS).sweep_ideals
    device = load_device("ibm_nairobi")
    budget = noise_budget(compile_for_device(resolved(circuit, points[0]), device), device)
    prediction = NodePrediction(node=device.id, fits=True, predicted_fidelity=0.5, budget=budget)
    each = budget_fidelities(budget, ideals, shots=1000)
    assert mean_predicted_fidelity(prediction, ideals, 1000) == pytest.approx(sum(each) / 20)
    assert mean_predicted_fidelity(prediction, ideals[:1], 1000) == pytest.approx(each[0])
    without = prediction.model_copy(update={"budget": None})
    assert mean_predicted_fidelity(without, ideals, 1000) == 0.5


def test_a_qpu_runs_points_as_one_job_of_their_shots() -> None:
    device = load_device("ibm_nairobi")
    theta = sympy.Symbol("theta")
    a, b = cirq.LineQubit.range(2)
    circuit = cirq.Circuit(cirq.rx(theta).on(a), cirq.CNOT(a, b), cirq.measure(a, b, key="m"))
    points = [{"theta": 0.0}, {"theta": float(sympy.pi)}]
    counts, modelled_s = run_points(device, circuit_to_json(circuit), points, 200, [1, 2], True)
    assert counts == [{"00": 200}, {"11": 200}]
    # each point's shots at its own duration (rx(0) is dropped, rx(pi) is not), no job overhead
    each_s = [
        emulated_runtime_s(compile_for_device(resolved(circuit, p), device), device, 200)
        - JOB_OVERHEAD_S[device.kind]
        for p in points
    ]
    assert each_s[0] < each_s[1]
    assert modelled_s == pytest.approx(sum(each_s))
    _, first_s = run_points(device, circuit_to_json(circuit), points[:1], 200, [1], True)
    assert first_s == pytest.approx(each_s[0])


@pytest.mark.parametrize("entangled", [False, True])
def test_a_sweeps_points_run_as_each_resolved_circuit_would(entangled: bool) -> None:
    """Bound from one template (parameters in one-qubit gates) or compiled one by one (a
    parameterised two-qubit gate), each point is compiled and emulated exactly as the
    circuit resolved at that point and submitted alone."""
    device = load_device("ibm_nairobi")
    circuit = qaoa_circuit()
    if entangled:
        q = sorted(circuit.all_qubits())
        circuit = circuit + cirq.Circuit()  # a copy
        circuit.insert(1, cirq.ZZ(q[0], q[1]) ** sympy.Symbol("gamma"))
    points = grid(6)
    alone = [compile_for_device(resolved(circuit, p), device) for p in points]
    compiler = PointCompiler(circuit, device)
    assert [compiler(p) for p in points] == alone
    json_text = circuit_to_json(circuit)  # one compiler per circuit and calibration
    assert point_compiler(json_text, device) is point_compiler(json_text, device)
    counts, _ = run_points(device, circuit_to_json(circuit), points, 300, list(range(6)), False)
    assert counts == [emulate(c, device, 300, seed=k) for k, c in enumerate(alone)]


def test_a_resolver_gives_each_point_as_resolving_the_circuit_does() -> None:
    circuit = qaoa_circuit()
    resolver = Resolver(circuit)
    points = grid(16) + grid(16)[:3] + [{"gamma": -0.5, "beta": 7.0}]  # values seen again
    for point in points:
        assert resolver.at(point) == resolved(circuit, point)
        assert not cirq.is_parameterized(resolver.at(point))


def _dynamic_circuit() -> cirq.Circuit:
    """A mid-circuit measurement steering a rotation: an exact form with a deferred
    measurement."""
    a, b = cirq.LineQubit.range(2)
    theta = sympy.Symbol("theta")
    return cirq.Circuit(
        cirq.rx(theta).on(a),
        cirq.measure(a, key="mid"),
        cirq.X(b).with_classical_controls("mid"),
        cirq.ry(theta / 2).on(a),
        cirq.measure(a, b, key="out"),
    )


def _inverted_partial_circuit() -> cirq.Circuit:
    """An inverted measurement, an unmeasured qubit, a parameterised two-qubit gate and an
    expression of two parameters."""
    q = cirq.LineQubit.range(4)
    gamma, beta = sympy.Symbol("gamma"), sympy.Symbol("beta")
    return cirq.Circuit(
        cirq.H.on_each(*q),
        cirq.ZZ(q[0], q[1]) ** gamma,
        cirq.ry(2 * beta - gamma).on(q[2]),
        cirq.CNOT(q[2], q[3]),
        cirq.measure(q[3], q[0], key="b", invert_mask=(True,)),
        cirq.measure(q[2], key="a"),
    )


@pytest.mark.parametrize(
    "circuit, points",
    [
        (qaoa_circuit(), grid(9)),
        (_inverted_partial_circuit(), grid(7)),
        (_dynamic_circuit(), [{"theta": t} for t in (0.0, 0.4, 1.3, 3.0)]),
    ],
)
def test_the_points_simulated_together_have_each_resolved_circuits_distribution(
    circuit: cirq.Circuit, points: list[dict[str, float]]
) -> None:
    together = sweep_distributions(circuit, points)
    assert together is not None
    for distribution, point in zip(together, points, strict=True):
        alone = ideal_distribution(resolved(circuit, point))
        assert distribution.keys() == alone.keys()
        assert all(distribution[k] == pytest.approx(alone[k], abs=1e-6) for k in alone)


def test_points_too_wide_or_without_an_exact_form_are_simulated_one_by_one() -> None:
    theta = sympy.Symbol("theta")
    wide = cirq.Circuit(
        cirq.rx(theta).on_each(*cirq.LineQubit.range(BATCHED_MAX_QUBITS + 1)),
        cirq.measure(*cirq.LineQubit.range(BATCHED_MAX_QUBITS + 1), key="m"),
    )
    assert sweep_distributions(wide, [{"theta": 0.1}]) is None
    a = cirq.LineQubit(0)
    noisy = cirq.Circuit(cirq.rx(theta).on(a), cirq.depolarize(0.1).on(a), cirq.measure(a))
    assert sweep_distributions(noisy, [{"theta": 0.1}]) is None  # a channel, not a unitary


@pytest.mark.parametrize("node", ["ibm_nairobi", "quantinuum_h1_1"])
def test_points_emulated_together_have_each_compiled_points_distribution(node: str) -> None:
    """40 points of the grid (several structures: at gamma = 0 the RZ runs are identities and
    dropped): each point's noisy diagonal, its shots and its compiled duration are those of the
    point compiled and emulated alone."""
    device = load_device(node)
    circuit, points = qaoa_circuit(), grid(40)
    emulator = PointCompiler(circuit, device).emulator
    assert emulator is not None
    together = emulator.probabilities(points)
    counts = emulator.run(points, 500, list(range(40)))
    durations = set()
    for k, point in enumerate(points):
        alone = compile_for_device(resolved(circuit, point), device)
        probs, _qubits = _final_probabilities(alone, device)
        ran = together[k]
        assert ran is not None and counts[k] is not None
        assert ran[0] == pytest.approx(probs, abs=1e-12)
        shared = ran[1].compiled  # another point's, of the same structure
        assert shared.moment_durations_ns == alone.moment_durations_ns
        assert [m.qubits for m in shared.circuit] == [m.qubits for m in alone.circuit]
        assert counts[k][0] == emulate(alone, device, 500, seed=k)
        durations.add(alone.duration_ns)
    assert len(durations) > 1  # the points do not all share one structure


def test_points_of_a_register_run_as_trajectories_are_emulated_alone() -> None:
    device = load_device("ibm_hanoi")
    theta = sympy.Symbol("theta")
    q = cirq.LineQubit.range(DENSITY_MATRIX_QUBITS + 1)
    circuit = cirq.Circuit(
        cirq.rx(theta).on(q[0]),
        cirq.CNOT.on_each(*zip(q, q[1:], strict=False)),
        cirq.measure(*q, key="m"),
    )
    emulator = PointCompiler(circuit, device).emulator
    assert emulator is not None
    assert emulator.run([{"theta": 0.3}], 50, [1]) == [None]
    counts, _ = run_points(device, circuit_to_json(circuit), [{"theta": 0.3}], 50, [1], False)
    alone = compile_for_device(resolved(circuit, {"theta": 0.3}), device)
    assert counts == [emulate(alone, device, 50, seed=1)]


@pytest.mark.parametrize("shots", [None, 1000])
def test_a_sweeps_predicted_fidelities_are_each_points_own(shots: int | None) -> None:
    """Fusion predicts a sweep's points through a node's budget together
    (``budget_fidelities``): each is what ``budget_fidelity`` gives the point alone."""
    circuit, points = qaoa_circuit(), grid(30)
    ideals = evaluate_sweep("u.s", circuit_to_json(circuit), points, 100, LIMITS).sweep_ideals
    for node in ("ibm_nairobi", "quantinuum_h1_1"):
        device = load_device(node)
        budget = noise_budget(compile_for_device(resolved(circuit, points[0]), device), device)
        together = budget_fidelities(budget, ideals, shots=shots)
        alone = [budget_fidelity(budget, ideal, shots=shots) for ideal in ideals]
        assert together == pytest.approx(alone, abs=1e-12)
        assert len(set(together)) > 1
    with pytest.raises(ValueError, match="bits"):
        budget_fidelities(budget, [{"01": 1.0}], shots=shots)


def test_points_evolved_one_stack_each_are_those_evolved_together(monkeypatch) -> None:
    device = load_device("ibm_nairobi")
    circuit, points = qaoa_circuit(), grid(12)
    whole = PointCompiler(circuit, device).emulator.probabilities(points)
    monkeypatch.setattr(sweepemulation, "STACK_AMPLITUDES", 4**6)  # a point a stack
    stacked = PointCompiler(circuit, device).emulator.probabilities(points)
    for one, alone in zip(whole, stacked, strict=True):
        assert one is not None and alone is not None
        assert alone[0] == pytest.approx(one[0], abs=1e-15)


def test_the_sandbox_simulates_each_point_of_a_circuit_too_wide_to_batch() -> None:
    theta = sympy.Symbol("theta")
    q = cirq.LineQubit.range(BATCHED_MAX_QUBITS + 1)
    circuit = cirq.Circuit(
        cirq.H(q[0]), cirq.ry(theta).on(q[1]), cirq.CNOT.on_each(*zip(q, q[1:], strict=False))
    )
    circuit.append(cirq.measure(*q, key="m"))
    points = [{"theta": t} for t in (0.0, 0.7, 2.0)]
    evaluation = evaluate_sweep("u.w", circuit_to_json(circuit), points, 100, LIMITS)
    for ideal, point in zip(evaluation.sweep_ideals, points, strict=True):
        alone = ideal_distribution(resolved(circuit, point))
        assert ideal.keys() == alone.keys()
        assert all(ideal[k] == pytest.approx(alone[k], abs=1e-6) for k in alone)
