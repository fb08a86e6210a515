"""Ingress rules: what a submission must look like before it becomes a task."""

from __future__ import annotations

import re

from qubus.bus.messages import Format, SubmitRequest, TaskOptions
from qubus.circuits.bounds import check_qasm, load_cirq_json
from qubus.errors import InvalidPayload

_VERSION = re.compile(r"^\s*OPENQASM\s+(\d+)(?:\.\d+)?\s*;", re.MULTILINE)


def detect_format(request: SubmitRequest) -> Format:
    """The circuit's format: the declared one, else guessed from the text.

    A JSON object is Cirq JSON; an ``OPENQASM 3`` line means OpenQASM 3; anything else is
    treated as OpenQASM 2 (whose version line is optional), and the parser reports what it
    cannot read, with line numbers.
    """
    if request.format is not None:
        return request.format
    text = request.circuit.lstrip()
    if text.startswith("{"):
        return "cirq-json"
    match = _VERSION.search(request.circuit)
    return "qasm3" if match and match.group(1) == "3" else "qasm2"


def task_options(request: SubmitRequest) -> TaskOptions:
    """The options the task carries from stage to stage: every ``TaskOptions`` field, copied
    from the request."""
    return TaskOptions(**request.model_dump(include=set(TaskOptions.model_fields)))


def check_size(body: bytes, max_bytes: int) -> None:
    """Refuse a request body over ``max_bytes`` before decoding it."""
    if len(body) > max_bytes:
        raise InvalidPayload(
            f"submission is {len(body)} bytes; the limit is {max_bytes} (QUBUS_MAX_SUBMIT_BYTES)",
            code="payload.too_large",
        )


def check_circuit(text: str, fmt: Format) -> None:
    """Refuse a circuit that is not even the right kind of text, or that expands into more than
    ``qubus.circuits.bounds.MAX_OPERATIONS`` (counted without expanding); the parser validates
    the rest.

    Raises:
        InvalidPayload: ``cirq_json.invalid`` (Cirq JSON that is not a JSON object),
            ``circuit.too_large`` and the other codes of ``qubus.circuits.bounds``.
        QasmError: ``qasm.too_large`` for OpenQASM blocks nested too deeply.
    """
    if fmt != "cirq-json":
        check_qasm(text)
    elif not isinstance(load_cirq_json(text), dict):
        raise InvalidPayload("Cirq JSON must be an object", code="cirq_json.invalid")
