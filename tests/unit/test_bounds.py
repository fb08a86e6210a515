"""Bounded work: circuits are measured in expanded operations before anything expands them."""

from __future__ import annotations

import json

import cirq
import pytest

from qubus.circuits import circuit_from_json, circuit_to_json, load_circuit
from qubus.circuits.bounds import MAX_OPERATIONS, cirq_json_operations
from qubus.circuits.ingest import check_circuit
from qubus.circuits.qasm import MAX_OPERATIONS as PARSER_MAX_OPERATIONS
from qubus.circuits.qasm.count import expanded_operations
from qubus.errors import InvalidPayload, QasmError

Q = cirq.LineQubit.range(3)
BODY = cirq.FrozenCircuit(cirq.H(Q[0]), cirq.CNOT(Q[0], Q[1]), cirq.measure(Q[2], key="m"))


def repeated(repetitions: int) -> str:
    """About 1 KB of Cirq JSON: a three-operation circuit repeated ``repetitions`` times."""
    operation = cirq.CircuitOperation(BODY, repetitions=repetitions, use_repetition_ids=False)
    return circuit_to_json(cirq.Circuit(operation))


def nested_qasm(calls_per_level: int = 9) -> str:
    """Gate ``g<k>`` calls ``g<k-1>`` ten times; ``calls_per_level`` calls of each ``g<k>``, so
    9 calls per level of six levels expand into 999,999 operations."""
    lines = ["OPENQASM 2.0;", 'include "qelib1.inc";', "qreg q[2];", "gate g0 a,b { cx a,b; }"]
    lines += [f"gate g{k} a,b {{ " + f"g{k - 1} a,b; " * 10 + "}" for k in range(1, 6)]
    lines += [f"g{k} q[0],q[1];" for k in range(5, -1, -1) for _ in range(calls_per_level)]
    return "\n".join(lines)


def test_the_qasm_count_equals_the_parsed_circuit_on_every_dev_circuit(dev_qasm):
    counted = 0
    for path in sorted(dev_qasm.glob("*.qasm")):
        text = path.read_text()
        try:
            circuit = load_circuit(text, "qasm2")
        except QasmError:
            continue
        assert expanded_operations(text) == len(list(circuit.all_operations())), path.name
        counted += 1
    assert counted >= 40


def test_a_small_qasm_just_under_the_parsers_limit_is_refused_before_it_is_parsed():
    text = nested_qasm()
    assert len(text) < 1500
    assert expanded_operations(text) == 999_999 < PARSER_MAX_OPERATIONS
    with pytest.raises(InvalidPayload) as refused:
        load_circuit(text, "qasm2")
    assert refused.value.code == "circuit.too_large" and "999,999" in refused.value.message
    with pytest.raises(InvalidPayload):
        check_circuit(text, "qasm2")


def test_broadcast_and_pow_are_multiplied_out():
    text = (
        'OPENQASM 3;\ninclude "stdgates.inc";\nqubit[4] q;\nbit[4] c;\n'
        "pow(3) @ h q;\nc = measure q;"
    )
    assert (
        expanded_operations(text)
        == 3 * 4 + 4
        == len(list(load_circuit(text, "qasm3").all_operations()))
    )


@pytest.mark.parametrize("repetitions", [10**5, 10**9])
def test_a_1kb_circuit_operation_repeated_many_times_is_refused_before_cirq_reads_it(repetitions):
    text = repeated(repetitions)
    assert len(text) < 1200
    with pytest.raises(InvalidPayload) as refused:
        circuit_from_json(text)
    assert refused.value.code == "circuit.too_large"
    assert f"{3 * repetitions:,}" in refused.value.message
    with pytest.raises(InvalidPayload):
        check_circuit(text, "cirq-json")


def test_nested_and_shared_circuit_operations_multiply():
    inner = cirq.CircuitOperation(BODY, repetitions=10)
    outer = cirq.FrozenCircuit(inner, cirq.X(Q[2]))
    circuit = cirq.Circuit(cirq.CircuitOperation(outer, repetitions=7), inner, inner)
    value = json.loads(circuit_to_json(circuit))
    assert cirq_json_operations(value) == 7 * (30 + 1) + 30 + 30
    assert len(list(cirq.Circuit(circuit).all_operations())) == 3  # what every size check saw
    assert circuit_from_json(circuit_to_json(circuit)) == circuit  # under the limit: accepted


def test_the_limit_itself_is_accepted_and_one_more_is_not():
    at_limit = cirq.Circuit(
        cirq.CircuitOperation(cirq.FrozenCircuit(cirq.X(Q[0])), repetitions=MAX_OPERATIONS)
    )
    circuit_from_json(circuit_to_json(at_limit))
    over = cirq.Circuit(at_limit.all_operations(), cirq.X(Q[1]))
    with pytest.raises(InvalidPayload):
        circuit_from_json(circuit_to_json(over))


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"repeat_until": {"cirq_type": "KeyCondition"}}, "cirq_json.unbounded"),
        ({"repetitions": {"cirq_type": "sympy.Symbol", "name": "r"}}, "cirq_json.unbounded"),
        ({"repetitions": True}, "cirq_json.unbounded"),
    ],
)
def test_unbounded_repetitions_are_refused(change, code):
    value = json.loads(repeated(2))
    value["moments"][0]["operations"][0].update(change)
    with pytest.raises(InvalidPayload) as refused:
        circuit_from_json(json.dumps(value))
    assert refused.value.code == code


def test_deeply_nested_json_is_refused_with_a_code():
    for depth in (300, 100_000):
        with pytest.raises(InvalidPayload) as refused:
            circuit_from_json('{"a": ' + "[" * depth + "]" * depth + "}")
        assert refused.value.code == "cirq_json.too_deep"
