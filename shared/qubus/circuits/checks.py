"""Logic checks: is a parsed circuit consistent and runnable, with exact diagnostics.

Each check has a stable code (``L001``...), a weight and a severity. A *hard* failure makes the
circuit unrunnable (the logic stage rejects it); a *soft* failure is a warning that lowers the
``logic_score``, the weighted share of passed checks that feeds the hyper-score.

The checks run on the IR, whatever the submission format. For OpenQASM input, the parser
(``qubus.circuits.qasm``) already rejects, with line and column, what has no IR form: operations on
undeclared registers and measurements into undeclared bits (``qasm.undeclared``), indices out
of range (``qasm.index_range``), a qubit twice in one operation (``qasm.duplicate_qubit``) and
conditions no value of their register satisfies (``qasm.condition_range``); gate definitions
are expanded inline there. The checks below hold the same rules for Cirq JSON, where
measurement keys are declared by measuring them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cirq
import numpy as np
import sympy
from pydantic import BaseModel, ConfigDict

from qubus.bus.messages import CheckResult
from qubus.circuits.packing import measures, packed_depth

__all__ = ["CHECKS", "CheckReport", "CheckResult", "CheckSpec", "run_checks"]


@dataclass(frozen=True)
class CheckSpec:
    """The identity of one check: stable code, name, severity, weight and what it checks."""

    code: str
    name: str
    hard: bool
    weight: float
    description: str


#: Every check ``run_checks`` performs, in order.
CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("L001", "has_operations", True, 3.0, "The circuit has at least one operation."),
    CheckSpec("L002", "has_measurements", False, 2.0, "The circuit measures something."),
    CheckSpec(
        "L003",
        "parameters_finite",
        True,
        3.0,
        "Every gate parameter (exponent, angle, matrix entry) is a finite number: no NaN, no "
        "infinity, no unresolved symbol.",
    ),
    CheckSpec("L004", "distinct_qubits", True, 3.0, "No operation uses a qubit twice."),
    CheckSpec(
        "L005",
        "measurement_keys_unique",
        False,
        1.0,
        "No measurement key is written twice unless its qubit was reset in between.",
    ),
    CheckSpec(
        "L006",
        "conditions_measured_before",
        True,
        3.0,
        "Every classical condition refers to declared registers: keys measured in an earlier "
        "moment.",
    ),
    CheckSpec(
        "L007",
        "runnable_operations",
        True,
        3.0,
        "Every operation is a unitary gate, a measurement, a reset, or a classically controlled "
        "unitary gate; user-defined gates (sub-circuits, composite gates) expand to unitaries.",
    ),
    CheckSpec(
        "L008",
        "qubit_limit",
        True,
        2.0,
        "The circuit fits on the largest QPU of the fleet, or split across QPUs joined by "
        "entanglement links (``qubus.network.splitplan``).",
    ),
    CheckSpec("L009", "depth_limit", True, 1.0, "The circuit depth is within the limit."),
    CheckSpec("L010", "gate_limit", True, 1.0, "The number of operations is within the limit."),
    CheckSpec(
        "L011",
        "conditions_in_range",
        True,
        3.0,
        "Every classical condition can hold for some values of the keys it reads (a key of "
        "``w`` bits holds 0 to ``2**w - 1``): ``c == 5`` on a 2-bit register is out of range. "
        f"Conditions reading more than {2**16} combinations of values are not examined.",
    ),
)


class CheckReport(BaseModel):
    """All check results of a circuit, with its logic score.

    Attributes:
        results: One result per entry of ``CHECKS``, in that order.
        logic_score: Weighted share of passed checks, in ``[0, 1]``.
        passed: ``True`` unless a hard check failed.
    """

    model_config = ConfigDict(frozen=True)

    results: list[CheckResult]
    logic_score: float
    passed: bool

    @property
    def failures(self) -> list[CheckResult]:
        """The failed checks, hard and soft."""
        return [result for result in self.results if not result.passed]


@dataclass(frozen=True)
class _Context:
    circuit: cirq.AbstractCircuit
    ops: list[cirq.Operation]
    fleet_max_qubits: int
    split_max_qubits: int
    max_depth: int
    max_gates: int


#: A check returns ``None`` when it passes, else the message explaining the failure.
_Check = Callable[[_Context], str | None]


def _numbers(value: object) -> Iterator[complex]:
    """Every number inside a gate, found through its Cirq JSON fields, recursively."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float | complex | np.number):
        yield complex(value)
    elif isinstance(value, np.ndarray):
        yield from (complex(x) for x in value.ravel())
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _numbers(item)
    elif hasattr(value, "_json_dict_"):
        for item in value._json_dict_().values():
            yield from _numbers(item)


def _bare(op: cirq.Operation) -> cirq.Operation:
    if isinstance(op, cirq.ClassicallyControlledOperation):
        return op.without_classical_controls()
    return op


def _describe(op: cirq.Operation, index: int) -> str:
    return f"operation {index} ({op})"


def _has_operations(ctx: _Context) -> str | None:
    return None if ctx.ops else "the circuit has no operations"


def _has_measurements(ctx: _Context) -> str | None:
    if any(measures(op) for op in ctx.ops):
        return None
    return "the circuit has no measurements, so a run returns no counts"


def _parameters_finite(ctx: _Context) -> str | None:
    for index, op in enumerate(ctx.ops):
        if cirq.is_parameterized(op):
            return f"{_describe(op, index)} has unresolved parameters"
        gate = _bare(op).gate
        values = _numbers(gate) if gate is not None else iter(())
        if not all(math.isfinite(v.real) and math.isfinite(v.imag) for v in values):
            return f"{_describe(op, index)} has a parameter that is NaN or infinite"
    return None


def _distinct_qubits(ctx: _Context) -> str | None:
    for index, op in enumerate(ctx.ops):
        if len(set(op.qubits)) != len(op.qubits):
            return f"{_describe(op, index)} uses a qubit twice"
    return None


def _measurement_keys_unique(ctx: _Context) -> str | None:
    written: dict[str, tuple[cirq.Qid, ...]] = {}
    overwritten: list[str] = []
    for op in ctx.ops:
        if isinstance(_bare(op).gate, cirq.ResetChannel):
            written = {key: qs for key, qs in written.items() if op.qubits[0] not in qs}
        for key in cirq.measurement_key_names(op):
            if key in written and key not in overwritten:
                overwritten.append(key)
            written[key] = op.qubits
    if overwritten:
        return (
            f"measurement keys written twice without a reset in between: {', '.join(overwritten)}"
        )
    return None


def _conditions_measured_before(ctx: _Context) -> str | None:
    measured: set[str] = set()
    for moment in ctx.circuit:
        for op in moment:
            missing = {key.name for key in cirq.control_keys(op)} - measured
            if missing:
                keys = ", ".join(sorted(missing))
                return f"{op} is conditioned on {keys}, not measured in an earlier moment"
        measured.update(cirq.measurement_key_names(moment))
    return None


def _runnable(op: cirq.Operation) -> bool:
    bare = _bare(op)  # cirq itself refuses classically controlled measurements
    if measures(op) or isinstance(bare.gate, cirq.ResetChannel):
        return True
    # A symbolic gate has no unitary until resolved; L003 reports it.
    return cirq.is_parameterized(bare) or cirq.has_unitary(bare)


def _runnable_operations(ctx: _Context) -> str | None:
    for index, op in enumerate(ctx.ops):
        if not _runnable(op):
            return f"{_describe(op, index)} is neither a unitary gate, a measurement nor a reset"
    return None


def _satisfiable(condition: cirq.SympyCondition, widths: dict[str, int]) -> bool:
    """Whether some values of the keys a condition reads make it true (True when there are
    more than 2**16 combinations to try)."""
    symbols = sorted(condition.expr.free_symbols, key=str)
    sizes = [2 ** widths.get(str(symbol), 1) for symbol in symbols]
    if math.prod(sizes) > 2**16:
        return True
    values = np.meshgrid(*(np.arange(size) for size in sizes), indexing="ij")
    holds = sympy.lambdify(symbols, condition.expr, "numpy", dummify=True)(*values)
    return bool(np.any(holds))


def _conditions_in_range(ctx: _Context) -> str | None:
    widths: dict[str, int] = {}
    for op in ctx.ops:
        for key in cirq.measurement_key_names(op):
            widths[key] = max(widths.get(key, 0), len(op.qubits))
    for index, op in enumerate(ctx.ops):
        for condition in getattr(op, "classical_controls", ()):
            if isinstance(condition, cirq.SympyCondition) and not _satisfiable(condition, widths):
                return (
                    f"{_describe(op, index)} is conditioned on {condition.expr}, which no "
                    "value of its keys satisfies"
                )
    return None


def _qubit_limit(ctx: _Context) -> str | None:
    n = len(ctx.circuit.all_qubits())
    if n <= max(ctx.fleet_max_qubits, ctx.split_max_qubits):
        return None
    return (
        f"the circuit uses {n} qubits but the largest QPU has {ctx.fleet_max_qubits} and "
        f"QPUs joined by links hold {ctx.split_max_qubits} together"
    )


def _depth_limit(ctx: _Context) -> str | None:
    depth = packed_depth(ctx.ops)
    return None if depth <= ctx.max_depth else f"depth {depth} exceeds the limit {ctx.max_depth}"


def _gate_limit(ctx: _Context) -> str | None:
    n = len(ctx.ops)
    return None if n <= ctx.max_gates else f"{n} operations exceed the limit {ctx.max_gates}"


_IMPLEMENTATIONS: dict[str, _Check] = {
    "L001": _has_operations,
    "L002": _has_measurements,
    "L003": _parameters_finite,
    "L004": _distinct_qubits,
    "L005": _measurement_keys_unique,
    "L006": _conditions_measured_before,
    "L007": _runnable_operations,
    "L008": _qubit_limit,
    "L009": _depth_limit,
    "L010": _gate_limit,
    "L011": _conditions_in_range,
}


def run_checks(
    circuit: cirq.AbstractCircuit,
    *,
    fleet_max_qubits: int,
    split_max_qubits: int = 0,
    max_depth: int = 100_000,
    max_gates: int = 1_000_000,
) -> CheckReport:
    """Run every check of ``CHECKS`` on a circuit.

    Args:
        circuit: The circuit to check.
        fleet_max_qubits: Qubits of the largest QPU in the fleet.
        split_max_qubits: Qubits a circuit split across the fleet's QPUs joined by links can
            have (``qubus.network.splitplan.split_capacity``; 0: none).
        max_depth: Largest accepted depth (moments after re-packing the operations).
        max_gates: Largest accepted number of operations.

    Returns:
        The report: every result in ``CHECKS`` order, the logic score, and whether no hard
        check failed.
    """
    ctx = _Context(
        circuit,
        list(circuit.all_operations()),
        fleet_max_qubits,
        split_max_qubits,
        max_depth,
        max_gates,
    )
    results = []
    for spec in CHECKS:
        message = _IMPLEMENTATIONS[spec.code](ctx)
        results.append(
            CheckResult(
                code=spec.code,
                name=spec.name,
                hard=spec.hard,
                passed=message is None,
                message=message or "ok",
                weight=spec.weight,
            )
        )
    total = sum(result.weight for result in results)
    score = sum(result.weight for result in results if result.passed) / total
    return CheckReport(
        results=results,
        logic_score=score,
        passed=not any(result.hard and not result.passed for result in results),
    )
