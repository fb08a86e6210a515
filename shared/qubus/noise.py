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
once as a density matrix and the shots sampled from it; others run qsim noisy trajectories,
one per shot.

Prediction (:func:`predict_fidelity`) computes a modelled output distribution ``q`` and its
Hellinger fidelity with the ideal distribution ``p``, or, given ``shots``, the expected
Hellinger fidelity of that many samples of ``q`` (finite samples of a broad distribution have
a Hellinger fidelity below 1 even without noise). ``q`` starts from ``p``; every noise
channel of the compiled circuit is split into Pauli errors and each error either

* does nothing: it lies outside the backward light cone of the measurements, or the qubit's
  tracked product state is an eigenstate of that Pauli, or it is a Z that reaches the
  measurements as Z's only (amplitude damping of a qubit known to be 0 does nothing, of one
  known to be 1 flips it);
* flips one bit, if its forward light cone is that one measured bit;
* or scrambles (replaces by uniform, keeping the other bits' joint distribution) the bits in
  its forward light cone.

These channels commute and are applied to the dense ``2^m`` distribution (``m`` measured bits,
up to ``qubus.fidelity.DENSE_BITS``; beyond, one global depolarizing mix of their total).
Then each bit's T1 decay while waiting for its measurement and its readout flips are applied
exactly. Approximations:
an error's scrambled bits are taken as uniform, several errors as independent, and the
harmlessness of a Pauli is judged only by the cheap tracking above (errors harmless for
other reasons count fully, so the model errs low).

:func:`esp`, the product of gate, relaxation and readout fidelities, stays available; pushed
through a global depolarizing mix (:func:`qubus.fidelity.fidelity_with_ideal`) it was the
previous predictor. The noise service publishes each node's :func:`noise_budget` (the
per-error scrambles and the read-out matrices, which do not depend on ``p``) and fusion,
which has ``p`` from the sandbox, applies it (:func:`qubus.fidelity.budget_fidelity`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import cirq
import numpy as np

from qubus.compile import ATOL, CompiledCircuit, op_duration_ns, pulses
from qubus.devices import Device, QubitCal
from qubus.fidelity import budget_fidelity
from qubus.messages import NoiseBudget
from qubus.simulate import bits_from_result, counts_from_bits, measurement_keys, run

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
    n = len(op.qubits)
    d = 2**n
    duration = op_duration_ns(op, device)
    process = math.prod(
        relaxation_process_fidelity(duration, device.qubits[q.x]) for q in op.qubits
    )
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
    qubits = _readout_qubits(compiled, measurement_keys(compiled.circuit))
    columns = {q: sum(1 << k for k, c in enumerate(qubits) if c == q) for q in set(qubits)}
    scrambles, decay = _error_budget(compiled, device, columns)
    return NoiseBudget(
        scrambles=[
            ([k for k in range(len(qubits)) if mask >> k & 1], chance)
            for mask, chance in scrambles.items()
        ],
        confusion=[_confusion(device.qubits[q], decay.get(q, 0.0)) for q in qubits],
    )


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
    return budget_fidelity(noise_budget(compiled, device), ideal, shots=shots)


def _confusion(qubit: QubitCal, decay: float) -> tuple[float, float, float, float]:
    """``M[read][prepared]`` of one bit, flattened: T1 decay (1→0) while waiting, then readout
    flips."""
    one_reads_one = (1 - decay) * (1 - qubit.p10) + decay * qubit.p01
    return (1 - qubit.p01, 1 - one_reads_one, qubit.p01, one_reads_one)


_PAULI = {
    "X": np.array([[0, 1], [1, 0]], dtype=complex),
    "Z": np.array([[1, 0], [0, -1]], dtype=complex),
}


@dataclass(frozen=True)
class _Local:
    """What a qubit in a product state is an eigenstate of, after a moment.

    Attributes:
        eigen: The Paulis ("X", "Y", "Z") of which the qubit's state is an eigenstate.
        value: Its bit if it is in a computational basis state, else None.
    """

    eigen: frozenset[str]
    value: int | None


def _local(state: np.ndarray | None) -> _Local:
    if state is None:
        return _Local(frozenset(), None)
    cross = np.conj(state[0]) * state[1]
    bloch = {"X": 2 * cross.real, "Y": 2 * cross.imag, "Z": abs(state[0]) ** 2 - abs(state[1]) ** 2}
    eigen = frozenset(p for p, b in bloch.items() if abs(b) > 1 - EIGEN_TOLERANCE)
    value = int(bloch["Z"] < 0) if "Z" in eigen else None
    return _Local(eigen, value)


EIGEN_TOLERANCE = 1e-6


def _product_states(moments: list[cirq.Moment]) -> list[dict[int, _Local]]:
    """Per moment, after it: the local state of every touched qubit still in a product state.

    Each qubit starts in 0 and keeps a state vector while it is not entangled: one-qubit
    gates act on it; a CNOT or CZ whose control is in a basis state applies X or Z (or
    nothing) to the other qubit, and a CNOT whose target is an X eigenstate only kicks a
    phase back; any other two-qubit gate, a measurement of a superposition or a classical
    control drops both qubits from tracking for good (their entries are then empty).
    """
    vectors: dict[int, np.ndarray | None] = {}
    after: list[dict[int, _Local]] = []
    current: dict[int, _Local] = {}
    for moment in moments:
        for op in moment:
            qubits = [q.x for q in op.qubits]
            states = [vectors.get(q, np.array([1, 0], dtype=complex)) for q in qubits]
            inner = op.without_classical_controls()
            if op.classical_controls:
                states = [None] * len(qubits)
            elif _measures(inner):
                states = [s if _local(s).value is not None else None for s in states]
            elif isinstance(inner.gate, cirq.ResetChannel):
                states = [np.array([1, 0], dtype=complex)]
            elif len(qubits) == 1:
                states = [None if states[0] is None else cirq.unitary(inner) @ states[0]]
            else:
                states = _entangler(inner.gate == cirq.CNOT, *states)
            vectors.update(zip(qubits, states, strict=True))
            current.update((q, _local(v)) for q, v in zip(qubits, states, strict=True))
        after.append(dict(current))
    return after


def _entangler(cnot: bool, a: np.ndarray | None, b: np.ndarray | None) -> list[np.ndarray | None]:
    """Local states after CNOT(a, b) (``cnot``) or CZ(a, b), or None where they entangle."""
    first, second = _local(a).value, _local(b).value
    kick = "X" if cnot else "Z"
    if first is not None and b is not None:
        return [a, np.linalg.matrix_power(_PAULI[kick], first) @ b]
    if not cnot and second is not None and a is not None:
        return [np.linalg.matrix_power(_PAULI["Z"], second) @ a, b]
    if cnot and a is not None and b is not None and "X" in _local(b).eigen:
        minus = np.vdot(b, _PAULI["X"] @ b).real < 0
        return [np.linalg.matrix_power(_PAULI["Z"], int(minus)) @ a, b]
    return [None, None]


def _measures(op: cirq.Operation) -> bool:
    """``cirq.is_measurement`` for the operations of a compiled circuit, without its cost."""
    return isinstance(op.without_classical_controls().gate, cirq.MeasurementGate)


def _keeps_z(gate: cirq.Gate | None) -> bool:
    """True for a one-qubit gate that maps Z to ±Z (a Z- or X-type ``PhasedXZGate``)."""
    if not isinstance(gate, cirq.PhasedXZGate):
        return False
    x = gate.x_exponent % 2
    return min(x, 2 - x) < ATOL or abs(x - 1) < ATOL


def _z_safe_before(op: cirq.Operation, safe: dict[int, bool]) -> None:
    """Update, walking backwards over ``op``, which qubits a Z error cannot hurt.

    A Z error is harmless when it reaches the measurements as a product of Z's: it passes
    Z-type and X-type one-qubit gates and CZ unchanged, a CNOT copies a Z on the target to
    the control, and any other rotation turns it into an X or Y.
    """
    qubits = [q.x for q in op.qubits]
    inner = op.without_classical_controls()
    if _measures(inner):
        safe.update(dict.fromkeys(qubits, True))
    elif op.classical_controls or isinstance(inner.gate, cirq.ResetChannel):
        safe.update(dict.fromkeys(qubits, False))
    elif inner.gate == cirq.CNOT:
        control, target = qubits
        safe[target] = safe.get(target, True) and safe.get(control, True)
    elif inner.gate != cirq.CZ and not _keeps_z(inner.gate):
        safe[qubits[0]] = False


def _error_budget(
    compiled: CompiledCircuit, device: Device, columns: dict[int, int]
) -> tuple[dict[int, float], dict[int, float]]:
    """Which measured bits each harmful quantum error scrambles, and T1 decay before reads.

    Walks the circuit backwards from its measurements, keeping for every qubit the bits its
    state still reaches (its forward light cone); an error on qubits that reach no bit does
    not count, and one that does scrambles exactly those bits. Each channel is split into
    its Pauli parts: a Pauli is harmless on a qubit whose product state (tracked forwards by
    :func:`_product_states`) is one of its eigenstates, and a Z also when it reaches the
    measurements as Z's (tracked backwards by :func:`_z_safe_before`); amplitude damping of a
    qubit known to be 0 is harmless, and of one known to be 1 flips it.

    Args:
        compiled: The compiled circuit.
        device: Its device.
        columns: Physical qubit → bit mask of the bit-string positions it is read into.

    Returns:
        Bit mask → chance that the bits are scrambled, and physical qubit → chance that it
        decays 1→0 between its last gate and its final measurement (which acts on the read
        bit exactly, so it is kept apart).
    """
    moments = list(compiled.circuit)
    durations = compiled.moment_durations_ns
    states = _product_states(moments)
    first: dict[int, int] = {}
    last_gate: dict[int, int] = {}
    for index, moment in enumerate(moments):
        for op in moment:
            for q in op.qubits:
                first.setdefault(q.x, index)
                if not _measures(op):
                    last_gate[q.x] = index
    decay: dict[int, float] = {}
    for q, t_ns in compiled.gate_counts.wait_ns.items():
        t1 = device.qubits[q].t1_us
        decay[q] = 0.0 if t1 is None else 1 - math.exp(-t_ns / 1000 / t1)
    reach: dict[int, int] = {}
    z_safe: dict[int, bool] = {}
    intact: dict[int, float] = {}  # bit mask → chance that no error scrambles it
    depolarizing: dict[tuple[cirq.Gate | None, tuple[cirq.Qid, ...]], float] = {}
    relaxing: dict[tuple[int, float, _Local], float] = {}

    def scramble(mask: int, chance: float) -> None:
        if mask and chance > 0:
            intact[mask] = intact.get(mask, 1.0) * (1 - chance)

    for index in range(len(moments) - 1, -1, -1):
        for q, mask in reach.items():
            if first.get(q, index + 1) <= index <= last_gate.get(q, -1):
                key = (q, durations[index], _harmless(states[index], z_safe, q))
                if key not in relaxing:
                    relaxing[key] = _relaxation_harm(key[1], device.qubits[q], key[2])
                scramble(mask, relaxing[key])
        for op in moments[index]:
            physical = [q.x for q in op.qubits]
            mask = 0
            for q in physical:
                mask |= reach.get(q, 0)
            if _measures(op) or op.classical_controls:
                for q in physical:
                    reach[q] = reach.get(q, 0) | columns.get(q, 0) | mask
            elif mask:
                key = (op.gate, op.qubits)
                if key not in depolarizing:
                    depolarizing[key] = depolarizing_probability(op, device)
                p = depolarizing[key]
                # Of the 4^n − 1 non-identity Paulis, those made of I and harmless parts.
                sizes = [len(_harmless(states[index], z_safe, q).eigen) for q in physical]
                spared = math.prod(1 + n for n in sizes) - 1
                scramble(mask, p * (1 - spared / (4 ** len(physical) - 1)))
                reach.update(dict.fromkeys(physical, mask))
            _z_safe_before(op, z_safe)
    return {mask: 1 - kept for mask, kept in intact.items()}, decay


def _harmless(states: dict[int, _Local], z_safe: dict[int, bool], qubit: int) -> _Local:
    """The Paulis that cannot change the output on a qubit, with its basis value if known.

    Those of which its product state is an eigenstate, and Z if it reaches the measurements
    as Z's; two harmless Paulis make the third harmless too.
    """
    return _with_z(states.get(qubit, _ENTANGLED), z_safe.get(qubit, True))


_ENTANGLED = _Local(frozenset(), None)


@functools.cache
def _with_z(local: _Local, z_safe: bool) -> _Local:
    eigen = local.eigen | {"Z"} if z_safe else local.eigen
    return _Local(frozenset("XYZ") if len(eigen) >= 2 else frozenset(eigen), local.value)


def _relaxation_harm(t_ns: float, qubit: QubitCal, local: _Local) -> float:
    """Chance that relaxing for ``t_ns`` hurts a qubit in the tracked state.

    A qubit known to be 0 or 1 is damped exactly (not at all, or ``1 − a``); otherwise the
    channel is Pauli-twirled: X and Y each ``(1 − a)/4``, Z ``(1 + a − 2c)/4`` with
    ``a = e^(−t/T1)``, ``c = e^(−t/T2)``, each counted unless harmless.
    """
    if t_ns <= 0 or qubit.t1_us is None or qubit.t2_us is None:
        return 0.0
    a = math.exp(-t_ns / 1000 / qubit.t1_us)
    c = math.exp(-t_ns / 1000 / qubit.t2_us)
    if local.value is not None:
        return local.value * (1 - a)
    parts = {"X": (1 - a) / 4, "Y": (1 - a) / 4, "Z": (1 + a - 2 * c) / 4}
    return sum(v for pauli, v in parts.items() if pauli not in local.eigen)


def emulated_runtime_s(compiled: CompiledCircuit, device: Device, shots: int) -> float:
    """Modelled wall time of the job on the real QPU.

    ``JOB_OVERHEAD_S + shots · (duration + SHOT_OVERHEAD_S)`` for the device's kind.
    """
    per_shot = compiled.duration_ns * 1e-9 + SHOT_OVERHEAD_S[device.kind]
    return JOB_OVERHEAD_S[device.kind] + shots * per_shot


def _noisy_moments(compiled: CompiledCircuit, device: Device) -> Iterator[cirq.Moment]:
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
    circuit = compiled.circuit.unfreeze()
    if not noiseless:
        circuit = cirq.Circuit(_noisy_moments(compiled, device))
    compact = {cirq.LineQubit(p): cirq.LineQubit(i) for i, p in enumerate(compiled.physical_qubits)}
    circuit = circuit.transform_qubits(compact)
    keys = measurement_keys(circuit)
    if not keys:
        return {"": shots}
    rng = np.random.default_rng(seed)
    simulator_seed = int(rng.integers(2**31))
    exact = not noiseless and len(compiled.physical_qubits) <= DENSITY_MATRIX_QUBITS
    if exact and _terminal_only(circuit):
        bits = _sample_density_matrix(circuit, keys, shots, rng)
    else:
        bits = bits_from_result(run(circuit, shots, seed=simulator_seed), keys)
    if not noiseless:
        bits = _readout_flips(bits, _readout_qubits(compiled, keys), device, rng)
    return counts_from_bits(bits)


def _terminal_only(circuit: cirq.Circuit) -> bool:
    """Measurements only at the end, each key once, no classical control."""
    keys = [op.gate.key for op in circuit.all_operations() if cirq.is_measurement(op)]
    controlled = any(op.classical_controls for op in circuit.all_operations())
    return (
        not controlled and len(keys) == len(set(keys)) and circuit.are_all_measurements_terminal()
    )


def _sample_density_matrix(
    circuit: cirq.Circuit, keys: list[tuple[str, int]], shots: int, rng: np.random.Generator
) -> np.ndarray:
    """Shots sampled from the exact noisy state, as a ``(shots, Σ widths)`` bit array."""
    qubits = sorted(circuit.all_qubits())
    body = cirq.Circuit(
        _ClosedFormDepolarizing(op.gate.p, len(op.qubits)).on(*op.qubits)
        if isinstance(op.gate, cirq.DepolarizingChannel)
        else op
        for op in circuit.all_operations()
        if not cirq.is_measurement(op)
    )
    body.append(cirq.I.on_each(*(set(qubits) - body.all_qubits())))
    rho = cirq.DensityMatrixSimulator(dtype=np.complex128).simulate(body, qubit_order=qubits)
    probs = np.clip(np.real(np.diag(rho.final_density_matrix)), 0, None)
    drawn = rng.choice(probs.size, size=shots, p=probs / probs.sum())
    # cirq's order: the first qubit is the most significant bit.
    states = (drawn[:, None] >> np.arange(len(qubits) - 1, -1, -1)) & 1
    measured = {op.gate.key: op for op in circuit.all_operations() if cirq.is_measurement(op)}
    columns = []
    for key, _width in keys:
        op = measured[key]
        flips = np.array(op.gate.full_invert_mask(), dtype=np.int64)
        columns.append(states[:, [qubits.index(q) for q in op.qubits]] ^ flips)
    return np.concatenate(columns, axis=1).astype(np.uint8)


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
    return [q for key, width in keys for q in (*last[key], *[last[key][-1]] * width)[:width]]


def _readout_flips(
    bits: np.ndarray, qubits: list[int], device: Device, rng: np.random.Generator
) -> np.ndarray:
    p01 = np.array([device.qubits[q].p01 for q in qubits])
    p10 = np.array([device.qubits[q].p10 for q in qubits])
    flip = rng.random(bits.shape) < np.where(bits == 1, p10, p01)
    return bits ^ flip.astype(np.uint8)
