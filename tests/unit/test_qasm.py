"""Tests of the OpenQASM parser: dev corpus, reference semantics, properties, error positions."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable
from pathlib import Path

import cirq
import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from qubus.circuits import parse_qasm
from qubus.errors import QasmError

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "qasm"
DEV = DATA / "dev"
QISKIT_QELIB1 = DATA / "include_variants" / "qiskit_qelib1.inc"
MALFORMED = "qasmbench__vqe_uccsd_n4.qasm"

pytestmark = pytest.mark.skipif(not DEV.is_dir(), reason="shared QASM corpus not available")


def _manifest() -> dict[str, dict[str, str]]:
    if not DEV.is_dir():
        return {}
    with (DEV / "MANIFEST.tsv").open() as handle:
        return {row["file"]: row for row in csv.DictReader(handle, delimiter="\t")}


MANIFEST = _manifest()
GOOD_FILES = sorted(name for name in MANIFEST if name != MALFORMED)


def _read(name: str) -> str:
    return (DEV / name).read_text()


def _same_up_to_phase(a: np.ndarray, b: np.ndarray) -> bool:
    return cirq.allclose_up_to_global_phase(a, b, atol=1e-7)


# -- the dev corpus ---------------------------------------------------------------------------


def test_manifest_lists_every_dev_file():
    assert len(MANIFEST) == 44
    assert set(MANIFEST) == {path.name for path in DEV.glob("*.qasm*")}


@pytest.mark.parametrize("name", GOOD_FILES)
def test_dev_file_parses_consistently_with_manifest(name):
    row = MANIFEST[name]
    circuit = parse_qasm(_read(name))
    statements = re.search(r"measure=(\d+)", row["features"])
    measurements = sum(1 for op in circuit.all_operations() if cirq.is_measurement(op))
    assert (measurements >= int(statements.group(1))) if statements else measurements == 0
    cirq_used = re.match(r"ok\((\d+)q used", row["cirq_1.7.0_parse"])
    if cirq_used:
        assert len(circuit.all_qubits()) == int(cirq_used.group(1))
    assert len(circuit.all_qubits()) <= int(row["qubits_declared"])
    assert cirq.read_json(json_text=cirq.to_json(circuit)) == circuit
    assert not cirq.is_parameterized(circuit)


def test_malformed_dev_file_is_rejected_at_first_undeclared_register():
    with pytest.raises(QasmError) as caught:
        parse_qasm(_read(MALFORMED))
    error = caught.value
    assert (error.code, error.line, error.column) == ("qasm.undeclared", 225, 9)
    assert "'q'" in error.message
    assert error.to_dict()["line"] == 225


def test_qubit_and_bit_naming_follows_cirq_importer():
    circuit = parse_qasm(_read("qiskit__entangled_registers.qasm"))
    assert cirq.NamedQubit("b_3") in circuit.all_qubits()
    assert "d_3" in cirq.measurement_key_names(circuit)


# -- semantics against qiskit (test-only reference) -----------------------------------------


def _qiskit_circuit(text: str):
    qasm2 = pytest.importorskip("qiskit.qasm2")
    return qasm2.loads(text, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)


def _qiskit_qubits(qc) -> list[cirq.NamedQubit]:
    """Our qubit for each qiskit qubit index (register name + index, as our parser names them)."""
    names = []
    for qubit in qc.qubits:
        register, index = qc.find_bit(qubit).registers[0]
        names.append(cirq.NamedQubit(f"{register.name}_{index}"))
    return names


def _reference_state(text: str) -> tuple[np.ndarray, list[cirq.NamedQubit]]:
    statevector = pytest.importorskip("qiskit.quantum_info").Statevector
    qc = _qiskit_circuit(text)
    qc.remove_final_measurements()
    # qiskit is little-endian (qubit 0 least significant); cirq's order is big-endian.
    return statevector(qc).data, list(reversed(_qiskit_qubits(qc)))


def _static_small_files() -> list[str]:
    names = []
    for name in GOOD_FILES:
        row = MANIFEST[name]
        small = int(row["qubits_declared"]) <= 12
        static = not any(word in row["features"] for word in ("if=", "reset="))
        if name.endswith(".qasm") and row["qasm_version"] == "2.0" and small and static:
            names.append(name)
    return names


@pytest.mark.parametrize("name", _static_small_files())
def test_final_state_matches_qiskit_statevector(name):
    text = _read(name)
    circuit = parse_qasm(text)
    if not circuit.are_all_measurements_terminal():
        pytest.skip("mid-circuit measurement: no single final state")
    expected, order = _reference_state(text)
    unitary_part = cirq.Circuit(
        op for op in circuit.all_operations() if not cirq.is_measurement(op)
    )
    simulator = cirq.Simulator(dtype=np.complex128)
    state = simulator.simulate(unitary_part, qubit_order=order).final_state_vector
    np.testing.assert_allclose(np.abs(state) ** 2, np.abs(expected) ** 2, atol=1e-8)
    assert _same_up_to_phase(state, expected)


QELIB1_CALLS = [
    ("u3(0.3,0.5,0.7)", 1),
    ("u2(0.5,0.7)", 1),
    ("u1(0.7)", 1),
    ("u(0.3,0.5,0.7)", 1),
    ("p(0.7)", 1),
    ("id", 1),
    ("u0(2)", 1),
    *((gate, 1) for gate in ["x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "sxdg"]),
    ("rx(0.3)", 1),
    ("ry(0.3)", 1),
    ("rz(0.3)", 1),
    *((gate, 2) for gate in ["cx", "cz", "cy", "ch", "swap", "csx"]),
    ("crx(0.3)", 2),
    ("cry(0.3)", 2),
    ("crz(0.3)", 2),
    ("cu1(0.3)", 2),
    ("cp(0.3)", 2),
    ("cu3(0.3,0.5,0.7)", 2),
    ("cu3(-1.0,0.5,0.7)", 2),
    ("cu3(7.5,-4,9)", 2),
    ("cu(0.3,0.5,0.7,0.2)", 2),
    ("rxx(0.3)", 2),
    ("rzz(0.3)", 2),
    *((gate, 3) for gate in ["ccx", "cswap", "rccx"]),
    *((gate, 4) for gate in ["rc3x", "c3x", "c3sqrtx"]),
    ("c4x", 5),
]


def _single_gate_program(call: str, n: int, header: str) -> str:
    qubits = ",".join(f"q[{i}]" for i in range(n))
    return f"OPENQASM 2.0;\n{header}\nqreg q[{n}];\n{call} {qubits};\n"


@pytest.mark.parametrize(("call", "n"), QELIB1_CALLS)
def test_builtin_gate_matches_qiskit_qelib1_text_and_qiskit(call, n):
    ours = parse_qasm(_single_gate_program(call, n, 'include "qelib1.inc";'))
    # The same gate through the literal bodies of qiskit's qelib1.inc, pasted into the program.
    pasted = parse_qasm(_single_gate_program(call, n, QISKIT_QELIB1.read_text()))
    qubits = [cirq.NamedQubit(f"q_{i}") for i in range(n)]
    expected = pasted.unitary(qubit_order=qubits)
    assert _same_up_to_phase(ours.unitary(qubit_order=qubits), expected)
    operator = pytest.importorskip("qiskit.quantum_info").Operator
    qiskit_matrix = operator(
        _qiskit_circuit(_single_gate_program(call, n, 'include "qelib1.inc";'))
    )
    assert _same_up_to_phase(ours.unitary(qubit_order=qubits[::-1]), qiskit_matrix.data)


# -- the parser's shortcuts build what cirq builds -----------------------------------------


@pytest.mark.parametrize(("call", "n"), QELIB1_CALLS)
def test_builtin_gate_operations_equal_cirqs_own(call, n):
    circuit = parse_qasm(_single_gate_program(call, n, 'include "qelib1.inc";'))
    for op in circuit.all_operations():
        built = op.gate.on(*op.qubits)
        assert type(op) is type(built)
        assert op == built


@pytest.mark.parametrize("name", GOOD_FILES)
def test_dev_file_moments_are_cirqs_earliest_placement(name):
    circuit = parse_qasm(_read(name))
    assert circuit == cirq.Circuit(circuit.all_operations())


def test_statement_keyword_wins_over_a_gate_named_like_it():
    circuit = parse_qasm(HEADER + "gate reset a { x a; }\nreset q[0];\nreset q[0];")
    assert [op.gate for op in circuit.all_operations()] == [cirq.ResetChannel()] * 2


def test_repeated_statement_follows_a_gate_defined_between_repetitions():
    circuit = parse_qasm(
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit q;\n'
        "sxdg q;\ngate sxdg a { x a; }\nsxdg q;\nsxdg q;"
    )
    gates = [op.gate for op in circuit.all_operations()]
    assert gates == [cirq.XPowGate(exponent=-0.5), cirq.X, cirq.X]


def test_repeated_statement_past_the_operation_limit_is_rejected_at_its_gate(monkeypatch):
    monkeypatch.setattr("qubus.circuits.qasm.parser.MAX_OPERATIONS", 2)
    with pytest.raises(QasmError) as caught:
        parse_qasm(HEADER + "h q[0];\nh q[0];\n  h q[0];")
    assert (caught.value.code, caught.value.line, caught.value.column) == ("qasm.too_large", 7, 3)


def test_a_gate_head_repeated_on_other_qubits_gives_its_gates_again():
    circuit = parse_qasm(
        HEADER + "rz(pi/4) q[0];\nrz(pi/4) q[1];\nrz(sin(0.5)) q[0];\nrz(sin(0.5)) q[1];"
    )
    q0, q1 = cirq.NamedQubit("q_0"), cirq.NamedQubit("q_1")
    expected = [cirq.rz(math.pi / 4).on(q) for q in (q0, q1)]
    expected += [cirq.rz(math.sin(0.5)).on(q) for q in (q0, q1)]
    assert list(circuit.all_operations()) == expected


def test_a_repeated_gate_head_follows_a_gate_defined_between_and_errors_point_at_its_call():
    circuit = parse_qasm(HEADER + "p(0.5) q[0];\ngate p(t) a { rx(t) a; }\np(0.5) q[1];")
    assert [op.gate for op in circuit.all_operations()] == [
        cirq.ZPowGate(exponent=0.5 / math.pi),
        cirq.rx(0.5),
    ]
    with pytest.raises(QasmError) as caught:
        parse_qasm(HEADER + "rx(0.5) q[0];\n  rx(0.5) q[0], q[1];")
    assert (caught.value.code, caught.value.line, caught.value.column) == ("qasm.arity", 6, 3)


# -- properties -------------------------------------------------------------------------------

_QUBITS = cirq.LineQubit.range(3)
_ANGLES = st.floats(min_value=-2.0, max_value=2.0, allow_nan=False).map(lambda x: round(x, 6))
_ONE = [cirq.H, cirq.X, cirq.Y, cirq.Z, cirq.S, cirq.T, cirq.S**-1, cirq.T**-1]
_TWO = [cirq.CNOT, cirq.CZ, cirq.SWAP]


@st.composite
def _operations(draw) -> cirq.Operation:
    kind = draw(st.sampled_from(["fixed1", "rot", "fixed2", "power2", "three"]))
    qubits = draw(st.permutations(_QUBITS))
    if kind == "fixed1":
        return draw(st.sampled_from(_ONE)).on(qubits[0])
    if kind == "rot":
        rotation = draw(st.sampled_from([cirq.rx, cirq.ry, cirq.rz]))
        return rotation(draw(_ANGLES) * math.pi).on(qubits[0])
    if kind == "fixed2":
        return draw(st.sampled_from(_TWO)).on(*qubits[:2])
    if kind == "power2":
        return cirq.CZPowGate(exponent=draw(_ANGLES)).on(*qubits[:2])
    return draw(st.sampled_from([cirq.TOFFOLI, cirq.FREDKIN])).on(*qubits)


@settings(max_examples=60, deadline=None)
@given(st.lists(_operations(), min_size=1, max_size=12))
def test_random_circuit_through_cirq_qasm_output_keeps_its_unitary(ops):
    circuit = cirq.Circuit(ops)
    parsed = parse_qasm(circuit.to_qasm(qubit_order=_QUBITS))
    named = [cirq.NamedQubit(f"q_{q.x}") for q in _QUBITS]
    # cirq writes decomposed angles with 10 digits, hence the tolerance.
    assert cirq.allclose_up_to_global_phase(
        parsed.unitary(qubit_order=named), circuit.unitary(qubit_order=_QUBITS), atol=1e-6
    )


_QELIB1_GATES = [
    (call.split("(")[0], call.count(",") + 1 if "(" in call else 0, n)
    for call, n in QELIB1_CALLS
    if n <= 3 and not call.startswith("u0")
]


@st.composite
def _qelib1_programs(draw) -> str:
    lines = []
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        name, n_params, n_qubits = draw(st.sampled_from(_QELIB1_GATES))
        params = [str(draw(_ANGLES)) for _ in range(n_params)]
        qubits = draw(st.permutations(range(3)))[:n_qubits]
        head = f"{name}({','.join(params)})" if params else name
        lines.append(f"{head} {','.join(f'q[{i}]' for i in qubits)};")
    return "qreg q[3];\n" + "\n".join(lines) + "\n"


@settings(max_examples=40, deadline=None)
@given(_qelib1_programs())
def test_random_qelib1_program_matches_qiskit_qelib1_definitions(body):
    qubits = [cirq.NamedQubit(f"q_{i}") for i in range(3)]
    ours = parse_qasm('OPENQASM 2.0;\ninclude "qelib1.inc";\n' + body)
    pasted = parse_qasm("OPENQASM 2.0;\n" + QISKIT_QELIB1.read_text() + body)
    assert _same_up_to_phase(ours.unitary(qubit_order=qubits), pasted.unitary(qubit_order=qubits))


@settings(max_examples=60, deadline=None)
@given(st.lists(_operations(), min_size=1, max_size=12))
def test_random_circuit_through_cirq_qasm3_output_keeps_its_unitary(ops):
    circuit = cirq.Circuit(ops)
    parsed = parse_qasm(circuit.to_qasm(qubit_order=_QUBITS, version="3.0"))
    named = [cirq.NamedQubit(f"q_{q.x}") for q in _QUBITS]
    assert cirq.allclose_up_to_global_phase(
        parsed.unitary(qubit_order=named), circuit.unitary(qubit_order=_QUBITS), atol=1e-6
    )


def _u_matrix(theta: float, phi: float, lam: float) -> np.ndarray:
    """OpenQASM's ``U(theta, phi, lambda)``."""
    c, s = math.cos(theta / 2), math.sin(theta / 2)
    return np.array(
        [[c, -np.exp(1j * lam) * s], [np.exp(1j * phi) * s, np.exp(1j * (phi + lam)) * c]]
    )


#: OpenQASM 3 statements (``{0}``... are angles) with their parameters, qubits and the cirq
#: gate each one means, written independently of the parser's tables.
_QASM3_STATEMENTS: list[tuple[str, int, int, Callable[[list[float]], cirq.Gate]]] = [
    ("h", 0, 1, lambda _: cirq.H),
    ("sx", 0, 1, lambda _: cirq.XPowGate(exponent=0.5)),
    ("sdg", 0, 1, lambda _: cirq.S**-1),
    ("p({0})", 1, 1, lambda a: cirq.ZPowGate(exponent=a[0] / math.pi)),
    ("ry({0})", 1, 1, lambda a: cirq.ry(a[0])),
    ("U({0}, {1}, {2})", 3, 1, lambda a: cirq.MatrixGate(_u_matrix(*a))),
    ("inv @ U({0}, {1}, {2})", 3, 1, lambda a: cirq.MatrixGate(_u_matrix(*a).conj().T)),
    ("pow(2) @ t", 0, 1, lambda _: cirq.S),
    ("pow(-0.5) @ z", 0, 1, lambda _: cirq.S**-1),
    ("cx", 0, 2, lambda _: cirq.CNOT),
    ("cp({0})", 1, 2, lambda a: cirq.CZPowGate(exponent=a[0] / math.pi)),
    ("crx({0})", 1, 2, lambda a: cirq.ControlledGate(cirq.rx(a[0]))),
    ("ctrl @ rz({0})", 1, 2, lambda a: cirq.ControlledGate(cirq.rz(a[0]))),
    ("negctrl @ h", 0, 2, lambda _: cirq.ControlledGate(cirq.H, control_values=[0])),
    (
        "ctrl @ U({0}, {1}, {2})",
        3,
        2,
        lambda a: cirq.ControlledGate(cirq.MatrixGate(_u_matrix(*a))),
    ),
    (
        "cu({0}, {1}, {2}, {3})",
        4,
        2,
        lambda a: cirq.ControlledGate(cirq.MatrixGate(np.exp(1j * a[3]) * _u_matrix(*a[:3]))),
    ),
    ("swap", 0, 2, lambda _: cirq.SWAP),
    ("ctrl(2) @ x", 0, 3, lambda _: cirq.TOFFOLI),
    ("cswap", 0, 3, lambda _: cirq.FREDKIN),
]


@st.composite
def _qasm3_programs(draw) -> tuple[str, cirq.Circuit]:
    """A random OpenQASM 3 program on ``q[0..2]`` and the circuit it means."""
    qubits = [cirq.NamedQubit(f"q_{i}") for i in range(3)]
    lines, ops = [], [cirq.I.on_each(*qubits)]
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        template, n_params, n_qubits, gate = draw(st.sampled_from(_QASM3_STATEMENTS))
        angles = [draw(_ANGLES) * math.pi for _ in range(n_params)]
        order = draw(st.permutations(range(3)))[:n_qubits]
        call = template.format(*(repr(angle) for angle in angles))
        lines.append(f"{call} {', '.join(f'q[{i}]' for i in order)};")
        ops.append(gate(angles).on(*(qubits[i] for i in order)))
    text = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] q;\n' + "\n".join(lines)
    return text, cirq.Circuit(ops)


@settings(max_examples=60, deadline=None)
@given(_qasm3_programs())
def test_random_openqasm3_program_with_modifiers_has_the_unitary_it_says(program):
    text, expected = program
    qubits = [cirq.NamedQubit(f"q_{i}") for i in range(3)]
    parsed = parse_qasm(text)
    assert _same_up_to_phase(
        parsed.unitary(qubit_order=qubits), expected.unitary(qubit_order=qubits)
    ), text


def test_expressions_evaluate_to_floats():
    text = (
        'OPENQASM 2.0; include "qelib1.inc"; qreg q[1];\n'
        "rz(-pi/2 + 2*pi^2/(4*sqrt(4)) - ln(exp(1.5)) + sin(0.1)*cos(0.2)/tan(0.3) + 1e-1) q[0];"
    )
    (op,) = parse_qasm(text).all_operations()
    expected = (
        -math.pi / 2 + 2 * math.pi**2 / 8 - 1.5 + math.sin(0.1) * math.cos(0.2) / math.tan(0.3)
    )
    assert cirq.unitary(op) == pytest.approx(cirq.unitary(cirq.rz(expected + 0.1)))
    assert isinstance(op.gate.exponent, float)


def test_gate_definition_with_nested_parameters_expands_inline():
    text = """OPENQASM 2.0; include "qelib1.inc"; qreg q[2];
    gate inner(a) x { rz(a/2) x; }
    gate outer(a, b) x, y { inner(a*b) x; cx x, y; inner(-a) y; }
    outer(0.4, 3) q[0], q[1];"""
    q0, q1 = cirq.NamedQubit("q_0"), cirq.NamedQubit("q_1")
    ops = list(parse_qasm(text).all_operations())
    expected = [cirq.rz(0.6).on(q0), cirq.CNOT(q0, q1), cirq.rz(-0.2).on(q1)]
    assert len(ops) == len(expected)
    for op, want in zip(ops, expected, strict=True):
        assert op.qubits == want.qubits
        assert cirq.approx_eq(op.gate, want.gate)


# -- classical control, OpenQASM 3 ------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(2, 1), (1, 0), (3, 0)])
def test_if_compares_whole_register_value_little_endian(value, expected):
    text = f"""OPENQASM 2.0; include "qelib1.inc";
    qreg q[3]; creg c[2]; creg d[1];
    x q[1]; measure q[0] -> c[0]; measure q[1] -> c[1];
    if(c=={value}) x q[2];
    measure q[2] -> d[0];"""
    result = cirq.Simulator(seed=3).run(parse_qasm(text), repetitions=5)
    assert set(result.measurements["d_0"][:, 0]) == {expected}


def test_register_condition_is_one_sympy_equation_over_bit_keys():
    text = """OPENQASM 2.0; include "qelib1.inc"; qreg q[3]; creg c[3];
    measure q -> c; if(c==5) x q[0];"""
    controlled = list(parse_qasm(text).all_operations())[-1]
    (condition,) = controlled.classical_controls
    c0, c1, c2 = sympy.symbols("c_0 c_1 c_2")
    assert condition == cirq.SympyCondition(sympy.Eq(c0 + 2 * c1 + 4 * c2, 5))


def test_bits_not_measured_yet_are_read_as_zero_in_conditions():
    # c[1] and c[2] still hold their initial 0: cirq would refuse to read their keys.
    text = """OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[3];
    h q[0]; measure q[0] -> c[0]; if(c==1) x q[1]; if(c==0) z q[1]; if(c==2) y q[1];
    measure q[1] -> c[1];"""
    ops = list(parse_qasm(text).all_operations())
    conditions = [op.classical_controls for op in ops if op.classical_controls]
    c0 = sympy.Symbol("c_0")
    assert conditions == [
        frozenset({cirq.SympyCondition(sympy.Eq(c0, 1))}),
        frozenset({cirq.SympyCondition(sympy.Eq(c0, 0))}),
        frozenset({cirq.SympyCondition(sympy.Eq(c0, 2))}),  # never holds: Y never runs
    ]
    result = cirq.Simulator(seed=3).run(parse_qasm(text), repetitions=50)
    assert (result.measurements["c_1"][:, 0] == result.measurements["c_0"][:, 0]).all()
    # Before any measurement `if(c==0)` always holds: the gate runs unconditionally.
    always = parse_qasm(
        'OPENQASM 2.0; include "qelib1.inc"; qreg q[1]; creg c[1]; if(c==0) x q[0];'
    )
    assert list(always.all_operations()) == [cirq.X(cirq.NamedQubit("q_0"))]


def test_openqasm3_ghz_20_samples_only_all_zeros_or_all_ones():
    circuit = parse_qasm(_read("mqtbench__ghz_20_indep.qasm3"))
    result = cirq.Simulator(seed=5).run(circuit, repetitions=40)
    bits = np.hstack([result.measurements[f"meas_{i}"] for i in range(20)])
    assert set(map(tuple, bits)) == {(0,) * 20, (1,) * 20}


def test_openqasm3_rb_sequence_returns_to_zero():
    result = cirq.Simulator(seed=2).run(parse_qasm(_read("openqasm__rb.qasm")), repetitions=20)
    assert set(result.measurements["c_0"][:, 0]) == {0}
    assert set(result.measurements["c_1"][:, 0]) == {0}


def test_openqasm3_qft_of_basis_state_is_uniform():
    circuit = parse_qasm(_read("openqasm__qft.qasm"))
    # The program starts with ``reset q;`` on fresh qubits: nothing to simulate there.
    unitary_part = cirq.Circuit(op for op in circuit.all_operations() if cirq.has_unitary(op))
    state = cirq.final_state_vector(unitary_part, dtype=np.complex128)
    np.testing.assert_allclose(np.abs(state) ** 2, np.full(16, 1 / 16), atol=1e-9)


def test_dynamic_ghz_feed_forward_gives_ghz_correlations():
    circuit = parse_qasm(_read("mqtbench__ghz_dynamic_6_indep.qasm3"))
    result = cirq.Simulator(seed=7).run(circuit, repetitions=100)
    finals = np.hstack([result.measurements[f"final_measurement_{i}"] for i in range(6)])
    assert set(map(tuple, finals)) <= {(0,) * 6, (1,) * 6}


def test_condition_survives_json_round_trip():
    circuit = parse_qasm(_read("qiskit__example_if.qasm"))
    controlled = [op for op in circuit.all_operations() if cirq.control_keys(op)]
    assert len(controlled) == 2
    assert cirq.read_json(json_text=cirq.to_json(circuit)) == circuit


def _qasm3(body: str, qubits: int = 2) -> cirq.Circuit:
    return parse_qasm(f'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[{qubits}] q;\n{body}')


def _u3(qubits: int, body: str) -> np.ndarray:
    circuit = _qasm3(body, qubits)
    return circuit.unitary(qubit_order=[cirq.NamedQubit(f"q_{i}") for i in range(qubits)])


@pytest.mark.parametrize(
    ("modified", "plain"),
    [
        ("ctrl @ x q[0], q[1];", "cx q[0], q[1];"),
        ("inv @ s q[0];", "sdg q[0];"),
        ("pow(2) @ t q[0];", "s q[0];"),
        ("pow(0.5) @ z q[0];", "s q[0];"),
        ("pow(-1) @ t q[0];", "tdg q[0];"),
        ("ctrl @ U(0.3, 0.5, 0.7) q[0], q[1];", "cu(0.3, 0.5, 0.7, 0) q[0], q[1];"),
        ("ctrl @ rz(0.4) q[0], q[1];", "crz(0.4) q[0], q[1];"),
        ("ctrl @ inv @ U(0.3, 0.5, 0.7) q[0], q[1];", "cu(-0.3, -0.7, -0.5, 0) q[0], q[1];"),
        (
            "ctrl @ pow(3) @ U(2.5, 0.5, 0.7) q[0], q[1];",
            "cu(2.5, 0.5, 0.7, 0) q[0], q[1]; cu(2.5, 0.5, 0.7, 0) q[0], q[1];"
            "cu(2.5, 0.5, 0.7, 0) q[0], q[1];",
        ),
        ("ctrl @ gphase(pi/2) q[0];", "s q[0];"),
        ("negctrl @ x q[0], q[1];", "x q[0]; cx q[0], q[1]; x q[0];"),
        ("ctrl(2) @ x q[0], q[1], q[2];", "ccx q[0], q[1], q[2];"),
        (
            "gate g(a) x, y { rz(a) y; cx x, y; } inv @ g(0.3) q[0], q[1];",
            "cx q[0], q[1]; rz(-0.3) q[1];",
        ),
    ],
)
def test_openqasm3_modifiers_match_plain_gates(modified, plain):
    assert np.allclose(_u3(3, modified + "\nid q[2];"), _u3(3, plain + "\nid q[2];"), atol=1e-9)


def test_openqasm3_measure_forms_and_if_block():
    circuit = _qasm3(
        "bit[2] c; bit b; c = measure q; b = measure q[0]; if (c[0]) { x q[1]; h q[0]; }\n"
        "measure q -> c;"
    )
    keys = cirq.measurement_key_names(circuit)
    assert keys == {"c_0", "c_1", "b"}
    assert sum(1 for op in circuit.all_operations() if cirq.control_keys(op)) == 2


@pytest.mark.parametrize(("first", "expected"), [(0, 1), (1, 0)])
def test_openqasm3_else_branch_runs_when_condition_fails(first, expected):
    circuit = _qasm3(
        f"bit a; bit b; {'x q[0];' if first else ''} a = measure q[0];\n"
        "if (a) { id q[1]; } else { x q[1]; }\nb = measure q[1];"
    )
    result = cirq.Simulator(seed=1).run(circuit, repetitions=5)
    assert set(result.measurements["b"][:, 0]) == {expected}


def test_declaration_with_measurement_initialiser():
    circuit = _qasm3("x q[1];\nbit[2] c = measure q;")
    result = cirq.Simulator().run(circuit)
    assert (result.measurements["c_0"][0, 0], result.measurements["c_1"][0, 0]) == (0, 1)


#: c = 1011 read as c[0] c[1] c[2] c[3]: 13 unsigned (little-endian), -3 as a 4-bit int.
_OQ3_FOUR_BITS = """OPENQASM 3.0; include "stdgates.inc"; qubit[5] q; bit[4] c; bit[1] d;
x q[0]; x q[2]; x q[3];
c[0] = measure q[0]; c[1] = measure q[1]; c[2] = measure q[2]; c[3] = measure q[3];
"""


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("int[4](c) == -3", 1),
        ("uint[4](c) == 13", 1),
        ("int(c) == 13", 1),
        ("uint(c) == 5", 0),
        ("bool(c)", 1),
        ("!bool(c)", 0),
        ("bool(c[1])", 0),
        ("int[4](c) < 0", 1),
    ],
)
def test_openqasm3_casts_in_conditions_read_the_register(condition, expected):
    text = _OQ3_FOUR_BITS + f"if ({condition}) x q[4]; d[0] = measure q[4];"
    circuit = parse_qasm(text)
    assert cirq.read_json(json_text=cirq.to_json(circuit)) == circuit
    result = cirq.Simulator(seed=5).run(circuit, repetitions=3)
    assert set(result.measurements["d_0"][:, 0]) == {expected}


def test_openqasm3_signed_cast_compared_beyond_its_range_is_rejected():
    with pytest.raises(QasmError) as caught:
        parse_qasm(_OQ3_FOUR_BITS + "if (int[4](c) == 13) x q[4];")
    assert caught.value.code == "qasm.condition_range"
    assert "values -8 to 7" in caught.value.message


def test_openqasm3_sized_cast_of_a_register_of_another_width_is_rejected():
    text = """OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c;
    c = measure q;
    if (int[4](c) == 1) x q[0];"""
    with pytest.raises(QasmError) as caught:
        parse_qasm(text)
    error = caught.value
    assert (error.code, error.line, error.column) == ("qasm.size_mismatch", 3, 13)
    assert "register of 2 bits" in error.message


# -- errors -----------------------------------------------------------------------------------

HEADER = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\n'
HEADER3 = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\n'


#: Errors of OpenQASM 3 ``input`` parameters, after ``HEADER3``.
INPUT_ERRORS = [
    ("input int[32] n;", "qasm.unsupported", 7, "only float and angle"),
    ("input bit b;", "qasm.unsupported", 7, "'bit'"),
    ("input float;", "qasm.syntax", 12, "an input name"),
    ("input float[64] q;", "qasm.redeclared", 17, "'q'"),
    ("input float th; input angle th;", "qasm.redeclared", 29, "'th'"),
    ("input float th; qubit th;", "qasm.redeclared", 23, "'th'"),
    ("input float th; pow(th) @ x q[0];", "qasm.parameter", 27, "pow(k) exponent"),
    ("input float th; ctrl(th) @ x q[0], q[1];", "qasm.parameter", 28, "ctrl(n) count"),
    ("input float th; gate g(a) x { rz(th) x; }", "qasm.undeclared", 34, "own parameters"),
    ("input float th; inv @ rz(th) q[0];", "qasm.parameter", 23, "gate 'rz' cannot"),
    ("input float th; ctrl @ U(th, 0, 0) q[0], q[1];", "qasm.parameter", 24, "'U'"),
]


@pytest.mark.parametrize(
    ("header", "line5", "code", "column", "words"),
    [(HEADER3, *case) for case in INPUT_ERRORS]
    + [
        (HEADER, *case)
        for case in [
            ("foo q[0];", "qasm.unknown_gate", 1, "foo"),
            ("h r[0];", "qasm.undeclared", 3, "'r'"),
            ("h q[5];", "qasm.index_range", 5, "index 5"),
            ("h q[0] $;", "qasm.syntax", 8, "'$'"),
            ("opaque magic a;", "qasm.opaque", 1, "opaque"),
            ("cx q[0];", "qasm.arity", 1, "cx"),
            ("rx q[0];", "qasm.arity", 1, "rx"),
            ("cx q[0], q[0];", "qasm.duplicate_qubit", 4, "twice"),
            ("measure q -> r;", "qasm.undeclared", 14, "'r'"),
            ("rx(1/0) q[0];", "qasm.math", 1, "rx"),
            ("rx(theta) q[0];", "qasm.undeclared", 4, "OpenQASM 2 has no parameters"),
            ("for int i in [0:1] { x q[0]; }", "qasm.unsupported", 1, "for loops"),
            ("def f() { }", "qasm.unsupported", 1, "def"),
            ("defcal x $0 { }", "qasm.unsupported", 1, "defcal"),
            ("input float theta;", "qasm.version", 1, "OpenQASM 3"),
            ("qreg q[3];", "qasm.redeclared", 6, "'q'"),
            ("h q[0:1];", "qasm.unsupported", 6, "slices"),
            ("h $0;", "qasm.unsupported", 3, "physical"),
            ("measure q[0];", "qasm.unsupported", 13, "target"),
            ("gate g(a) x { ctrl(a) @ x x; }", "qasm.undeclared", 20, "'a'"),
            ("gate g x, y { cx x, x; }", "qasm.duplicate_qubit", 21, "twice"),
            ("if(c==1) measure q[0] -> c[0];", "qasm.unsupported", 10, "measurement"),
            ("if(c==4) x q[0];", "qasm.condition_range", 4, "values 0 to 3 with 4"),
            ("if(c>3) x q[0];", "qasm.condition_range", 4, "'c>3' can never hold"),
            ("if(c[1] == 2) x q[0];", "qasm.condition_range", 4, "values 0 to 1 with 2"),
            ("if(c==5) x q[0];", "qasm.condition_range", 4, "'c==5'"),
        ]
    ],
)
def test_error_position_and_code(header, line5, code, column, words):
    with pytest.raises(QasmError) as caught:
        parse_qasm(header + line5 + "\n")
    error = caught.value
    assert (error.code, error.line, error.column) == (code, 5, column), str(error)
    assert words in error.message


@pytest.mark.parametrize(
    "condition", ["c==3", "c!=3", "c>=3", "c<1", "c[0] == true", "(c[0] ^ c[1]) == 1", "c[1]"]
)
def test_condition_that_some_register_value_meets_is_accepted(condition):
    circuit = parse_qasm(HEADER + f"measure q -> c;\nif({condition}) x q[0];\n")
    op = list(circuit.all_operations())[-1]
    assert cirq.control_keys(op)


def test_character_that_starts_no_token_is_rejected_where_it_stands():
    with pytest.raises(QasmError) as caught:
        parse_qasm(HEADER + "h q[0];\nh q[1] # q[0];")
    error = caught.value
    assert (error.code, error.line, error.column) == ("qasm.syntax", 6, 8)
    assert error.message == "unexpected character '#'"


def test_first_fault_in_reading_order_is_reported_before_a_later_bad_character():
    # openqasm/openqasm's examples/arrays.qasm: an array declaration, later a '#dim' parameter.
    text = "OPENQASM 3.0;\narray[int[8], 2] a;\ndef f(readonly array[int[8], #dim=1] b) {}"
    with pytest.raises(QasmError) as caught:
        parse_qasm(text)
    assert (caught.value.code, caught.value.line) == ("qasm.unsupported", 2)


@pytest.mark.parametrize("version", ["2.6", "2.1", "4.0", "1"])
def test_openqasm_version_other_than_2_0_or_3_is_rejected_with_its_code(version):
    with pytest.raises(QasmError) as caught:
        parse_qasm(f"OPENQASM {version};\nqreg q[1];")
    error = caught.value
    assert (error.code, error.line, error.column) == ("qasm.version", 1, 10)
    assert f"'{version}'" in error.message and "2.0 and 3.x" in error.message


@pytest.mark.parametrize("version", ["2.0", "2", "3", "3.0", "3.1"])
def test_openqasm_versions_2_0_and_3_are_accepted(version):
    body = "qreg q[1];" if version.startswith("2") else "qubit[1] q;"
    assert parse_qasm(f"OPENQASM {version};\n{body}\nU(0, 0, 0) q[0];")


def test_program_may_define_a_gate_that_the_original_qelib1_lacks():
    # qiskit's pea_3_pi_8.qasm defines its own cu (a controlled u1, one parameter): the
    # original qelib1.inc, which qiskit reads, has no cu.
    text = HEADER + "gate cu(theta) a, b { cu1(theta) a, b; }\ncu(0.25) q[0], q[1];"
    (op,) = parse_qasm(text).all_operations()
    assert op.gate == cirq.CZPowGate(exponent=0.25 / math.pi)
    with pytest.raises(QasmError) as caught:
        parse_qasm(text + "\ngate cu(theta) a, b { cu1(theta) a, b; }")
    assert caught.value.code == "qasm.redeclared"


def test_program_may_not_redefine_a_gate_of_the_original_qelib1():
    with pytest.raises(QasmError) as caught:
        parse_qasm(HEADER + "gate cu1(theta) a, b { cz a, b; }")
    assert (caught.value.code, caught.value.line) == ("qasm.redeclared", 5)


def test_exporters_sxdg_is_known_and_may_be_defined_once():
    called = parse_qasm('OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit q;\nsxdg q;')
    # qiskit's qasm3.dumps defines it before use.
    defined = parse_qasm(
        'OPENQASM 3.0;\ninclude "stdgates.inc";\ngate sxdg a { s a; h a; s a; }\nqubit q;\nsxdg q;'
    )
    expected = cirq.unitary(cirq.XPowGate(exponent=-0.5))
    assert _same_up_to_phase(called.unitary(), expected)
    assert _same_up_to_phase(defined.unitary(), expected)
    with pytest.raises(QasmError) as caught:
        parse_qasm(
            'OPENQASM 3.0;\ninclude "stdgates.inc";\ngate sxdg a { x a; }\ngate sxdg a { x a; }'
        )
    assert (caught.value.code, caught.value.line) == ("qasm.redeclared", 4)
    # The original qelib1.inc has no sxdg either: a program's own replaces ours.
    own = parse_qasm(HEADER + "gate sxdg a { x a; }\nsxdg q[0];")
    assert [op.gate for op in own.all_operations()] == [cirq.X]


def test_exponential_gate_nesting_is_stopped():
    lines = ["gate g0 a { x a; }"]
    lines += [f"gate g{i} a {{ g{i - 1} a; g{i - 1} a; }}" for i in range(1, 60)]
    with pytest.raises(QasmError) as caught:
        parse_qasm(HEADER + "\n".join(lines) + "\ng59 q[0];\n")
    assert (caught.value.code, caught.value.line) == ("qasm.too_large", 65)


@pytest.mark.parametrize(
    "line5",
    [
        "pow(10000000) @ x q[0];",
        "qreg big[100000000];",
        "rz(" + "(" * 5000 + "1" + ")" * 5000 + ") q[0];",
    ],
)
def test_small_text_cannot_build_a_huge_circuit(line5):
    with pytest.raises(QasmError) as caught:
        parse_qasm(HEADER + line5)
    assert (caught.value.code, caught.value.line) == ("qasm.too_large", 5)


_FRAGMENTS = [
    *"qc[]();,{}=@!^&|+-*/0123 \n",
    *("gate ", "measure ", "->", "if(", "ctrl @ ", "pow(", "inv @ ", "reset ", "barrier "),
    *("qreg ", "creg ", "qubit ", "bit ", "opaque ", "U(", "CX ", "gphase(", "else ", "pi"),
    *("h ", "cx ", "cu3(", "q[0]", "c[0]", "q[1]", "1e9", "==", '"qelib1.inc"', "include "),
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map("".join))
def test_any_text_parses_or_fails_with_a_positioned_qasm_error(body):
    try:
        parse_qasm(HEADER + body)
    except QasmError as error:
        assert error.line is not None and error.line >= 1 and error.column >= 1
        assert error.code.startswith("qasm.")


_TOKEN = re.compile(r"\s+|[A-Za-z_]\w*|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|->|==|\S")


@st.composite
def _mutated_dev_files(draw: st.DrawFn) -> str:
    """A real dev file with one to three tokens deleted, swapped with another, or duplicated
    (whitespace and comments kept, so line numbers still mean something)."""
    tokens = _TOKEN.findall(_read(draw(st.sampled_from(sorted(MANIFEST)))))
    for _ in range(draw(st.integers(1, 3))):
        solid = [i for i, token in enumerate(tokens) if not token.isspace()]
        i = draw(st.sampled_from(solid))
        action = draw(st.sampled_from(["delete", "swap", "duplicate"]))
        if action == "delete":
            del tokens[i]
        elif action == "swap":
            j = draw(st.sampled_from(solid))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        else:
            tokens.insert(i, tokens[i])
    return "".join(tokens)


@settings(max_examples=300, deadline=None)
@given(_mutated_dev_files())
def test_mutated_real_files_parse_or_fail_with_a_positioned_qasm_error(text):
    try:
        parse_qasm(text)
    except QasmError as error:
        assert error.line is not None and error.line >= 1 and error.column >= 1
        assert error.code.startswith("qasm.")


def test_missing_semicolon_points_after_the_statement():
    with pytest.raises(QasmError) as caught:
        parse_qasm(HEADER + "h q[0]\nx q[1];\n")
    assert (caught.value.code, caught.value.line, caught.value.column) == ("qasm.syntax", 5, 7)
    assert "';'" in caught.value.message


def test_gate_without_include_is_unknown_with_a_hint():
    with pytest.raises(QasmError) as caught:
        parse_qasm("OPENQASM 2.0;\nqreg q[1];\nh q[0];")
    assert caught.value.code == "qasm.unknown_gate"
    assert "qelib1.inc" in caught.value.message


def test_unknown_include_is_rejected():
    with pytest.raises(QasmError) as caught:
        parse_qasm('OPENQASM 2.0;\ninclude "mylib.inc";')
    assert (caught.value.code, caught.value.line, caught.value.column) == ("qasm.include", 2, 9)


QAOA3 = """OPENQASM 3.0;
include "stdgates.inc";
input float[64] gamma;
input angle beta;
qubit[3] q;
bit[3] m;
h q;
gate zz(t) a, b { cx a, b; rz(t) b; cx a, b; }
zz(2 * gamma) q[0], q[1];
zz(2 * gamma) q[1], q[2];
rx(sin(beta) + beta / 2) q;
m = measure q;
"""


def test_input_parameters_are_the_circuits_symbols_and_resolve_to_the_numbers():
    circuit = parse_qasm(QAOA3)
    assert cirq.parameter_names(circuit) == {"gamma", "beta"}
    gamma, beta = 0.3, 1.1
    numeric = (
        QAOA3.replace("input float[64] gamma;\n", "")
        .replace("input angle beta;\n", "")
        .replace("gamma", repr(gamma))
        .replace("beta", repr(beta))
    )
    resolved = cirq.resolve_parameters(circuit, {"gamma": gamma, "beta": beta})
    expected = parse_qasm(numeric)
    assert resolved.all_qubits() == expected.all_qubits()
    body = [cirq.Circuit(c[:-1]) for c in (resolved, expected)]  # without the measurement
    np.testing.assert_allclose(cirq.unitary(body[0]), cirq.unitary(body[1]), atol=1e-12)


def test_a_token_texts_kind_is_the_same_whether_kept_or_matched_afresh(monkeypatch):
    from qubus.circuits.qasm import lexer

    monkeypatch.setattr(lexer, "_KINDS", {})  # none kept by earlier tests, none full
    text = HEADER + "rz(0.25) q[0];\nh q[1];\nU(1e-3, 2, 3) q[2];\n" + "x" * 40 + " q[0];"
    first = lexer.tokenize(text)
    assert lexer.tokenize(text) == first  # the second time from the kept kinds
    assert first[1] == {word: lexer._KIND_RE.fullmatch(word).lastgroup for word in first[0]}
    assert first[1]["0.25"] == "real" and first[1]["2"] == "int" and first[1]["rz"] == "id"
    # Kept: what recurs; not kept: a real number, a text longer than KNOWN_TEXT.
    assert lexer._KINDS["rz"] == "id" and lexer._KINDS["["] == "op"
    assert "0.25" not in lexer._KINDS and "1e-3" not in lexer._KINDS
    assert "x" * 40 not in lexer._KINDS
