"""Noise: fidelity prediction and noisy emulation of compiled circuits.

Both read the same :class:`~qubus.compile.CompiledCircuit` and the same device numbers.

Emulation (:func:`emulate`) models a device as qiskit-aer's device noise model does
(``tests/unit/test_aer_reference.py`` checks that the two agree within shot noise):

* Every qubit relaxes (amplitude damping from T1, pure dephasing from T1/T2) after each moment
  from its first operation to its last, for the moment's duration, idle or busy.
* A native gate with reported error ``e`` (average gate infidelity, as RB reports it) adds a
  depolarizing channel sized so that it and the relaxation during the gate together have
  average infidelity ``e`` (:func:`depolarizing_probability`; none if relaxation alone
  reaches ``e``). A one-qubit gate of ``k`` pulses has error ``k·e_1q`` over ``k`` pulse times.
* Readout flips measured bits classically: 0→1 with ``p01``, 1→0 with ``p10``. Bits that
  steer classical control are used unflipped (readout errors do not propagate into feedback).

Registers of up to ``DENSITY_MATRIX_QUBITS`` qubits with terminal measurements are simulated
once as a density matrix (relaxation and depolarizing applied in closed form, not Kraus by
Kraus) and the shots sampled from it; :func:`emulated_distribution` returns that exact
distribution, for measuring the emulator without shot noise. Other circuits run qsim noisy
trajectories, one per shot.

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
(``qubus.distributed``).

These channels commute and are applied to the dense ``2^m`` distribution (``m`` measured bits,
up to ``qubus.fidelity.DENSE_BITS``; beyond, one global depolarizing mix of their total).
Then each bit's T1 decay while waiting for its measurement and its readout flips are applied
exactly. Approximations: relaxation is twirled (its non-unital part is dropped), scrambled
bits are taken as uniform, the Pauli outcomes of one channel and different channels as
independent, and harmlessness past a non-Clifford gate is judged only by the cheap rules
above (errors harmless for other reasons count fully, so there the model errs low).

:func:`esp`, the product of gate, relaxation and readout fidelities, stays available; pushed
through a global depolarizing mix (:func:`qubus.fidelity.fidelity_with_ideal`) it was the
predictor before the noise budget. The noise service publishes each node's
:func:`noise_budget` (the per-error flips and scrambles and the read-out matrices, which do
not depend on ``p``) and fusion, which has ``p`` from the sandbox, applies it
(:func:`qubus.fidelity.budget_fidelity`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import cirq
import numpy as np

from qubus.compile import ATOL, CompiledCircuit, op_duration_ns, pulses
from qubus.devices import Device, QubitCal
from qubus.fidelity import budget_fidelity
from qubus.messages import NoiseBudget
from qubus.simulate import (
    bits_from_result,
    counts_from_bits,
    measurement_keys,
    ordered_keys,
    run,
)

JOB_OVERHEAD_S = {"superconducting": 1.0, "trapped-ion": 2.0}
"""Modelled per-job cost of a QPU (loading, compilation on the device, result transfer).
Assumed round numbers, not measurements."""

SHOT_OVERHEAD_S = {"superconducting": 250e-6, "trapped-ion": 1e-3}
"""Modelled per-shot reset cost: IBM's default repetition delay (``default_rep_delay`` = 250 µs
in the conf files); for ion traps an assumed 1 ms of cooling and state preparation."""

DENSITY_MATRIX_QUBITS = 8
"""Largest register emulated by one exact density-matrix simulation instead of a trajectory
per shot (4^8 entries; beyond that trajectories are cheaper)."""


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


def gate_error(op: cirq.Operation, device: Device) -> float:
    """Reported error of one compiled operation (0 for virtual gates and measurements)."""
    inner = op.without_classical_controls()
    if cirq.is_measurement(inner):
        return 0.0
    if len(inner.qubits) == 2:
        a, b = (q.x for q in inner.qubits)
        return device.edge(a, b).error
    (qubit,) = inner.qubits
    return min(1.0, pulses(op, device) * device.qubits[qubit.x].one_qubit_error)


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


def relaxation_process_fidelity(t_ns: float, qubit: QubitCal) -> float:
    """Process fidelity ``(1 + e^(−t/T1) + 2·e^(−t/T2)) / 4`` of relaxing for ``t_ns``."""
    if t_ns <= 0 or qubit.t1_us is None or qubit.t2_us is None:
        return 1.0
    t_us = t_ns / 1000
    return (1 + math.exp(-t_us / qubit.t1_us) + 2 * math.exp(-t_us / qubit.t2_us)) / 4


def depolarizing_probability(op: cirq.Operation, device: Device) -> float:
    """``cirq.depolarize`` probability that completes the relaxation during a gate to its error.

    As ``NoiseModel.from_backend`` of qiskit-aer: the relaxation of the gate's qubits over
    its duration has average fidelity ``f_r``; a depolarizing channel of qiskit parameter
    ``λ = d·(e − (1 − f_r)) / (d·f_r − 1)`` after it brings the average infidelity to the
    reported error ``e`` (capped at ``d/(d+1)``). Returned in cirq's convention (total
    probability of a non-identity Pauli, ``λ·(d² − 1)/d²``); 0 when relaxation alone reaches
    ``e``.
    """
    error = gate_error(op, device)
    if error <= 0:
        return 0.0
    qubits = [device.qubits[q.x] for q in op.qubits]
    return _completing_depolarizing(error, op_duration_ns(op, device), qubits)


def _completing_depolarizing(error: float, duration: float, qubits: list[QubitCal]) -> float:
    """:func:`depolarizing_probability` of a gate with this error and duration on these qubits."""
    d = 2 ** len(qubits)
    process = math.prod(relaxation_process_fidelity(duration, q) for q in qubits)
    relax_fidelity = (d * process + 1) / (d + 1)
    if error <= 1 - relax_fidelity:
        return 0.0
    error = min(error, d / (d + 1))
    lam = min(d * (error - 1 + relax_fidelity) / (d * relax_fidelity - 1), d * d / (d * d - 1))
    return lam * (d * d - 1) / (d * d)


def noise_budget(compiled: CompiledCircuit, device: Device) -> NoiseBudget:
    """The device's noise on the compiled circuit as it reaches the measured bits.

    The bit positions are those of the circuit's outcome strings (its measurement keys in
    order, ``qubus.simulate.measurement_keys``); see the module docstring for the model.
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
        depolarizing: Its ``depolarizing_probability``.
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
    """Scrambles, flips and read-out matrices of the compiled circuit on the device."""
    ops, keys, last_read = _ops(compiled, device)
    qubits = _bit_qubits(last_read, keys)
    scrambles, flips = _error_budget(ops, compiled, device, _columns(last_read, keys))
    wait = compiled.gate_counts.wait_ns
    confusion = []
    for q in qubits:
        cal = device.qubits[q]
        t_ns = wait.get(q, 0.0)
        decay = 0.0 if cal.t1_us is None else 1 - math.exp(-t_ns / 1000 / cal.t1_us)
        confusion.append(_confusion(cal, decay))
    return _positions(scrambles, len(qubits)), _positions(flips, len(qubits)), confusion


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
    scrambles, flips = _error_budget(ops, compiled, device, columns, probes, found)
    return ErrorWalk(scrambles, flips, [found[slot] for slot in range(len(paulis))])


def _columns(
    last_read: dict[str, tuple[int, ...]], keys: list[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """(key, physical qubit) → bit mask of the bit-string positions that key reads from it."""
    columns: dict[tuple[str, int], int] = {}
    start = 0
    for key, width in keys:
        for k, q in enumerate(_bit_qubits(last_read, [(key, width)])):
            columns[key, q] = columns.get((key, q), 0) | 1 << (start + k)
        start += width
    return columns


def _positions(chances: dict[int, float], width: int) -> list[tuple[list[int], float]]:
    return [([k for k in range(width) if mask >> k & 1], c) for mask, c in chances.items()]


def _ops(
    compiled: CompiledCircuit, device: Device
) -> tuple[list[_Op], list[tuple[str, int]], dict[str, tuple[int, ...]]]:
    """The compiled operations in time order, the measurement keys with their widths (in
    ``qubus.simulate.measurement_keys`` order) and the qubits of each key's last measurement.

    Gate properties are worked out once per distinct gate of the circuit, and depolarizing
    probabilities (as :func:`depolarizing_probability`) once per kind, qubits and pulses.
    """
    ops: list[_Op] = []
    widths: dict[str, int] = {}
    last_read: dict[str, tuple[int, ...]] = {}
    gates: dict[object, tuple[int, _Rotation | None, bool, int]] = {}
    noise: dict[tuple[int, tuple[int, ...], int], float] = {}
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
            key = _gate_key(gate)
            if key not in gates:
                gates[key] = _classify(op, device)
            kind, rotation, keeps_z, pulse_count = gates[key]
            noise_key = (kind, qubits, pulse_count)
            p = noise.get(noise_key)
            if p is None:
                p = noise[noise_key] = _op_depolarizing(kind, qubits, pulse_count, device)
            if controlled:
                kind = _CONTROLLED
            ops.append(_Op(index, kind, qubits, rotation, keeps_z, p))
    return ops, ordered_keys(widths), last_read


def _op_depolarizing(kind: int, qubits: tuple[int, ...], pulse_count: int, device: Device) -> float:
    """:func:`depolarizing_probability` from an operation's kind, qubits and pulses."""
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
    return _completing_depolarizing(error, duration, [device.qubits[q] for q in qubits])


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
        compiled: The compiled circuit (moment durations, last gates).
        device: Its device.
        columns: (Measurement key, physical qubit) → bit mask of the bit-string positions
            that key reads from it (a qubit measured under several keys has several).
        probes: Operation index → ``(slot, qubit, Pauli code)`` of Paulis put right after it,
            whose flip and scramble masks (as ``effects`` gives them) go to ``found[slot]``.
        found: Filled for ``probes``.

    Returns:
        Bit mask → chance that the bits are scrambled, and bit mask → chance that exactly
        those bits are flipped.
    """
    states = _product_states(ops)
    starts = [0.0]
    for d in compiled.moment_durations_ns:
        starts.append(starts[-1] + d)
    last_gate: dict[int, int] = {}
    for op in ops:
        if op.kind != _MEASURE:
            for q in op.qubits:
                last_gate[q] = op.moment
    # Backward state, per qubit: reached bits, flip patterns of X and Z (None: not Clifford
    # enough), Z reaches the measurements as Z's (the fallback rule), start of the next op.
    reach: dict[int, int] = {}
    x_flip: dict[int, int | None] = {}
    z_flip: dict[int, int | None] = {}
    z_safe: dict[int, bool] = {}
    next_moment: dict[int, int] = {}
    intact: dict[int, float] = {}  # scrambled bits → chance that no error scrambles them
    parity: dict[int, float] = {}  # flipped bits → E[(−1)^(number of flips)]
    twirls: dict[tuple[int, float], tuple[float, float, float, float] | None] = {}

    def effects(q: int, eigen: int) -> tuple[list[int | None], list[int]]:
        """Per Pauli code on ``q`` (0 = I): the bits it flips (None: no pattern) and the
        bits it scrambles if it has none (0: harmless by the fallback rules)."""
        x, z = x_flip.get(q, 0), z_flip.get(q, 0)
        flips = [0, x, z, None if x is None or z is None else x ^ z]
        bits = reach.get(q, 0)
        harmless = eigen | (1 << _Z if z_safe.get(q, True) else 0)
        if _TWO_OR_MORE[harmless]:
            harmless = _ALL_PAULIS
        scrambles = [0, bits, bits, bits]
        for code in (_X, _Z, _Y):
            if eigen >> code & 1:
                flips[code] = scrambles[code] = 0
            elif harmless >> code & 1:
                scrambles[code] = 0
        return flips, scrambles

    def fold(flips: dict[int, float], scrambles: dict[int, float]) -> None:
        """Add one channel's (mutually exclusive) outcomes as an independent event each."""
        for m, c in flips.items():
            parity[m] = parity.get(m, 1.0) * (1 - 2 * c)
        for m, c in scrambles.items():
            intact[m] = intact.get(m, 1.0) * (1 - c)

    def one_qubit(table: tuple[list[int | None], list[int]], chances: tuple[float, ...]) -> None:
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
                intact[m] = intact.get(m, 1.0) * (1 - chance)
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
        fold(flips, scrambles)

    def two_qubit(
        a: tuple[list[int | None], list[int]], b: tuple[list[int | None], list[int]], chance: float
    ) -> None:
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
            fold({}, scrambles)
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
        fold(flips, scrambles)

    end_of_circuit = len(starts) - 1
    for index in range(len(ops) - 1, -1, -1):
        op = ops[index]
        kind, qubits, moment = op.kind, op.qubits, op.moment
        after = states[index]
        if probes and index in probes and found is not None:
            for slot, q, code in probes[index]:
                flips, scrambles = effects(q, after[qubits.index(q)][0])
                found[slot] = (flips[code], scrambles[code] if flips[code] is None else 0)
        # Every error here sits right after the operation, so the qubits' effect tables are
        # shared by the relaxation until their next operation and the gate's depolarizing.
        tables: list[tuple[list[int | None], list[int]]] | None = None
        for i, q in enumerate(qubits):
            end = min(next_moment.get(q, end_of_circuit), last_gate.get(q, -1) + 1)
            next_moment[q] = moment
            if end <= moment or not reach.get(q, 0):
                continue
            key = (q, starts[end] - starts[moment])
            if key not in twirls:
                twirls[key] = _twirled_relaxation(key[1], device.qubits[q])
            relaxing = twirls[key]
            if relaxing is None:
                continue
            if tables is None:
                tables = [effects(x, eigen) for x, (eigen, _) in zip(qubits, after, strict=True)]
            px, py, pz, damped = relaxing
            value = after[i][1]
            if value is None:
                one_qubit(tables[i], (0.0, px, pz, py))
            elif value:  # amplitude damping of a 1 is an X on it; a 0 is not hurt
                one_qubit(tables[i], (0.0, damped, 0.0, 0.0))
        if kind == _RESET:  # an error before a reset is erased with the qubit's state
            for q in qubits:
                for table in (reach, x_flip, z_flip, z_safe):
                    table.pop(q, None)
            continue
        mask = 0
        for q in qubits:
            mask |= reach.get(q, 0)
        if kind in (_MEASURE, _CONTROLLED):
            for q in qubits:
                terminal = kind == _MEASURE and q not in x_flip
                read = columns.get((op.key, q), 0)
                reach[q] = reach.get(q, 0) | read | mask
                x_flip[q] = read if terminal else None
                z_flip[q] = 0 if terminal else None
                z_safe[q] = kind == _MEASURE
            continue
        if mask:
            p = op.depolarizing
            if p > 0:
                if tables is None:
                    tables = [
                        effects(x, eigen) for x, (eigen, _) in zip(qubits, after, strict=True)
                    ]
                if len(qubits) == 1:
                    one_qubit(tables[0], (0.0, p / 3, p / 3, p / 3))
                else:
                    two_qubit(tables[0], tables[1], p / 15)
            for q in qubits:
                reach[q] = mask
        _before(op, x_flip, z_flip, z_safe)
    return (
        {m: 1 - kept for m, kept in intact.items() if kept < 1},
        {m: (1 - e) / 2 for m, e in parity.items() if e < 1},
    )


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


def emulated_runtime_s(compiled: CompiledCircuit, device: Device, shots: int) -> float:
    """Modelled wall time of the job on the real QPU.

    ``JOB_OVERHEAD_S + shots · (duration + SHOT_OVERHEAD_S)`` for the device's kind.
    """
    per_shot = compiled.duration_ns * 1e-9 + SHOT_OVERHEAD_S[device.kind]
    return JOB_OVERHEAD_S[device.kind] + shots * per_shot


def noisy_moments(compiled: CompiledCircuit, device: Device) -> Iterator[cirq.Moment]:
    """The compiled moments with gate noise after and pending relaxation before each.

    A qubit relaxes for every moment from its first operation to its last; the relaxation of
    consecutive idle moments is applied as one channel right before the qubit's next
    operation, which is the same channel and keeps the trajectory count of channels low.
    """
    last: dict[cirq.Qid, int] = {}
    for index, moment in enumerate(compiled.circuit):
        for q in moment.qubits:
            last[q] = index
    pending: dict[cirq.Qid, float] = {}
    for index, (moment, duration) in enumerate(
        zip(compiled.circuit, compiled.moment_durations_ns, strict=True)
    ):
        relax = [
            (q, _relaxation(pending.pop(q), device.qubits[q.x]))
            for q in moment.qubits
            if pending.get(q, 0) > 0
        ]
        for layer in range(max((len(c) for _, c in relax), default=0)):
            yield cirq.Moment(c[layer].on(q) for q, c in relax if layer < len(c))
        yield moment
        channels: list[cirq.Operation] = []
        for op in moment:
            p = depolarizing_probability(op, device)
            if p > 0:
                channels.append(cirq.depolarize(p, n_qubits=len(op.qubits)).on(*op.qubits))
        if channels:
            yield cirq.Moment(channels)
        for q, final in last.items():
            if q in pending or (q in moment.qubits and index < final):
                pending[q] = pending.get(q, 0.0) + duration


def _relaxation(t_ns: float, qubit: QubitCal) -> list[cirq.Gate]:
    """Amplitude damping (T1) then, if T2 < 2·T1, pure dephasing, for ``t_ns``."""
    t_us = t_ns / 1000
    channels: list[cirq.Gate] = [cirq.amplitude_damp(1 - math.exp(-t_us / qubit.t1_us))]
    dephasing_rate = 1 / qubit.t2_us - 1 / (2 * qubit.t1_us)
    if dephasing_rate > 0:
        channels.append(cirq.phase_damp(1 - math.exp(-2 * t_us * dephasing_rate)))
    return channels


def emulate(
    compiled: CompiledCircuit,
    device: Device,
    shots: int,
    *,
    seed: int,
    noiseless: bool = False,
) -> dict[str, int]:
    """Run the compiled circuit with the device's noise and return counts.

    Only the physical qubits the circuit touches are simulated (compacted to a small
    register). Up to ``DENSITY_MATRIX_QUBITS`` qubits with terminal measurements, the noisy
    density matrix is computed once (cirq) and the shots are sampled from its diagonal: the
    same distribution as trajectories, without a simulation per shot. Otherwise qsim runs
    noisy trajectories (:func:`qubus.simulate.run` picks the simulator for circuits with
    classically controlled operations).

    Args:
        compiled: The output of ``compile_for_device`` for this device.
        device: The device profile (its noise).
        shots: Number of repetitions.
        seed: Seeds the simulator and the readout flips.
        noiseless: Skip every noise channel and readout flip (checks compilation).

    Returns:
        Counts keyed by bit strings in the ``qubus.simulate`` convention.
    """
    circuit, keys = _register_circuit(compiled, device, noiseless=noiseless)
    if not keys:
        return {"": shots}
    rng = np.random.default_rng(seed)
    simulator_seed = int(rng.integers(2**31))
    if not noiseless and _exact(compiled, circuit):
        probs, qubits = _final_probabilities(circuit)
        drawn = rng.choice(probs.size, size=shots, p=probs / probs.sum())
        bits = _bit_columns(drawn, circuit, keys, qubits)
    else:
        bits = bits_from_result(run(circuit, shots, seed=simulator_seed), keys)
    if not noiseless:
        bits = readout_flips(bits, _readout_qubits(compiled, keys), device, rng)
    return counts_from_bits(bits)


def emulated_distribution(compiled: CompiledCircuit, device: Device) -> dict[str, float] | None:
    """The exact distribution :func:`emulate` samples its shots from, where it has one.

    For registers that :func:`emulate` simulates as one density matrix (up to
    ``DENSITY_MATRIX_QUBITS`` qubits, terminal measurements only): the same noisy density
    matrix, its diagonal marginalised onto the measured bits, then every bit through its
    readout flips. This is the emulator's infinite-shot output, for measuring it without
    shot noise.

    Returns:
        Bit string → probability of every outcome that can occur (no floor), or None where
        :func:`emulate` runs trajectories instead.
    """
    circuit, keys = _register_circuit(compiled, device, noiseless=False)
    if not keys:
        return {"": 1.0}
    if not _exact(compiled, circuit):
        return None
    probs, qubits = _final_probabilities(circuit)
    states = np.arange(probs.size)
    columns = _bit_columns(states, circuit, keys, qubits).astype(np.int64)
    width = columns.shape[1]
    index = columns @ (1 << np.arange(width - 1, -1, -1))
    dense = np.bincount(index, weights=probs / probs.sum(), minlength=2**width)
    dense = dense.reshape((2,) * width)
    for k, q in enumerate(_readout_qubits(compiled, keys)):
        cal = device.qubits[q]
        flips = np.array([[1 - cal.p01, cal.p10], [cal.p01, 1 - cal.p10]])  # [read][true]
        dense = np.moveaxis(np.tensordot(flips, dense, axes=([1], [k])), 0, k)
    return {format(i, f"0{width}b"): float(v) for i, v in enumerate(dense.ravel()) if v > 0}


def _register_circuit(
    compiled: CompiledCircuit, device: Device, *, noiseless: bool
) -> tuple[cirq.Circuit, list[tuple[str, int]]]:
    """The circuit :func:`emulate` simulates (noisy unless ``noiseless``) on the compacted
    register ``LineQubit(0..)``, and its measurement keys."""
    circuit = compiled.circuit.unfreeze()
    if not noiseless:
        circuit = cirq.Circuit(noisy_moments(compiled, device))
    compact = {cirq.LineQubit(p): cirq.LineQubit(i) for i, p in enumerate(compiled.physical_qubits)}
    circuit = circuit.transform_qubits(compact)
    return circuit, measurement_keys(circuit)


def _exact(compiled: CompiledCircuit, circuit: cirq.Circuit) -> bool:
    """Whether the noisy register is simulated once as a density matrix."""
    return len(compiled.physical_qubits) <= DENSITY_MATRIX_QUBITS and _terminal_only(circuit)


def _terminal_only(circuit: cirq.Circuit) -> bool:
    """Measurements only at the end, each key once, no classical control."""
    keys = [op.gate.key for op in circuit.all_operations() if cirq.is_measurement(op)]
    controlled = any(op.classical_controls for op in circuit.all_operations())
    return (
        not controlled and len(keys) == len(set(keys)) and circuit.are_all_measurements_terminal()
    )


def _final_probabilities(circuit: cirq.Circuit) -> tuple[np.ndarray, list[cirq.Qid]]:
    """Diagonal of the exact noisy density matrix before the measurements, and its qubit order
    (cirq's: the first qubit is the most significant bit of an index)."""
    qubits = sorted(circuit.all_qubits())
    body = cirq.Circuit(
        _closed_form(op) for op in circuit.all_operations() if not cirq.is_measurement(op)
    )
    body.append(cirq.I.on_each(*(set(qubits) - body.all_qubits())))
    rho = cirq.DensityMatrixSimulator(dtype=np.complex128).simulate(body, qubit_order=qubits)
    return np.clip(np.real(np.diag(rho.final_density_matrix)), 0, None), qubits


def _bit_columns(
    states: np.ndarray, circuit: cirq.Circuit, keys: list[tuple[str, int]], qubits: list[cirq.Qid]
) -> np.ndarray:
    """The measured bits, ``(len(states), Σ widths)``, of register basis states (indices)."""
    registers = (states[:, None] >> np.arange(len(qubits) - 1, -1, -1)) & 1
    measured = {op.gate.key: op for op in circuit.all_operations() if cirq.is_measurement(op)}
    columns = []
    for key, _width in keys:
        op = measured[key]
        flips = np.array(op.gate.full_invert_mask(), dtype=np.int64)
        columns.append(registers[:, [qubits.index(q) for q in op.qubits]] ^ flips)
    return np.concatenate(columns, axis=1).astype(np.uint8)


def _closed_form(op: cirq.Operation) -> cirq.Operation:
    """The operation, with its noise channel (if it is one) applied in closed form."""
    gate = op.gate
    if isinstance(gate, cirq.DepolarizingChannel):
        return _ClosedFormDepolarizing(gate.p, len(op.qubits)).on(*op.qubits)
    if isinstance(gate, cirq.AmplitudeDampingChannel):
        return _ClosedFormDamping(gate.gamma, 0.0).on(*op.qubits)
    if isinstance(gate, cirq.PhaseDampingChannel):
        return _ClosedFormDamping(0.0, gate.gamma).on(*op.qubits)
    return op


class _ClosedFormDamping(cirq.Gate):
    """``cirq.amplitude_damp(amplitude)`` then ``cirq.phase_damp(phase)`` on a density matrix.

    In closed form on the qubit's 2×2 blocks: ``ρ00 += a·ρ11``, ``ρ11 *= 1 − a`` and the
    coherences ``*= √((1 − a)(1 − p))``, in place, instead of a matrix product per Kraus
    operator (cirq's generic path, which dominated the emulation of deep circuits).
    """

    def __init__(self, amplitude: float, phase: float) -> None:
        self._amplitude = amplitude
        self._phase = phase

    def _num_qubits_(self) -> int:
        return 1

    def _apply_channel_(self, args: cirq.ApplyChannelArgs) -> np.ndarray:
        tensor = args.target_tensor
        (left,), (right,) = args.left_axes, args.right_axes

        def block(row: int, column: int) -> tuple[slice, ...]:
            # Slices, not integers: a view even when the state is a single qubit's 2×2.
            index = [slice(None)] * tensor.ndim
            index[left], index[right] = slice(row, row + 1), slice(column, column + 1)
            return tuple(index)

        if self._amplitude:
            excited = tensor[block(1, 1)]
            tensor[block(0, 0)] += self._amplitude * excited
            excited *= 1 - self._amplitude
        coherence = math.sqrt((1 - self._amplitude) * (1 - self._phase))
        tensor[block(0, 1)] *= coherence
        tensor[block(1, 0)] *= coherence
        return tensor


class _ClosedFormDepolarizing(cirq.Gate):
    """``cirq.depolarize(p, n)`` applied to a density matrix in closed form.

    ``ρ → (1 − λ)·ρ + λ·Tr_S(ρ) ⊗ I/d`` with ``λ = p·d²/(d² − 1)``: one partial trace
    instead of ``4^n`` Kraus products (16 for two qubits).
    """

    def __init__(self, p: float, n_qubits: int) -> None:
        self._p = p
        self._n = n_qubits

    def _num_qubits_(self) -> int:
        return self._n

    def _apply_channel_(self, args: cirq.ApplyChannelArgs) -> np.ndarray:
        tensor = args.target_tensor
        d = 2**self._n
        lam = self._p * d * d / (d * d - 1)
        axes = list(range(tensor.ndim))
        traced = list(axes)
        for left, right in zip(args.left_axes, args.right_axes, strict=True):
            traced[right] = left
        reduced_axes = [a for a in axes if a not in args.left_axes and a not in args.right_axes]
        reduced = np.einsum(tensor, traced, reduced_axes)
        operands: list = [reduced, reduced_axes]
        for left, right in zip(args.left_axes, args.right_axes, strict=True):
            operands += [np.eye(2) / 2, [left, right]]
        mixed = np.einsum(*operands, axes)
        np.multiply(tensor, 1 - lam, out=args.out_buffer)
        args.out_buffer += lam * mixed
        return args.out_buffer


def _readout_qubits(compiled: CompiledCircuit, keys: list[tuple[str, int]]) -> list[int]:
    """The physical qubit behind every bit column (the last measurement of each key)."""
    last: dict[str, tuple[int, ...]] = {}
    for op in compiled.circuit.all_operations():
        inner = op.without_classical_controls()
        if isinstance(inner.gate, cirq.MeasurementGate):
            last[inner.gate.key] = tuple(q.x for q in inner.qubits)
    return _bit_qubits(last, keys)


def _bit_qubits(last: dict[str, tuple[int, ...]], keys: list[tuple[str, int]]) -> list[int]:
    """The physical qubit behind every bit column, from each key's last measured qubits."""
    return [q for key, width in keys for q in (*last[key], *[last[key][-1]] * width)[:width]]


def readout_flips(
    bits: np.ndarray, qubits: list[int], device: Device, rng: np.random.Generator
) -> np.ndarray:
    """Readout errors on measured bits ``(shots, width)``, column k read from physical qubit
    ``qubits[k]``: 0 reads 1 with its ``p01``, 1 reads 0 with its ``p10``."""
    p01 = np.array([device.qubits[q].p01 for q in qubits])
    p10 = np.array([device.qubits[q].p10 for q in qubits])
    flip = rng.random(bits.shape) < np.where(bits == 1, p10, p01)
    return bits ^ flip.astype(np.uint8)
