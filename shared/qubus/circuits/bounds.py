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
from collections.abc import Callable
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
            integer; ``cirq_json.invalid`` for a ``REF`` to no earlier ``VAL``;
            ``circuit.too_large`` for a ``CircuitOperation`` that alone expands into more than
            ``MAX_OPERATIONS``.
    """
    return walk_cirq_json(value)[1]


Build = Callable[[dict[str, Any]], Any]
"""Makes the object of one Cirq JSON object whose members are already made (a
``json.loads`` object hook, such as cirq's)."""


def walk_cirq_json(value: Any, build: Build | None = None) -> tuple[Any, int]:
    """Count a decoded Cirq JSON value's operations (``cirq_json_operations``) and, with
    ``build``, make its objects in the same pass, innermost first as ``json.loads`` calls an
    object hook: ``build`` is called on every JSON object with its members made, and never on
    a ``CircuitOperation`` that alone expands into more than ``MAX_OPERATIONS`` (the one kind
    whose expansion is not bounded by the text's size).

    Returns:
        What ``build`` made of the value (None without it), and its operation count.

    Raises:
        InvalidPayload: as ``cirq_json_operations``.
    """
    return _walk(value, {}, 0, build)


_SCALARS = (str, int, float, bool, type(None))


def _walk(value: Any, shared: dict[Any, int], depth: int, build: Build | None) -> tuple[Any, int]:
    if depth > MAX_JSON_DEPTH:
        raise InvalidPayload(
            f"Cirq JSON is nested deeper than {MAX_JSON_DEPTH} levels", code="cirq_json.too_deep"
        )
    if isinstance(value, list):
        items, count = [], 0
        for item in value:
            item, n = _walk(item, shared, depth + 1, build)
            items.append(item)
            count += n
        return items, count
    if not isinstance(value, dict):
        return value, 0
    kind = value.get("cirq_type")
    if kind == "REF":
        if value.get("key") not in shared:
            raise InvalidPayload("Cirq JSON refers to an undefined value", code="cirq_json.invalid")
        count = shared[value["key"]]
        return (build(value) if build else None), count
    repetitions = _repetitions(value) if kind == "CircuitOperation" else 1
    members, count = {}, 0
    for key, item in value.items():
        if type(item) in _SCALARS:  # most members: made as they are, without a call
            members[key] = item
        else:
            members[key], n = _walk(item, shared, depth + 1, build)
            count += n
    if kind == "VAL":
        shared[value.get("key")] = count
    elif kind == "CircuitOperation":
        count = max(1, count) * repetitions
        check_operations(count, what="cirq-json")
    elif isinstance(kind, str) and kind.endswith("Operation"):
        count = max(1, count)
    return (build(members) if build else None), count


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


def check_qasm(text: str, operations: int | None = None) -> None:
    """Refuse OpenQASM that expands into more than ``MAX_OPERATIONS`` (counted from its tokens,
    ``qubus.circuits.qasm.count``, unless ``operations`` is the whole count already made).

    Raises:
        InvalidPayload: ``circuit.too_large``.
        QasmError: ``qasm.too_large`` for blocks nested too deeply.
    """
    if operations is None:
        operations = expanded_operations(text)
    check_operations(operations, what="qasm")


def load_cirq_json(text: str, build: Build | None = None) -> Any:
    """Decode Cirq JSON text and refuse it if it expands into more than ``MAX_OPERATIONS``.

    Args:
        text: The Cirq JSON.
        build: Makes the objects in the same pass (``walk_cirq_json``); none: the decoded
            JSON value is returned.

    Returns:
        What ``build`` made of the text, or the decoded JSON value.

    Raises:
        InvalidPayload: ``cirq_json.invalid`` (not JSON), ``cirq_json.too_deep``,
            ``cirq_json.unbounded`` or ``circuit.too_large``.
    """
    value = decode_json(text)
    made, count = walk_cirq_json(value, build)
    check_operations(count, what="cirq-json")
    return value if build is None else made


def decode_json(text: str) -> Any:
    """The JSON value of Cirq JSON text, not yet made into anything nor counted.

    Raises:
        InvalidPayload: ``cirq_json.invalid`` (not JSON), ``cirq_json.too_deep``.
    """
    try:
        return json.loads(text)
    except ValueError as error:
        raise InvalidPayload(
            f"the circuit is not JSON: {error}", code="cirq_json.invalid"
        ) from error
    except RecursionError:
        raise InvalidPayload(
            f"Cirq JSON is nested deeper than {MAX_JSON_DEPTH} levels", code="cirq_json.too_deep"
        ) from None
