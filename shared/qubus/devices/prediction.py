"""Fidelity prediction of compiled circuits: the noise budget and the walk that builds it.

It models the noise channels of the emulator (``qubus.devices.emulation``) on the same
:class:`~qubus.devices.compile.CompiledCircuit` and the same device numbers.

Prediction (:func:`predict_fidelity`) computes a modelled output distribution ``q`` and its
Hellinger fidelity with the ideal distribution ``p``, or, given ``shots``, the expected
Hellinger fidelity of that many samples of ``q`` (finite samples of a broad distribution have
a Hellinger fidelity below 1 even without noise). ``q`` starts from ``p``. Every noise
channel of the compiled circuit sits right after an operation: the gate's depolarizing, and
each qubit's relaxation from that operation to its next one (one channel, as the emulator
applies it; Pauli-twirled, except that amplitude damping of a qubit known to be 0 does
nothing and of one known to be 1 is an X). Each channel is split into Pauli errors, and each
error

* does nothing: it lies outside the backward light cone of the measurements, or the qubit's
  tracked product state is an eigenstate of that Pauli;
* flips a fixed set of bits, when the rest of the circuit carries it to the measurements as
  a Pauli (times a diagonal unitary) whose X part is on those bits: the walk back from the
  measurements keeps each qubit's *flip pattern* of X and Z through CNOT, CZ and the
  one-qubit gates that map the Pauli to Paulis with one common pattern (Cliffords, Z- and
  X-type rotations). This is exact for a Pauli error: a Z reaching the measurements as Z's
  flips nothing, an X before a CNOT flips both bits together;
* or, past a non-Clifford gate, scrambles (replaces by uniform, keeping the other bits'
  joint distribution) the bits in its forward light cone, unless it is a Z that reaches the
  measurements as Z's.

An error right before a reset is erased with the qubit's state. A measurement's bits are
those of its key (a qubit measured under several keys, reset between, flips each of them only
by the errors before that measurement). :func:`walk_errors` runs the same walk with Pauli
errors put after chosen operations, for callers that compose circuits
(``qubus.network.distributed``).

These channels commute and are applied to the dense ``2^m`` distribution (``m`` measured bits,
up to ``qubus.devices.fidelity.DENSE_BITS``; beyond, one global depolarizing mix of their total).
Then each bit's T1 decay while waiting for its measurement and its readout flips are applied
exactly. Approximations: relaxation is twirled (its non-unital part is dropped), scrambled
bits are taken as uniform, the Pauli outcomes of one channel and different channels as
independent, and harmlessness past a non-Clifford gate is judged only by the cheap rules
above (errors harmless for other reasons count fully, so there the model errs low).

:func:`esp`, the product of gate, relaxation and readout fidelities, stays available; pushed
through a global depolarizing mix (:func:`qubus.devices.fidelity.fidelity_with_ideal`) it was the
predictor before the noise budget. The noise service publishes each node's
:func:`noise_budget` (the per-error flips and scrambles and the read-out matrices, which do
not depend on ``p``) and fusion, which has ``p`` from the sandbox, applies it
(:func:`qubus.devices.fidelity.budget_fidelity`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import cirq
import numpy as np

from qubus.bus.messages import NoiseBudget
from qubus.circuits.simulate import ordered_keys
from qubus.devices.compile import ATOL, CompiledCircuit, pulses
from qubus.devices.emulation import bit_qubits, completing_depolarizing
from qubus.devices.fidelity import budget_fidelity
from qubus.devices.profiles import Device, QubitCal
from qubus.lru import Lru


def relaxation_error(t_ns: float, qubit: QubitCal) -> float:
    """Average infidelity ``1 − (3 + e^(−t/T1) + 2·e^(−t/T2)) / 6`` of relaxing for ``t_ns``."""
    if t_ns <= 0 or qubit.t1_us is None or qubit.t2_us is None:
        return 0.0
    t_us = t_ns / 1000
    return 1 - (3 + math.exp(-t_us / qubit.t1_us) + 2 * math.exp(-t_us / qubit.t2_us)) / 6


def decay_error(t_ns: float, qubit: QubitCal) -> float:
    """Chance ``(1 − e^(−t/T1)) / 2`` that a qubit waiting ``t_ns`` to be read decays to 0.

    Assumes it holds 1 half of the time; dephasing cannot change a computational-basis read.
    """
    if t_ns <= 0 or qubit.t1_us is None:
        return 0.0
    return (1 - math.exp(-t_ns / 1000 / qubit.t1_us)) / 2


def esp(compiled: CompiledCircuit, device: Device) -> float:
    """Estimated success probability: product of gate, relaxation and readout fidelities.

    Relaxation counts fully from a qubit's first operation to its last gate, and only as T1
    decay while it then waits for its final measurement.
    """
    counts = compiled.gate_counts
    log_f = 0.0
    for q, n in counts.one_qubit_pulses.items():
        log_f += n * math.log1p(-device.qubits[q].one_qubit_error)
    for (a, b), n in counts.two_qubit.items():
        log_f += n * math.log1p(-device.edge(a, b).error)
    for q, n in counts.measure.items():
        log_f += n * math.log1p(-device.qubits[q].readout_error)
    for q, t_ns in counts.exposure_ns.items():
        log_f += math.log1p(-relaxation_error(t_ns, device.qubits[q]))
    for q, t_ns in counts.wait_ns.items():
        log_f += math.log1p(-decay_error(t_ns, device.qubits[q]))
    return math.exp(log_f)


def noise_budget(compiled: CompiledCircuit, device: Device) -> NoiseBudget:
    """The device's noise on the compiled circuit as it reaches the measured bits.

    The bit positions are those of the circuit's outcome strings (its measurement keys in
    order, ``qubus.circuits.simulate.measurement_keys``); see the module docstring for the model.
    """
    scrambles, flips, confusion = _budget(compiled, device)
    return NoiseBudget(scrambles=scrambles, flips=flips, confusion=confusion)


def predict_fidelity(
    compiled: CompiledCircuit,
    device: Device,
    ideal: Mapping[str, float] | None = None,
    *,
    shots: int | None = None,
) -> float:
    """Predicted Hellinger fidelity of running the compiled circuit on the device.

    Args:
        compiled: The output of ``compile_for_device`` for this device.
        device: The device profile.
        ideal: The ideal distribution (bit strings of the circuit's measurement keys).
        shots: If given, predict the Hellinger fidelity of that many samples (its expected
            value), which is what a finite run measures.

    Returns:
        Without ``ideal``, the ESP. With it, the Hellinger fidelity of the modelled output
        distribution (module docstring) against ``ideal``.
    """
    if not ideal:
        return esp(compiled, device)
    scrambles, flips, confusion = _budget(compiled, device)
    # The budget as noise_budget returns it, without validating what was just built.
    budget = NoiseBudget.model_construct(scrambles=scrambles, flips=flips, confusion=confusion)
    return budget_fidelity(budget, ideal, shots=shots)


def _confusion(qubit: QubitCal, decay: float) -> tuple[float, float, float, float]:
    """``M[read][prepared]`` of one bit, flattened: T1 decay (1→0) while waiting, then readout
    flips."""
    one_reads_one = (1 - decay) * (1 - qubit.p10) + decay * qubit.p01
    return (1 - qubit.p01, 1 - one_reads_one, qubit.p01, one_reads_one)


EIGEN_TOLERANCE = 1e-6
"""A tracked qubit is an eigenstate of a Pauli when its Bloch vector is this close to the axis."""

_COMPONENT_TOLERANCE = 1e-9
"""Smaller coefficients of a conjugated Pauli (rounding in a Clifford gate) count as zero."""

# A one-qubit Pauli as its (x, z) bits; the Bloch axis of code c is _AXIS[c].
_X, _Z, _Y = 1, 2, 3
_AXIS = {_X: 0, _Y: 1, _Z: 2}
_CODE_OF_AXIS = (_X, _Y, _Z)
_ALL_PAULIS = 1 << _X | 1 << _Y | 1 << _Z

# Kinds of compiled operations.
_GATE, _CNOT, _CZ, _ENTANGLE, _MEASURE, _RESET, _CONTROLLED = range(7)

_Rotation = tuple[
    tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]
]
_Bloch = tuple[float, float, float]


class _Op(NamedTuple):
    """One operation of the compiled circuit, reduced to what the budget needs.

    Attributes:
        moment: Index of its moment.
        kind: ``_GATE`` (one-qubit unitary), ``_CNOT``, ``_CZ``, ``_ENTANGLE`` (another
            two-qubit gate), ``_MEASURE``, ``_RESET`` or ``_CONTROLLED`` (classically
            controlled).
        qubits: Physical qubits.
        rotation: For a one-qubit gate, its Bloch rotation ``R`` (``U σ_j U† = Σ_k R[k][j] σ_k``).
        keeps_z: A one-qubit gate that maps Z to ±Z (Z- or X-type).
        depolarizing: Its ``qubus.devices.emulation.depolarizing_probability``.
        key: A measurement's key.
    """

    moment: int
    kind: int
    qubits: tuple[int, ...]
    rotation: _Rotation | None
    keeps_z: bool
    depolarizing: float
    key: str | None = None


def _budget(
    compiled: CompiledCircuit, device: Device
) -> tuple[
    list[tuple[list[int], float]],
    list[tuple[list[int], float]],
    list[tuple[float, float, float, float]],
]:
    """Scrambles, flips and read-out matrices of the compiled circuit on the device.

    Kept (``BUDGETS`` of them) for compilations of a known shape (``CompiledCircuit.shape``),
    under what the walk reads of their one-qubit gates besides the shape: which Paulis each
    maps X and Z to, whether it keeps Z, and the tracked product states. Circuits of one
    structure with other angles mostly share one budget a device, which then costs
    :func:`_ops` and :func:`_product_states` only.
    """
    ops, keys, last_read = _ops(compiled, device)
    states = _product_states(ops)
    key = None
    if compiled.shape is not None:
        key = (compiled.shape, device.id, device.revision, _gate_images(ops), tuple(states))
        kept = _budgets.get(key)
        if kept is not None:
            return kept
    qubits = bit_qubits(last_read, keys)
    scrambles, flips = _error_budget(ops, states, compiled, device, _columns(last_read, keys))
    wait = compiled.gate_counts.wait_ns
    confusion = []
    for q in qubits:
        cal = device.qubits[q]
        t_ns = wait.get(q, 0.0)
        decay = 0.0 if cal.t1_us is None else 1 - math.exp(-t_ns / 1000 / cal.t1_us)
        confusion.append(_confusion(cal, decay))
    budget = _positions(scrambles, len(qubits)), _positions(flips, len(qubits)), confusion
    if key is not None:
        _budgets.put(key, budget)
    return budget


BUDGETS = 1024
"""Budgets kept per process (``_budget``)."""

_budgets = Lru(BUDGETS)


def _gate_images(ops: list[_Op]) -> tuple[tuple[int | bool, ...], ...]:
    """Each operation's kind, and what the walk reads of a one-qubit gate's rotation
    (``_before``): whether it keeps Z, and which Paulis carry weight in its images of X and
    of Z."""
    return tuple(
        (op.kind,)
        if op.rotation is None
        else (
            op.kind,
            op.keeps_z,
            *(
                abs(op.rotation[k][axis]) > _COMPONENT_TOLERANCE
                for axis in (0, 2)
                for k in range(3)
            ),
        )
        for op in ops
    )


class ErrorWalk(NamedTuple):
    """The walk of :func:`noise_budget` over a compiled circuit, with Pauli errors put into it.

    Bits are masks over the positions of the outcome strings (bit ``k`` is ``1 << k``).

    Attributes:
        scrambles: Mask → chance that an error scrambles those bits.
        flips: Mask → chance that an error flips exactly those bits.
        paulis: Per injected Pauli: the bits it flips (0: harmless), or None when it has no
            flip pattern, and then the bits it scrambles (0: harmless by the fallback rules).
    """

    scrambles: dict[int, float]
    flips: dict[int, float]
    paulis: list[tuple[int | None, int]]


def walk_errors(
    compiled: CompiledCircuit, device: Device, paulis: Sequence[tuple[int, int, str]] = ()
) -> ErrorWalk:
    """The device's errors, and Pauli errors put into the circuit, as they reach its bits.

    The walk of :func:`noise_budget` (module docstring), for a caller that composes circuits:
    a Pauli put right after an operation is followed as any error there is.

    Args:
        compiled: The compiled circuit.
        device: Its device.
        paulis: ``(moment, physical qubit, "X" | "Y" | "Z")``: a Pauli on that qubit right
            after its operation in that moment of ``compiled.circuit``.

    Raises:
        ValueError: No operation acts on that qubit in that moment, or an unknown Pauli.
    """
    ops, keys, last_read = _ops(compiled, device)
    where = {(op.moment, q): index for index, op in enumerate(ops) for q in op.qubits}
    codes = {"X": _X, "Y": _Y, "Z": _Z}
    probes: dict[int, list[tuple[int, int, int]]] = {}
    for slot, (moment, qubit, pauli) in enumerate(paulis):
        if (moment, qubit) not in where or pauli not in codes:
            raise ValueError(f"no operation on qubit {qubit} in moment {moment}, or {pauli!r}")
        probes.setdefault(where[moment, qubit], []).append((slot, qubit, codes[pauli]))
    found: dict[int, tuple[int | None, int]] = {}
    columns = _columns(last_read, keys)
    states = _product_states(ops)
    scrambles, flips = _error_budget(ops, states, compiled, device, columns, probes, found)
    return ErrorWalk(scrambles, flips, [found[slot] for slot in range(len(paulis))])


def _columns(
    last_read: dict[str, tuple[int, ...]], keys: list[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """(key, physical qubit) → bit mask of the bit-string positions that key reads from it."""
    columns: dict[tuple[str, int], int] = {}
    start = 0
    for key, width in keys:
        for k, q in enumerate(bit_qubits(last_read, [(key, width)])):
            columns[key, q] = columns.get((key, q), 0) | 1 << (start + k)
        start += width
    return columns


def _positions(chances: dict[int, float], width: int) -> list[tuple[list[int], float]]:
    return [([k for k in range(width) if mask >> k & 1], c) for mask, c in chances.items()]


def _ops(
    compiled: CompiledCircuit, device: Device
) -> tuple[list[_Op], list[tuple[str, int]], dict[str, tuple[int, ...]]]:
    """The compiled operations in time order, the measurement keys with their widths (in
    ``qubus.circuits.simulate.measurement_keys`` order) and the qubits of each key's last
    measurement.

    Gate properties are worked out once per distinct gate and kind of device, and depolarizing
    probabilities (as :func:`~qubus.devices.emulation.depolarizing_probability`) once per
    calibration, kind, qubits and pulses, and kept (``GATE_PROPERTIES`` of them): most recur
    from circuit to circuit (a fastpath circuit's but its merged one-qubit gates).
    """
    ops: list[_Op] = []
    widths: dict[str, int] = {}
    last_read: dict[str, tuple[int, ...]] = {}
    indices: dict[tuple[cirq.Qid, ...], tuple[int, ...]] = {}
    for index, moment in enumerate(compiled.circuit):
        for op in moment.operations:
            on = op.qubits
            qubits = indices.get(on)
            if qubits is None:
                qubits = indices[on] = tuple(q.x for q in on)
            controlled = isinstance(op, cirq.ClassicallyControlledOperation)
            gate = op.without_classical_controls().gate if controlled else op.gate
            if isinstance(gate, cirq.MeasurementGate):
                widths[gate.key] = max(widths.get(gate.key, 0), len(qubits))
                last_read[gate.key] = qubits
                kind = _CONTROLLED if controlled else _MEASURE
                ops.append(_Op(index, kind, qubits, None, False, 0.0, gate.key))
                continue
            key = (_gate_key(gate), device.kind)
            properties = _gate_properties.get(key)
            if properties is None:
                properties = _classify(op, device)
                _gate_properties.put(key, properties)
            kind, rotation, keeps_z, pulse_count = properties
            noise_key = (device.id, device.revision, kind, qubits, pulse_count)
            p = _depolarizing.get(noise_key)
            if p is None:
                p = _op_depolarizing(kind, qubits, pulse_count, device)
                _depolarizing.put(noise_key, p)
            if controlled:
                kind = _CONTROLLED
            ops.append(_Op(index, kind, qubits, rotation, keeps_z, p))
    return ops, ordered_keys(widths), last_read


GATE_PROPERTIES = 4096
"""Gates' properties (kind, rotation, Z-keeping, pulses) and operations' depolarizing
probabilities each kept per process (``_ops``)."""

_gate_properties = Lru(GATE_PROPERTIES)
_depolarizing = Lru(GATE_PROPERTIES)


def _op_depolarizing(kind: int, qubits: tuple[int, ...], pulse_count: int, device: Device) -> float:
    """:func:`~qubus.devices.emulation.depolarizing_probability` from an operation's kind, qubits
    and pulses."""
    if kind == _RESET:
        return 0.0
    if len(qubits) == 2:
        edge = device.edge(*qubits)
        error, duration = edge.error, edge.duration_ns
    else:
        error = min(1.0, pulse_count * device.qubits[qubits[0]].one_qubit_error)
        duration = pulse_count * device.one_qubit_duration_ns
    if error <= 0:
        return 0.0
    return completing_depolarizing(error, duration, [device.qubits[q] for q in qubits])


def _gate_key(gate: cirq.Gate | None) -> object:
    """A cheap dictionary key of a gate: its exponents for a ``PhasedXZGate``."""
    if isinstance(gate, cirq.PhasedXZGate):
        return (gate.x_exponent, gate.z_exponent, gate.axis_phase_exponent)
    return gate


def _classify(op: cirq.Operation, device: Device) -> tuple[int, _Rotation | None, bool, int]:
    """Kind, Bloch rotation and Z-keeping (one-qubit gates) and pulse count of an operation."""
    inner = op.without_classical_controls()
    gate = inner.gate
    if isinstance(gate, cirq.ResetChannel):
        return _RESET, None, False, 0
    if len(inner.qubits) == 2:
        kind = _CNOT if gate == cirq.CNOT else _CZ if gate == cirq.CZ else _ENTANGLE
        return kind, None, False, 0
    if isinstance(gate, cirq.PhasedXZGate):
        x = gate.x_exponent % 2
        keeps_z = min(x, 2 - x) < ATOL or abs(x - 1) < ATOL
        rotation = _phased_xz_rotation(gate.x_exponent, gate.z_exponent, gate.axis_phase_exponent)
        return _GATE, rotation, keeps_z, pulses(op, device)
    return _GATE, _unitary_rotation(cirq.unitary(inner)), False, pulses(op, device)


def _phased_xz_rotation(x: float, z: float, a: float) -> _Rotation:
    """Bloch rotation of ``PhasedXZGate(x, z, a) = Z^(z+a)·X^x·Z^(−a)``, which is
    ``Rz(π(z+a))·Rx(πx)·Rz(−πa)``."""
    ca, sa = math.cos(math.pi * a), math.sin(math.pi * a)
    cx, sx = math.cos(math.pi * x), math.sin(math.pi * x)
    cb, sb = math.cos(math.pi * (z + a)), math.sin(math.pi * (z + a))
    # Rx(πx)·Rz(−πa), row by row.
    r0 = (ca, sa, 0.0)
    r1 = (-cx * sa, cx * ca, -sx)
    r2 = (-sx * sa, sx * ca, cx)
    return (
        (cb * r0[0] - sb * r1[0], cb * r0[1] - sb * r1[1], cb * r0[2] - sb * r1[2]),
        (sb * r0[0] + cb * r1[0], sb * r0[1] + cb * r1[1], sb * r0[2] + cb * r1[2]),
        r2,
    )


_SIGMA = (
    np.array([[0, 1], [1, 0]], dtype=complex),
    np.array([[0, -1j], [1j, 0]], dtype=complex),
    np.array([[1, 0], [0, -1]], dtype=complex),
)


def _unitary_rotation(u: np.ndarray) -> _Rotation:
    """Bloch rotation ``R[k][j] = tr(σ_k·U·σ_j·U†) / 2`` of a one-qubit unitary."""
    images = [u @ s @ u.conj().T for s in _SIGMA]
    rows = [
        tuple(float(np.trace(_SIGMA[k] @ images[j]).real / 2) for j in range(3)) for k in range(3)
    ]
    return (rows[0], rows[1], rows[2])


def _eigen(bloch: _Bloch | None) -> tuple[int, int | None]:
    """Bit set (by Pauli code) of the Paulis a tracked state is an eigenstate of, and its bit
    if it is a computational basis state."""
    if bloch is None:
        return 0, None
    eigen = 0
    for axis, b in enumerate(bloch):
        if abs(b) > 1 - EIGEN_TOLERANCE:
            eigen |= 1 << _CODE_OF_AXIS[axis]
    return eigen, (int(bloch[2] < 0) if eigen >> _Z & 1 else None)


def _product_states(ops: list[_Op]) -> list[tuple[tuple[int, int | None], ...]]:
    """After every operation, for each of its qubits, what its tracked product state is an
    eigenstate of (:func:`_eigen`).

    Each qubit starts in 0 and keeps a Bloch vector while it is not entangled: one-qubit
    gates rotate it; a CNOT or CZ whose control is in a basis state applies X or Z (or
    nothing) to the other qubit, and a CNOT whose target is an X eigenstate only kicks a
    phase back; any other two-qubit gate, a measurement of a superposition or a classical
    control drops both qubits from tracking until a reset.
    """
    bloch: dict[int, _Bloch | None] = {}
    after = []
    for op in ops:
        kind = op.kind
        states = [bloch.get(q, (0.0, 0.0, 1.0)) for q in op.qubits]
        if kind == _CONTROLLED:
            states = [None] * len(states)
        elif kind == _MEASURE:
            states = [s if _eigen(s)[1] is not None else None for s in states]
        elif kind == _RESET:
            states = [(0.0, 0.0, 1.0)] * len(states)
        elif kind == _GATE:
            b, r = states[0], op.rotation
            if b is not None:
                states = [tuple(r[k][0] * b[0] + r[k][1] * b[1] + r[k][2] * b[2] for k in range(3))]
        else:
            states = _entangler(kind, *states)
        for q, s in zip(op.qubits, states, strict=True):
            bloch[q] = s
        after.append(tuple(_eigen(s) for s in states))
    return after


def _entangler(kind: int, a: _Bloch | None, b: _Bloch | None) -> list[_Bloch | None]:
    """Bloch vectors after CNOT(a, b) or CZ(a, b), or None where they entangle."""
    first, second = _eigen(a)[1], _eigen(b)[1]
    if kind == _CNOT:
        if first is not None and b is not None:
            return [a, (b[0], -b[1], -b[2]) if first else b]
        if a is not None and b is not None and _eigen(b)[0] >> _X & 1:
            return [(-a[0], -a[1], a[2]) if b[0] < 0 else a, b]
    elif kind == _CZ:
        if first is not None and b is not None:
            return [a, (-b[0], -b[1], b[2]) if first else b]
        if second is not None and a is not None:
            return [(-a[0], -a[1], a[2]) if second else a, b]
    return [None, None]


def _error_budget(
    ops: list[_Op],
    states: list[tuple[tuple[int, int | None], ...]],
    compiled: CompiledCircuit,
    device: Device,
    columns: dict[tuple[str, int], int],
    probes: Mapping[int, list[tuple[int, int, int]]] | None = None,
    found: dict[int, tuple[int | None, int]] | None = None,
) -> tuple[dict[int, float], dict[int, float]]:
    """What each quantum error does to the measured bits: flip a set of them or scramble a set.

    Walks the circuit backwards from its measurements and keeps, for every qubit, the bits
    its state still reaches (its forward light cone) and, while the gates after it are
    Clifford enough, the bits that an X or a Z error on it would flip at the measurements
    (its *flip pattern*: the X part of the error pushed through the rest of the circuit).
    Each noise channel is split into Pauli errors. A Pauli part is dropped when the qubit's
    tracked product state (:func:`_product_states`) is its eigenstate; an error whose parts
    all have flip patterns flips their XOR (nothing if empty); any other error scrambles the
    bits its parts reach, unless each part is harmless by the cheaper rules of the previous
    model (eigenstate, or a Z that reaches the measurements as Z's).

    The relaxation of a qubit from one of its operations to its next (idle or busy) is one
    channel, as in the emulator; a qubit known to be 0 is not hurt by amplitude damping and
    one known to be 1 is flipped by it; otherwise it is Pauli-twirled.

    Args:
        ops: From :func:`_ops`.
        states: Their :func:`_product_states`.
        compiled: The compiled circuit (moment durations, last gates).
        device: Its device.
        columns: (Measurement key, physical qubit) → bit mask of the bit-string positions
            that key reads from it (a qubit measured under several keys has several).
        probes: Operation index → ``(slot, qubit, Pauli code)`` of Paulis put right after it,
            whose flip and scramble masks (as :meth:`_Walk.effects` gives them) go to
            ``found[slot]``.
        found: Filled for ``probes``.

    Returns:
        Bit mask → chance that the bits are scrambled, and bit mask → chance that exactly
        those bits are flipped.
    """
    walk = _Walk(ops, compiled, device, columns)
    for index in range(len(ops) - 1, -1, -1):
        op, after = ops[index], states[index]
        if probes and index in probes and found is not None:
            for slot, q, code in probes[index]:
                flips, scrambles = walk.effects(q, after[op.qubits.index(q)][0])
                found[slot] = (flips[code], scrambles[code] if flips[code] is None else 0)
        walk.step(op, after)
    return walk.budget()


_Effects = tuple[list[int | None], list[int]]
"""Per Pauli code on a qubit (0 = I): the bits it flips (None: no flip pattern), and the bits
it scrambles if it has no pattern (0: harmless by the fallback rules)."""


class _Walk:
    """The backward walk of :func:`_error_budget`: its state before the operations walked so
    far, and the errors found after them.

    Attributes:
        device: The device.
        columns: As :func:`_error_budget` takes them.
        starts: Start of every moment in ns, and the end of the circuit.
        last_gate: Qubit → moment of its last operation other than a measurement.
        next_moment: Qubit → moment of its next operation (the last one walked).
        twirls: (Qubit, ns) → :func:`_twirled_relaxation`, computed once.
        reach: Qubit → the bits its state still reaches (its forward light cone).
        x_flip: Qubit → flip pattern of an X on it (None: not Clifford enough).
        z_flip: Qubit → flip pattern of a Z on it (None: not Clifford enough).
        z_safe: Qubit → a Z on it reaches the measurements as Z's (the fallback rule).
        intact: Scrambled bits → chance that no error scrambles them.
        parity: Flipped bits → ``E[(−1)^(number of flips)]``.
    """

    def __init__(
        self,
        ops: list[_Op],
        compiled: CompiledCircuit,
        device: Device,
        columns: dict[tuple[str, int], int],
    ) -> None:
        self.device = device
        self.columns = columns
        self.starts = [0.0]
        for d in compiled.moment_durations_ns:
            self.starts.append(self.starts[-1] + d)
        self.last_gate: dict[int, int] = {}
        for op in ops:
            if op.kind != _MEASURE:
                for q in op.qubits:
                    self.last_gate[q] = op.moment
        self.next_moment: dict[int, int] = {}
        self.twirls: dict[tuple[int, float], tuple[float, float, float, float] | None] = {}
        self.reach: dict[int, int] = {}
        self.x_flip: dict[int, int | None] = {}
        self.z_flip: dict[int, int | None] = {}
        self.z_safe: dict[int, bool] = {}
        self.intact: dict[int, float] = {}
        self.parity: dict[int, float] = {}

    def budget(self) -> tuple[dict[int, float], dict[int, float]]:
        """The errors found, as :func:`_error_budget` returns them."""
        return (
            {m: 1 - kept for m, kept in self.intact.items() if kept < 1},
            {m: (1 - e) / 2 for m, e in self.parity.items() if e < 1},
        )

    def step(self, op: _Op, after: tuple[tuple[int, int | None], ...]) -> None:
        """Take in the errors right after ``op``, then move the state to before it.

        Args:
            op: The next operation, walking backwards.
            after: What its qubits' tracked product states are eigenstates of after it
                (:func:`_product_states`).
        """
        kind, qubits = op.kind, op.qubits
        # Every error here sits right after the operation, so the qubits' effect tables are
        # shared by the relaxation until their next operation and the gate's depolarizing.
        tables = self._relax(op, after)
        if kind == _RESET:  # an error before a reset is erased with the qubit's state
            for q in qubits:
                for table in (self.reach, self.x_flip, self.z_flip, self.z_safe):
                    table.pop(q, None)
            return
        mask = 0
        for q in qubits:
            mask |= self.reach.get(q, 0)
        if kind in (_MEASURE, _CONTROLLED):
            for q in qubits:
                terminal = kind == _MEASURE and q not in self.x_flip
                read = self.columns.get((op.key, q), 0)
                self.reach[q] = self.reach.get(q, 0) | read | mask
                self.x_flip[q] = read if terminal else None
                self.z_flip[q] = 0 if terminal else None
                self.z_safe[q] = kind == _MEASURE
            return
        if mask:
            p = op.depolarizing
            if p > 0:
                if tables is None:
                    tables = self._tables(qubits, after)
                if len(qubits) == 1:
                    self._one_qubit(tables[0], (0.0, p / 3, p / 3, p / 3))
                else:
                    self._two_qubit(tables[0], tables[1], p / 15)
            for q in qubits:
                self.reach[q] = mask
        _before(op, self.x_flip, self.z_flip, self.z_safe)

    def _relax(self, op: _Op, after: tuple[tuple[int, int | None], ...]) -> list[_Effects] | None:
        """Take in each qubit's relaxation from ``op`` to its next operation.

        Returns:
            The effect tables of ``op``'s qubits, or None if none was needed yet.
        """
        tables = None
        moment = op.moment
        end_of_circuit = len(self.starts) - 1
        for i, q in enumerate(op.qubits):
            end = min(self.next_moment.get(q, end_of_circuit), self.last_gate.get(q, -1) + 1)
            self.next_moment[q] = moment
            if end <= moment or not self.reach.get(q, 0):
                continue
            key = (q, self.starts[end] - self.starts[moment])
            if key not in self.twirls:
                self.twirls[key] = _twirled_relaxation(key[1], self.device.qubits[q])
            relaxing = self.twirls[key]
            if relaxing is None:
                continue
            if tables is None:
                tables = self._tables(op.qubits, after)
            px, py, pz, damped = relaxing
            value = after[i][1]
            if value is None:
                self._one_qubit(tables[i], (0.0, px, pz, py))
            elif value:  # amplitude damping of a 1 is an X on it; a 0 is not hurt
                self._one_qubit(tables[i], (0.0, damped, 0.0, 0.0))
        return tables

    def _tables(
        self, qubits: tuple[int, ...], after: tuple[tuple[int, int | None], ...]
    ) -> list[_Effects]:
        """:meth:`effects` of each qubit of an operation, right after it."""
        return [self.effects(x, eigen) for x, (eigen, _) in zip(qubits, after, strict=True)]

    def effects(self, q: int, eigen: int) -> _Effects:
        """What each Pauli on ``q`` does here, where its state is an eigenstate of ``eigen``."""
        x, z = self.x_flip.get(q, 0), self.z_flip.get(q, 0)
        flips = [0, x, z, None if x is None or z is None else x ^ z]
        bits = self.reach.get(q, 0)
        harmless = eigen | (1 << _Z if self.z_safe.get(q, True) else 0)
        if _TWO_OR_MORE[harmless]:
            harmless = _ALL_PAULIS
        scrambles = [0, bits, bits, bits]
        for code in (_X, _Z, _Y):
            if eigen >> code & 1:
                flips[code] = scrambles[code] = 0
            elif harmless >> code & 1:
                scrambles[code] = 0
        return flips, scrambles

    def _fold(self, flips: dict[int, float], scrambles: dict[int, float]) -> None:
        """Add one channel's (mutually exclusive) outcomes as an independent event each."""
        parity, intact = self.parity, self.intact
        for m, c in flips.items():
            parity[m] = parity.get(m, 1.0) * (1 - 2 * c)
        for m, c in scrambles.items():
            intact[m] = intact.get(m, 1.0) * (1 - c)

    def _one_qubit(self, table: _Effects, chances: tuple[float, ...]) -> None:
        """A one-qubit Pauli channel, chances indexed by code (``chances[0]`` unused)."""
        pattern, bits = table
        if pattern[_X] is None and pattern[_Z] is None:  # the usual case in deep circuits
            chance = (
                (chances[_X] if bits[_X] else 0.0)
                + (chances[_Z] if bits[_Z] else 0.0)
                + (chances[_Y] if bits[_Y] else 0.0)
            )
            if chance:
                m = bits[_X] or bits[_Z] or bits[_Y]  # all the qubit's reach
                self.intact[m] = self.intact.get(m, 1.0) * (1 - chance)
            return
        flips: dict[int, float] = {}
        scrambles: dict[int, float] = {}
        for code in (_X, _Z, _Y):
            chance = chances[code]
            m = pattern[code]
            if m is None:
                m = bits[code]
                if m and chance:
                    scrambles[m] = scrambles.get(m, 0.0) + chance
            elif m and chance:
                flips[m] = flips.get(m, 0.0) + chance
        self._fold(flips, scrambles)

    def _two_qubit(self, a: _Effects, b: _Effects, chance: float) -> None:
        """Two-qubit depolarizing: each of the 15 non-identity Paulis with ``chance``."""
        (pattern_a, bits_a), (pattern_b, bits_b) = a, b
        if (
            pattern_a[_X] is None
            and pattern_a[_Z] is None
            and pattern_b[_X] is None
            and pattern_b[_Z] is None
        ):  # the usual case in deep circuits: count the Paulis hurting a, b or both
            harm_a = sum(1 for m in bits_a if m)
            harm_b = sum(1 for m in bits_b if m)
            reach_a = bits_a[_X] or bits_a[_Z] or bits_a[_Y]
            reach_b = bits_b[_X] or bits_b[_Z] or bits_b[_Y]
            scrambles = {}
            for m, count in (
                (reach_a, harm_a * (4 - harm_b)),
                (reach_b, harm_b * (4 - harm_a)),
                (reach_a | reach_b, harm_a * harm_b),
            ):
                if m and count:
                    scrambles[m] = scrambles.get(m, 0.0) + count * chance
            self._fold({}, scrambles)
            return
        flips: dict[int, float] = {}
        scrambles: dict[int, float] = {}
        for code_a in range(4):
            pa, sa = pattern_a[code_a], bits_a[code_a]
            for code_b in range(1 if code_a == 0 else 0, 4):
                pb = pattern_b[code_b]
                if pa is not None and pb is not None:
                    m = pa ^ pb
                    if m:
                        flips[m] = flips.get(m, 0.0) + chance
                else:
                    m = sa | bits_b[code_b]
                    if m:
                        scrambles[m] = scrambles.get(m, 0.0) + chance
        self._fold(flips, scrambles)


_TWO_OR_MORE = [bin(bits).count("1") >= 2 for bits in range(16)]
"""Whether a bit set of Pauli codes has two or more members (then the third is harmless too)."""


def _twirled_relaxation(t_ns: float, qubit: QubitCal) -> tuple[float, float, float, float] | None:
    """Relaxing for ``t_ns``: the Pauli-twirled channel's X, Y and Z chances ``(1 − a)/4``,
    ``(1 − a)/4``, ``(1 + a − 2c)/4`` with ``a = e^(−t/T1)``, ``c = e^(−t/T2)``, and the
    damping ``1 − a`` of a 1; None if nothing relaxes."""
    if t_ns <= 0 or qubit.t1_us is None or qubit.t2_us is None:
        return None
    a = math.exp(-t_ns / 1000 / qubit.t1_us)
    c = math.exp(-t_ns / 1000 / qubit.t2_us)
    return ((1 - a) / 4, (1 - a) / 4, (1 + a - 2 * c) / 4, 1 - a)


def _before(
    op: _Op, x_flip: dict[int, int | None], z_flip: dict[int, int | None], z_safe: dict[int, bool]
) -> None:
    """Move the flip patterns (and the Z rule) of ``op``'s qubits from after it to before it.

    An error P before a gate G is the error ``G·P·G†`` after it. For a one-qubit gate that
    is a sum of Paulis; when all of them flip the same bits, so does P (the sum is that flip
    times a diagonal unitary), otherwise P has no pattern. CNOT and CZ map Paulis to Pauli
    products, whose patterns are the XOR of their parts'.
    """
    kind, qubits = op.kind, op.qubits
    if kind == _GATE:
        (q,) = qubits
        if not op.keeps_z:
            z_safe[q] = False
        x, z = x_flip.get(q, 0), z_flip.get(q, 0)
        if x is None and z is None:  # every image has no pattern, so neither has X nor Z
            return
        y = None if x is None or z is None else x ^ z
        images = (x, y, z)
        r = op.rotation
        for code, out in ((_X, x_flip), (_Z, z_flip)):
            column = _AXIS[code]
            found: set[int | None] = {
                images[k] for k in range(3) if abs(r[k][column]) > _COMPONENT_TOLERANCE
            }
            out[q] = found.pop() if len(found) == 1 else None
    elif kind == _CNOT:
        c, t = qubits
        xc, zc, xt, zt = x_flip.get(c, 0), z_flip.get(c, 0), x_flip.get(t, 0), z_flip.get(t, 0)
        x_flip[c] = None if xc is None or xt is None else xc ^ xt
        z_flip[t] = None if zc is None or zt is None else zc ^ zt
        x_flip.setdefault(t, 0)
        z_flip.setdefault(c, 0)
        z_safe[t] = z_safe.get(t, True) and z_safe.get(c, True)
    elif kind == _CZ:
        a, b = qubits
        xa, za, xb, zb = x_flip.get(a, 0), z_flip.get(a, 0), x_flip.get(b, 0), z_flip.get(b, 0)
        x_flip[a] = None if xa is None or zb is None else xa ^ zb
        x_flip[b] = None if xb is None or za is None else xb ^ za
        z_flip.setdefault(a, 0)
        z_flip.setdefault(b, 0)
    else:  # another two-qubit gate (a reset erases the patterns in the walk itself)
        for q in qubits:
            x_flip[q] = z_flip[q] = None
        z_safe[qubits[0]] = False
