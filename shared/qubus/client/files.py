"""Circuit files as a client reads them: their text, refused when it cannot be a circuit, and
their format from the file name."""

from __future__ import annotations

from pathlib import Path

from qubus.errors import QubusError

SUFFIX_FORMATS = {".qasm3": "qasm3", ".json": "cirq-json"}
"""Formats named by a file's suffix; any other file is guessed from its text."""


def read_circuit_file(path: str | Path, *, holds: str = "a circuit") -> str:
    """The text of circuit file ``path`` (or of another text file that ``holds`` something
    else, for the messages).

    Raises:
        QubusError: ``file.unreadable``; ``file.empty`` (nothing but white space);
            ``file.binary`` (not UTF-8 text).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise QubusError(f"cannot read {path}: {exc.strerror}", code="file.unreadable") from None
    if b"\0" in data:
        raise QubusError(f"{path} is a binary file, not {holds}", code="file.binary")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise QubusError(f"{path} is not UTF-8 text", code="file.binary") from None
    if not text.strip():
        raise QubusError(f"{path} is empty", code="file.empty")
    return text


def format_of(path: str | Path) -> str | None:
    """The format ``path``'s suffix names (``qasm3``, ``cirq-json``), or None: guess from the
    text."""
    return SUFFIX_FORMATS.get(Path(path).suffix)
