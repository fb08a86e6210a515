"""The circuit IR, ``cirq.Circuit``: loading it from the wire formats, Cirq JSON, and the
features the parser stage describes a circuit by (see the package's docstring)."""

from __future__ import annotations

import hashlib
from collections import Counter

import cirq
from cirq.circuits.qasm_output import QasmUGate

from qubus.bus.messages import Features
from qubus.circuits.bounds import check_qasm, load_cirq_json
from qubus.circuits.qasm import parse_qasm
from qubus.errors import InvalidPayload

#: Submission formats accepted by ``load_circuit``.
FORMATS = ("qasm2", "qasm3", "cirq-json")


def circuit_to_json(circuit: cirq.AbstractCircuit) -> str:
    """Cirq JSON of a circuit, compact (no indentation), as sent on the wire."""
    return cirq.to_json(circuit, indent=None)


def circuit_from_json(text: str) -> cirq.Circuit:
    """Read a circuit from Cirq JSON.

    Args:
        text: Cirq JSON of a ``cirq.Circuit`` (a ``cirq.FrozenCircuit`` is unfrozen).

    Returns:
        The circuit.

    Raises:
        InvalidPayload: ``cirq_json.invalid`` if the text is not JSON, not Cirq JSON, or not
            a circuit; ``circuit.too_large`` (and the other codes of
            ``qubus.circuits.bounds.load_cirq_json``) if it expands into more than
            ``MAX_OPERATIONS``, counted before cirq reads it.
    """
    load_cirq_json(text)
    try:
        value = cirq.read_json(json_text=text)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise InvalidPayload(f"not valid Cirq JSON: {error}", code="cirq_json.invalid") from error
    if isinstance(value, cirq.FrozenCircuit):
        return value.unfreeze()
    if not isinstance(value, cirq.Circuit):
        raise InvalidPayload(
            f"Cirq JSON holds a {type(value).__name__}, not a Circuit", code="cirq_json.invalid"
        )
    return value


def load_circuit(source: str, fmt: str) -> cirq.Circuit:
    """Load a submitted circuit.

    Args:
        source: The circuit text.
        fmt: ``"qasm2"``, ``"qasm3"`` (both read by ``parse_qasm``, which trusts the version
            line of the text over ``fmt``) or ``"cirq-json"``.

    Returns:
        The circuit.

    Raises:
        QasmError: The OpenQASM text is rejected (with line, column and code).
        InvalidPayload: ``cirq_json.invalid`` for bad Cirq JSON, ``payload.format`` for an
            unknown ``fmt``, ``circuit.too_large`` for a circuit that expands into more than
            ``qubus.circuits.bounds.MAX_OPERATIONS`` (counted before parsing).
    """
    if fmt in ("qasm2", "qasm3"):
        check_qasm(source)
        return parse_qasm(source)
    if fmt == "cirq-json":
        return circuit_from_json(source)
    raise InvalidPayload(
        f"unknown circuit format {fmt!r}; expected one of {', '.join(FORMATS)}",
        code="payload.format",
    )


_NAMED_EXPONENTS: dict[type, dict[float, str]] = {
    cirq.XPowGate: {1.0: "x", 0.5: "sx", -0.5: "sxdg"},
    cirq.YPowGate: {1.0: "y"},
    cirq.ZPowGate: {1.0: "z", 0.5: "s", -0.5: "sdg", 0.25: "t", -0.25: "tdg"},
    cirq.HPowGate: {1.0: "h"},
    cirq.CXPowGate: {1.0: "cnot"},
    cirq.CZPowGate: {1.0: "cz"},
    cirq.SwapPowGate: {1.0: "swap"},
    cirq.CCXPowGate: {1.0: "ccx"},
    cirq.CCZPowGate: {1.0: "ccz"},
}
_POWER_NAMES: dict[type, str] = {
    cirq.Rx: "rx",
    cirq.Ry: "ry",
    cirq.Rz: "rz",
    cirq.ZPowGate: "p",
    cirq.CZPowGate: "cp",
    cirq.XXPowGate: "rxx",
    cirq.YYPowGate: "ryy",
    cirq.ZZPowGate: "rzz",
}
_GATE_NAMES: dict[type, str] = {
    cirq.MeasurementGate: "measure",
    cirq.ResetChannel: "reset",
    cirq.IdentityGate: "id",
    cirq.CSwapGate: "cswap",
    cirq.GlobalPhaseGate: "gphase",
    cirq.MatrixGate: "unitary",
    QasmUGate: "u3",
}


def gate_name(op: cirq.Operation) -> str:
    """A short lower-case name for an operation's gate, as used in ``gate_counts``.

    Classically controlled operations are named after the operation they control; controlled
    gates get one ``c`` per control (``crx``, ``cccx``); unknown gates fall back to their class
    name.
    """
    if isinstance(op, cirq.ClassicallyControlledOperation):
        return gate_name(op.without_classical_controls())
    gate = op.gate
    return "op" if gate is None else _name_of_gate(gate)


def _name_of_gate(gate: cirq.Gate) -> str:
    if isinstance(gate, cirq.ControlledGate):
        return "c" * gate.num_controls() + _name_of_gate(gate.sub_gate)
    exponent = getattr(gate, "exponent", None)
    plain = getattr(gate, "global_shift", 0) == 0 and isinstance(exponent, float | int)
    for kind in type(gate).__mro__:
        if kind in _GATE_NAMES:
            return _GATE_NAMES[kind]
        if plain and float(exponent) in _NAMED_EXPONENTS.get(kind, {}):
            return _NAMED_EXPONENTS[kind][float(exponent)]
        if kind in _POWER_NAMES:
            return _POWER_NAMES[kind]
    return type(gate).__name__.removesuffix("Gate").lower()


def circuit_features(circuit: cirq.AbstractCircuit, circuit_json: str | None = None) -> Features:
    """Compute the features of a circuit (see ``Features``).

    Args:
        circuit_json: ``circuit_to_json(circuit)``, if the caller has it: when the circuit's
            moments are already its operations packed earliest-first (as the OpenQASM parser
            builds them), that is the text the fingerprint hashes, and it is not encoded again.
    """
    ops = list(circuit.all_operations())
    packed = cirq.Circuit(ops)
    same = circuit_json is not None and len(packed) == len(circuit)
    if same:
        same = all(a.operations == b.operations for a, b in zip(packed, circuit, strict=True))
    canonical = circuit_json if same else circuit_to_json(packed)
    clbits: dict[str, int] = {}
    measured: set[str] = set()
    pairs: Counter[tuple[str, str]] = Counter()
    for op in ops:
        if cirq.is_measurement(op):
            for key in cirq.measurement_key_names(op):
                clbits.setdefault(key, len(op.qubits))
            measured.update(str(qubit) for qubit in op.qubits)
        elif len(op.qubits) >= 2:
            names = sorted(str(qubit) for qubit in op.qubits)
            pairs.update((a, b) for i, a in enumerate(names) for b in names[i + 1 :])
    return Features(
        qubits=len(circuit.all_qubits()),
        clbits=sum(clbits.values()),
        depth=len(packed),
        gate_counts=dict(sorted(Counter(gate_name(op) for op in ops).items())),
        two_qubit_gates=sum(1 for op in ops if len(op.qubits) == 2 and not cirq.is_measurement(op)),
        multi_qubit_gates=sum(
            1 for op in ops if len(op.qubits) >= 3 and not cirq.is_measurement(op)
        ),
        measured_qubits=sorted(measured),
        classical_control=any(cirq.control_keys(op) for op in ops),
        interaction_graph=[(a, b, n) for (a, b), n in sorted(pairs.items())],
        fingerprint=hashlib.sha256(canonical.encode()).hexdigest(),
    )
