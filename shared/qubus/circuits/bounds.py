"""Bounded work: how many operations a circuit expands into, counted before anything expands it.

A few hundred bytes can describe a huge circuit: a Cirq JSON ``CircuitOperation`` repeated 10^9
times, or OpenQASM gate definitions each calling the previous ten times. Every stage that loads,
expands or compiles a circuit (the ingress, the parser, and through ``circuit_from_json`` logic,
sandbox, noise, the allocator's split planning and the QPU nodes) first counts the operations
from the raw structure and refuses more than ``MAX_OPERATIONS`` with ``circuit.too_large``, a
permanent rejection (never retried). The count is linear in the size of the text.
"""

from __future__ import annotations

import json
from typing import Any

from qubus.circuits.qasm.count import expanded_operations
from qubus.errors import InvalidPayload

MAX_OPERATIONS = 10_000
"""Largest circuit, in operations once every repetition and gate definition is expanded, that
any stage accepts: ten times the largest circuit of the dev set (1,016), about 2 MB of Cirq JSON
(each event stays well under the bus's 8 MiB payload), and some 15 s of the noise service's
compilation and noise budgets for the default four-node fleet on a busy 2-core machine."""

MAX_JSON_DEPTH = 200
"""Deepest nesting of Cirq JSON accepted (a circuit of nested ``CircuitOperation`` s and
classical conditions is a few dozen levels deep)."""


def cirq_json_operations(value: Any) -> int:
    """The operations a decoded Cirq JSON value expands into.

    Every operation counts one, except a ``CircuitOperation``: its circuit's count times its
    repetitions (or its ``repetition_ids``, if longer). Shared sub-circuits (``VAL``/``REF``)
    are counted once and multiplied where referenced.

    Raises:
        InvalidPayload: ``cirq_json.too_deep`` beyond ``MAX_JSON_DEPTH``;
            ``cirq_json.unbounded`` for a ``repeat_until`` loop or repetitions that are not an
            integer; ``cirq_json.invalid`` for a ``REF`` to no earlier ``VAL``.
    """
    return _count(value, {}, 0)


def _count(value: Any, shared: dict[Any, int], depth: int) -> int:
    if depth > MAX_JSON_DEPTH:
        raise InvalidPayload(
            f"Cirq JSON is nested deeper than {MAX_JSON_DEPTH} levels", code="cirq_json.too_deep"
        )
    if isinstance(value, list):
        return sum(_count(item, shared, depth + 1) for item in value)
    if not isinstance(value, dict):
        return 0
    kind = value.get("cirq_type")
    if kind == "REF":
        if value.get("key") not in shared:
            raise InvalidPayload("Cirq JSON refers to an undefined value", code="cirq_json.invalid")
        return shared[value["key"]]
    inner = sum(_count(item, shared, depth + 1) for item in value.values())
    if kind == "VAL":
        shared[value.get("key")] = inner
        return inner
    if kind == "CircuitOperation":
        return max(1, inner) * _repetitions(value)
    if isinstance(kind, str) and kind.endswith("Operation"):
        return max(1, inner)
    return inner


def _repetitions(operation: dict[str, Any]) -> int:
    if operation.get("repeat_until") is not None:
        raise InvalidPayload(
            "a CircuitOperation with repeat_until has no bound on its repetitions",
            code="cirq_json.unbounded",
        )
    repetitions = operation.get("repetitions", 1)
    if not isinstance(repetitions, int) or isinstance(repetitions, bool):
        raise InvalidPayload(
            "a CircuitOperation's repetitions must be an integer", code="cirq_json.unbounded"
        )
    ids = operation.get("repetition_ids")
    return max(abs(repetitions), len(ids) if isinstance(ids, list) else 0)


def check_operations(count: int, *, what: str) -> None:
    """Refuse a circuit of more than ``MAX_OPERATIONS`` operations.

    Raises:
        InvalidPayload: ``circuit.too_large``.
    """
    if count > MAX_OPERATIONS:
        raise InvalidPayload(
            f"the circuit expands to {count:,} operations {_COUNTED[what]}; "
            f"the limit is {MAX_OPERATIONS:,}",
            code="circuit.too_large",
        )


_COUNTED = {
    "qasm": "once gate definitions, broadcasts and pow(k) are expanded",
    "cirq-json": "once every CircuitOperation repetition is expanded",
}


def check_qasm(text: str) -> None:
    """Refuse OpenQASM that expands into more than ``MAX_OPERATIONS`` (counted from its tokens,
    ``qubus.circuits.qasm.count``).

    Raises:
        InvalidPayload: ``circuit.too_large``.
        QasmError: ``qasm.too_large`` for blocks nested too deeply.
    """
    check_operations(expanded_operations(text), what="qasm")


def load_cirq_json(text: str) -> Any:
    """Decode Cirq JSON text and refuse it if it expands into more than ``MAX_OPERATIONS``.

    Returns:
        The decoded JSON value.

    Raises:
        InvalidPayload: ``cirq_json.invalid`` (not JSON), ``cirq_json.too_deep``,
            ``cirq_json.unbounded`` or ``circuit.too_large``.
    """
    try:
        value = json.loads(text)
    except ValueError as error:
        raise InvalidPayload(
            f"the circuit is not JSON: {error}", code="cirq_json.invalid"
        ) from error
    except RecursionError:
        raise InvalidPayload(
            f"Cirq JSON is nested deeper than {MAX_JSON_DEPTH} levels", code="cirq_json.too_deep"
        ) from None
    check_operations(cirq_json_operations(value), what="cirq-json")
    return value
