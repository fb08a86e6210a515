"""Tests of the logic checks."""

from __future__ import annotations

import cirq
import pytest
import sympy

from qubus.circuits import parse_qasm
from qubus.circuits.checks import CHECKS, CheckReport, run_checks

BELL = """OPENQASM 2.0; include "qelib1.inc";
qreg q[2]; creg c[2];
h q[0]; cx q[0], q[1];
measure q -> c;
"""


def _codes(report: CheckReport) -> list[str]:
    return [result.code for result in report.failures]


def test_checks_table_has_stable_unique_codes_and_positive_weights():
    codes = [spec.code for spec in CHECKS]
    assert codes == [f"L{i:03d}" for i in range(1, len(CHECKS) + 1)]
    assert len({spec.name for spec in CHECKS}) == len(CHECKS)
    assert all(spec.weight > 0 and spec.description for spec in CHECKS)


def test_clean_circuit_passes_every_check_with_full_score():
    report = run_checks(parse_qasm(BELL), fleet_max_qubits=5)
    assert report.passed
    assert report.logic_score == 1.0
    assert report.failures == []
    assert [result.code for result in report.results] == [spec.code for spec in CHECKS]


def test_broken_circuit_lists_every_failed_check():
    a, b = cirq.LineQubit.range(2)
    circuit = cirq.Circuit(
        cirq.X(a).with_classical_controls("m"),  # condition before its measurement
        cirq.rx(float("nan")).on(b),  # non-finite angle
        cirq.depolarize(0.1).on(a),  # a channel, not a gate
        cirq.measure(a, key="m"),
        cirq.measure(b, key="m"),  # same key written twice
    )
    report = run_checks(circuit, fleet_max_qubits=1, max_depth=2, max_gates=3)
    assert not report.passed
    assert _codes(report) == ["L003", "L005", "L006", "L007", "L008", "L009", "L010"]
    by_code = {result.code: result for result in report.failures}
    assert "2 qubits" in by_code["L008"].message and "has 1" in by_code["L008"].message
    assert "NaN" in by_code["L003"].message
    assert by_code["L005"].message.endswith(": m")
    assert not by_code["L005"].hard
    failed_weight = sum(result.weight for result in report.failures)
    total = sum(spec.weight for spec in CHECKS)
    assert report.logic_score == pytest.approx(1 - failed_weight / total)


def test_empty_circuit_fails_has_operations_and_has_measurements():
    report = run_checks(cirq.Circuit(), fleet_max_qubits=5)
    assert _codes(report) == ["L001", "L002"]
    assert not report.passed


def test_missing_measurement_is_only_a_warning():
    report = run_checks(cirq.Circuit(cirq.H(cirq.LineQubit(0))), fleet_max_qubits=5)
    assert report.passed
    assert _codes(report) == ["L002"]
    assert 0 < report.logic_score < 1


def test_unresolved_symbol_fails_parameters_check():
    q = cirq.LineQubit(0)
    circuit = cirq.Circuit(cirq.rx(sympy.Symbol("theta")).on(q), cirq.measure(q, key="m"))
    report = run_checks(circuit, fleet_max_qubits=5)
    assert _codes(report) == ["L003"]
    assert "unresolved" in report.failures[0].message


def test_remeasuring_after_reset_is_not_flagged():
    text = """OPENQASM 2.0; include "qelib1.inc";
    qreg q[1]; creg c[1];
    h q[0]; measure q[0] -> c[0]; reset q[0]; h q[0]; measure q[0] -> c[0];
    """
    assert run_checks(parse_qasm(text), fleet_max_qubits=1).failures == []


def test_classical_control_after_its_measurement_passes():
    text = """OPENQASM 2.0; include "qelib1.inc";
    qreg q[2]; creg c[1]; creg d[1];
    h q[0]; measure q[0] -> c[0]; if(c==1) x q[1]; measure q[1] -> d[0];
    """
    report = run_checks(parse_qasm(text), fleet_max_qubits=2)
    assert report.passed and report.failures == []


def test_report_is_immutable():
    report = run_checks(parse_qasm(BELL), fleet_max_qubits=5)
    with pytest.raises(ValueError):
        report.passed = False  # type: ignore[misc]


def test_issue_check_list_is_in_the_checks_table():
    names = {spec.name for spec in CHECKS}
    assert {
        "runnable_operations",  # user-defined gates expand to unitaries
        "parameters_finite",
        "distinct_qubits",
        "conditions_measured_before",  # conditions refer to declared registers ...
        "conditions_in_range",  # ... with in-range values
        "qubit_limit",
        "depth_limit",
        "gate_limit",
    } <= names


def _conditioned(condition: sympy.Basic, *, width: int) -> cirq.Circuit:
    qubits = cirq.LineQubit.range(width)
    return cirq.Circuit(
        cirq.H.on_each(*qubits),
        cirq.measure(*qubits, key="m"),
        cirq.X(qubits[0]).with_classical_controls(cirq.SympyCondition(condition)),
        cirq.measure(qubits[0], key="out"),
    )


@pytest.mark.parametrize(
    ("condition", "passes"),
    [
        (sympy.Eq(sympy.Symbol("m"), 3), True),
        (sympy.Eq(sympy.Symbol("m"), 4), False),
        (sympy.StrictGreaterThan(sympy.Symbol("m"), 3), False),
        (sympy.And(sympy.Eq(sympy.Symbol("m"), 1), sympy.Eq(sympy.Symbol("m"), 2)), False),
        (sympy.Ne(sympy.Symbol("m"), 0), True),
    ],
)
def test_condition_out_of_its_keys_range_is_a_hard_failure(condition, passes):
    report = run_checks(_conditioned(condition, width=2), fleet_max_qubits=5)
    assert report.passed is passes
    assert _codes(report) == ([] if passes else ["L011"])
    if not passes:
        assert "no value of its keys" in report.failures[0].message


def test_register_condition_from_qasm_is_checked_over_its_bits():
    text = """OPENQASM 2.0; include "qelib1.inc";
    qreg q[3]; creg c[2]; creg d[1];
    h q[0]; h q[1]; measure q[0] -> c[0]; measure q[1] -> c[1];
    if(c==3) x q[2]; measure q[2] -> d[0];
    """
    assert run_checks(parse_qasm(text), fleet_max_qubits=3).failures == []
