"""One error hierarchy for qubus.

Expected errors (bad input, a circuit that cannot run) are answers: they carry a stable
``code`` and travel to the user as ``{code, message, line, column}``. Anything else is a bug
and is logged with its traceback.
"""

from __future__ import annotations

from typing import Any

BUS_UNAVAILABLE = "bus.unavailable"
"""The code of a request refused because JetStream did not answer (a lost server, a leader
election): worth retrying, unlike every other refusal."""


class QubusError(Exception):
    """Base class of every expected qubus error.

    Args:
        message: What went wrong, in words a user can act on.
        code: A stable, machine-readable identifier (``"qasm.syntax"``, ``"payload.too_large"``).
    """

    code = "qubus.error"
    outcome = "rejected"
    """The task event an error of this class ends a task with: ``rejected`` or ``failed``."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        """The error as the wire shape ``{code, message, line, column}``."""
        return {"code": self.code, "message": self.message, "line": None, "column": None}


class QasmError(QubusError):
    """OpenQASM text that cannot be accepted, with the 1-based position of the fault."""

    code = "qasm.syntax"

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.line = line
        self.column = column

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "line": self.line,
            "column": self.column,
        }

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}: " if self.line is not None else ""
        return f"{where}{self.message} [{self.code}]"


class InvalidPayload(QubusError):
    """A message or submission whose shape or content is not acceptable."""

    code = "payload.invalid"


class CircuitRejected(QubusError):
    """A well-formed circuit that fails a hard logic check or cannot run on any QPU."""

    code = "circuit.rejected"

    def __init__(
        self, message: str, *, code: str | None = None, failures: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.failures = failures or []
        """Every failed check as ``{code, message}``, for the task's ``rejected`` event."""


class SimulationError(QubusError):
    """A simulation that exceeded its limits or produced numerically invalid output."""

    code = "simulation.failed"
    outcome = "failed"


class Retry(QubusError):
    """A transient condition (e.g. no QPU has reported yet): redeliver after ``delay_s``."""

    code = "retry.exhausted"
    outcome = "failed"

    def __init__(self, message: str, *, delay_s: float = 1.0) -> None:
        super().__init__(message)
        self.delay_s = delay_s
