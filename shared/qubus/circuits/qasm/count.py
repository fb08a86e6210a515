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

from qubus.circuits.qasm.lexer import Source
from qubus.circuits.qasm.prelude import PRELUDE
from qubus.errors import QasmError

_MODIFIERS = ("ctrl", "negctrl", "inv", "pow")
_DECLARATIONS = ("qreg", "creg", "qubit", "bit")


class _Scan:
    """One pass over a program's tokens, summing its expanded operations. It reads the
    tokens' texts (and their kinds where it needs them), as the parser does, without making a
    ``Token`` at every look: ingestion and the parser each count every OpenQASM task once."""

    def __init__(self, text: str, gates: dict[str, int]) -> None:
        source = Source(text)
        self.texts, self.kind_of = source.texts, source.kind_of
        self.end = len(self.texts) - 1  # the end of the text, an empty token
        self.pos = 0
        self.gates = dict(gates)
        self.registers: dict[str, int] = {}

    def peek(self, ahead: int = 0) -> str:
        return self.texts[min(self.pos + ahead, self.end)]

    def at_end(self) -> bool:
        return self.pos >= self.end

    def skip_past(self, text: str) -> None:
        while not self.at_end() and self.advance() != text:
            pass

    def advance(self) -> str:
        text = self.peek()
        self.pos += 1
        return text

    def skip_group(self) -> None:
        """Skip a parenthesised group starting at the current ``(``."""
        depth = 0
        while not self.at_end():
            text = self.advance()
            depth += (text == "(") - (text == ")")
            if depth == 0:
                return

    def program(self, limit: float) -> int:
        total = 0
        while not self.at_end() and total <= limit:
            total += self.statement()
        return total

    def statement(self) -> int:
        text = self.peek()
        if text in ("if", "else"):
            self.advance()
            if self.peek() == "(":
                self.skip_group()
            return self.block() if self.peek() == "{" else self.statement()
        if text == "{":
            return self.block()
        if text == "gate":
            self.definition()
            return 0
        if text in _DECLARATIONS:
            return self.declaration()
        if text in ("OPENQASM", "include"):
            self.skip_past(";")
            return 0
        return self.call(top_level=True)

    def block(self) -> int:
        self.advance()
        total = 0
        while self.peek() != "}" and not self.at_end():
            total += self.statement()
        self.advance()
        return total

    def declaration(self) -> int:
        self.advance()
        size = 1
        if self.peek() == "[":
            size = self.integer(self.peek(1))
            self.skip_past("]")
        name = self.advance()
        if self.peek() == "[":  # qreg q[5];
            size = self.integer(self.peek(1))
        self.registers[name] = size
        if self.peek() == "=":  # bit[n] c = measure q;
            self.skip_past(";")
            return size
        self.skip_past(";")
        return 0

    def definition(self) -> None:
        self.advance()
        name = self.advance()
        self.skip_past("{")
        size = 0
        while self.peek() != "}" and not self.at_end():
            size += self.call(top_level=False)
        self.advance()
        self.gates[name] = size

    def call(self, *, top_level: bool) -> int:
        """One call (or ``measure``/``reset``/``barrier``) up to its ``;``: its operations."""
        factor = 1
        while self.peek() in _MODIFIERS and self.peek(1) in ("(", "@"):
            kind = self.advance()
            if self.peek() == "(":
                argument = self.peek(1)
                literal = self.peek(2) == ")" and self.kind_of[argument] in ("int", "real")
                if kind == "pow" and literal:
                    factor *= max(1, int(abs(float(argument))))
                self.skip_group()
            self.advance()  # @
        head = self.advance()
        if head == "barrier":
            self.skip_past(";")
            return 0
        size = self.gates.get(head, 1) * factor
        width = 1
        texts, end = self.texts, self.end  # the arguments: most of the tokens, read here
        while self.pos < end and texts[self.pos] != ";":
            text = texts[self.pos]
            if text == "(":
                self.skip_group()
                continue
            self.pos += 1
            if top_level and self.kind_of[text] == "id" and texts[min(self.pos, end)] != "[":
                width = max(width, self.registers.get(text, 1))
        self.advance()
        return size * width

    def integer(self, text: str) -> int:
        return int(text) if self.kind_of[text] == "int" else 1


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
