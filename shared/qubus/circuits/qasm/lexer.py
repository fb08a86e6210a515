"""Lexical layer of the OpenQASM parser: tokens, and the program text they locate.

``tokenize`` splits a program with one compiled regular expression; ``Source`` keeps the text
and its tokens and turns token positions into the 1-based lines and columns that every
``QasmError`` carries. A character that starts no token is a ``bad`` token, which the parser
rejects when it reaches it: the first fault in reading order is the one reported.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import NamedTuple

from qubus.errors import QasmError

#: The tokens of a program, the most frequent first (a real number before an integer), and the
#: end of the text (an empty token): whitespace and comments before each token are skipped
#: inside the same match, and possessively (a blank is never given back to become a token), so
#: ``findall`` yields the tokens' texts at C speed. Blanks come first (most tokens follow one
#: or none) and so do ASCII identifiers. The end can match twice: after blanks, and again empty.
_TOKENS_RE = re.compile(
    r"""
    \s*+(?:(?://[^\n]*+|/\*.*?\*/)\s*+)*+
    (
      [A-Za-z_]\w*|[^\W\d]\w*|\$\d+
    | ->|==|!=|<=|>=|&&|\|\||\*\*|[-+*/^%(){}\[\];,:=<>@!~&|]
    | (?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+
    | \d+
    | "[^"\n]*"
    | .
    | \Z
    )
    """,
    re.VERBOSE | re.DOTALL,
)
#: The same alternatives, named: the kind of one token's text.
_KIND_RE = re.compile(
    r"""
      (?P<real>(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+)
    | (?P<int>\d+)
    | (?P<id>[^\W\d]\w*|\$\d+)
    | (?P<string>"[^"\n]*")
    | (?P<op>->|==|!=|<=|>=|&&|\|\||\*\*|[-+*/^%(){}\[\];,:=<>@!~&|])
    | (?P<bad>.)
    | (?P<eof>)
    """,
    re.VERBOSE | re.DOTALL,
)
_NEWLINE_RE = re.compile(r"\n")


class Token(NamedTuple):
    """One lexical token and its 0-based position among the tokens (see ``Source.offset``)."""

    kind: str
    text: str
    index: int


class Source:
    """A program's text and tokens, turning token positions into lines and columns on demand."""

    def __init__(self, text: str) -> None:
        self.text = text
        #: The tokens' texts, and the kind of each distinct text (``Token``s are made only for the
        #: tokens a parser keeps).
        self.texts, self.kind_of = tokenize(text)
        self._offsets: list[int] | None = None
        self._line_starts: list[int] | None = None

    def token(self, index: int) -> Token:
        """The token at position ``index``."""
        text = self.texts[index]
        # tuple.__new__ skips NamedTuple's Python-level constructor.
        return tuple.__new__(Token, (self.kind_of[text], text, index))

    def kind(self, index: int) -> str:
        """The kind of the token at position ``index``."""
        return self.kind_of[self.texts[index]]

    def offset(self, token: Token) -> int:
        """The 0-based offset of ``token`` in the text (found again only when asked)."""
        if self._offsets is None:
            self._offsets = [match.start(1) for match in _TOKENS_RE.finditer(self.text)]
        return self._offsets[token.index]

    def position(self, offset: int) -> tuple[int, int]:
        """The 1-based ``(line, column)`` of an offset."""
        if self._line_starts is None:
            newlines = _NEWLINE_RE.finditer(self.text)
            self._line_starts = [0, *(match.end() for match in newlines)]
        line = bisect_right(self._line_starts, offset)
        return line, offset - self._line_starts[line - 1] + 1

    def error(self, at: Token | int, message: str, code: str) -> QasmError:
        """A ``QasmError`` located at a token or at a character offset."""
        line, column = self.position(self.offset(at) if isinstance(at, Token) else at)
        return QasmError(message, line=line, column=column, code=code)


def tokenize(text: str) -> tuple[list[str], dict[str, str]]:
    """Split OpenQASM text into tokens, dropping whitespace and comments.

    Args:
        text: The program.

    Returns:
        The tokens' texts, ending with the end of the text (the one empty token), and the kind
        of each distinct text: ``id``, ``int``, ``real``, ``string``, ``op``, ``eof`` (the end),
        or ``bad`` (a character that starts no token).
    """
    texts = _TOKENS_RE.findall(text)
    if len(texts) > 1 and not texts[-2]:
        texts.pop()  # the end, matched twice
    known = _KINDS.get
    return texts, {word: known(word) or _kind(word) for word in set(texts)}


KNOWN_KINDS = 4096
"""Most token texts whose kind a process keeps (``_KINDS``), each at most ``KNOWN_TEXT``
characters long."""
KNOWN_TEXT = 32

_KINDS: dict[str, str] = {}
"""The kinds of token texts seen before, but real numbers (an angle seldom recurs): most
recur from program to program (``h``, ``q``, ``[``, ``0``), and a look-up here is a seventh of
a match of ``_KIND_RE`` (a fastpath program's 26 distinct texts: 15 → 2 µs)."""


def _kind(word: str) -> str:
    kind = _KIND_RE.fullmatch(word).lastgroup
    if kind != "real" and len(word) <= KNOWN_TEXT and len(_KINDS) < KNOWN_KINDS:
        _KINDS[word] = kind
    return kind
