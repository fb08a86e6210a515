"""Compilation of a logical circuit onto one device: layout, routing, native gates, schedule.

One function, :func:`compile_for_device`, feeds both the fidelity prediction and the emulator,
so a prediction is about the circuit that will actually run.

Steps:

1. Layout (:func:`_place`): greedy, connected, on usable qubits: each logical qubit goes next
   to the partners it interacts with, ties broken by qubit error; the best of a few starts
   wins. On all-to-all devices the busiest logical qubits take the best qubits.
2. Routing: operations are replayed in order; a two-qubit operation on non-adjacent physical
   qubits first moves its first qubit along a shortest path of usable edges with SWAPs,
   each SWAP being three native two-qubit gates.
3. Native gates: every operation is decomposed with ``cirq.decompose`` into one-qubit gates
   and CZ/CNOT (arbitrary two-qubit unitaries via ``cirq.two_qubit_matrix_to_cz_operations``);
   the entangler is turned into the device's (CNOT on CX/ECR devices, CZ otherwise, which
   stands for the MS/ZZ gate of ion traps up to one-qubit rotations), and runs of one-qubit
   gates are merged into a single ``PhasedXZGate``. A one-qubit gate costs "pulses"
   (:func:`pulses`): none for a Z rotation (virtual), one for a half or full X rotation on IBM
   devices or any rotation on ion traps, two (``sx·rz·sx``) otherwise.
4. Schedule: ASAP in moments (what ``cirq.Circuit`` EARLIEST insertion gives, written out in
   ``qubus.circuits.packing.asap_moments``), terminal measurements together in one last
   moment; a moment lasts as long as its longest operation.

Measurement keys, measurement invert masks, resets and classical controls are preserved.
"""

from __future__ import annotations

import cmath
import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import cirq
import numpy as np

from qubus.circuits.packing import asap_moments, measures, moment_of
from qubus.devices.profiles import Device
from qubus.errors import CircuitRejected
from qubus.lru import Lru

CACHE_SIZE = 256
"""Compiled circuits kept per process, keyed by (operations, device id, revision); as many
routings, keyed by (structure, device id, revision), and layouts, keyed by (qubits,
interaction counts, device id, revision)."""

ATOL = 1e-8

SCHEDULES = 64
"""Shapes of merged operations kept per routing (``Routing.fill``): one or a few a structure."""

MAX_SYNTHESIS_QUBITS = 6
"""Largest operation synthesised from its unitary (Shannon decomposition) when cirq has no
decomposition for it; larger ones are rejected."""


@dataclass(frozen=True)
class GateCounts:
    """What the compiled circuit does to each physical qubit and edge.

    Attributes:
        one_qubit_pulses: Physical qubit → number of non-virtual one-qubit pulses.
        two_qubit: Sorted physical pair → number of native two-qubit gates.
        measure: Physical qubit → number of measurements.
        exposure_ns: Physical qubit → time from its first operation to the end of the moment
            of its last gate, during which relaxation and dephasing act on it.
        wait_ns: Physical qubit → time from there to its final measurement, during which
            only amplitude damping can change what is read.
    """

    one_qubit_pulses: dict[int, int]
    two_qubit: dict[tuple[int, int], int]
    measure: dict[int, int]
    exposure_ns: dict[int, float]
    wait_ns: dict[int, float]


@dataclass(frozen=True)
class CompiledCircuit:
    """A circuit ready to run on one device.

    Attributes:
        circuit: The native circuit on ``cirq.LineQubit(i)`` = physical qubit ``i``.
        layout: Logical qubit name → initial physical index.
        gate_counts: Per-qubit and per-edge counts for prediction.
        moment_durations_ns: Duration of every moment of ``circuit``.
        duration_ns: Total scheduled duration (sum of ``moment_durations_ns``).
        swaps: SWAPs inserted by routing.
        device_id: The device compiled for.
        revision: The calibration revision compiled against.
        physical_qubits: The physical qubits the circuit touches, ascending.
        shape: Shared by the compilations of one routing that differ only in the values of
            their merged one-qubit gates, and by nothing else (``Routing.fill``; None: not
            known). What depends on the circuit only through those values can be kept under
            it (``qubus.devices.prediction``).
    """

    circuit: cirq.FrozenCircuit
    layout: dict[str, int]
    gate_counts: GateCounts
    moment_durations_ns: tuple[float, ...]
    duration_ns: float
    swaps: int
    device_id: str
    revision: str
    physical_qubits: tuple[int, ...]
    shape: object | None = field(default=None, compare=False, repr=False)


_compiled = Lru(CACHE_SIZE)
_routings = Lru(CACHE_SIZE)
_placements = Lru(CACHE_SIZE)


def compile_for_device(circuit: cirq.AbstractCircuit, device: Device) -> CompiledCircuit:
    """Lay out, route, translate to native gates and schedule a circuit for a device.

    Results are cached (LRU of ``CACHE_SIZE``) by the circuit's operation sequence (compared
    exactly), device id and calibration revision. Layout and routing are cached by the
    circuit's structure (:func:`_structure`): circuits that differ only in their one-qubit
    gates, such as the same circuit with other angles, are routed once and only merged and
    scheduled each (:class:`Routing`).

    Args:
        circuit: A logical circuit on named qubits.
        device: The target device profile.

    Returns:
        The compiled circuit.

    Raises:
        CircuitRejected: ``device.too_small`` if the circuit has more qubits than the largest
            usable connected set; ``device.unsupported`` for operations on three or more
            qubits that cannot be decomposed.
    """
    # Compilation depends on the operation sequence only, not on moment boundaries.
    ops = tuple(circuit.all_operations())
    key = (tuple(map(_exact, ops)), device.id, device.revision)
    compiled = _compiled.get(key)
    if compiled is None:
        structure, gates = _structure(ops)
        routing_key = (structure, device.id, device.revision)
        routing = _routings.get(routing_key)
        if routing is None:
            routing = _routing(_placeholders(ops, gates), device)
            _routings.put(routing_key, routing)
        compiled = routing.fill([op.gate for op in gates.values()])
        _compiled.put(key, compiled)
    return compiled


def _one_qubit_unitary(op: cirq.Operation) -> bool:
    """Whether ``op`` is an unconditioned one-qubit gate with a unitary: what routing moves
    without looking at, and merging folds into its neighbours."""
    return type(op) is cirq.GateOperation and len(op.qubits) == 1 and cirq.has_unitary(op)


def _exact(op: cirq.Operation) -> object:
    """``op`` as a part of a cache key: a gate operation as its gate and its qubits in order,
    any other as itself. Equal keys are equal operations (cirq's equality lets ``CZ(a, b)``
    equal ``CZ(b, a)``, this does not), and hashing one costs its gate's hash, which the gates
    a decoded circuit shares with earlier ones have kept (``qubus.circuits.ir``), where a new
    operation computes its own: for a fastpath circuit, 112 µs → 4 µs."""
    return (op.gate, op.qubits) if type(op) is cirq.GateOperation else op


def _structure(
    ops: tuple[cirq.Operation, ...],
) -> tuple[tuple[object, ...], dict[int, cirq.Operation]]:
    """The operations with each one-qubit unitary replaced by its qubit (the structure that
    layout and routing depend on; the others as ``_exact``), and those one-qubit operations
    by index."""
    gates = {i: op for i, op in enumerate(ops) if _one_qubit_unitary(op)}
    return tuple(op.qubits if i in gates else _exact(op) for i, op in enumerate(ops)), gates


def _placeholders(
    ops: tuple[cirq.Operation, ...], slotted: Mapping[int, cirq.Operation]
) -> cirq.Circuit:
    """The operations with operation ``i`` of ``slotted`` replaced by ``_Slot(n)``, ``n``
    counting the slotted operations in order; one moment each, so that the circuit's
    operations stay in the order given (routing replays that order)."""
    slots = {i: n for n, i in enumerate(slotted)}
    return cirq.Circuit(
        (_Slot(slots[i]).on(*op.qubits) if i in slots else op for i, op in enumerate(ops)),
        strategy=cirq.InsertStrategy.NEW,
    )


def pulses(op: cirq.Operation, device: Device) -> int:
    """Physical one-qubit pulses an operation of a compiled circuit costs (0 if not 1q)."""
    gate = op.without_classical_controls().gate
    if not isinstance(gate, cirq.PhasedXZGate):
        return 0
    x = gate.x_exponent % 2
    if min(x, 2 - x) < ATOL:
        return 0
    if device.kind == "trapped-ion" or min(abs(x - 0.5), abs(x - 1), abs(x - 1.5)) < ATOL:
        return 1
    return 2


def op_duration_ns(op: cirq.Operation, device: Device) -> float:
    """Duration of one compiled operation on the device."""
    inner = op.without_classical_controls()
    if measures(inner):
        return device.readout_duration_ns
    if len(inner.qubits) == 2:
        a, b = (q.x for q in inner.qubits)
        return device.edge(a, b).duration_ns
    if isinstance(inner.gate, cirq.ResetChannel):
        return device.readout_duration_ns
    return pulses(op, device) * device.one_qubit_duration_ns


def _routing(circuit: cirq.AbstractCircuit, device: Device) -> Routing:
    """Lay out and route a circuit whose one-qubit unitaries may be ``_Slot`` placeholders."""
    placement = _place(circuit, _logical_qubits(circuit, device), device)
    routed, final, swaps = _route(_basic_ops(circuit), placement, device, _entangler(device))
    layout = {str(q): p for q, p in placement.items()}
    return Routing(tuple(routed), tuple(final), swaps, layout, device)


def _logical_qubits(circuit: cirq.AbstractCircuit, device: Device) -> list[cirq.Qid]:
    """The circuit's qubits, sorted.

    Raises:
        CircuitRejected: ``device.too_small``.
    """
    logical = sorted(circuit.all_qubits())
    if len(logical) > device.max_circuit_qubits:
        raise CircuitRejected(
            f"{len(logical)} qubits do not fit {device.id}: its largest usable connected set "
            f"has {device.max_circuit_qubits}",
            code="device.too_small",
        )
    return logical


def _entangler(device: Device) -> cirq.Gate:
    return cirq.CZ if device.two_qubit_gate in ("cz", "zz", "ms") else cirq.CNOT


def _finish(
    merged: list[cirq.Operation],
    final: list[cirq.Operation],
    swaps: int,
    layout: dict[str, int],
    device: Device,
    shape: object | None,
) -> tuple[CompiledCircuit, list[list[int]]]:
    """Schedule of routed operations whose one-qubit runs are merged: ASAP moments, the
    terminal measurements last; durations and gate counts. Also each ASAP moment's operations,
    as positions in ``merged``."""
    layers = asap_moments(merged)
    moments = [moment_of(merged, layer) for layer in layers]
    if final:
        moments.append(cirq.Moment(final))
    native = cirq.FrozenCircuit.from_moments(*moments)
    durations = tuple(
        max((op_duration_ns(op, device) for op in moment), default=0.0) for moment in native
    )
    counts = _count(native, durations, device)
    compiled = CompiledCircuit(
        circuit=native,
        layout=layout,
        gate_counts=counts,
        moment_durations_ns=durations,
        duration_ns=float(sum(durations)),
        swaps=swaps,
        device_id=device.id,
        revision=device.revision,
        physical_qubits=tuple(sorted(q.x for q in native.all_qubits())),
        shape=shape,
    )
    return compiled, layers


@dataclass(frozen=True)
class _Schedule:
    """A compiled circuit of a :class:`Routing` with the moments that hold merged one-qubit
    gates marked, for the next fill of the same shape (:meth:`Routing.fill`).

    Attributes:
        compiled: The first fill of the shape.
        rebuild: Per moment of ``compiled.circuit``: the positions (in the merged operations)
            of the operations it is made of when it holds a merged gate, else None (kept).
    """

    compiled: CompiledCircuit
    rebuild: tuple[tuple[int, ...] | None, ...]

    def refill(self, merged: list[cirq.Operation]) -> CompiledCircuit:
        """The compiled circuit of ``merged``, which has this schedule's shape."""
        moments = [
            moment if positions is None else moment_of(merged, positions)
            for moment, positions in zip(self.compiled.circuit, self.rebuild, strict=True)
        ]
        return replace(self.compiled, circuit=cirq.FrozenCircuit.from_moments(*moments))


@cirq.value_equality
class _Slot(cirq.Gate):
    """Stands for one-qubit gate number ``index`` while its circuit is laid out and routed
    (:class:`Routing`)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def _num_qubits_(self) -> int:
        return 1

    def _value_equality_values_(self) -> int:
        return self.index


Run = tuple[int | np.ndarray, ...]
"""One run of one-qubit unitaries on a qubit, in the order applied: each a placeholder's index
(``_Slot``) or a fixed gate's matrix."""


@dataclass(frozen=True)
class Routing:
    """A circuit laid out and routed, with ``_Slot`` placeholders for its one-qubit gates.

    Layout and routing depend on a circuit's qubits and multi-qubit operations only, so every
    circuit that differs from it only in those gates has this routing: :meth:`fill` puts the
    gates in their places and finishes (merging one-qubit runs, scheduling, durations), which
    gives exactly what compiling that circuit from scratch gives (``tests/unit/test_compile.py``).
    The merge and the schedule do depend on the gates (a run that multiplies to the identity
    is dropped, a half rotation costs fewer pulses), and run for every fill.
    """

    routed: tuple[cirq.Operation, ...]
    final: tuple[cirq.Operation, ...]
    swaps: int
    layout: dict[str, int]
    device: Device
    schedules: Lru = field(default_factory=lambda: Lru(SCHEDULES), compare=False, repr=False)
    """Each shape's schedule seen so far (:meth:`fill`)."""

    def fill(self, gates: Sequence[cirq.Gate]) -> CompiledCircuit:
        """The compiled circuit with ``gates[n]`` in the place of ``_Slot(n)``.

        The merged operations' *shape* is each operation of ``routed`` kept as it is, and each
        merged one-qubit gate as its qubit and pulses: the schedule, durations and counts
        depend on nothing else. So a fill of a shape seen before takes them from that fill
        and only makes the moments that hold merged gates anew (``_Schedule``); circuits of
        one structure with other angles mostly share one shape a device.
        """
        merged = self._merged(gates)
        shape = self._shape(merged)
        known = None if shape is None else self.schedules.get(shape)
        if known is not None:
            return known.refill(merged)
        token = None if shape is None else object()
        final = list(self.final)
        compiled, layers = _finish(merged, final, self.swaps, self.layout, self.device, token)
        if shape is not None:
            fresh = {i for i, item in enumerate(shape) if type(item) is tuple}
            rebuild = [tuple(layer) if fresh.intersection(layer) else None for layer in layers]
            if self.final:
                rebuild.append(None)
            self.schedules.put(shape, _Schedule(compiled, tuple(rebuild)))
        return compiled

    def _merged(self, gates: Sequence[cirq.Gate]) -> list[cirq.Operation]:
        """``routed`` with ``gates`` in the slots and each run of one-qubit unitaries merged
        into one ``PhasedXZGate`` (dropped if it is the identity), by the merge worked out
        once (``_merge_plan``): only the runs' products are made for each fill. Every slot's
        gate has a unitary: only such gates are slotted (``_structure``), and a template
        compiles a point whose gates have none from scratch (``Template.bind``)."""
        unitaries = [_gate_unitary(gate) for gate in gates]
        merged = []
        for item in self._merge_plan:
            if type(item) is not tuple:
                merged.append(item)
                continue
            qubit, factors = item
            matrix = None
            for factor in factors:
                unitary = unitaries[factor] if type(factor) is int else factor
                matrix = unitary if matrix is None else unitary @ matrix
            gate = merged_gate(matrix)
            if gate is not None:
                merged.append(gate.on(qubit))
        return merged

    @functools.cached_property
    def _merge_plan(self) -> tuple[cirq.Operation | tuple[cirq.Qid, Run], ...]:
        """The merge of ``routed``'s runs of unconditioned one-qubit unitaries, whatever
        unitaries fill its slots: in order, each operation it keeps (or makes, for a
        classically controlled one-qubit unitary: ``_unmerged``) and each run, as its qubit
        and factors (``Run``), where the run's merged gate, if not the identity, goes."""
        plan: list[cirq.Operation | tuple[cirq.Qid, Run]] = []
        open_runs: dict[cirq.Qid, list[int | np.ndarray]] = {}
        for op in self.routed:
            if _mergeable(op):
                factor = op.gate.index if isinstance(op.gate, _Slot) else _unitary(op)
                open_runs.setdefault(op.qubits[0], []).append(factor)
                continue
            plan.extend((q, tuple(open_runs.pop(q))) for q in op.qubits if q in open_runs)
            plan.append(_unmerged(op))
        plan.extend((qubit, tuple(factors)) for qubit, factors in open_runs.items())
        return tuple(plan)

    @functools.cached_property
    def _kept(self) -> frozenset[int]:
        """The identities of ``routed``'s operations (alive as long as this routing is)."""
        return frozenset(id(op) for op in self.routed)

    def _shape(self, merged: list[cirq.Operation]) -> tuple[int | tuple[cirq.Qid, int], ...] | None:
        """Each operation's identity if it is one of ``routed``'s, or its qubit and pulses if
        it is a merged one-qubit gate; None if another operation was made (a classically
        controlled one-qubit gate turned into a ``PhasedXZGate``): not cached."""
        shape: list[int | tuple[cirq.Qid, int]] = []
        for op in merged:
            if id(op) in self._kept:
                shape.append(id(op))
            elif type(op) is cirq.GateOperation and type(op.gate) is cirq.PhasedXZGate:
                shape.append((op.qubits[0], pulses(op, self.device)))
            else:
                return None
        return tuple(shape)

    def runs(self) -> dict[cirq.Qid, list[Run]]:
        """Each physical qubit's runs of one-qubit unitaries, in order: what
        :meth:`fill` merges into one ``PhasedXZGate`` each, or drops (an identity)."""
        runs: dict[cirq.Qid, list[Run]] = {}
        for item in self._merge_plan:
            if type(item) is tuple:
                runs.setdefault(item[0], []).append(item[1])
        return runs


@dataclass(frozen=True)
class Template:
    """A parameterised circuit compiled once for a device, up to its parameters' values.

    When every parameterised operation is a one-qubit gate, the circuit's :class:`Routing`
    with those gates as placeholders is the same for every point of a sweep:
    :func:`compile_template` makes it once and :meth:`bind` fills one point's gates in. The
    result is exactly ``compile_for_device`` of the circuit resolved at that point
    (``tests/unit/test_compile.py``).
    """

    circuit: cirq.AbstractCircuit
    gates: tuple[cirq.Gate, ...]
    routing: Routing

    resolved: dict[tuple, cirq.Gate] = field(default_factory=dict, compare=False)
    """Each gate resolved at the values of its parameters seen so far (a grid repeats them)."""

    def bind(self, point: Mapping[str, float]) -> CompiledCircuit:
        """The circuit compiled at ``point`` (``{parameter: value}``)."""
        resolver = cirq.ParamResolver(dict(point))
        gates = [self._resolve(index, resolver) for index in range(len(self.gates))]
        if not all(cirq.has_unitary(gate) for gate in gates):  # then decomposed: compile it
            device = self.routing.device
            return compile_for_device(cirq.resolve_parameters(self.circuit, resolver), device)
        return self.routing.fill(gates)

    def _resolve(self, index: int, resolver: cirq.ParamResolver) -> cirq.Gate:
        gate = self.gates[index]
        names = sorted(cirq.parameter_names(gate))
        key = (index, *(resolver.value_of(name) for name in names))
        if key not in self.resolved:
            self.resolved[key] = cirq.resolve_parameters(gate, resolver)
        return self.resolved[key]


def compile_template(circuit: cirq.AbstractCircuit, device: Device) -> Template | None:
    """The circuit laid out and routed once for every point of a sweep (:class:`Template`),
    or None when a parameterised operation is not an unconditioned one-qubit gate (its
    decomposition, and so the routing, may depend on the values).

    Raises:
        CircuitRejected: as :func:`compile_for_device`.
    """
    ops = tuple(circuit.all_operations())
    slotted = {i: op for i, op in enumerate(ops) if cirq.is_parameterized(op)}
    parameterised = slotted.values()
    if not all(isinstance(op, cirq.GateOperation) and len(op.qubits) == 1 for op in parameterised):
        return None
    gates = tuple(op.gate for op in slotted.values())
    return Template(circuit, gates, _routing(_placeholders(ops, slotted), device))


LAYOUT_STARTS = 8
"""Greedy layouts tried per compilation, each from one of the best-connected good qubits."""


def _place(
    circuit: cirq.AbstractCircuit, logical: list[cirq.Qid], device: Device
) -> dict[cirq.Qid, int]:
    """Initial layout: each logical qubit next to its placed partners, on good qubits.

    Logical qubits are taken most-connected-to-the-placed first; each goes to the free usable
    qubit nearest (weighted by interaction count) to its placed partners, then nearest to
    the placed set, then with the most free neighbours, then with the lowest error. Several
    starts are tried; the layout with the least weighted partner distance wins.

    The layout depends on the circuit only through its qubits and interaction counts, so it is
    cached by those (and the device's id and calibration revision): circuits of the same
    structure with other angles, or other one-qubit gates, reuse it.
    """
    partners: dict[cirq.Qid, dict[cirq.Qid, int]] = {q: {} for q in logical}
    for op in circuit.all_operations():
        for a in op.qubits:
            for b in op.qubits:
                if a != b:
                    partners[a][b] = partners[a].get(b, 0) + 1
    key = (
        tuple(logical),
        tuple(tuple(sorted(partners[q].items())) for q in logical),
        device.id,
        device.revision,
    )
    placement = _placements.get(key)
    if placement is None:
        placement = _layout(logical, partners, device)
        _placements.put(key, placement)
    return dict(placement)


def _layout(
    logical: list[cirq.Qid], partners: dict[cirq.Qid, dict[cirq.Qid, int]], device: Device
) -> dict[cirq.Qid, int]:
    """``_place``'s layout of ``logical`` with interaction counts ``partners``, uncached."""
    quality = {
        q: device.qubits[q].readout_error + device.qubits[q].one_qubit_error
        for q in device.usable_qubits
    }
    if device.all_to_all:
        spots = sorted(device.usable_qubits, key=lambda q: (quality[q], q))
        busiest = sorted(logical, key=lambda q: -sum(partners[q].values()))
        return dict(zip(busiest, spots, strict=False))
    distance = device.distances
    big_enough = [q for q in device.usable_qubits if len(distance[q]) >= len(logical)]

    def neighbourhood(q: int) -> tuple[float, float]:
        near = device.coupling[q]
        mean_edge = sum(device.edge(q, n).error for n in near) / max(1, len(near))
        return (-len(near), quality[q] + mean_edge)

    best: tuple[tuple[int, float], dict[cirq.Qid, int]] | None = None
    for start in sorted(big_enough, key=neighbourhood)[:LAYOUT_STARTS]:
        placement = _place_from(start, logical, partners, quality, device)
        spread = sum(
            w * (distance[placement[a]][placement[b]] - 1)
            for a in logical
            for b, w in partners[a].items()
        )
        cost = (spread, sum(quality[p] for p in placement.values()))
        if best is None or cost < best[0]:
            best = (cost, placement)
    assert best is not None  # compile checked max_circuit_qubits
    return best[1]


def _place_from(
    start: int,
    logical: list[cirq.Qid],
    partners: dict[cirq.Qid, dict[cirq.Qid, int]],
    quality: dict[int, float],
    device: Device,
) -> dict[cirq.Qid, int]:
    distance = device.distances
    free = set(distance[start])
    placement: dict[cirq.Qid, int] = {}
    pending = list(logical)
    while pending:
        qubit = max(
            pending,
            key=lambda q: (
                sum(w for o, w in partners[q].items() if o in placement),
                sum(partners[q].values()),
            ),
        )
        pending.remove(qubit)
        if not placement:
            spot = start
        else:
            placed = [(placement[o], w) for o, w in partners[qubit].items() if o in placement]
            spot = min(
                free,
                key=lambda p: (
                    sum(w * distance[p][s] for s, w in placed),
                    min(distance[p][s] for s in placement.values()),
                    -sum(n in free for n in device.coupling[p]),
                    quality[p],
                ),
            )
        free.remove(spot)
        placement[qubit] = spot
    return placement


def _keep(op: cirq.Operation) -> bool:
    inner = op.without_classical_controls()
    if isinstance(inner.gate, _Slot):
        return True
    if not inner.qubits:  # a global phase: kept here, dropped by _basic_ops
        return True
    if cirq.is_measurement(inner) or isinstance(inner.gate, cirq.ResetChannel):
        return True
    if len(inner.qubits) == 1:
        return cirq.has_unitary(inner)
    return len(inner.qubits) == 2 and inner.gate in (cirq.CZ, cirq.CNOT)


def _fallback(op: cirq.Operation) -> list[cirq.Operation] | None:
    """Synthesise a unitary that cirq cannot decompose from its matrix."""
    if not cirq.has_unitary(op) or len(op.qubits) > MAX_SYNTHESIS_QUBITS:
        return None
    if len(op.qubits) == 2:
        return cirq.two_qubit_matrix_to_cz_operations(
            *op.qubits, cirq.unitary(op), allow_partial_czs=False
        )
    return list(cirq.quantum_shannon_decomposition(op.qubits, cirq.unitary(op)))


def _basic_ops(circuit: cirq.AbstractCircuit) -> Iterator[cirq.Operation]:
    """Every operation as one-qubit gates, CZ/CNOT, measurements and resets."""
    for op in circuit.all_operations():
        if _keep(op):
            if op.qubits:
                yield op
            continue
        inner = op.without_classical_controls()
        conditions = op.classical_controls
        try:
            parts = cirq.decompose(inner, keep=_keep, fallback_decomposer=_fallback)
        except (TypeError, ValueError) as exc:
            raise CircuitRejected(
                f"cannot decompose {inner!r} into native gates", code="device.unsupported"
            ) from exc
        for part in parts:
            if part.qubits:
                yield part.with_classical_controls(*conditions) if conditions else part


def _route(
    ops: Iterator[cirq.Operation],
    placement: dict[cirq.Qid, int],
    device: Device,
    two_q: cirq.Gate,
) -> tuple[list[cirq.Operation], list[cirq.Operation], int]:
    """Map to physical qubits, insert SWAPs, and express entanglers as ``two_q``.

    Returns the routed operations, the terminal measurements and the SWAP count. Terminal
    measurements are held back and returned apart, on wherever routing has moved their
    qubits: SWAPs may pass through a measured qubit without making its measurement
    mid-circuit, which keeps the circuit fast to sample.
    """
    ops = list(ops)
    where = dict(placement)
    occupant = {p: q for q, p in where.items()}
    out: list[cirq.Operation] = []
    held = _terminal_measurements(ops)
    swaps = 0
    for index, op in enumerate(ops):
        if index in held:
            continue
        inner = op.without_classical_controls()
        if len(inner.qubits) == 2 and not cirq.is_measurement(inner):
            a, b = inner.qubits
            path = _shortest_path(device, where[a], where[b])
            for here, there in zip(path, path[1:-1], strict=False):
                out.extend(_entangle(cirq.SWAP, here, there, two_q))
                moved, other = occupant.get(here), occupant.get(there)
                occupant[here], occupant[there] = other, moved
                for qubit, spot in ((moved, there), (other, here)):
                    if qubit is not None:
                        where[qubit] = spot
                swaps += 1
            p, q = where[a], where[b]
            conditions = op.classical_controls
            for part in _entangle(inner.gate, p, q, two_q):
                out.append(part.with_classical_controls(*conditions) if conditions else part)
        else:
            out.append(op.transform_qubits(lambda q: cirq.LineQubit(where[q])))
    final = [ops[i].transform_qubits(lambda q: cirq.LineQubit(where[q])) for i in sorted(held)]
    return out, final, swaps


def _terminal_measurements(ops: list[cirq.Operation]) -> set[int]:
    """Indices of measurements after which nothing touches their qubits or is controlled."""
    later: set[cirq.Qid] = set()
    controlled = False
    terminal: set[int] = set()
    for index in range(len(ops) - 1, -1, -1):
        op = ops[index]
        if cirq.is_measurement(op) and not controlled and later.isdisjoint(op.qubits):
            terminal.add(index)
        later.update(op.qubits)
        controlled = controlled or bool(op.classical_controls)
    return terminal


def _entangle(gate: cirq.Gate, p: int, q: int, two_q: cirq.Gate) -> list[cirq.Operation]:
    """CZ, CNOT or SWAP on physical ``p, q`` written with the native entangler ``two_q``."""
    a, b = cirq.LineQubit(p), cirq.LineQubit(q)
    if gate == cirq.SWAP:
        cx = [cirq.CNOT(a, b), cirq.CNOT(b, a), cirq.CNOT(a, b)]
        return [part for op in cx for part in _entangle(op.gate, *(x.x for x in op.qubits), two_q)]
    if gate == two_q:
        return [two_q(a, b)]
    # CZ = H_b·CNOT·H_b and CNOT = H_b·CZ·H_b.
    return [cirq.H(b), two_q(a, b), cirq.H(b)]


def _shortest_path(device: Device, start: int, goal: int) -> list[int]:
    """A shortest path of usable edges, walking down the device's hop counts to ``goal``."""
    path = [start]
    if goal in device.coupling[start]:
        return [start, goal]
    hops = device.distances[goal]
    while path[-1] != goal:
        path.append(min(device.coupling[path[-1]], key=lambda n: hops.get(n, len(hops))))
    return path


@functools.lru_cache(maxsize=1024)
def _gate_unitary(gate: cirq.Gate) -> np.ndarray:
    """A one-qubit gate's matrix (cached: the same few gates recur in every circuit)."""
    matrix = cirq.unitary(gate)
    matrix.setflags(write=False)
    return matrix


def _unitary(op: cirq.Operation) -> np.ndarray:
    return _gate_unitary(op.gate) if isinstance(op, cirq.GateOperation) else cirq.unitary(op)


def phased_xz(matrix: np.ndarray) -> cirq.PhasedXZGate:
    """``cirq.PhasedXZGate.from_matrix`` for a 2×2 unitary, in Python's complex arithmetic
    (cirq's numpy version of the same formulas costs ~50 µs per call on 2×2 arrays).

    The angles follow ``cirq.deconstruct_single_qubit_matrix_into_angles``: cancel the phase
    between the top row's entries, then between the left column's, read the rotation off the
    magnitudes, and the remaining diagonal phase; the gate is returned in canonical form.
    """
    (a, b), (c, d) = matrix.tolist()
    right = cmath.phase(b * a.conjugate()) + math.pi
    # Multiply the columns by the phases that align the top row, then the rows by those that
    # align the left column.
    right_phase = cmath.exp(-1j * right)
    b, d = b * right_phase, d * right_phase
    bottom = cmath.phase(c * a.conjugate())
    bottom_phase = cmath.exp(-1j * bottom)
    c, d = c * bottom_phase, d * bottom_phase
    rotation = math.atan2(abs(c), abs(a))
    cos, sin = math.cos(rotation), math.sin(rotation)
    a, d = cos * a + sin * c, -sin * b + cos * d  # rows after the inverse rotation
    diagonal = cmath.phase(d * a.conjugate())
    pre = (right + diagonal) / math.pi - 0.5
    post = bottom / math.pi + 0.5
    return cirq.PhasedXZGate(
        x_exponent=2 * rotation / math.pi, axis_phase_exponent=-pre, z_exponent=post + pre
    )._canonical()


def merged_gate(matrix: np.ndarray) -> cirq.PhasedXZGate | None:
    """The one gate of a merged run of one-qubit unitaries whose product is ``matrix``; None
    when the run is the identity up to a phase (it is dropped). Kept by the matrix's bytes:
    most runs of circuits of one structure recur (a fastpath circuit's merge on four nodes
    meets its angle in one run of five)."""
    return _merged_gate(np.asarray(matrix, dtype=np.complex128).tobytes())


@functools.lru_cache(maxsize=4096)
def _merged_gate(data: bytes) -> cirq.PhasedXZGate | None:
    matrix = np.frombuffer(data, dtype=np.complex128).reshape(2, 2)
    identity = abs(matrix[0, 1]) < ATOL and abs(matrix[0, 0] - matrix[1, 1]) < ATOL
    return None if identity else phased_xz(matrix)


def _mergeable(op: cirq.Operation) -> bool:
    """Whether ``op`` joins a run of one-qubit unitaries (a ``_Slot`` stands for one)."""
    return (
        len(op.qubits) == 1
        and not isinstance(op, cirq.ClassicallyControlledOperation)
        and (isinstance(op.gate, _Slot) or cirq.has_unitary(op))
    )


def _unmerged(op: cirq.Operation) -> cirq.Operation:
    """What the merge makes of an operation that joins no run: a classically controlled
    one-qubit unitary as a controlled ``PhasedXZGate``; any other as it is."""
    inner = op.without_classical_controls()
    if len(inner.qubits) == 1 and cirq.has_unitary(inner):
        gate = phased_xz(_unitary(inner))
        return gate(*inner.qubits).with_classical_controls(*op.classical_controls)
    return op


def _count(native: cirq.Circuit, durations: tuple[float, ...], device: Device) -> GateCounts:
    one: dict[int, int] = {}
    two: dict[tuple[int, int], int] = {}
    measure: dict[int, int] = {}
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    last_gate: dict[int, int] = {}
    for index, moment in enumerate(native):
        for op in moment:
            physical = [q.x for q in op.qubits]
            inner = op.without_classical_controls()
            measured = measures(inner)
            for p in physical:
                first.setdefault(p, index)
                last[p] = index
                if not measured:
                    last_gate[p] = index
            if measured:
                for p in physical:
                    measure[p] = measure.get(p, 0) + 1
            elif len(physical) == 2:
                pair = (min(physical), max(physical))
                two[pair] = two.get(pair, 0) + 1
            elif cost := pulses(op, device):
                one[physical[0]] = one.get(physical[0], 0) + cost
    starts = np.concatenate([[0.0], np.cumsum(durations)])
    exposure: dict[int, float] = {}
    wait: dict[int, float] = {}
    for p, begin in first.items():
        # Relaxation acts from the first operation to the last; the stretch after the last
        # gate, waiting for the final measurement, is kept apart (only T1 matters there).
        split = min(last[p], last_gate[p] + 1) if p in last_gate else begin
        exposure[p] = float(starts[split] - starts[begin])
        wait[p] = float(starts[last[p]] - starts[split])
    return GateCounts(one, two, measure, exposure, wait)
