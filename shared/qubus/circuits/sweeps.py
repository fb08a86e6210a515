"""Sweeps: one parameterised circuit run with many parameter sets, as one task.

A sweep is a task whose ``TaskOptions.sweep`` lists its points (``{symbol: value}``); its
circuit keeps its ``sympy`` symbols (Cirq JSON). Every stage handles the whole sweep in one
message: the parser parses once and checks that every point names exactly the circuit's
parameters; the logic checks and the noise service's compilation and budget run once on
the first point's circuit (the points differ only in angles, not in structure); the sandbox
computes every point's ideal distribution (``qubus.devices.sweeps``), a sample's first;
fusion scores the nodes once, on the sample; the allocator places the sweep and cuts it into
chunks of points, one per node (``qubus.scheduling.sweepchunks``); each chunk's QPU node runs
its points and publishes each as the task ``<sweep id>-<k>`` (``qubus.bus.ids.sweep_point_id``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cirq
import numpy as np
import sympy

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


class Resolver:
    """One circuit resolved at many points: :func:`resolved` of each, with every
    parameterised operation resolved once per distinct value of its own parameters (a grid
    of points repeats them; sympy's substitution is most of the cost of resolving)."""

    def __init__(self, circuit: cirq.AbstractCircuit) -> None:
        self._moments = [tuple(moment) for moment in circuit]
        self._names = {
            (i, j): sorted(cirq.parameter_names(op))
            for i, moment in enumerate(self._moments)
            for j, op in enumerate(moment)
            if cirq.is_parameterized(op)
        }
        self._resolved: dict[tuple, cirq.Operation] = {}

    def at(self, point: Mapping[str, float]) -> cirq.Circuit:
        """The circuit with ``point``'s values in place of its parameters."""
        resolver = cirq.ParamResolver(dict(point))
        moments = []
        for i, moment in enumerate(self._moments):
            ops = []
            for j, op in enumerate(moment):
                names = self._names.get((i, j))
                if names is not None:
                    key = (i, j, *(resolver.value_of(name) for name in names))
                    if key not in self._resolved:
                        self._resolved[key] = cirq.resolve_parameters(op, resolver)
                    op = self._resolved[key]
                ops.append(op)
            moments.append(cirq.Moment(ops))
        return cirq.Circuit.from_moments(*moments)


class FlatPoints:
    """A parameterised circuit with each parameter expression as a symbol of its own
    (``cirq.flatten``: ``rz(2·gamma)`` reads ``<2*gamma/pi>``), and every expression's value
    at many points computed at once (``sympy.lambdify`` over numpy arrays).

    Resolving a flat circuit's operation is a dictionary look-up per symbol; resolving the
    original expression goes through sympy's substitution, ~30× slower. The values agree with
    cirq's resolution to rounding, not to the last bit.

    Attributes:
        circuit: The flat circuit.
    """

    def __init__(self, circuit: cirq.AbstractCircuit) -> None:
        self.circuit, expressions = cirq.flatten(circuit)
        self._values = []
        for expression, symbol in expressions.items():
            free = sorted(expression.free_symbols, key=lambda s: s.name)
            function = sympy.lambdify(free, expression, "numpy")
            self._values.append((symbol.name, [s.name for s in free], function))

    def at(self, points: Sequence[Mapping[str, float]]) -> list[dict[str, float]]:
        """Each point's values of the flat circuit's symbols."""
        columns = {
            symbol: np.broadcast_to(
                function(*(np.array([p[name] for p in points], dtype=float) for name in names)),
                len(points),
            ).tolist()
            for symbol, names, function in self._values
        }
        return [
            {symbol: float(values[k]) for symbol, values in columns.items()}
            for k in range(len(points))
        ]


class Unitaries:
    """One operation's matrix at many points, given by their values of its parameters (a flat
    circuit's, :class:`FlatPoints`): computed once if it has no parameters, else once per
    distinct value of its own (a grid repeats them).

    Attributes:
        names: The operation's parameters.
    """

    def __init__(self, op: cirq.Operation) -> None:
        self._op = op
        self.names = sorted(cirq.parameter_names(op))
        self._seen: dict[tuple[float, ...], np.ndarray | None] = {}

    def of(self, values: Mapping[str, float]) -> np.ndarray | None:
        """The matrix at these values (None where the operation has none)."""
        key = tuple(values[name] for name in self.names)
        if key not in self._seen:
            resolved_op = cirq.resolve_parameters(self._op, values) if self.names else self._op
            self._seen[key] = cirq.unitary(resolved_op, None)
        return self._seen[key]

    def at(self, points: Sequence[Mapping[str, float]]) -> np.ndarray:
        """``(d, d)`` without parameters, else ``(len(points), d, d)``; the operation must
        have a matrix at every point."""
        if not self.names:
            return self.of({})  # type: ignore[return-value]
        return np.stack([self.of(values) for values in points])  # type: ignore[arg-type]


def representative(circuit: cirq.AbstractCircuit, options: TaskOptions) -> cirq.AbstractCircuit:
    """The circuit a stage checks or compiles for the whole task: a sweep's first point, or
    the circuit itself."""
    return circuit if options.sweep is None else resolved(circuit, options.sweep[0])
