"""Compilation: layout on usable qubits, routing, native gates, schedule, cache."""

from __future__ import annotations

import math
from pathlib import Path

import cirq
import numpy as np
import pytest
import sympy

from benchmarks.sweep import grid, qaoa_circuit
from qubus.circuits.simulate import ideal_distribution
from qubus.circuits.sweeps import resolved
from qubus.devices.compile import compile_for_device, compile_template, phased_xz
from qubus.devices.emulation import emulate
from qubus.devices.fidelity import hellinger_fidelity
from qubus.devices.profiles import load_device
from qubus.errors import CircuitRejected

SHARED_CALIBRATION = Path(__file__).resolve().parents[3] / "shared" / "data" / "calibration"


def named(n: int) -> list[cirq.NamedQubit]:
    return [cirq.NamedQubit(f"q_{i}") for i in range(n)]


def measure_all(qubits: list[cirq.NamedQubit]) -> list[cirq.Operation]:
    return [cirq.measure(q, key=f"c_{i}") for i, q in enumerate(qubits)]


def ghz(n: int) -> cirq.Circuit:
    q = named(n)
    return cirq.Circuit(
        cirq.H(q[0]), [cirq.CNOT(q[i], q[i + 1]) for i in range(n - 1)], measure_all(q)
    )


def random_circuit(n: int, seed: int) -> cirq.Circuit:
    q = named(n)
    body = cirq.testing.random_circuit(q, n_moments=12, op_density=0.8, random_state=seed)
    return body + cirq.Circuit(measure_all(q))


def two_qubit_pairs(circuit: cirq.AbstractCircuit) -> set[tuple[int, int]]:
    return {
        tuple(sorted(q.x for q in op.qubits))
        for op in circuit.all_operations()
        if len(op.qubits) == 2 and not cirq.is_measurement(op)
    }


def assert_preserves_distribution(circuit: cirq.Circuit, node_id: str) -> None:
    device = load_device(node_id)
    compiled = compile_for_device(circuit, device)
    counts = emulate(compiled, device, 4000, seed=7, noiseless=True)
    assert hellinger_fidelity(counts, ideal_distribution(circuit)) >= 0.99


@pytest.mark.parametrize("node_id", ["ibm_nairobi", "ibm_hanoi", "ionq_aria", "quantinuum_h2_2"])
def test_ghz_keeps_its_distribution_after_compilation(node_id: str) -> None:
    assert_preserves_distribution(ghz(5), node_id)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_circuit_keeps_its_distribution_on_heavy_hex(seed: int) -> None:
    assert_preserves_distribution(random_circuit(5, seed), "ibm_nairobi")


Q4 = named(4)


@pytest.mark.parametrize(
    "op",
    [
        cirq.FSimGate(0.3, 0.2)(Q4[1], Q4[3]),
        cirq.XX(Q4[0], Q4[3]) ** 0.3,
        cirq.CZ(Q4[0], Q4[1]) ** 0.5,
        cirq.qft(*Q4),
        cirq.ControlledGate(cirq.H, num_controls=2)(*Q4[:3]),
        cirq.MatrixGate(cirq.testing.random_unitary(8, random_state=1))(*Q4[:3]),
        cirq.global_phase_operation(1j),
    ],
    ids=["fsim", "xx", "sqrt-cz", "qft", "cch", "matrix3", "global-phase"],
)
def test_any_unitary_is_translated_faithfully(op: cirq.Operation) -> None:
    circuit = cirq.Circuit(cirq.H.on_each(*Q4), cirq.ry(0.3).on_each(*Q4), op, measure_all(Q4))
    assert_preserves_distribution(circuit, "ibm_hanoi")


def test_dynamic_circuit_keeps_its_distribution() -> None:
    q = named(3)
    circuit = cirq.Circuit(
        cirq.H(q[0]),
        cirq.measure(q[0], key="m_0"),
        cirq.X(q[2]).with_classical_controls("m_0"),
        cirq.CNOT(q[0], q[1]),
        cirq.reset(q[0]),
        cirq.measure(q[0], q[1], q[2], key="c"),
    )
    assert_preserves_distribution(circuit, "ibm_nairobi")


def test_ghz_on_a_line_needs_no_swaps_and_native_gates_only() -> None:
    device = load_device("ibm_nairobi")
    compiled = compile_for_device(ghz(5), device)
    assert compiled.swaps == 0
    gates = {type(op.gate) for op in compiled.circuit.all_operations()}
    assert gates <= {cirq.PhasedXZGate, cirq.CXPowGate, cirq.MeasurementGate}
    assert two_qubit_pairs(compiled.circuit) <= {(e.a, e.b) for e in device.edges}
    assert sorted(compiled.layout) == [f"q_{i}" for i in range(5)]
    assert compiled.duration_ns == pytest.approx(sum(compiled.moment_durations_ns))


def test_terminal_measurements_stay_terminal_after_routing() -> None:
    q = named(7)
    early = cirq.Circuit(cirq.H(q[0]), cirq.measure(q[0], key="c_0"))
    rest = cirq.Circuit([cirq.CNOT(q[i], q[j]) for i in range(1, 7) for j in range(1, 7) if i != j])
    circuit = early + rest + cirq.Circuit(measure_all(q)[1:])
    compiled = compile_for_device(circuit, load_device("ibm_nairobi"))
    assert compiled.swaps > 0
    assert compiled.circuit.are_all_measurements_terminal()
    assert all(cirq.is_measurement(op) for op in compiled.circuit[-1])
    assert_preserves_distribution(circuit, "ibm_nairobi")


def test_measurement_keys_are_preserved() -> None:
    compiled = compile_for_device(ghz(4), load_device("ibm_manila"))
    keys = {op.gate.key for op in compiled.circuit.all_operations() if cirq.is_measurement(op)}
    assert keys == {"c_0", "c_1", "c_2", "c_3"}


def test_routing_never_uses_gates_reported_with_error_one() -> None:
    device = load_device("ibm_hanoi")
    q = named(device.max_circuit_qubits)
    # A ring over every usable qubit forces traffic across the whole chip.
    ring = [cirq.CNOT(q[i], q[(i + 1) % len(q)]) for i in range(len(q))]
    circuit = cirq.Circuit(cirq.H(q[0]), ring, [cirq.CZ(q[i], q[-1 - i]) for i in range(5)])
    compiled = compile_for_device(circuit, device)
    pairs = two_qubit_pairs(compiled.circuit)
    assert (19, 20) not in pairs and (5, 8) not in pairs
    assert pairs <= {(e.a, e.b) for e in device.edges}
    assert compiled.swaps > 0


def test_circuit_larger_than_the_usable_chip_is_rejected() -> None:
    with pytest.raises(CircuitRejected) as caught:
        compile_for_device(ghz(27), load_device("ibm_hanoi"))
    assert caught.value.code == "device.too_small"


def test_device_without_usable_two_qubit_gates_runs_only_one_qubit() -> None:
    kyoto = load_device("ibm_kyoto", calibration_dir=SHARED_CALIBRATION)
    with pytest.raises(CircuitRejected):
        compile_for_device(ghz(2), kyoto)
    q = named(1)
    one = cirq.Circuit(cirq.X(q[0]), measure_all(q))
    assert emulate(compile_for_device(one, kyoto), kyoto, 10, seed=1, noiseless=True) == {"1": 10}


def test_ion_trap_is_all_to_all_without_swaps() -> None:
    q = named(6)
    circuit = cirq.Circuit([cirq.CZ(q[i], q[j]) for i in range(6) for j in range(i)])
    compiled = compile_for_device(circuit, load_device("ionq_forte"))
    assert compiled.swaps == 0


def test_compilation_is_cached_per_circuit_and_revision() -> None:
    device = load_device("ibm_nairobi")
    first = compile_for_device(ghz(3), device)
    assert compile_for_device(ghz(3), device) is first
    assert compile_for_device(ghz(3), load_device("ibm_manila")) is not first
    q = named(2)
    cz = compile_for_device(cirq.Circuit(cirq.CZ(q[0], q[1])), device)
    assert compile_for_device(cirq.Circuit(cirq.CZ(q[0], q[1])), device) is cz
    # Equal to cirq (CZ is symmetric), but the order of its qubits is its own compilation's.
    assert cirq.CZ(q[1], q[0]) == cirq.CZ(q[0], q[1])
    assert compile_for_device(cirq.Circuit(cirq.CZ(q[1], q[0])), device) is not cz


def test_a_circuit_with_other_one_qubit_gates_reuses_the_routing_and_compiles_as_without_it():
    from qubus.devices import compile as compile_module

    q = cirq.LineQubit.range(4)

    def ghz_like(angle: float, last: cirq.Gate = cirq.H) -> cirq.Circuit:
        return cirq.Circuit(
            cirq.H(q[0]),
            [cirq.CNOT(q[0], q[i]) for i in range(1, 4)],
            cirq.rz(angle)(q[0]),
            last(q[0]),
            cirq.measure(*q, key="m"),
        )

    conditioned = cirq.Circuit(
        cirq.H(q[0]),
        cirq.measure(q[0], key="a"),
        cirq.X(q[3]).with_classical_controls("a"),
        cirq.CZ(q[0], q[3]),
        cirq.reset(q[1]),
        cirq.ry(0.3)(q[1]),
        cirq.measure(q[1], q[3], key="b"),
    )
    circuits = [
        ghz_like(0.1),
        ghz_like(0.7),
        ghz_like(0.7, cirq.X**0.5),
        ghz_like(-math.pi / 2, cirq.Z),  # H·rz·Z multiplies to a half rotation: fewer pulses
        conditioned,
        cirq.Circuit(cirq.MatrixGate(cirq.unitary(cirq.T))(q[2]), *conditioned.all_operations()),
        # One moment per operation, in an order that packing earliest would change (routing
        # replays the order given: qubus.network.distributed builds its programs so).
        cirq.Circuit(
            [cirq.CNOT(q[0], q[1]), cirq.H(q[1]), cirq.CNOT(q[1], q[2])],
            [cirq.CNOT(q[3], q[0]), cirq.H(q[0]), cirq.CNOT(q[2], q[3])],
            cirq.measure(*q, key="m"),
            strategy=cirq.InsertStrategy.NEW,
        ),
    ]
    for device in (load_device("ibm_nairobi"), load_device("quantinuum_h1_1")):
        cached = [compile_for_device(circuit, device) for circuit in circuits]
        assert cached[1].layout == cached[0].layout
        assert cached[1].circuit != cached[0].circuit  # the merged one-qubit pulses differ
        assert len(compile_module._routings._entries) >= 2  # ghz_like's and conditioned's
        for circuit, compiled in zip(circuits, cached, strict=True):
            compile_module._placements._entries.clear()
            scratch = compile_module._routing(circuit, device).fill([])
            assert scratch == compiled


def test_phased_xz_matches_cirqs_from_matrix_on_random_and_special_unitaries():
    rng = np.random.RandomState(7)
    matrices = [cirq.testing.random_unitary(2, random_state=rng) for _ in range(300)]
    matrices += [cirq.unitary(g) for g in (cirq.I, cirq.X, cirq.Y, cirq.Z, cirq.H, cirq.S, cirq.T)]
    for matrix in matrices:
        ours, cirqs = phased_xz(matrix), cirq.PhasedXZGate.from_matrix(matrix)
        assert cirq.equal_up_to_global_phase(cirq.unitary(ours), matrix, atol=1e-9)
        assert ours.x_exponent == pytest.approx(cirqs.x_exponent, abs=1e-12)
        assert ours.z_exponent == pytest.approx(cirqs.z_exponent, abs=1e-12)
        assert ours.axis_phase_exponent == pytest.approx(cirqs.axis_phase_exponent, abs=1e-12)


SPECIAL_POINTS = [
    {"gamma": 0.0, "beta": 0.0},  # every rotation the identity: runs merge away
    {"gamma": np.pi / 4, "beta": np.pi / 4},  # half rotations: one pulse, not two
    {"gamma": np.pi / 2, "beta": np.pi / 2},
    {"gamma": -1.3, "beta": 2.9},
]


@pytest.mark.parametrize("node", ["ibm_nairobi", "ibm_perth", "quantinuum_h1_1", "ionq_aria"])
def test_a_template_binds_each_point_exactly_as_compiling_it(node):
    device = load_device(node)
    circuit = qaoa_circuit()
    template = compile_template(circuit, device)
    assert template is not None
    shapes = set()
    for point in grid(25) + SPECIAL_POINTS:
        bound = template.bind(point)
        assert bound == compile_for_device(resolved(circuit, point), device)
        shapes.add(bound.moment_durations_ns)
    assert len(shapes) > 1  # the schedule does depend on the values, and is redone per point


def test_a_template_needs_every_parameter_in_a_one_qubit_gate():
    a, b = cirq.LineQubit.range(2)
    theta = sympy.Symbol("theta")
    entangling = cirq.Circuit(cirq.H(a), cirq.ZZ(a, b) ** theta, cirq.measure(a, b, key="m"))
    controlled = cirq.Circuit(
        cirq.measure(a, key="c"),
        cirq.rx(theta).on(b).with_classical_controls("c"),
        cirq.measure(b, key="m"),
    )
    device = load_device("ibm_nairobi")
    assert compile_template(entangling, device) is None
    assert compile_template(controlled, device) is None


@pytest.mark.parametrize("node", ["ibm_nairobi", "ionq_aria"])
def test_a_fill_merges_by_its_plan_as_the_merge_of_the_filled_operations(node, dev_circuits):
    """``Routing._merged`` (the merge worked out once per routing) gives what merging the
    filled operations afresh gives (``merge_afresh``, the merge as fill made it before the
    plan), runs that multiply to the identity and classically controlled one-qubit gates
    included."""
    from qubus.devices import compile as compile_module

    device = load_device(node)
    q = cirq.LineQubit.range(3)
    circuits = [
        *(c for c in dev_circuits if len(c.all_qubits()) <= device.max_circuit_qubits),
        cirq.Circuit(cirq.H(q[0]), cirq.H(q[0]), cirq.CNOT(*q[:2]), cirq.rz(0.2)(q[2])),
        cirq.Circuit(
            cirq.measure(q[0], key="a"),
            cirq.X(q[1]).with_classical_controls("a"),
            cirq.ry(0.3)(q[1]),
            cirq.CZ(*q[1:]),
        ),
    ]
    merged = 0
    for circuit in circuits:
        ops = tuple(circuit.all_operations())
        structure, slotted = compile_module._structure(ops)
        routing = compile_module._routing(compile_module._placeholders(ops, slotted), device)
        gates = [op.gate for op in slotted.values()]
        filled = [
            gates[op.gate.index].on(*op.qubits) if isinstance(op.gate, compile_module._Slot) else op
            for op in routing.routed
        ]
        expected = merge_afresh(filled)
        assert routing._merged(gates) == expected
        merged += len(routing.runs())
    assert merged > 100


def merge_afresh(ops: list[cirq.Operation]) -> list[cirq.Operation]:
    """Each run of unconditioned one-qubit unitaries merged into one ``PhasedXZGate`` (dropped
    if the identity), walking the filled operations: the reference the plan is checked
    against."""
    from qubus.devices import compile as compile_module

    merged: list[cirq.Operation] = []
    pending: dict[cirq.Qid, np.ndarray] = {}

    def flush(qubit: cirq.Qid) -> None:
        matrix = pending.pop(qubit, None)
        if matrix is not None and (gate := compile_module.merged_gate(matrix)) is not None:
            merged.append(gate.on(qubit))

    for op in ops:
        if compile_module._mergeable(op):
            (qubit,) = op.qubits
            held = pending.get(qubit)
            unitary = compile_module._unitary(op)
            pending[qubit] = unitary if held is None else unitary @ held
            continue
        for qubit in op.qubits:
            flush(qubit)
        merged.append(compile_module._unmerged(op))
    for qubit in list(pending):
        flush(qubit)
    return merged
