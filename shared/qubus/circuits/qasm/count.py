"""How many operations an OpenQASM program expands into, read from its tokens without expanding.

``expanded_operations`` walks the token stream once: it records register sizes and, for every
gate definition, the operations one call of it expands into (the sum over its body, each call
weighted by a literal ``pow(k)``), then adds every top-level statement's size times its
broadcast width (the largest whole register among its arguments). So ``gate a q { b q; b q; }``
nested twenty deep, or one call broadcast over a 65,536-qubit register, is counted in
microseconds per token, before the parser emits a single operation. A built-in gate, a
``measure`` and a ``reset`` count one per qubit, a ``barrier`` none, like the parser's own
``expansion_size``. The count is for refusing work up front, not for validating: a program this
scan misreads is still parsed (and rejected with line and column) by ``parser``, whose own
``MAX_OPERATIONS`` check stays the backstop (e.g. for ``pow(k)`` with a computed ``k``, counted
once here).
"""

from __future__ import annotations

from functools import cache

from qubus.circuits.qasm.lexer import Source, Token
from qubus.circuits.qasm.prelude import PRELUDE
from qubus.errors import QasmError

_MODIFIERS = ("ctrl", "negctrl", "inv", "pow")
_DECLARATIONS = ("qreg", "creg", "qubit", "bit")


class _Scan:
    """One pass over a program's tokens, summing its expanded operations."""

    def __init__(self, text: str, gates: dict[str, int]) -> None:
        self.source = Source(text)
        self.last = len(self.source.texts) - 1
        self.pos = 0
        self.gates = dict(gates)
        self.registers: dict[str, int] = {}

    def peek(self, ahead: int = 0) -> Token:
        return self.source.token(min(self.pos + ahead, self.last))

    def skip_past(self, text: str) -> None:
        while self.peek().kind != "eof" and self.advance().text != text:
            pass

    def advance(self) -> Token:
        token = self.peek()
        self.pos += 1
        return token

    def skip_group(self) -> None:
        """Skip a parenthesised group starting at the current ``(``."""
        depth = 0
        while self.peek().kind != "eof":
            text = self.advance().text
            depth += (text == "(") - (text == ")")
            if depth == 0:
                return

    def program(self, limit: float) -> int:
        total = 0
        while self.peek().kind != "eof" and total <= limit:
            total += self.statement()
        return total

    def statement(self) -> int:
        token = self.peek()
        if token.text in ("if", "else"):
            self.advance()
            if self.peek().text == "(":
                self.skip_group()
            return self.block() if self.peek().text == "{" else self.statement()
        if token.text == "{":
            return self.block()
        if token.text == "gate":
            self.definition()
            return 0
        if token.text in _DECLARATIONS:
            return self.declaration()
        if token.text in ("OPENQASM", "include"):
            self.skip_past(";")
            return 0
        return self.call(top_level=True)

    def block(self) -> int:
        self.advance()
        total = 0
        while self.peek().text != "}" and self.peek().kind != "eof":
            total += self.statement()
        self.advance()
        return total

    def declaration(self) -> int:
        self.advance()
        size = 1
        if self.peek().text == "[":
            size = _int(self.peek(1))
            self.skip_past("]")
        name = self.advance()
        if self.peek().text == "[":  # qreg q[5];
            size = _int(self.peek(1))
        self.registers[name.text] = size
        if self.peek().text == "=":  # bit[n] c = measure q;
            self.skip_past(";")
            return size
        self.skip_past(";")
        return 0

    def definition(self) -> None:
        self.advance()
        name = self.advance().text
        self.skip_past("{")
        size = 0
        while self.peek().text != "}" and self.peek().kind != "eof":
            size += self.call(top_level=False)
        self.advance()
        self.gates[name] = size

    def call(self, *, top_level: bool) -> int:
        """One call (or ``measure``/``reset``/``barrier``) up to its ``;``: its operations."""
        factor = 1
        while self.peek().text in _MODIFIERS and self.peek(1).text in ("(", "@"):
            kind = self.advance().text
            if self.peek().text == "(":
                argument = self.peek(1)
                literal = self.peek(2).text == ")" and argument.kind in ("int", "real")
                if kind == "pow" and literal:
                    factor *= max(1, int(abs(float(argument.text))))
                self.skip_group()
            self.advance()  # @
        head = self.advance()
        if head.text == "barrier":
            self.skip_past(";")
            return 0
        size = self.gates.get(head.text, 1) * factor
        width = 1
        while self.peek().text != ";" and self.peek().kind != "eof":
            token = self.advance()
            if token.text == "(":
                self.pos -= 1
                self.skip_group()
            elif top_level and token.kind == "id" and self.peek().text != "[":
                width = max(width, self.registers.get(token.text, 1))
        self.advance()
        return size * width


def _int(token: Token) -> int:
    return int(token.text) if token.kind == "int" else 1


@cache
def _prelude_gates() -> dict[str, int]:
    scan = _Scan(PRELUDE, {})
    scan.program(float("inf"))
    return scan.gates


def expanded_operations(text: str, *, limit: int | None = None) -> int:
    """The operations ``text`` expands into, counted from its tokens without expanding.

    Args:
        text: An OpenQASM 2 or 3 program.
        limit: Stop counting once the total passes it (the result is then just above it).

    Returns:
        The count (gate definitions, broadcasting and literal ``pow(k)`` multiplied out).

    Raises:
        QasmError: ``qasm.too_large`` for blocks nested deeper than the interpreter's stack.
    """
    scan = _Scan(text, _prelude_gates())
    try:
        return scan.program(float("inf") if limit is None else limit)
    except RecursionError:
        raise QasmError("nested too deeply", code="qasm.too_large") from None
