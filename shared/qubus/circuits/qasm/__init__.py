"""OpenQASM 2.0 and a practical OpenQASM 3 subset, parsed straight into a ``cirq.Circuit``.

A hand-written tokenizer (one compiled regular expression) feeds a recursive-descent parser.
Gate calls are expanded inline into cirq operations as they are read, and placed into the
moments that ``cirq.Circuit(ops)`` would give them, so the whole parse is a single pass and
every error points at the 1-based line and column of the construct at fault. A gate statement
repeated word for word reuses the operations of its first reading, and a gate head repeated on
other qubits (``rz(pi*0.3) q[1];`` after ``rz(pi*0.3) q[0];``) its parameters' values.

Naming follows cirq's own importer: qubit ``q[0]`` becomes ``cirq.NamedQubit("q_0")`` and a
measurement into bit ``c[1]`` is one ``cirq.measure`` per bit with key ``"c_1"``. A scalar
``qubit q;`` / ``bit c;`` (OpenQASM 3) becomes ``NamedQubit("q")`` / key ``"c"``.

Gate semantics. OpenQASM 2 files are read against a built-in copy of qiskit's extended
``qelib1.inc`` (no include file is loaded at run time). The three ``qelib1.inc`` variants in
``shared/data/qasm/include_variants`` disagree about ``cu3``: the original 23-gate header kept by
QASMBench (``qasmbench_small_qelib1.inc``) omits the ``u1((lambda+phi)/2) c;`` line on the control
qubit, so its ``cu3`` is controlled-``U`` only up to a *relative* phase on the control, an
observable difference; QASMBench's root copy and qiskit's copy include the line, which makes
``cu3`` exactly controlled-``U(theta, phi, lambda)``. We follow qiskit (the exact controlled gate),
because that is what the circuit authors meant, what qiskit and cirq simulate, and what the
extended gates (``cu``, ``csx``) of the same file assume. The variants also differ in gates
that are equal up to global phase (``crz`` with ``u1`` or ``rz``), which does not matter, and
qiskit's copy adds ``u``, ``p``, ``sx``, ``sxdg``, ``cp``, ``csx`` and ``cu``.

Every built-in gate maps to a cirq gate whose unitary is *exactly* the gate's OpenQASM matrix
(``U`` is ``QasmUGate``, ``u1``/``p`` are ``ZPowGate``, ``rz`` is ``cirq.rz``). Global phases are
tracked next to each operation so that ``ctrl @`` (OpenQASM 3) of a gate with a phase (``gphase``
in a body, or a gate defined with one) stays correct: the phase becomes a controlled
``GlobalPhaseGate`` on the controls. At top level global phases are dropped. OpenQASM 3 programs
use the same table: ``stdgates.inc`` gates that also exist in ``qelib1.inc`` keep qiskit's
meaning (the spec's ``u2``/``u3`` differ from it by a global phase, its ``cu`` by a ``p(-theta/2)``
on the control).

Classical control. ``if (c == n) op;`` on register ``c`` of ``k`` bits becomes
``op.with_classical_controls(cirq.SympyCondition(Eq(c_0 + 2*c_1 + ... + 2**(k-1)*c_(k-1), n)))``:
bit ``c[i]`` is the measurement key ``c_i`` and carries weight ``2**i`` (OpenQASM's little-endian
register value), so the condition is true exactly when the register's integer value is ``n``.
A bare bit condition ``if (c[0])`` is ``cirq.KeyCondition``; an ``else`` branch gets the
negated condition (``Eq(c_0, 0)`` or ``Not(...)``). OpenQASM 3 bit expressions with
``^``, ``&``, ``|``, ``!`` on single bits become integer polynomials (``a + b - 2*a*b`` for xor),
so every condition stays serialisable by ``cirq.to_json``. Casts: ``int[n](c)`` reads an
``n``-bit register as two's complement, ``uint[n](c)``, ``int(c)`` and ``uint(c)`` as unsigned
(a width other than the register's is ``qasm.size_mismatch``, as the specification asks), and
``bool(x)`` is ``x != 0``. A comparison that no value of its
bits can satisfy (``c == 5`` or ``c > 3`` on a 2-bit register; a register of ``k`` bits holds
0 to ``2**k - 1``, a bit expression 0 or 1) is rejected with ``qasm.condition_range`` at its
first token. Bits not measured before a condition hold their initial 0 and are substituted:
``if (c == 1)`` after measuring only ``c[0]`` reads ``Eq(c_0, 1)``; a condition left always
true is dropped, and an operation under one left always false is not emitted. Gate parameters
are evaluated to floats, except those that depend on an ``input`` parameter.

Parameters (OpenQASM 3). ``input float[64] theta;`` (or ``input float theta;``, ``input angle
theta;``) declares a parameter whose values a sweep gives (``qubus submit FILE --sweep
PARAMS.json``): an expression using it becomes a sympy expression of ``Symbol("theta")`` (with
``sin`` ... ``arctan`` as sympy's), and the circuit is parameterised as a Cirq one would be.
Inputs may be used in the parameters of gate calls at top level, also of gates the program
defines (their bodies see only their own parameters, ``qasm.undeclared`` otherwise); a gate
whose expansion needs numbers (``U`` under ``ctrl @``, ``cu``, anything under ``inv @``) is
refused with ``qasm.parameter``, as is an input in a ``pow(k)`` exponent or a ``ctrl(n)``
count. Other input types (``int``, ``bit``...) are ``qasm.unsupported``; ``input`` in an
``OPENQASM 2.0`` program is ``qasm.version``. OpenQASM 2 has no parameters: a free identifier
stays ``qasm.undeclared`` (a typo must not become a parameter), and the message says how to
declare one in OpenQASM 3.

OpenQASM 3 subset: ``qubit``/``bit`` declarations (with ``= measure`` initialisers), old-style
``qreg``/``creg``, ``c = measure q;`` and ``measure q -> c;``, gate definitions, the modifiers
``ctrl @``, ``negctrl @``, ``inv @``, ``pow(k) @`` (non-integer ``k`` on a single gate only) and
``gphase``, ``if``/``else`` with blocks, ``reset``, ``barrier``. ``stdgates.inc`` also
provides ``sxdg``, which exporters use with it (a program may still define it once). Loops,
subroutines, classical variables, pulse-level code, ``output``, register slices,
physical qubits (``$0``) and conditional measurements are rejected with ``qasm.unsupported``
naming the construct.

Versions: ``OPENQASM 2.0;`` (or ``2``) and ``3`` / ``3.x``; any other is rejected with
``qasm.version`` (qiskit and cirq reject ``2.6``). A program that includes ``qelib1.inc`` may
define, once, a gate that the original 23-gate ``qelib1.inc`` lacks (``cu``, ``sxdg``, ``rzz``...,
``stdlib.QELIB1_EXTENSIONS``): its definition replaces ours, as in qiskit, whose ``qelib1.inc``
is the original.

Error codes: ``qasm.syntax``, ``qasm.version``, ``qasm.undeclared``, ``qasm.unknown_gate``,
``qasm.unsupported``, ``qasm.opaque``, ``qasm.index_range``, ``qasm.arity`` (wrong number of
parameters or qubits),
``qasm.redeclared``, ``qasm.size_mismatch`` (broadcast over registers of different sizes),
``qasm.condition_range`` (a comparison that no value of its bits satisfies: ``c == 5`` on a
2-bit register), ``qasm.parameter`` (an ``input`` where a constant is needed),
``qasm.duplicate_qubit``, ``qasm.include`` (unknown include file), ``qasm.math`` (an expression
that cannot be evaluated, e.g. a division by zero), ``qasm.too_large`` (beyond
``MAX_OPERATIONS``, ``MAX_REGISTER_SIZE`` or Python's recursion limit: small texts must not
expand into huge circuits).

The package holds three layers, each importing only the ones before it: ``lexer`` (tokens and
source positions), ``stdlib`` (the built-in gate library and its data model) and ``parser``
(the recursive-descent parser and ``parse_qasm``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qubus.lazy import lazy_names

if TYPE_CHECKING:
    from qubus.circuits.qasm.parser import MAX_OPERATIONS, MAX_REGISTER_SIZE, parse_qasm

__all__ = ["MAX_OPERATIONS", "MAX_REGISTER_SIZE", "parse_qasm"]

# The parser's names, loaded on first use: the lexer and the operation count (``count``) need no
# cirq, the parser does.
__getattr__ = lazy_names(__name__, dict.fromkeys(__all__, "qubus.circuits.qasm.parser"))
