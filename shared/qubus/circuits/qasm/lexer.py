"""Lexical layer of the OpenQASM parser: tokens, and the program text they locate.

``tokenize`` splits a program with one compiled regular expression; ``Source`` keeps the text
and its tokens, rejects a character that starts no token, and turns token offsets into the
1-based lines and columns that every ``QasmError`` carries.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import NamedTuple

from qubus.errors import QasmError

_TOKEN_RE = re.compile(
    r"""
    (?P<skip>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<real>(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+)
  | (?P<int>\d+)
  | (?P<id>[^\W\d]\w*|\$\d+)
  | (?P<string>"[^"\n]*")
  | (?P<op>->|==|!=|<=|>=|&&|\|\||\*\*|[-+*/^%(){}\[\];,:=<>@!~&|])
  | (?P<bad>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_NEWLINE_RE = re.compile(r"\n")


class Token(NamedTuple):
    """One lexical token and its 0-based offset in the text (see ``Source.position``)."""

    kind: str
    text: str
    offset: int


class Source:
    """A program's text and tokens, turning offsets into 1-based lines and columns on demand."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self._line_starts: list[int] | None = None
        bad = next((token for token in self.tokens if token.kind == "bad"), None)
        if bad is not None:
            raise self.error(bad.offset, f"unexpected character {bad.text!r}", "qasm.syntax")

    def position(self, offset: int) -> tuple[int, int]:
        """The 1-based ``(line, column)`` of an offset."""
        if self._line_starts is None:
            newlines = _NEWLINE_RE.finditer(self.text)
            self._line_starts = [0, *(match.end() for match in newlines)]
        line = bisect_right(self._line_starts, offset)
        return line, offset - self._line_starts[line - 1] + 1

    def error(self, offset: int, message: str, code: str) -> QasmError:
        """A ``QasmError`` located at ``offset``."""
        line, column = self.position(offset)
        return QasmError(message, line=line, column=column, code=code)


def tokenize(text: str) -> list[Token]:
    """Split OpenQASM text into tokens, dropping whitespace and comments.

    Args:
        text: The program.

    Returns:
        The tokens, ending with an ``eof`` token. A character that starts no token becomes a
        ``bad`` token (``Source`` rejects it).
    """
    # tuple.__new__ skips NamedTuple's Python-level constructor: a third of the tokenizing time.
    new = tuple.__new__
    tokens = [
        new(Token, (match.lastgroup, match.group(), match.start()))
        for match in _TOKEN_RE.finditer(text)
        if match.lastgroup != "skip"
    ]
    tokens.append(Token("eof", "", len(text)))
    return tokens
