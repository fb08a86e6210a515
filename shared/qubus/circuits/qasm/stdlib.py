"""The built-in gate library of the OpenQASM parser, and the gate data model it shares.

``Builtin`` (a gate that expands straight into cirq gates), ``GateDef`` and ``GateCall`` (a gate
defined in OpenQASM and the calls in its body) and the ``Item`` they expand into; the exact
built-in gates with their global phases, ``control`` and ``invert`` on expanded items, the
``TABLE`` of built-ins, and the contents of ``qelib1.inc`` (with ``prelude.PRELUDE`` defining
``rccx`` and ``rc3x``, which the parser reads) and ``stdgates.inc``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cirq
import numpy as np
from cirq.circuits.qasm_output import QasmUGate

from qubus.circuits.qasm.lexer import Token

Expr = Callable[[Mapping[str, float]], float]
#: One expanded operation: a gate (``None`` for a pure phase), its qubits, and the global phase
#: (radians) by which the gate's cirq unitary falls short of the OpenQASM definition.
Item = tuple[cirq.Gate | None, tuple[cirq.Qid, ...], float]
Expand = Callable[[Sequence[float], tuple[cirq.Qid, ...]], list[Item]]


@dataclass(frozen=True)
class Builtin:
    """A gate of the built-in tables: its arity and how it expands into cirq gates."""

    n_params: int
    n_qubits: int
    expand: Expand


class GateCall(NamedTuple):
    """A gate application: in a gate body, kept unexpanded until the gate is called, or a
    statement's call being expanded."""

    name: str
    modifiers: tuple[tuple[str, Expr | None], ...]
    params: tuple[Expr, ...]
    args: tuple[str, ...]
    token: Token


@dataclass(frozen=True)
class GateDef:
    """A gate defined with ``gate name(params) qubits { body }``."""

    name: str
    param_names: tuple[str, ...]
    qubit_names: tuple[str, ...]
    body: tuple[GateCall, ...]
    #: Operations one call expands into (``pow`` counted once): bounds nested definitions.
    size: int

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    @property
    def n_qubits(self) -> int:
        return len(self.qubit_names)


Gate = Builtin | GateDef


def _single(make: Callable[..., cirq.Gate], n_params: int, n_qubits: int = 1) -> Builtin:
    """A built-in gate that is exactly one cirq gate."""

    def expand(params: Sequence[float], qubits: tuple[cirq.Qid, ...]) -> list[Item]:
        return [(make(*params), qubits, 0.0)]

    return Builtin(n_params, n_qubits, expand)


def _fixed(gate: cirq.Gate) -> Builtin:
    """A built-in gate without parameters."""
    return _single(lambda: gate, 0, cirq.num_qubits(gate))


def _u(
    theta: float, phi: float, lam: float, qubits: tuple[cirq.Qid, ...], phase: float = 0.0
) -> list[Item]:
    """``U(theta, phi, lambda)`` (times ``exp(i*phase)``) as an exact ``QasmUGate`` item.

    ``QasmUGate`` reduces ``theta`` modulo 2π, which negates the matrix for odd multiples; the
    lost sign is kept as a phase so that a controlled ``U`` stays exact.
    """
    turns = (theta / math.pi) // 2
    gate = QasmUGate(theta / math.pi, phi / math.pi, lam / math.pi)
    return [(gate, qubits, phase + math.pi * (turns % 2))]


def _phase(lam: float) -> cirq.Gate:
    return cirq.ZPowGate(exponent=lam / math.pi)


def control(
    items: list[Item], controls: tuple[cirq.Qid, ...], values: tuple[int, ...]
) -> list[Item]:
    """Items controlled on ``controls`` taking ``values``, with their phases made exact.

    The phase an item carries becomes a ``GlobalPhaseGate`` controlled on the same qubits, so
    ``ctrl @`` of a gate defined with ``gphase`` or of ``U`` is the exact controlled matrix.
    """
    out: list[Item] = []
    n = len(controls)
    for gate, qubits, phase in items:
        if gate is not None:
            out.append(
                (cirq.ControlledGate(gate, n, control_values=values), controls + qubits, 0.0)
            )
        if phase:
            lifted = cirq.GlobalPhaseGate(complex(math.cos(phase), math.sin(phase)))
            out.append((cirq.ControlledGate(lifted, n, control_values=values), controls, 0.0))
    return out


def invert(items: list[Item]) -> list[Item]:
    """The exact inverse of a sequence of items.

    cirq may normalise an inverted gate (``QasmUGate`` reduces its angles), changing its global
    phase; the change is measured and kept so that ``ctrl @ inv @`` stays exact.
    """
    inverted: list[Item] = []
    for gate, qubits, phase in reversed(items):
        if gate is None:
            inverted.append((None, qubits, -phase))
            continue
        inverse = cirq.inverse(gate)
        product = cirq.unitary(inverse) @ cirq.unitary(gate)
        inverted.append((inverse, qubits, -phase - float(np.angle(product[0, 0]))))
    return inverted


def _controlled(base: Builtin, n_controls: int = 1) -> Builtin:
    """The built-in ``ctrl(n) @ base``."""

    def expand(params: Sequence[float], qubits: tuple[cirq.Qid, ...]) -> list[Item]:
        inner = base.expand(params, qubits[n_controls:])
        return control(inner, qubits[:n_controls], (1,) * n_controls)

    return Builtin(base.n_params, base.n_qubits + n_controls, expand)


_U = Builtin(3, 1, lambda p, qubits: _u(p[0], p[1], p[2], qubits))
_PHASE = _single(_phase, 1)
_CPHASE = _single(lambda lam: cirq.CZPowGate(exponent=lam / math.pi), 1, 2)
_X = _fixed(cirq.X)
_SX = _fixed(cirq.XPowGate(exponent=0.5))
#: ``cu(theta, phi, lambda, gamma)`` is ``ctrl @ (gphase(gamma) U(theta, phi, lambda))``.
_U_WITH_PHASE = Builtin(4, 1, lambda p, qubits: _u(p[0], p[1], p[2], qubits, p[3]))


#: Gates of qiskit's qelib1.inc (plus ``U``/``CX``); the relative-phase gates ``rccx`` and
#: ``rc3x`` come from their qelib1 bodies in ``PRELUDE``.
TABLE: dict[str, Builtin] = {
    "U": _U,
    "u3": _U,
    "u": _U,
    "u2": Builtin(2, 1, lambda p, qubits: _u(math.pi / 2, p[0], p[1], qubits)),
    "u1": _PHASE,
    "p": _PHASE,
    "phase": _PHASE,
    "u0": _single(lambda _gamma: cirq.I, 1),
    "id": _fixed(cirq.I),
    "x": _X,
    "y": _fixed(cirq.Y),
    "z": _fixed(cirq.Z),
    "h": _fixed(cirq.H),
    "s": _fixed(cirq.S),
    "sdg": _fixed(cirq.S**-1),
    "t": _fixed(cirq.T),
    "tdg": _fixed(cirq.T**-1),
    "sx": _SX,
    "sxdg": _fixed(cirq.XPowGate(exponent=-0.5)),
    "rx": _single(cirq.rx, 1),
    "ry": _single(cirq.ry, 1),
    "rz": _single(cirq.rz, 1),
    "CX": _fixed(cirq.CNOT),
    "cx": _fixed(cirq.CNOT),
    "cy": _fixed(cirq.ControlledGate(cirq.Y)),
    "cz": _fixed(cirq.CZ),
    "ch": _fixed(cirq.ControlledGate(cirq.H)),
    "swap": _fixed(cirq.SWAP),
    "ccx": _fixed(cirq.TOFFOLI),
    "cswap": _fixed(cirq.FREDKIN),
    "crx": _single(lambda t: cirq.ControlledGate(cirq.rx(t)), 1, 2),
    "cry": _single(lambda t: cirq.ControlledGate(cirq.ry(t)), 1, 2),
    "crz": _single(lambda t: cirq.ControlledGate(cirq.rz(t)), 1, 2),
    "cu1": _CPHASE,
    "cp": _CPHASE,
    "cphase": _CPHASE,
    "cu3": _controlled(_U),
    "cu": _controlled(_U_WITH_PHASE),
    "csx": _controlled(_SX),
    "rxx": _single(lambda t: cirq.XXPowGate(exponent=t / math.pi, global_shift=-0.5), 1, 2),
    "rzz": _single(lambda t: cirq.ZZPowGate(exponent=t / math.pi, global_shift=-0.5), 1, 2),
    "c3x": _controlled(_X, 3),
    "c3sqrtx": _controlled(_SX, 3),
    "c4x": _controlled(_X, 4),
}

#: Built-in gates of ``qelib1.inc``; the parser adds the gates ``PRELUDE`` defines.
QELIB1 = frozenset(TABLE) - {"U", "CX", "phase", "cphase"}
#: Gates of the original ``qelib1.inc`` of the OpenQASM 2 paper (QASMBench's
#: ``qasmbench_small_qelib1.inc``), which qiskit's parser reads.
_QELIB1_ORIGINAL = frozenset(
    {
        *("u3", "u2", "u1", "cx", "id", "x", "y", "z", "h", "s", "sdg", "t", "tdg", "rx", "ry"),
        *("rz", "cz", "cy", "ch", "ccx", "crz", "cu1", "cu3"),
    }
)
#: The gates our ``qelib1.inc`` adds to the original (qiskit's extended copy): a program may
#: define each of them once, and its definition replaces ours, as in qiskit, whose
#: ``qelib1.inc`` does not have them (``gate cu(...) c, t { ... }`` of a program is its own).
QELIB1_EXTENSIONS = (QELIB1 | {"rccx", "rc3x"}) - _QELIB1_ORIGINAL
#: Gates of ``stdgates.inc``.
_STDGATES = frozenset(
    {
        *("p", "x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "rx", "ry", "rz", "id"),
        *("cx", "cy", "cz", "cp", "crx", "cry", "crz", "ch", "swap", "ccx", "cswap", "cu"),
        *("CX", "phase", "cphase", "u1", "u2", "u3"),
    }
)

#: The ``qelib1.inc`` gates with no exact cirq gate, in OpenQASM: ``_qelib1`` of the parser
#: reads them into definitions.
#: Gates outside ``stdgates.inc`` that exporters use with it: cirq's
#: ``to_qasm(version="3.0")`` calls ``sxdg`` without defining it, qiskit's ``qasm3.dumps``
#: defines it first. Both are accepted: a program may define these gates once.
STDGATES_EXTRAS = frozenset({"sxdg"})


def stdgates() -> dict[str, Gate]:
    """The stdgates.inc gate table."""
    return {name: TABLE[name] for name in _STDGATES | STDGATES_EXTRAS}
