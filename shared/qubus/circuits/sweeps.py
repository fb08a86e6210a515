"""Sweeps: one parameterised circuit run with many parameter sets, as one task.

A sweep is a task whose ``TaskOptions.sweep`` lists its points (``{symbol: value}``); its
circuit keeps its ``sympy`` symbols (Cirq JSON). Every stage handles the whole sweep in one
message: the parser parses once and checks that every point names exactly the circuit's
parameters; the logic checks and the noise service's compilation and budget run once on
the first point's circuit (the points differ only in angles, not in structure); the sandbox
computes every point's ideal distribution (``qubus.devices.sweeps``); fusion scores the
nodes once; the allocator places the sweep as one job; the QPU node runs every point and
publishes each as the task ``<sweep id>-<k>`` (``qubus.bus.ids.sweep_point_id``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cirq

from qubus.bus.messages import TaskOptions
from qubus.errors import CircuitRejected


def parameter_names(circuit: cirq.AbstractCircuit) -> set[str]:
    """The names of the circuit's free parameters (``sympy`` symbols)."""
    return set(cirq.parameter_names(circuit))


def check_points(
    circuit: cirq.AbstractCircuit, sweep: Sequence[Mapping[str, float]] | None
) -> None:
    """Refuse a circuit whose parameters the task does not resolve, point by point.

    Raises:
        CircuitRejected: ``circuit.unresolved`` (parameters and no sweep);
            ``sweep.parameters`` (a point that does not name exactly the circuit's
            parameters, or a sweep of a circuit without any).
    """
    names = parameter_names(circuit)
    if sweep is None:
        if names:
            raise CircuitRejected(
                f"the circuit has parameters {sorted(names)}: give their values with a sweep",
                code="circuit.unresolved",
            )
        return
    if not names:
        raise CircuitRejected(
            "a sweep needs a parameterised circuit; this one has no parameters",
            code="sweep.parameters",
        )
    for index, point in enumerate(sweep):
        if set(point) != names:
            missing, extra = sorted(names - set(point)), sorted(set(point) - names)
            raise CircuitRejected(
                f"sweep point {index} does not match the circuit's parameters {sorted(names)}"
                + (f": missing {missing}" if missing else "")
                + (f": unknown {extra}" if extra else ""),
                code="sweep.parameters",
            )


def resolved(circuit: cirq.AbstractCircuit, point: Mapping[str, float]) -> cirq.Circuit:
    """The circuit with one point's values in place of its parameters."""
    return cirq.resolve_parameters(cirq.Circuit(circuit), dict(point))


def representative(circuit: cirq.AbstractCircuit, options: TaskOptions) -> cirq.AbstractCircuit:
    """The circuit a stage checks or compiles for the whole task: a sweep's first point, or
    the circuit itself."""
    return circuit if options.sweep is None else resolved(circuit, options.sweep[0])
