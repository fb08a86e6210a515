"""The recursive-descent parser of OpenQASM 2 and 3, and ``parse_qasm``.

``_Parser`` reads statements, gate definitions, parameter expressions and classical
conditions from a ``Source`` and expands every gate call inline into cirq operations, against
the gates of ``stdlib`` and those the program defines. The accepted language and the error
codes are described in the package docstring.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import cache
from typing import NamedTuple, NoReturn

import cirq
import sympy

from qubus.circuits.qasm.lexer import Source, Token
from qubus.circuits.qasm.prelude import PRELUDE
from qubus.circuits.qasm.stdlib import (
    QELIB1,
    QELIB1_EXTENSIONS,
    STDGATES_EXTRAS,
    TABLE,
    Builtin,
    Expr,
    Gate,
    GateCall,
    GateDef,
    Item,
    control,
    invert,
    stdgates,
)

__all__ = ["MAX_OPERATIONS", "MAX_REGISTER_SIZE", "parse_qasm"]

#: Largest circuit, in operations after inline expansion, that a program may produce.
MAX_OPERATIONS = 1_000_000
#: Largest register a program may declare.
MAX_REGISTER_SIZE = 65_536

#: Keywords of OpenQASM 3 that this parser knows but does not run, with the words in messages.
_UNSUPPORTED = {
    "for": "for loops",
    "while": "while loops",
    "def": "def subroutines",
    "defcal": "defcal pulse calibrations",
    "defcalgrammar": "defcalgrammar declarations",
    "cal": "cal pulse blocks",
    "output": "output declarations",
    "switch": "switch statements",
    "box": "box statements",
    "delay": "delay instructions",
    "let": "let aliases",
    "const": "const declarations",
    "extern": "extern declarations",
    "return": "return statements",
    "break": "break statements",
    "continue": "continue statements",
    "end": "end statements",
    "int": "classical int variables",
    "uint": "classical uint variables",
    "float": "classical float variables",
    "angle": "classical angle variables",
    "bool": "classical bool variables",
    "complex": "classical complex variables",
    "duration": "duration variables",
    "stretch": "stretch variables",
    "array": "classical arrays",
    "pragma": "pragmas",
}

#: The versions a program may declare: 2.0 (qiskit and cirq reject 2.1 to 2.9) and any 3.x.
_VERSION_RE = re.compile(r"2(?:\.0)?|3(?:\.\d+)?")

#: Words that start a statement other than a gate call, even where a program names a gate so.
_KEYWORDS = frozenset(
    {*_UNSUPPORTED, "OPENQASM", "include", "qreg", "creg", "qubit", "bit", "gate", "opaque"}
    | {"if", "measure", "reset", "barrier"}
)

_CONSTANTS = {"pi": math.pi, "π": math.pi, "tau": math.tau, "τ": math.tau, "euler": math.e}
_FUNCTIONS: dict[str, Callable[[float], float]] = {
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "exp": math.exp,
    "ln": math.log,
    "sqrt": math.sqrt,
    "arcsin": math.asin,
    "arccos": math.acos,
    "arctan": math.atan,
}
#: The same functions of an expression over ``input`` parameters.
_SYMBOLIC_FUNCTIONS: dict[str, Callable[[sympy.Expr], sympy.Expr]] = {
    "sin": sympy.sin,
    "cos": sympy.cos,
    "tan": sympy.tan,
    "exp": sympy.exp,
    "ln": sympy.log,
    "sqrt": sympy.sqrt,
    "arcsin": sympy.asin,
    "arccos": sympy.acos,
    "arctan": sympy.atan,
}
#: The types an ``input`` declaration may have: real numbers, which a sweep's points give.
_INPUT_TYPES = ("float", "angle")


class ArgRef(NamedTuple):
    """A qubit or bit argument as written: ``name`` or ``name[index]``, at token ``at``."""

    name: str
    index: int | None
    at: int


@cache
def _qelib1() -> dict[str, Gate]:
    """The qelib1.inc gate table (built once): ``stdlib.QELIB1`` and the gates ``prelude.PRELUDE``
    defines, which takes a parser to read."""
    gates: dict[str, Gate] = {name: TABLE[name] for name in QELIB1}
    parser = _Parser(PRELUDE)
    parser.gates.update(gates)
    parser.parse_program()
    return {**gates, "rccx": parser.gates["rccx"], "rc3x": parser.gates["rc3x"]}


#: Each include file: its gates, and the names among them a program may define again.
_INCLUDES: dict[str, tuple[Callable[[], dict[str, Gate]], frozenset[str]]] = {
    "qelib1.inc": (_qelib1, QELIB1_EXTENSIONS),
    "stdgates.inc": (stdgates, STDGATES_EXTRAS),
}


@dataclass
class _Register:
    """A declared quantum or classical register; ``size`` is ``None`` for a scalar."""

    name: str
    size: int | None
    quantum: bool
    members: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.size is None:
            self.members = (self.name,)
        else:
            self.members = tuple(f"{self.name}_{i}" for i in range(self.size))


class _Statement(NamedTuple):
    """A gate call statement read before: its size estimate for ``check_size``, the position
    of its gate name among its tokens, and its operations."""

    size: int
    name_index: int
    ops: list[cirq.Operation]


#: Longest gate call statement, in tokens, whose operations are kept for its repetitions.
_STATEMENT_CACHE_TOKENS = 64
#: The words of gate modifiers (``ctrl @``, ``pow(2) @``...).
_MODIFIERS = ("ctrl", "negctrl", "inv", "pow")
#: The parameters seen by an expression outside gate definitions: none.
_NO_PARAMS: frozenset[str] = frozenset()


def _head_of(statement: tuple[str, ...]) -> tuple[str, ...] | None:
    """The tokens of a gate call statement's head, its gate name and parameter list up to the
    first ``)``; ``None`` without parameters (nothing to keep) or with a modifier. A list with
    parentheses inside is cut short here, and the parser then finds it is not a head."""
    if len(statement) < 2 or statement[1] != "(" or statement[0] in _MODIFIERS:
        return None
    try:
        return statement[: statement.index(")") + 1]
    except ValueError:
        return None


class _Parser:
    """Recursive-descent parser that emits cirq operations as it reads statements."""

    def __init__(self, text: str) -> None:
        self.source = Source(text)
        self.texts = self.source.texts
        self.pos = 0
        self.gates: dict[str, Gate] = {"U": TABLE["U"], "CX": TABLE["CX"]}
        self.registers: dict[str, _Register] = {}
        self.n_ops = 0
        #: Operations of each moment, and the last moment that holds each qubit, measurement
        #: key and control key (see ``place``).
        self.moments: list[list[cirq.Operation]] = []
        self.last_qubit: dict[cirq.Qid, int] = {}
        self.last_measured: dict[str, int] = {}
        self.last_controlled: dict[str, int] = {}
        self.measured: set[str] = set()
        self.qubits: dict[str, cirq.NamedQubit] = {}
        self.redefinable: set[str] = set()
        #: The operations of each unconditioned gate-call statement read so far, by its tokens'
        #: texts (see ``parse_gate_call``); emptied whenever a gate is (re)defined.
        self.statements: dict[tuple[str, ...], _Statement] = {}
        #: The parameter values of each gate call head read so far (see ``parse_gate_call``), by
        #: its tokens' texts; emptied with ``statements``.
        self.heads: dict[tuple[str, ...], list[float]] = {}
        #: The program's ``input`` parameters, by name (OpenQASM 3).
        self.inputs: dict[str, sympy.Symbol] = {}
        self.version = 3
        #: Whether a gate definition's body is being read (it sees only its own parameters).
        self.in_gate_body = False

    # -- token helpers ------------------------------------------------------------------------

    def peek(self) -> Token:
        return self.source.token(self.pos)

    def next_text(self) -> str:
        """The text of the token after the current one."""
        return self.texts[min(self.pos + 1, len(self.texts) - 1)]

    def advance(self) -> Token:
        token = self.source.token(self.pos)
        if token.kind != "eof":
            self.pos += 1
        return token

    def accept(self, text: str) -> bool:
        """Step over the current token if it is ``text`` (an operator or a keyword)."""
        if self.texts[self.pos] == text:
            self.pos += 1
            return True
        return False

    def expect(self, text: str, what: str | None = None) -> None:
        if self.texts[self.pos] != text:
            token = self.peek()
            found = repr(token.text) if token.kind != "eof" else "end of input"
            self.fail(token, f"expected {what or repr(text)}, found {found}")
        self.pos += 1

    def expect_kind(self, kind: str, what: str) -> Token:
        token = self.source.token(self.pos)
        if token.kind != kind:
            found = repr(token.text) if token.kind != "eof" else "end of input"
            self.fail(token, f"expected {what}, found {found}")
        self.pos += 1
        return token

    def end_statement(self) -> None:
        if self.texts[self.pos] != ";":
            token, previous = self.peek(), self.source.token(self.pos - 1)
            if token.kind == "bad":
                self.fail(token, f"unexpected character {token.text!r}")
            found = token.text or "end of input"
            message = f"missing ';' after {previous.text!r} (found {found!r})"
            offset = self.source.offset(previous) + len(previous.text)
            raise self.source.error(offset, message, "qasm.syntax")
        self.pos += 1

    def fail(self, token: Token, message: str, code: str = "qasm.syntax") -> NoReturn:
        """Raise a ``QasmError`` at ``token`` (a character that starts no token says so)."""
        if token.kind == "bad":
            message, code = f"unexpected character {token.text!r}", "qasm.syntax"
        raise self.source.error(token, message, code)

    # -- program ------------------------------------------------------------------------------

    def parse_program(self) -> cirq.Circuit:
        if self.texts[self.pos] == "OPENQASM":
            self.parse_version()
        while self.texts[self.pos]:  # the end of the text is the one empty token
            self.parse_statement(())
        return cirq.Circuit.from_moments(*(cirq.Moment.from_ops(*ops) for ops in self.moments))

    def parse_version(self) -> None:
        self.advance()
        version = self.advance()
        if not _VERSION_RE.fullmatch(version.text):
            message = f"OpenQASM version {version.text!r} is not supported: only 2.0 and 3.x are"
            self.fail(version, message, "qasm.version")
        self.version = int(version.text[0])
        self.end_statement()

    def parse_statement(self, conditions: tuple[cirq.Condition, ...]) -> None:
        text = self.texts[self.pos]
        if text in self.gates and text not in _KEYWORDS:
            self.parse_gate_call(conditions)  # the common case first: a call of a known gate
            return
        if self.source.kind(self.pos) != "id":
            self.fail(self.peek(), f"unexpected {text or 'end of input'!r} at start of a statement")
        handler = self._STATEMENTS.get(text)
        if handler is not None and not conditions:
            handler(self)
        elif text in _UNSUPPORTED:
            self.fail(
                self.peek(),
                f"{_UNSUPPORTED[text]} ('{text}') are not supported",
                "qasm.unsupported",
            )
        elif text == "opaque":
            self.fail(self.peek(), "opaque gates have no definition and cannot run", "qasm.opaque")
        elif text == "if":
            self.parse_if(conditions)
        elif text == "measure" or (text in self.registers and self.next_text() in ("=", "[")):
            self.parse_measure(conditions)
        elif text == "reset":
            self.parse_reset(conditions)
        elif text == "barrier":
            self.parse_barrier()
        elif handler is not None:
            self.fail(self.peek(), f"'{text}' cannot be classically controlled", "qasm.unsupported")
        else:
            self.parse_gate_call(conditions)

    def parse_include(self) -> None:
        self.advance()
        name = self.expect_kind("string", "a file name in double quotes")
        include = _INCLUDES.get(name.text[1:-1])
        if include is None:
            self.fail(
                name,
                f"unknown include file {name.text}; known: qelib1.inc, stdgates.inc",
                "qasm.include",
            )
        self.end_statement()
        gates, redefinable = include
        self.gates.update(gates())
        self.statements.clear()
        self.heads.clear()
        self.redefinable.update(redefinable)

    def parse_old_declaration(self) -> None:
        keyword = self.advance()
        name = self.expect_kind("id", "a register name")
        self.expect("[")
        size = self.parse_size()
        self.expect("]")
        self.declare(name, size, quantum=keyword.text == "qreg")
        self.end_statement()

    def parse_new_declaration(self) -> None:
        keyword = self.advance()
        size: int | None = None
        if self.accept("["):
            size = self.parse_size()
            self.expect("]")
        name = self.expect_kind("id", "a register name")
        self.declare(name, size, quantum=keyword.text == "qubit")
        if keyword.text == "bit" and self.texts[self.pos] == "=":
            self.pos -= 1  # back to the name: ``bit[n] c = measure q;`` reads as ``c = measure q;``
            self.parse_measure(())
            return
        self.end_statement()

    def parse_size(self) -> int:
        token = self.expect_kind("int", "a register size")
        size = int(token.text)
        if size <= 0:
            self.fail(token, "a register needs at least one element", "qasm.index_range")
        if size > MAX_REGISTER_SIZE:
            message = f"register size {size} exceeds the limit {MAX_REGISTER_SIZE}"
            self.fail(token, message, "qasm.too_large")
        return size

    def parse_input(self) -> None:
        """``input float[64] name;`` (or ``angle``): a parameter whose values a sweep gives."""
        keyword = self.advance()
        if self.version < 3:
            message = "input declarations need OpenQASM 3 (OPENQASM 3.0;)"
            self.fail(keyword, message, "qasm.version")
        kind = self.expect_kind("id", "an input type")
        if kind.text not in _INPUT_TYPES:
            self.fail(
                kind,
                f"input of type '{kind.text}' is not supported: only float and angle inputs, "
                "which a sweep's points give",
                "qasm.unsupported",
            )
        if self.accept("["):
            self.parse_size()
            self.expect("]")
        name = self.expect_kind("id", "an input name")
        taken = (self.registers, self.gates, self.inputs, _CONSTANTS, _FUNCTIONS)
        if any(name.text in names for names in taken):
            self.fail(name, f"'{name.text}' is already declared", "qasm.redeclared")
        self.inputs[name.text] = sympy.Symbol(name.text)
        self.end_statement()

    def declare(self, name: Token, size: int | None, *, quantum: bool) -> None:
        if name.text in self.registers or name.text in self.gates or name.text in self.inputs:
            self.fail(name, f"'{name.text}' is already declared", "qasm.redeclared")
        register = _Register(name.text, size, quantum)
        self.registers[name.text] = register
        if quantum:
            for member in register.members:
                self.qubits[member] = cirq.NamedQubit(member)

    # -- gate definitions ---------------------------------------------------------------------

    def parse_gate_definition(self) -> None:
        self.advance()
        name = self.expect_kind("id", "a gate name")
        defined = name.text in self.gates and name.text not in self.redefinable
        if defined or name.text in self.registers:
            self.fail(name, f"gate '{name.text}' is already defined", "qasm.redeclared")
        self.redefinable.discard(name.text)
        params: list[str] = []
        if self.accept("("):
            params = self.parse_identifier_list(")", "a parameter name")
            self.expect(")")
        qubits = self.parse_identifier_list("{", "a qubit argument name")
        if not qubits:
            self.fail(self.peek(), f"gate '{name.text}' needs at least one qubit argument")
        self.expect("{")
        body: list[GateCall] = []
        self.in_gate_body = True
        while not self.accept("}"):
            body.append(self.parse_body_call(set(params), set(qubits)))
        self.in_gate_body = False
        size = sum(self.expansion_size(call.name) for call in body)
        self.gates[name.text] = GateDef(name.text, tuple(params), tuple(qubits), tuple(body), size)
        self.statements.clear()
        self.heads.clear()

    def expansion_size(self, name: str) -> int:
        """Operations a call of gate ``name`` expands into, roughly (a built-in counts 1)."""
        gate = self.gates.get(name)
        if isinstance(gate, GateDef):
            return gate.size
        return 0 if name == "barrier" else 1

    def parse_identifier_list(self, stop: str, what: str) -> list[str]:
        names: list[str] = []
        while self.texts[self.pos] != stop:
            token = self.expect_kind("id", what)
            if token.text in names:
                self.fail(token, f"'{token.text}' appears twice", "qasm.redeclared")
            names.append(token.text)
            if not self.accept(","):
                break
        return names

    def parse_body_call(self, params: AbstractSet[str], qubits: set[str]) -> GateCall:
        token = self.peek()
        if token.text == "barrier":
            self.advance()
            self.parse_identifier_list(";", "a qubit argument name")
            self.end_statement()
            return GateCall("barrier", (), (), (), token)
        modifiers, name, values = self.parse_call_head(params)
        args: list[str] = []
        while self.texts[self.pos] != ";":
            arg = self.expect_kind("id", "a qubit argument")
            if arg.text not in qubits:
                self.fail(
                    arg, f"'{arg.text}' is not a qubit argument of this gate", "qasm.undeclared"
                )
            if arg.text in args:
                self.fail(arg, f"qubit argument '{arg.text}' is used twice", "qasm.duplicate_qubit")
            args.append(arg.text)
            if not self.accept(","):
                break
        self.end_statement()
        call = GateCall(name.text, tuple(modifiers), tuple(values), tuple(args), name)
        self.check_arity(call, len(args))
        return call

    def parse_call_head(
        self, params: AbstractSet[str]
    ) -> tuple[list[tuple[str, Expr | None]], Token, list[Expr]]:
        modifiers: list[tuple[str, Expr | None]] = []
        while self.texts[self.pos] in _MODIFIERS and self.next_text() in ("(", "@"):
            kind = self.advance().text
            argument = None
            if self.accept("("):
                # The number of controls fixes the arity, so it may not depend on parameters.
                argument = self.parse_expression(params if kind == "pow" else set())
                self.expect(")")
            elif kind == "pow":
                self.fail(self.peek(), "pow needs an exponent: pow(k) @")
            self.expect("@")
            modifiers.append((kind, argument))
        name = self.expect_kind("id", "a gate name")
        if name.text not in self.gates and name.text != "gphase":
            hint = "" if self.gates.keys() - {"U", "CX"} else ' (missing include "qelib1.inc"?)'
            self.fail(name, f"unknown gate '{name.text}'{hint}", "qasm.unknown_gate")
        values: list[Expr] = []
        if self.accept("("):
            while self.texts[self.pos] != ")":
                values.append(self.parse_expression(params))
                if not self.accept(","):
                    break
            self.expect(")")
        return modifiers, name, values

    def check_arity(self, call: GateCall, n_args: int) -> None:
        n_controls = self.count_controls(call)
        if call.name == "gphase":
            n_params, n_qubits = 1, 0
        else:
            gate = self.gates[call.name]
            n_params, n_qubits = gate.n_params, gate.n_qubits
        if len(call.params) != n_params:
            self.fail(
                call.token,
                f"gate '{call.name}' takes {n_params} parameter(s), got {len(call.params)}",
                "qasm.arity",
            )
        if n_args != n_qubits + n_controls:
            self.fail(
                call.token,
                f"gate '{call.name}' acts on {n_qubits + n_controls} qubit(s), got {n_args}",
                "qasm.arity",
            )

    def count_controls(self, call: GateCall) -> int:
        total = 0
        for kind, argument in call.modifiers:
            if kind in ("ctrl", "negctrl"):
                n = 1 if argument is None else self.constant_int(argument, call.token)
                if n < 1:
                    self.fail(call.token, f"{kind} needs a positive number of controls")
                total += n
        return total

    def constant_int(self, expr: Expr, token: Token) -> int:
        value = self.numeric(self.evaluate(expr, {}, token), token, "the ctrl(n) count")
        if value != int(value):
            self.fail(token, f"expected an integer, got {value}", "qasm.math")
        return int(value)

    # -- expressions --------------------------------------------------------------------------

    def parse_expression(self, params: AbstractSet[str]) -> Expr:
        left = self.parse_term(params)
        while (op := self.texts[self.pos]) in ("+", "-"):
            self.pos += 1
            right = self.parse_term(params)
            left = _binary(op, left, right)
        return left

    def parse_term(self, params: AbstractSet[str]) -> Expr:
        left = self.parse_unary(params)
        while (op := self.texts[self.pos]) in ("*", "/"):
            self.pos += 1
            right = self.parse_unary(params)
            left = _binary(op, left, right)
        return left

    def parse_unary(self, params: AbstractSet[str]) -> Expr:
        sign = self.texts[self.pos]
        if sign == "-":
            self.pos += 1
            operand = self.parse_unary(params)
            return lambda env: -operand(env)
        if sign == "+":
            self.pos += 1
            return self.parse_unary(params)
        base = self.parse_atom(params)
        if self.texts[self.pos] in ("^", "**"):
            self.pos += 1
            exponent = self.parse_unary(params)
            return _binary("^", base, exponent)
        return base

    def parse_atom(self, params: AbstractSet[str]) -> Expr:
        text = self.texts[self.pos]
        if self.source.kind_of[text] in ("int", "real"):
            self.pos += 1  # a number, the most frequent atom: no Token made
            return _constant(float(text))
        token = self.advance()
        if token.text == "(":
            inner = self.parse_expression(params)
            self.expect(")")
            return inner
        if token.kind == "id":
            name = token.text
            if name in params:
                return lambda env: env[name]
            if name in self.inputs and not self.in_gate_body:
                return _constant(self.inputs[name])
            if name in _CONSTANTS:
                return _constant(_CONSTANTS[name])
            if name in _FUNCTIONS:
                function, symbolic = _FUNCTIONS[name], _SYMBOLIC_FUNCTIONS[name]
                self.expect("(", f"'(' after {name}")
                argument = self.parse_expression(params)
                self.expect(")")

                def call(env: Mapping[str, float]) -> float:
                    value = argument(env)
                    return symbolic(value) if isinstance(value, sympy.Basic) else function(value)

                return call
            hint = ""
            if name in self.inputs:
                hint = ": a gate definition sees only its own parameters"
            elif self.version < 3:
                hint = " (OpenQASM 2 has no parameters: declare one with `input float[64] NAME;`"
                hint += " in OpenQASM 3)"
            message = f"unknown identifier '{name}' in expression{hint}"
            self.fail(token, message, "qasm.undeclared")
        found = token.text or "end of input"
        self.fail(token, f"expected an expression, found {found!r}")

    def evaluate(self, expr: Expr, env: Mapping[str, float], token: Token) -> float:
        """The expression's value: a number, or a sympy expression of ``input`` parameters."""
        try:
            value = expr(env)
            if isinstance(value, sympy.Basic) and value.free_symbols:
                return value
            value = float(value)
        except (ArithmeticError, ValueError, TypeError) as error:
            self.fail(token, f"cannot evaluate a parameter of '{token.text}': {error}", "qasm.math")
        if not math.isfinite(value):
            self.fail(token, f"parameter of '{token.text}' is not finite ({value})", "qasm.math")
        return value

    # -- quantum statements -------------------------------------------------------------------

    def parse_gate_call(self, conditions: tuple[cirq.Condition, ...]) -> None:
        """A gate call statement, expanded into operations.

        Real programs repeat statements (``cx q[0],q[1];``): the operations of an unconditioned
        one are kept by its tokens' texts, which fix them as long as no gate is defined, and a
        repetition is placed again without being read (operations are immutable). The values of
        its head's parameters (``rz(pi*0.3)``: a gate name without modifiers, and its parameter
        list) are kept likewise, for a statement calling it on other qubits.
        """
        start = self.pos
        key: tuple[str, ...] | None = None
        end = -1
        if not conditions:
            try:
                end = self.texts.index(";", start, start + _STATEMENT_CACHE_TOKENS)
            except ValueError:
                end = -1  # no ';' within reach: the statement is not kept (suppress is slower)
        head: tuple[str, ...] | None = None
        params: list[float] | None = None
        if end >= 0:
            key = tuple(self.texts[start:end])
            seen = self.statements.get(key)
            if seen is not None:
                self.check_size(seen.size, start + seen.name_index)
                self.pos = end + 1
                self.place(seen.ops)
                return
            head = _head_of(key)
            params = self.heads.get(head)
        if params is not None:
            modifiers: Sequence[tuple[str, Expr | None]] = ()
            name, values = self.source.token(start), [_constant(value) for value in params]
            self.pos = start + len(head)
        else:
            modifiers, name, values = self.parse_call_head(_NO_PARAMS)
            if head is not None and self.pos - start != len(head):
                head = None  # not a head that its tokens alone fix
        refs = self.parse_arguments(quantum=True)
        self.end_statement()
        call = GateCall(name.text, tuple(modifiers), tuple(values), (), name)
        self.check_arity(call, len(refs))
        if params is None:
            params = [self.evaluate(value, {}, name) for value in values]
            if head is not None:
                self.heads[head] = params
        calls = self.broadcast(refs)
        size = self.expansion_size(call.name) * len(calls)
        self.check_size(size, name)
        try:
            ops = [
                _operation(gate, targets)
                for qubits in calls
                for gate, targets, _phase in self.expand(call, params, qubits, {})
                if gate is not None
            ]
        except (TypeError, ValueError):  # a gate that needs numbers was given an input
            if not any(isinstance(p, sympy.Basic) for p in params):
                raise
            message = (
                f"gate '{name.text}' cannot take an input parameter here (inputs run in "
                "rotations such as rx, ry, rz, p and gates built from them)"
            )
            self.fail(name, message, "qasm.parameter")
        if conditions:
            for op in ops:
                self.emit(op, conditions)
        else:
            self.place(ops)
        if key is not None:
            self.statements[key] = _Statement(size, name.index - start, ops)

    def expand(
        self,
        call: GateCall,
        params: Sequence[float],
        qubits: tuple[cirq.Qid, ...],
        env: Mapping[str, float],
    ) -> list[Item]:
        """Expand one call (with its modifiers) on concrete qubits into items.

        Args:
            call: The call as parsed.
            params: Its evaluated parameters.
            qubits: Its qubits, controls of ``ctrl @`` modifiers first.
            env: Parameters of the enclosing gate definition (for ``pow(k)`` exponents).
        """
        n_controls = self.count_controls(call)
        if call.name == "gphase":
            items: list[Item] = [(None, (), params[0])]
        else:
            gate = self.gates[call.name]
            items = self.expand_gate(gate, params, qubits[n_controls:])
        used = n_controls
        for kind, argument in reversed(call.modifiers):
            if kind == "inv":
                items = invert(items)
            elif kind == "pow":
                items = self.power(items, self.evaluate(argument, env, call.token), call.token)
            else:
                n = 1 if argument is None else self.constant_int(argument, call.token)
                controls = qubits[used - n : used]
                used -= n
                items = control(items, controls, (1 if kind == "ctrl" else 0,) * n)
        return items

    def expand_gate(
        self, gate: Gate, params: Sequence[float], qubits: tuple[cirq.Qid, ...]
    ) -> list[Item]:
        """Expand a gate without modifiers: a built-in directly, a definition body inline."""
        if isinstance(gate, Builtin):
            return gate.expand(params, qubits)
        env = dict(zip(gate.param_names, params, strict=True))
        mapping = dict(zip(gate.qubit_names, qubits, strict=True))
        items: list[Item] = []
        for call in gate.body:
            if call.name == "barrier":
                continue
            values = [self.evaluate(value, env, call.token) for value in call.params]
            targets = tuple(mapping[arg] for arg in call.args)
            items.extend(self.expand(call, values, targets, env))
        return items

    def numeric(self, value: float, token: Token, what: str) -> float:
        """``value``, ``what`` of the call at ``token``, which must not depend on an
        ``input`` parameter."""
        if isinstance(value, sympy.Basic):
            message = f"{what} of '{token.text}' must be a constant, not an input"
            self.fail(token, message, "qasm.parameter")
        return value

    def power(self, items: list[Item], exponent: float, token: Token) -> list[Item]:
        exponent = self.numeric(exponent, token, "the pow(k) exponent")
        if exponent == int(exponent):
            base = items if exponent >= 0 else invert(items)
            self.check_size(len(base) * int(abs(exponent)), token)
            return base * int(abs(exponent))
        if len(items) != 1 or items[0][0] is None:
            self.fail(
                token, "pow(k) with non-integer k needs a single-gate body", "qasm.unsupported"
            )
        gate, qubits, phase = items[0]
        powered = cirq.pow(gate, exponent, None)
        if powered is None:
            self.fail(token, f"'{token.text}' has no power {exponent}", "qasm.unsupported")
        return [(powered, qubits, phase * exponent)]

    def check_size(self, n_operations: int, token: Token | int) -> None:
        """Stop a program (nested definitions, ``pow``) from expanding beyond the limit;
        ``token`` (or the token at that position) is blamed."""
        if n_operations + self.n_ops > MAX_OPERATIONS:
            if isinstance(token, int):
                token = self.source.token(token)
            message = f"'{token.text}' expands the circuit beyond {MAX_OPERATIONS} operations"
            self.fail(token, message, "qasm.too_large")

    def emit(self, op: cirq.Operation, conditions: tuple[cirq.Condition, ...]) -> None:
        """Append ``op`` under ``conditions``, with the bits not measured yet read as 0 (their
        initial value): a condition that is then always true is dropped, and an operation
        under one that is always false is never emitted."""
        resolved = []
        for condition in conditions:
            known = self.with_unmeasured_bits_zero(condition)
            if known is False:
                return
            if known is not True:
                resolved.append(known)
        if not resolved:
            self.place((op,))
            return
        controls = {str(key) for condition in resolved for key in condition.keys}
        # After the measurements of its control keys.
        after = max((self.last_measured.get(key, -1) for key in controls), default=-1)
        index = self.place((op.with_classical_controls(*resolved),), after)
        for key in controls:
            self.last_controlled[key] = max(index, self.last_controlled.get(key, -1))

    def place(self, ops: Sequence[cirq.Operation], after: int = -1) -> int:
        """Append each operation to the moment that ``cirq.Circuit(ops)`` (its EARLIEST
        strategy) gives it: the one after the last moment that shares a qubit with it, and
        after moment ``after``, which the caller finds from the measurement and control keys
        (cirq finds the keys through its protocols on every operation; here they are known).

        Returns:
            The moment of the last operation.
        """
        last_qubit, moments = self.last_qubit, self.moments
        index = after
        for op in ops:
            qubits = op.qubits
            index = after
            for qubit in qubits:  # a loop is quicker than max(map(...)) on one or two qubits
                moment = last_qubit.get(qubit, -1)
                if moment > index:
                    index = moment
            index += 1
            if index == len(moments):
                moments.append([op])
            else:
                moments[index].append(op)
            for qubit in qubits:
                last_qubit[qubit] = index
        self.n_ops += len(ops)
        return index

    def with_unmeasured_bits_zero(self, condition: cirq.Condition) -> cirq.Condition | bool:
        """``condition`` with every bit not measured so far set to 0: a condition on the
        measured bits, or its constant value when none is left."""
        unmeasured = {str(key) for key in condition.keys} - self.measured
        if not unmeasured:
            return condition
        if isinstance(condition, cirq.KeyCondition):
            return False  # the bit is 0
        expr = condition.expr.subs({sympy.Symbol(key): 0 for key in unmeasured})
        if expr in (sympy.true, sympy.false):
            return bool(expr)
        return cirq.SympyCondition(expr)

    def parse_arguments(self, *, quantum: bool) -> list[ArgRef]:
        refs: list[ArgRef] = []
        while self.texts[self.pos] != ";":
            refs.append(self.parse_argument(quantum=quantum))
            if not self.accept(","):
                break
        return refs

    def parse_argument(self, *, quantum: bool) -> ArgRef:
        at = self.pos
        name = self.texts[at]
        register = self.registers.get(name)
        if register is None or register.quantum != quantum or name[0] == "$":
            self.reject_argument(self.source.token(at), quantum=quantum)
        self.pos = at + 1
        index: int | None = None
        if self.texts[self.pos] == "[":
            self.pos += 1
            index_token = self.expect_kind("int", "an index")
            index = int(index_token.text)
            if register.size is None:
                self.fail(index_token, f"'{name}' is not a register", "qasm.index_range")
            if index >= register.size:
                message = f"index {index} is out of range for '{name}' of size {register.size}"
                self.fail(index_token, message, "qasm.index_range")
            if self.texts[self.pos] in (":", ","):
                self.fail(self.peek(), "register slices are not supported", "qasm.unsupported")
            self.expect("]")
        return ArgRef(name, index, at)

    def reject_argument(self, token: Token, *, quantum: bool) -> NoReturn:
        """Fail on ``token``, which does not name a declared register of the kind asked for."""
        kind = "quantum" if quantum else "classical"
        if token.kind != "id":
            found = repr(token.text) if token.kind != "eof" else "end of input"
            self.fail(token, f"expected a {kind} register, found {found}")
        if token.text.startswith("$"):
            message = f"physical qubits ('{token.text}') are not supported"
            self.fail(token, message, "qasm.unsupported")
        self.fail(token, f"{kind} register '{token.text}' is not declared", "qasm.undeclared")

    def members(self, ref: ArgRef) -> tuple[str, ...]:
        register = self.registers[ref.name]
        return register.members if ref.index is None else (register.members[ref.index],)

    def broadcast(self, refs: Sequence[ArgRef]) -> list[tuple[cirq.Qid, ...]]:
        """Qubit tuples of a call, one per broadcast position (``h q;`` is one per qubit)."""
        groups = [self.members(ref) for ref in refs]
        width = 1
        for group in groups:
            if len(group) > 1:
                if width > 1 and len(group) != width:
                    self.fail(
                        self.source.token(refs[0].at),
                        "registers of different sizes in one statement",
                        "qasm.size_mismatch",
                    )
                width = len(group)
        qubits = self.qubits
        calls = []
        for i in range(width):
            names = [group[i] if len(group) > 1 else group[0] for group in groups]
            call = tuple([qubits[name] for name in names])
            if len(set(names)) != len(names):
                self.fail(
                    self.source.token(refs[0].at),
                    f"a qubit is used twice in one operation: {call}",
                    "qasm.duplicate_qubit",
                )
            calls.append(call)
        return calls

    def parse_measure(self, conditions: tuple[cirq.Condition, ...]) -> None:
        if conditions:
            self.fail(self.peek(), "conditional measurement is not supported", "qasm.unsupported")
        if self.texts[self.pos] == "measure":
            self.advance()
            source = self.parse_argument(quantum=True)
            if self.texts[self.pos] == ";":
                self.fail(self.peek(), "measure without a target bit", "qasm.unsupported")
            self.expect("->", "'->' and a classical target")
            target = self.parse_argument(quantum=False)
        else:
            target = self.parse_argument(quantum=False)
            self.expect("=")
            self.expect("measure")
            source = self.parse_argument(quantum=True)
        self.end_statement()
        qubits, bits = self.members(source), self.members(target)
        if len(qubits) != len(bits):
            self.fail(
                self.source.token(source.at),
                f"measuring {len(qubits)} qubit(s) into {len(bits)} bit(s)",
                "qasm.size_mismatch",
            )
        for qubit, key in zip(qubits, bits, strict=True):
            measure = _operation(cirq.MeasurementGate(1, key), (self.qubits[qubit],))
            # After the last measurement of its key and the last operation controlled on it.
            after = max(self.last_measured.get(key, -1), self.last_controlled.get(key, -1))
            self.last_measured[key] = self.place((measure,), after)
            self.measured.add(key)

    def parse_reset(self, conditions: tuple[cirq.Condition, ...]) -> None:
        self.advance()
        refs = [self.parse_argument(quantum=True)]
        self.end_statement()
        for (qubit,) in self.broadcast(refs):
            self.emit(cirq.ResetChannel().on(qubit), conditions)

    def parse_barrier(self) -> None:
        self.advance()
        self.parse_arguments(quantum=True)
        self.end_statement()

    # -- classical control --------------------------------------------------------------------

    def parse_if(self, conditions: tuple[cirq.Condition, ...]) -> None:
        self.advance()
        self.expect("(")
        condition = self.parse_condition()
        self.expect(")")
        self.parse_branch((*conditions, condition))
        if self.accept("else"):
            self.parse_branch((*conditions, _negate(condition)))

    def parse_branch(self, conditions: tuple[cirq.Condition, ...]) -> None:
        """One statement or a ``{ ... }`` block, every operation under ``conditions``."""
        if not self.accept("{"):
            self.parse_statement(conditions)
            return
        while not self.accept("}"):
            if self.source.kind(self.pos) == "eof":
                self.fail(self.peek(), "missing '}' at end of block")
            self.parse_statement(conditions)

    def parse_condition(self) -> cirq.Condition:
        start = self.peek()
        value = self.parse_logical()
        if value.is_bool:
            return cirq.SympyCondition(value.expr)
        if isinstance(value.expr, sympy.Symbol):
            return cirq.KeyCondition(cirq.MeasurementKey(value.expr.name))
        if value.expr.is_number:
            self.fail(start, "condition does not depend on any measured bit", "qasm.unsupported")
        return cirq.SympyCondition(sympy.Ne(value.expr, 0))

    def parse_logical(self) -> _Value:
        left = self.parse_comparison()
        while self.texts[self.pos] in ("&&", "||"):
            op = self.advance().text
            right = self.parse_comparison()
            a = left.expr if left.is_bool else sympy.Ne(left.expr, 0)
            b = right.expr if right.is_bool else sympy.Ne(right.expr, 0)
            left = _Value(sympy.And(a, b) if op == "&&" else sympy.Or(a, b))
        return left

    def parse_comparison(self) -> _Value:
        start = self.peek()
        left = self.parse_bit_expression()
        if self.texts[self.pos] not in _COMPARISONS:
            return left
        op = self.advance().text
        right = self.parse_bit_expression()
        relation, can_hold = _COMPARISONS[op]
        if not can_hold(left, right):
            end = self.source.token(self.pos - 1)
            span = self.source.offset(start), self.source.offset(end) + len(end.text)
            written = self.source.text[span[0] : span[1]]
            self.fail(
                start,
                f"condition '{written}' can never hold: it compares {left.span} with {right.span}",
                "qasm.condition_range",
            )
        return _Value(relation(left.expr, right.expr))

    def parse_bit_expression(self) -> _Value:
        left = self.parse_bit_atom()
        while self.texts[self.pos] in ("^", "&", "|"):
            op = self.advance()
            right = self.parse_bit_atom()
            if not (left.is_bit and right.is_bit):
                self.fail(op, f"'{op.text}' is supported on single bits only", "qasm.unsupported")
            left = _Value(_BIT_OPERATORS[op.text](left.expr, right.expr), 0, 1)
        return left

    def parse_bit_atom(self) -> _Value:
        """One operand of a condition, with the range of values it can take."""
        token = self.peek()
        if token.text in ("!", "~"):
            self.advance()
            operand = self.parse_bit_atom()
            if not operand.is_bit:
                self.fail(
                    token, f"'{token.text}' is supported on single bits only", "qasm.unsupported"
                )
            return _Value(1 - operand.expr, 1 - operand.high, 1 - operand.low)
        if self.accept("("):
            inner = self.parse_logical()
            self.expect(")")
            if inner.is_bool:
                self.fail(token, "comparisons cannot be nested in a condition", "qasm.unsupported")
            return inner
        if token.text in _CASTS and self.next_text() in ("(", "["):
            return self.parse_cast()
        if token.text == "-" and self.source.kind(self.pos + 1) == "int":
            self.advance()
            number = -int(self.advance().text)
            return _Value(sympy.Integer(number), number, number)
        if token.kind == "int" or token.text in ("true", "false"):
            self.advance()
            number = 1 if token.text == "true" else 0 if token.text == "false" else int(token.text)
            return _Value(sympy.Integer(number), number, number)
        return self.register_value(self.members(self.parse_argument(quantum=False)))

    @staticmethod
    def register_value(bits: Sequence[str], *, signed: bool = False) -> _Value:
        """The integer a register's bits hold, little-endian: unsigned, or two's complement."""
        weights = [2**i for i in range(len(bits))]
        if signed:
            weights[-1] = -weights[-1]
        value = sympy.Add(
            *(sympy.Integer(w) * sympy.Symbol(bit) for w, bit in zip(weights, bits, strict=True))
        )
        return _Value(value, sum(w for w in weights if w < 0), sum(w for w in weights if w > 0))

    def parse_cast(self) -> _Value:
        """An OpenQASM 3 cast in a condition: ``bool(x)`` (0 or 1: ``x != 0``), ``uint(x)``,
        ``int(x)``, and with a width ``int[n](c)`` / ``uint[n](c)``, which the specification allows
        on an ``n``-bit register only; ``int[n]`` reads it as two's complement. A cast of a
        single bit or of a number keeps its value."""
        cast = self.advance()
        width: Token | None = None
        if cast.text != "bool" and self.accept("["):
            width = self.expect_kind("int", "a width")
            self.expect("]")
        self.expect("(")
        start = self.peek()
        register = self.registers.get(start.text)
        whole = register is not None and not register.quantum and register.size is not None
        if whole and self.next_text() == ")":
            self.advance()
            value = self.register_value(
                register.members, signed=width is not None and cast.text == "int"
            )
            if width is not None and int(width.text) != register.size:
                message = (
                    f"{cast.text}[{width.text}] cast of '{start.text}', a register of "
                    f"{register.size} bits: the widths must be equal"
                )
                self.fail(width, message, "qasm.size_mismatch")
        else:
            value = self.parse_logical()
            if value.is_bool:
                self.fail(start, "comparisons cannot be nested in a condition", "qasm.unsupported")
        self.expect(")")
        if cast.text != "bool" or value.is_bit:
            return value
        if value.low == value.high:
            flag = int(value.low != 0)
            return _Value(sympy.Integer(flag), flag, flag)
        # A register is non-zero unless all its bits are 0.
        bits = sorted(value.expr.free_symbols, key=str)
        return _Value(1 - sympy.Mul(*(1 - bit for bit in bits)), 0, 1)

    _STATEMENTS: dict[str, Callable[[_Parser], None]] = {
        "include": parse_include,
        "qreg": parse_old_declaration,
        "creg": parse_old_declaration,
        "qubit": parse_new_declaration,
        "bit": parse_new_declaration,
        "gate": parse_gate_definition,
        "input": parse_input,
        "OPENQASM": lambda self: self.fail(self.peek(), "the version line must come first"),
    }


def _operation(gate: cirq.Gate, qubits: tuple[cirq.Qid, ...]) -> cirq.Operation:
    """``gate.on(*qubits)``, without cirq's check of every operation's qubit shapes where
    ``on`` is ``cirq.Gate``'s own (a plain ``GateOperation``): the parser has checked the
    number of qubits, and every qubit it makes is a qubit. A tenth of a parse otherwise."""
    if type(gate).on is not _GATE_ON:
        return gate.on(*qubits)
    op = _NEW_OPERATION(cirq.GateOperation)
    op._gate, op._qubits = gate, qubits
    return op


_GATE_ON = cirq.Gate.on
_NEW_OPERATION = cirq.GateOperation.__new__


def _constant(value: float | sympy.Basic) -> Expr:
    """The expression of a number (or of an ``input`` parameter's symbol)."""
    return lambda _env: value


def _binary(op: str, left: Expr, right: Expr) -> Expr:
    if op == "+":
        return lambda env: left(env) + right(env)
    if op == "-":
        return lambda env: left(env) - right(env)
    if op == "*":
        return lambda env: left(env) * right(env)
    if op == "/":
        return lambda env: left(env) / right(env)
    return lambda env: left(env) ** right(env)


class _Value(NamedTuple):
    """An operand of a condition: a sympy expression over bit keys and the least and greatest
    integer it can take, or (``low`` None) a relation such as ``c == 1``."""

    expr: sympy.Basic
    low: int | None = None
    high: int | None = None

    @property
    def is_bool(self) -> bool:
        return self.low is None

    @property
    def span(self) -> str:
        """The operand's values in words: ``"5"`` or ``"values 0 to 3"``."""
        if self.low == self.high:
            return str(self.low)
        return f"values {self.low} to {self.high}"

    @property
    def is_bit(self) -> bool:
        """Whether the operand is 0 or 1 (a bit, or a bit expression)."""
        return self.low is not None and self.low >= 0 and self.high <= 1


#: Each comparison with whether it can hold for some values of operands in their ranges.
_COMPARISONS: dict[str, tuple[Callable[..., sympy.Basic], Callable[[_Value, _Value], bool]]] = {
    "==": (sympy.Eq, lambda a, b: a.low <= b.high and b.low <= a.high),
    "!=": (sympy.Ne, lambda a, b: not a.low == a.high == b.low == b.high),
    "<": (sympy.StrictLessThan, lambda a, b: a.low < b.high),
    "<=": (sympy.LessThan, lambda a, b: a.low <= b.high),
    ">": (sympy.StrictGreaterThan, lambda a, b: a.high > b.low),
    ">=": (sympy.GreaterThan, lambda a, b: a.high >= b.low),
}


#: The casts a condition may use.
_CASTS = frozenset({"bool", "int", "uint"})

_BIT_OPERATORS: dict[str, Callable[[sympy.Expr, sympy.Expr], sympy.Expr]] = {
    "^": lambda a, b: a + b - 2 * a * b,
    "&": lambda a, b: a * b,
    "|": lambda a, b: a + b - a * b,
}


def _negate(condition: cirq.Condition) -> cirq.Condition:
    """The condition of an ``else`` branch."""
    if isinstance(condition, cirq.KeyCondition):
        return cirq.SympyCondition(sympy.Eq(sympy.Symbol(str(condition.key)), 0))
    return cirq.SympyCondition(sympy.Not(condition.expr))


def parse_qasm(text: str) -> cirq.Circuit:
    """Parse an OpenQASM 2.0 or OpenQASM 3 program into a ``cirq.Circuit``.

    Args:
        text: The program. The version line is optional; both grammars are accepted either way.

    Returns:
        The circuit, with every parameter a float, ready for ``cirq.to_json``.

    Raises:
        QasmError: The text is not a program this parser accepts; ``code``, ``line`` and
            ``column`` locate the fault (see the module docstring for the codes).
    """
    parser = _Parser(text)
    try:
        return parser.parse_program()
    except RecursionError:
        token = parser.peek()
        raise parser.source.error(token, "nested too deeply", "qasm.too_large") from None
