"""Noise: fidelity prediction and noisy emulation of compiled circuits.

Both read the same :class:`~qubus.compile.CompiledCircuit` and the same device numbers:

* A native gate with reported error ``e`` (average gate infidelity, as RB reports it) is a
  depolarizing channel of probability ``e·(d+1)/d`` (``d = 2**n_qubits``), which has exactly that
  average infidelity. A one-qubit gate of ``k`` pulses has error ``k·e_1q``.
* Every qubit relaxes (amplitude damping from T1, pure dephasing from T1/T2) after each moment
  from its first operation to its last, for the moment's duration, idle or not. Gate errors
  already include some relaxation during the gate, so gates are slightly over-penalised.
* Readout flips measured bits classically: 0→1 with ``p01``, 1→0 with ``p10``. Bits that
  steer classical control are used unflipped (readout errors do not propagate into feedback).

The prediction starts from the ESP (product of gate, relaxation and readout fidelities) and,
given the ideal distribution, pushes it through a global depolarizing mix (see
:func:`qubus.fidelity.fidelity_with_ideal`), which is far closer to the Hellinger
fidelity of broad outputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import cirq
import numpy as np

from qubus.compile import CompiledCircuit, pulses
from qubus.devices import Device, QubitCal
from qubus.fidelity import fidelity_with_ideal
from qubus.simulate import bits_from_result, counts_from_bits, measurement_keys, run

JOB_OVERHEAD_S = {"superconducting": 1.0, "trapped-ion": 2.0}
"""Modelled per-job cost of a QPU (loading, compilation on the device, result transfer).
Assumed round numbers, not measurements."""

SHOT_OVERHEAD_S = {"superconducting": 250e-6, "trapped-ion": 1e-3}
"""Modelled per-shot reset cost: IBM's default repetition delay (``default_rep_delay`` = 250 µs
in the conf files); for ion traps an assumed 1 ms of cooling and state preparation."""


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


def predict_fidelity(
    compiled: CompiledCircuit, device: Device, ideal: Mapping[str, float] | None = None
) -> float:
    """Predicted Hellinger fidelity of running the compiled circuit on the device.

    Args:
        compiled: The output of ``compile_for_device`` for this device.
        device: The device profile.
        ideal: The ideal distribution (bit strings of equal length), if known.

    Returns:
        The ESP, or, with ``ideal``, the ESP pushed through
        :func:`qubus.fidelity.fidelity_with_ideal`.
    """
    fidelity = esp(compiled, device)
    if not ideal:
        return fidelity
    return fidelity_with_ideal(fidelity, ideal, len(next(iter(ideal))))


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
            error = gate_error(op, device)
            if error > 0:
                d = 2 ** len(op.qubits)
                p = min(1.0, error * (d + 1) / d)
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
    register). qsim runs noisy trajectories (:func:`qubus.simulate.run` picks the simulator
    for circuits with classically controlled operations).

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
    bits = bits_from_result(run(circuit, shots, seed=int(rng.integers(2**31))), keys)
    if not noiseless:
        bits = _readout_flips(bits, _readout_qubits(compiled, keys), device, rng)
    return counts_from_bits(bits)


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
