"""The circuit IR, ``cirq.Circuit``: loading it from the wire formats, Cirq JSON, and the
features the parser stage describes a circuit by (see the package's docstring)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import cirq
from cirq.circuits.qasm_output import QasmUGate
from cirq.protocols.json_serialization import (
    DEFAULT_RESOLVERS,
    CirqEncoder,
    ObjectHook,
    SerializableByKey,
    factory_from_json,
    json_cirq_type,
)

from qubus.bus.messages import Features
from qubus.circuits.bounds import check_operations, check_qasm, decode_json, walk_cirq_json
from qubus.circuits.packing import asap_layers, measures
from qubus.circuits.qasm import parse_qasm
from qubus.errors import InvalidPayload
from qubus.lru import Lru

#: Submission formats accepted by ``load_circuit``.
FORMATS = ("qasm2", "qasm3", "cirq-json")


def circuit_to_json(circuit: cirq.AbstractCircuit) -> str:
    """Cirq JSON of a circuit, compact (no indentation), as sent on the wire: what
    ``cirq.to_json(circuit, indent=None)`` writes, written by ``CirqJsonWriter``."""
    return json.dumps(circuit, cls=CirqJsonWriter)


_PLAIN: dict[type, str] = {}
"""Each type written so far whose objects ``cirq.to_json`` writes as their own JSON dict
(not as a value shared by key), with its ``cirq_type``."""


class CirqJsonWriter(CirqEncoder):
    """Writes what ``cirq.to_json``'s encoder writes (``tests/unit/test_features.py``) in
    half its time (a fastpath circuit 104 → 53 µs): whether a type is written as its own JSON
    dict and under which ``cirq_type`` is worked out once per process, not at every object
    (the encoder's ``isinstance`` check against ``SerializableByKey``, a protocol, and its
    namespace look-ups)."""

    def default(self, o: Any) -> Any:
        kind = _PLAIN.get(type(o))
        if kind is None:
            if not hasattr(o, "_json_dict_") or isinstance(o, SerializableByKey):
                return super().default(o)
            kind = _PLAIN[type(o)] = json_cirq_type(type(o))
        fields = o._json_dict_()
        if "cirq_type" in fields:  # cirq refuses it, with its explanation
            return super().default(o)
        return {"cirq_type": kind, **fields}


def circuit_from_json(text: str) -> cirq.Circuit:
    """Read a circuit from Cirq JSON.

    The text is decoded, then made into cirq objects and bounded: in the form
    ``circuit_to_json`` writes a circuit of plain gates on qubits (every stage's circuit
    from an OpenQASM source), by ``CirqJsonReader.flat_circuit``; in any other, by one pass of
    ``qubus.circuits.bounds.walk_cirq_json`` with ``CirqJsonReader``.

    Args:
        text: Cirq JSON of a ``cirq.Circuit`` (a ``cirq.FrozenCircuit`` is unfrozen).

    Returns:
        The circuit.

    Raises:
        InvalidPayload: ``cirq_json.invalid`` if the text is not JSON, not Cirq JSON, or not
            a circuit; ``circuit.too_large`` (and the other codes of
            ``qubus.circuits.bounds.load_cirq_json``) if it expands into more than
            ``MAX_OPERATIONS``, refused before cirq expands anything.
    """
    value = decode_json(text)
    reader = CirqJsonReader()
    try:
        made = reader.flat_circuit(value)
        if made is None:
            made, count = walk_cirq_json(value, reader)
            check_operations(count, what="cirq-json")
        value = made
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise InvalidPayload(f"not valid Cirq JSON: {error}", code="cirq_json.invalid") from error
    if isinstance(value, cirq.FrozenCircuit):
        return value.unfreeze()
    if not isinstance(value, cirq.Circuit):
        raise InvalidPayload(
            f"Cirq JSON holds a {type(value).__name__}, not a Circuit", code="cirq_json.invalid"
        )
    return value


_QUBITS = frozenset({cirq.NamedQubit, cirq.LineQubit, cirq.GridQubit})

_QUBIT_GATES = frozenset(
    {
        *(type(g) for g in (cirq.H, cirq.X, cirq.Y, cirq.Z, cirq.S, cirq.CNOT, cirq.CZ, cirq.SWAP)),
        *(type(g) for g in (cirq.ISWAP, cirq.CCX, cirq.CCZ, cirq.CSWAP, cirq.rx(0), cirq.ry(0))),
        cirq.Rz,
        cirq.PhasedXPowGate,
        cirq.PhasedXZGate,
        cirq.MeasurementGate,
    }
)
"""Gates that act on qubits only (dimension 2), whatever their parameters (but a
measurement's ``qid_shape``, which is checked): an operation of one needs only its number of
qubits checked, and that none repeats."""

_CIRCUITS = {"Circuit": cirq.Circuit, "FrozenCircuit": cirq.FrozenCircuit}

_MAKERS: dict[str, Callable[[dict[str, Any]], Any]] = {}
"""Each ``cirq_type`` read so far, resolved: how an object of it is made."""


def _maker(cls: type) -> Callable[[dict[str, Any]], Any]:
    """How ``cirq.read_json`` makes an object of ``cls`` from its JSON object."""
    from_json = getattr(cls, "_from_json_dict_", None)
    if from_json is not None:
        return lambda d: from_json(**d)

    def make(d: dict[str, Any]) -> Any:  # leaves ``d`` as it was: the walk may read it next
        return cls(**{name: value for name, value in d.items() if name != "cirq_type"})

    return make


class CirqJsonReader(ObjectHook):
    """Makes cirq objects from Cirq JSON objects, what ``cirq.read_json``'s object hook makes
    (``tests/unit/test_features.py``), in half to three quarters of its time (as a
    ``json.loads`` hook: the dev set 1.62 → 0.83 ms a circuit, a fastpath circuit 118 → 86
    µs): each type is resolved once per process, not through cirq's resolvers at every
    object; an operation of a qubit-only gate (``_QUBIT_GATES``) on qubits is made without
    cirq's argument check, which the three conditions here replace; and moments of gate
    operations and circuits of moments are made without being flattened again. Shared
    values (``VAL``/``REF``) and the legacy context types are left to cirq's hook.

    A plain object (a gate or a qubit: every member a scalar, ``_plain_key``) read before is
    handed out again, the one object (cirq's gates and qubits are immutable values): circuits
    of one structure then share their gates, whose hashes cirq keeps on the object, so the
    compile caches' keys and the one-qubit matrices' look-ups cost a hash only for the gates
    seen first (``benchmarks/stagework.py``: noise 1.81 → 1.66 ms, a QPU job 0.91–1.09 →
    0.83–1.00 ms)."""

    def __init__(self) -> None:
        super().__init__(DEFAULT_RESOLVERS)

    def __call__(self, d: dict[str, Any]) -> Any:
        kind = d.get("cirq_type")
        if kind == "GateOperation" and len(d) == 3:
            operation = _gate_operation(d["gate"], tuple(d["qubits"]))
            if operation is not None:
                return operation
        elif kind == "Moment" and all(type(op) is cirq.GateOperation for op in d["operations"]):
            return cirq.Moment.from_ops(*d["operations"], tags=tuple(d.get("tags", ())))
        elif kind in _CIRCUITS and all(type(m) is cirq.Moment for m in d["moments"]):
            return _CIRCUITS[kind].from_moments(*d["moments"], tags=d.get("tags", ()))
        make = self._maker(kind)
        if make is None:
            return super().__call__(d)
        key = _plain_key(d)
        if key is None:
            return make(d)
        return self._plain(key, make, d)

    def _maker(self, kind: Any) -> Callable[[dict[str, Any]], Any] | None:
        """How an object of ``cirq_type`` ``kind`` is made; None for what cirq's hook makes
        (shared values, the legacy context types, no ``cirq_type``)."""
        make = _MAKERS.get(kind)
        if make is None:
            if kind is None or kind in ("VAL", "REF") or kind in self.LEGACY_CONTEXT_TYPES:
                return None
            make = _MAKERS[kind] = _maker(factory_from_json(kind, resolvers=self.resolvers))
        return make

    @staticmethod
    def _plain(key: tuple, make: Callable[[dict[str, Any]], Any], d: dict[str, Any]) -> Any:
        """The object of the plain Cirq JSON object ``d`` (``_plain_key``: ``key``), the
        one read before if it is a gate or a qubit."""
        made = _PLAIN_VALUES.get(key)
        if made is None:
            made = make(d)
            if isinstance(made, cirq.Gate | cirq.Qid):  # immutable values, unlike a circuit
                _PLAIN_VALUES.put(key, made)
        return made

    def flat_circuit(self, value: Any) -> cirq.Circuit | None:
        """The circuit of a decoded Cirq JSON value in the form ``circuit_to_json`` writes a
        ``cirq.Circuit`` of untagged moments of gate operations of plain gates on plain
        qubits (``_flat_operation``), made as ``__call__`` makes it but without the
        walk (``qubus.circuits.bounds.walk_cirq_json``) and its calls for every JSON object:
        a fastpath circuit 187 → 79 µs, the dev set 1.54 → 1.00 ms a circuit (41 of its 43
        are flat). Such a value holds one operation per gate operation,
        so its count is their number. None for a value in any other form.

        Raises:
            InvalidPayload: ``circuit.too_large``.
        """
        if type(value) is not dict or value.keys() != _CIRCUIT_KEYS:
            return None
        moments, count = value["moments"], 0
        if value["cirq_type"] != "Circuit" or type(moments) is not list:
            return None
        made = []
        for moment in moments:
            if type(moment) is not dict or moment.keys() != _MOMENT_KEYS:
                return None
            operations = moment["operations"]
            if moment["cirq_type"] != "Moment" or type(operations) is not list:
                return None
            ops = []
            for op in operations:
                made_op = self._flat_operation(op)
                if made_op is None:
                    return None
                ops.append(made_op)
            count += len(ops)
            if all(type(op) is cirq.GateOperation for op in ops):
                made.append(cirq.Moment.from_ops(*ops))
            else:
                made.append(self._maker("Moment")({"cirq_type": "Moment", "operations": ops}))
        check_operations(count, what="cirq-json")
        return cirq.Circuit.from_moments(*made)

    def _flat_operation(self, op: Any) -> cirq.Operation | None:
        """The operation of a Cirq JSON gate operation of a plain gate on plain qubits, or of
        a Pauli gate on a plain qubit (what ``cirq.X(q)`` makes), as ``__call__`` makes it;
        None for any other value."""
        if type(op) is not dict:
            return None
        kind, keys = op.get("cirq_type"), op.keys()
        if kind == "SingleQubitPauliStringGateOperation" and keys == _PAULI_OPERATION_KEYS:
            pauli, qubit = self._plain_member(op["pauli"]), self._plain_member(op["qubit"])
            if pauli is None or qubit is None:
                return None
            return self._maker(kind)({"cirq_type": kind, "pauli": pauli, "qubit": qubit})
        if kind != "GateOperation" or keys != _OPERATION_KEYS or type(op["qubits"]) is not list:
            return None
        gate, qubits = self._plain_member(op["gate"]), tuple(map(self._plain_member, op["qubits"]))
        operation = _gate_operation(gate, qubits)
        if operation is not None:
            return operation
        if not isinstance(gate, cirq.Gate) or None in qubits:
            return None
        return self._maker(kind)({"cirq_type": kind, "gate": gate, "qubits": list(qubits)})

    def _plain_member(self, d: Any) -> Any:
        """The object of a plain Cirq JSON object (``_plain``), None for any other value."""
        if type(d) is not dict:
            return None
        key = _plain_key(d)
        make = None if key is None else self._maker(d.get("cirq_type"))
        return None if make is None else self._plain(key, make, d)


_CIRCUIT_KEYS = {"cirq_type", "moments"}
_MOMENT_KEYS = {"cirq_type", "operations"}
_OPERATION_KEYS = {"cirq_type", "gate", "qubits"}
_PAULI_OPERATION_KEYS = {"cirq_type", "pauli", "qubit"}


def _gate_operation(gate: Any, qubits: tuple) -> cirq.GateOperation | None:
    """The operation of a qubit-only gate (``_QUBIT_GATES``) on distinct qubits, made
    without cirq's argument check, which these conditions replace; None for any other gate
    and qubits."""
    arity = _unchecked_arity(gate)
    if arity == len(qubits) == len(set(qubits)) and all(type(q) in _QUBITS for q in qubits):
        return _unchecked_operation(gate, qubits)
    return None


def _unchecked_arity(gate: Any) -> int | None:
    """What ``_gate_operation`` checks of a gate: its number of qubits for a qubit-only gate
    (``_QUBIT_GATES``; a measurement's on qubits only), None for any other (whose operations
    cirq checks)."""
    if type(gate) not in _QUBIT_GATES:
        return None
    if type(gate) is cirq.MeasurementGate and set(cirq.qid_shape(gate)) != {2}:
        return None
    return gate.num_qubits()


def _unchecked_operation(gate: cirq.Gate, qubits: tuple) -> cirq.GateOperation:
    """``cirq.GateOperation(gate, qubits)`` without cirq's argument check: for the caller to
    have checked what it checks (``_gate_operation``)."""
    operation = object.__new__(cirq.GateOperation)
    operation._gate, operation._qubits = gate, qubits
    return operation


PLAIN_VALUES = 4096
"""Gates and qubits of plain Cirq JSON (every member a scalar) a process keeps to hand out
again (``CirqJsonReader``)."""

_PLAIN_VALUES = Lru(PLAIN_VALUES)


def _plain_key(d: dict[str, Any]) -> tuple | None:
    """A key that tells a Cirq JSON object whose members are all scalars (or lists of
    integers) from any other, exactly: each float by its ``repr`` (``-0.0`` is not ``0.0``),
    other scalars with their type (``1`` is not ``1.0`` nor ``True``); None for any other
    object."""
    items: list[tuple] = []
    for name, value in d.items():
        kind = type(value)
        if kind is float:
            items.append((name, repr(value)))
        elif kind is str or kind is int or kind is bool or value is None:
            items.append((name, kind, value))
        elif kind is list and all(type(item) is int for item in value):
            items.append((name, tuple(value)))
        else:
            return None
    return tuple(items)


WIRE_VERSION = 1
"""The version of the compact wire form ``circuit_to_wire`` writes."""


def circuit_to_wire(circuit: cirq.AbstractCircuit) -> str:
    """A task's circuit as it travels between the stages (the ``circuit`` of ``TaskParsed``,
    ``TaskChecked``, ``TaskScored`` and ``TaskAllocated``): compact where the circuit allows
    it, else its Cirq JSON (``circuit_to_json``).

    The compact form is lines of text. The first is JSON, ``[1, qubits, operations,
    moments]``: the version, the number of qubits, the number of operations, and each moment
    as its operations, an operation as the index of its gate and the indices of its qubits.
    Then each distinct qubit and each distinct gate, in the order the moments first use them,
    as its Cirq JSON, one a line. It is written for a ``cirq.Circuit`` of untagged moments
    whose every operation is a gate operation (or a Pauli gate on a qubit, what ``cirq.X(q)``
    makes) of a plain gate (whose Cirq JSON holds only scalars and lists of integers) on
    named, line or grid qubits: every circuit parsed from OpenQASM without classical control.
    It is canonical: equal circuits of equal gate texts have one text. A fastpath circuit
    (``benchmarks/fastpath.py``) is 2,034 characters of Cirq JSON and 754 of this.
    """
    return _compact(circuit) or circuit_to_json(circuit)


def circuit_from_wire(text: str) -> cirq.Circuit:
    """Read a circuit in its wire form (``circuit_to_wire``), compact or Cirq JSON.

    Raises:
        InvalidPayload: ``cirq_json.invalid`` if the text is neither; ``circuit.too_large``
            for more than ``qubus.circuits.bounds.MAX_OPERATIONS`` operations.
    """
    if not text.startswith("["):
        return circuit_from_json(text)
    head, *lines = text.split("\n")
    try:
        version, count, operations, moments = decode_json(head)
        if version != WIRE_VERSION:
            raise ValueError(f"version {version!r}; this reader knows {WIRE_VERSION}")
        check_operations(operations, what="cirq-json")
        if sum(map(len, moments)) != operations:
            raise ValueError(f"{operations} operations declared, another number given")
        return _from_compact(moments, lines[:count], lines[count:])
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        raise InvalidPayload(
            f"not a circuit in qubus's wire form: {error}", code="cirq_json.invalid"
        ) from error


def _compact(circuit: cirq.AbstractCircuit) -> str | None:
    """The compact wire form of a circuit (``circuit_to_wire``); None if it has none."""
    if type(circuit) is not cirq.Circuit:
        return None
    qubits: dict[cirq.Qid, int] = {}
    texts: dict[int, str] = {}  # each gate's text, by the gate object's id
    gates: dict[str, int] = {}  # by the gate's text: equal gates can differ, rz(0.0), rz(-0.0)
    moments, operations = [], 0
    for moment in circuit:
        if moment.tags:
            return None
        ops = []
        for op in moment.operations:
            gate = op.gate
            if type(op) is not cirq.SingleQubitPauliStringGateOperation and (
                type(op) is not cirq.GateOperation or isinstance(gate, cirq.Pauli)
            ):
                return None  # a Pauli gate's GateOperation would be read back as cirq.X(q)
            text = texts.get(id(gate))
            if text is None:
                text = texts[id(gate)] = _plain_text(gate)
                if not text:
                    return None
            encoded = [gates.setdefault(text, len(gates))]
            for qubit in op.qubits:
                index = qubits.get(qubit)
                if index is None:
                    if type(qubit) not in _QUBITS:
                        return None
                    index = qubits[qubit] = len(qubits)
                encoded.append(index)
            ops.append(encoded)
        moments.append(ops)
        operations += len(ops)
    head = json.dumps([WIRE_VERSION, len(qubits), operations, moments], separators=(",", ":"))
    return "\n".join([head, *map(_qubit_text, qubits), *gates])


def _plain_text(gate: cirq.Gate) -> str:
    """The Cirq JSON text of a plain gate (``_plain_key``); "" for any other gate."""
    text = json.dumps(gate, cls=CirqJsonWriter)
    return text if _plain_key(json.loads(text)) is not None else ""


_QUBIT_TEXTS = Lru(PLAIN_VALUES)
"""Each qubit written so far, with its Cirq JSON text."""


def _qubit_text(qubit: cirq.Qid) -> str:
    text = _QUBIT_TEXTS.get(qubit)
    if text is None:
        text = json.dumps(qubit, cls=CirqJsonWriter)
        _QUBIT_TEXTS.put(qubit, text)
    return text


_WIRE_VALUES = Lru(PLAIN_VALUES)
"""Each gate and qubit read from the compact wire form so far, by its text, with its
``_wire_arity``."""


def _wire_value(text: str) -> tuple[Any, int | None]:
    """The gate or qubit of a line of the compact wire form, with its ``_wire_arity``."""
    made = _WIRE_VALUES.get(text)
    if made is None:
        value = CirqJsonReader()._plain_member(decode_json(text))
        if value is None:
            raise ValueError(f"not a plain gate or qubit: {text[:100]}")
        made = value, _wire_arity(value)
        _WIRE_VALUES.put(text, made)
    return made


def _from_compact(moments: list, qubit_texts: list[str], gate_texts: list[str]) -> cirq.Circuit:
    """The circuit of the compact wire form's moments, qubits and gates."""
    qubits = [_wire_value(text)[0] for text in qubit_texts]
    if not all(type(q) in _QUBITS for q in qubits):
        raise ValueError("a qubit that is not a named, line or grid qubit")
    gates = [_wire_value(text) for text in gate_texts]  # each with its unchecked arity
    if not all(isinstance(gate, cirq.Gate) for gate, _ in gates):
        raise ValueError("a gate that is not a plain gate")
    made = []
    for ops in moments:
        moment = []
        for op in ops:
            if min(op) < 0:
                raise ValueError(f"a negative index in {op}")
            (gate, arity), targets = gates[op[0]], tuple([qubits[i] for i in op[1:]])
            if arity == len(targets) == len(set(targets)):
                moment.append(_unchecked_operation(gate, targets))
            else:  # checked by cirq; a Pauli's is cirq.X(q)'s kind
                moment.append(gate.on(*targets))
        made.append(cirq.Moment.from_ops(*moment))
    return cirq.Circuit.from_moments(*made)


def _wire_arity(value: Any) -> int | None:
    """``_unchecked_arity`` of a gate read from the compact wire form, but None for a Pauli
    (its line stands for the operation ``cirq.X(q)`` makes) and for a qubit."""
    return None if isinstance(value, cirq.Pauli) else _unchecked_arity(value)


def load_circuit(source: str, fmt: str, *, operations: int | None = None) -> cirq.Circuit:
    """Load a submitted circuit.

    Args:
        source: The circuit text.
        fmt: ``"qasm2"``, ``"qasm3"`` (both read by ``parse_qasm``, which trusts the version
            line of the text over ``fmt``) or ``"cirq-json"``.
        operations: The OpenQASM text's count, where the caller has made it whole
            (``qubus.circuits.qasm.count.expanded_operations``): checked, not made again.

    Returns:
        The circuit.

    Raises:
        QasmError: The OpenQASM text is rejected (with line, column and code).
        InvalidPayload: ``cirq_json.invalid`` for bad Cirq JSON, ``payload.format`` for an
            unknown ``fmt``, ``circuit.too_large`` for a circuit that expands into more than
            ``qubus.circuits.bounds.MAX_OPERATIONS`` (counted before parsing).
    """
    if fmt in ("qasm2", "qasm3"):
        check_qasm(source, operations)
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


def circuit_features(circuit: cirq.AbstractCircuit, wire: str | None = None) -> Features:
    """Compute the features of a circuit (see ``Features``).

    Args:
        wire: ``circuit_to_wire(circuit)``, if the caller has it: when the circuit's moments
            are already its operations packed earliest-first (as the OpenQASM parser builds
            them), that is the text the fingerprint hashes, and it is not encoded again.
    """
    ops = list(circuit.all_operations())
    layers = asap_layers(ops)
    depth = 1 + max(layers, default=-1)
    # Packed, each moment holds the same operations in the same order exactly when every
    # operation already stands in the moment packing gives it.
    same = wire is not None and depth == len(circuit)
    if same:
        moments = (index for index, moment in enumerate(circuit) for _ in moment)
        same = all(layer == index for layer, index in zip(layers, moments, strict=True))
    canonical = wire if same else circuit_to_wire(cirq.Circuit(ops))
    clbits: dict[str, int] = {}
    measured: set[str] = set()
    pairs: Counter[tuple[str, str]] = Counter()
    for op in ops:
        if measures(op):
            for key in cirq.measurement_key_names(op):
                clbits.setdefault(key, len(op.qubits))
            measured.update(str(qubit) for qubit in op.qubits)
        elif len(op.qubits) >= 2:
            names = sorted(str(qubit) for qubit in op.qubits)
            pairs.update((a, b) for i, a in enumerate(names) for b in names[i + 1 :])
    return Features(
        qubits=len(circuit.all_qubits()),
        clbits=sum(clbits.values()),
        depth=depth,
        gate_counts=dict(sorted(Counter(gate_name(op) for op in ops).items())),
        two_qubit_gates=sum(1 for op in ops if len(op.qubits) == 2 and not measures(op)),
        multi_qubit_gates=sum(1 for op in ops if len(op.qubits) >= 3 and not measures(op)),
        measured_qubits=sorted(measured),
        classical_control=any(cirq.control_keys(op) for op in ops),
        interaction_graph=[(a, b, n) for (a, b), n in sorted(pairs.items())],
        fingerprint=hashlib.sha256(canonical.encode()).hexdigest(),
    )
