"""Noisy emulation of compiled circuits, and the gate noise that it and prediction share.

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
once as a density matrix (in numpy, ``qubus.devices.densitymatrix``: one superoperator
product per gate, relaxation and depolarizing in closed form) and the shots sampled from it;
:func:`emulated_distribution` returns that exact distribution, for measuring the emulator
without shot noise. Other circuits run qsim noisy
trajectories (``qubus.devices.trajectories``: one per shot on narrow registers, one per few
shots on wide ones, trajectories that draw the same noise operators simulated together where
that pays). :func:`emulated_runtime_s` models the job's wall time on the QPU.

The fidelity prediction (``qubus.devices.prediction``) models these channels: it sizes each
gate's depolarizing as :func:`completing_depolarizing` does and reads each bit from the qubit
that :func:`bit_qubits` gives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import cirq
import numpy as np

from qubus.circuits.packing import measures
from qubus.circuits.simulate import (
    bits_from_result,
    counts_from_bits,
    exact_form,
    measurement_keys,
    run,
    terminal_only,
)
from qubus.devices.compile import CompiledCircuit, op_duration_ns, pulses
from qubus.devices.densitymatrix import (
    DensityMatrix,
    damping,
    depolarizing,
    fuse,
    on_each,
    superoperator,
)
from qubus.devices.profiles import Device, QubitCal
from qubus.devices.trajectories import (
    Progress,
    bit_columns,
    register_width,
    runs_as_tree,
    sample_trajectories,
    trajectory_count,
    trajectory_distributions,
)
from qubus.lru import Lru

JOB_OVERHEAD_S = {"superconducting": 1.0, "trapped-ion": 2.0}
"""Modelled per-job cost of a QPU (loading, compilation on the device, result transfer).
Assumed round numbers, not measurements."""

SHOT_OVERHEAD_S = {"superconducting": 250e-6, "trapped-ion": 1e-3}
"""Modelled per-shot reset cost: IBM's default repetition delay (``default_rep_delay`` = 250 µs
in the conf files); for ion traps an assumed 1 ms of cooling and state preparation."""

DENSITY_MATRIX_QUBITS = 8
"""Largest register emulated by one exact density-matrix simulation instead of a trajectory
per shot (4^8 entries; beyond that trajectories are cheaper)."""


def gate_error(op: cirq.Operation, device: Device) -> float:
    """Reported error of one compiled operation (0 for virtual gates and measurements)."""
    inner = op.without_classical_controls()
    if measures(inner):
        return 0.0
    if len(inner.qubits) == 2:
        a, b = (q.x for q in inner.qubits)
        return device.edge(a, b).error
    (qubit,) = inner.qubits
    return min(1.0, pulses(op, device) * device.qubits[qubit.x].one_qubit_error)


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
    inner = op.without_classical_controls()
    # What the error and the duration depend on: kept per process, as every point of a sweep
    # and every task of a circuit repeats the same gates on the same qubits.
    key = (
        device.id,
        device.revision,
        tuple(q.x for q in inner.qubits),
        measures(inner) or isinstance(inner.gate, cirq.ResetChannel),
        pulses(op, device),
    )
    p = _depolarizing.get(key)
    if p is None:
        error = gate_error(op, device)
        p = 0.0
        if error > 0:
            qubits = [device.qubits[q.x] for q in op.qubits]
            p = completing_depolarizing(error, op_duration_ns(op, device), qubits)
        if len(_depolarizing) >= DEPOLARIZING_CACHE_SIZE:
            _depolarizing.clear()
        _depolarizing[key] = p
    return p


DEPOLARIZING_CACHE_SIZE = 4096
"""Gates whose :func:`depolarizing_probability` a process keeps."""

_depolarizing: dict[tuple, float] = {}


def completing_depolarizing(error: float, duration: float, qubits: list[QubitCal]) -> float:
    """:func:`depolarizing_probability` of a gate given by its numbers rather than its operation.

    Args:
        error: The gate's reported error.
        duration: Its duration in ns.
        qubits: The calibrations of the qubits it acts on.
    """
    d = 2 ** len(qubits)
    process = math.prod(relaxation_process_fidelity(duration, q) for q in qubits)
    relax_fidelity = (d * process + 1) / (d + 1)
    if error <= 1 - relax_fidelity:
        return 0.0
    error = min(error, d / (d + 1))
    lam = min(d * (error - 1 + relax_fidelity) / (d * relax_fidelity - 1), d * d / (d * d - 1))
    return lam * (d * d - 1) / (d * d)


def emulated_runtime_s(compiled: CompiledCircuit, device: Device, shots: int) -> float:
    """Modelled wall time of the job on the real QPU.

    ``JOB_OVERHEAD_S + shots · (duration + SHOT_OVERHEAD_S)`` for the device's kind.
    """
    per_shot = compiled.duration_ns * 1e-9 + SHOT_OVERHEAD_S[device.kind]
    return JOB_OVERHEAD_S[device.kind] + shots * per_shot


def noisy_moments(compiled: CompiledCircuit, device: Device) -> Iterator[cirq.Moment]:
    """The compiled moments with gate noise after and pending relaxation before each
    (:func:`noisy_layers`, each layer as one moment)."""
    for layer, original in noisy_layers(compiled, device):
        yield original if original is not None else cirq.Moment(layer)


def noisy_layers(
    compiled: CompiledCircuit, device: Device
) -> Iterator[tuple[list[cirq.Operation], cirq.Moment | None]]:
    """The compiled circuit's operations with its noise, as layers of operations on distinct
    qubits: each compiled moment (given with it as the second item) preceded by its qubits'
    pending relaxation and followed by its gates' depolarizing channels
    (:func:`moment_noise`)."""
    for moment, relaxing, probabilities in moment_noise(compiled, device):
        relax = [(q, _relaxation(t_ns, device.qubits[q.x])) for q, t_ns in relaxing.items()]
        for layer in range(max((len(c) for _, c in relax), default=0)):
            yield [c[layer].on(q) for q, c in relax if layer < len(c)], None
        yield list(moment), moment
        channels = [
            cirq.depolarize(p, n_qubits=len(op.qubits)).on(*op.qubits)
            for op, p in zip(moment, probabilities, strict=True)
            if p > 0
        ]
        if channels:
            yield channels, None


def moment_noise(
    compiled: CompiledCircuit, device: Device
) -> Iterator[tuple[cirq.Moment, dict[cirq.Qid, float], list[float]]]:
    """Each compiled moment with its noise: the time (ns) each of its qubits has relaxed
    since its previous operation, applied right before the moment, and each operation's
    depolarizing probability (:func:`depolarizing_probability`, 0 for none), applied after.

    A qubit relaxes for every moment from its first operation to its last; the relaxation of
    consecutive idle moments is one channel right before the qubit's next operation, which is
    the same channel and keeps the trajectory count of channels low.
    """
    last: dict[cirq.Qid, int] = {}
    for index, moment in enumerate(compiled.circuit):
        for q in moment.qubits:
            last[q] = index
    pending: dict[cirq.Qid, float] = {}
    for index, (moment, duration) in enumerate(
        zip(compiled.circuit, compiled.moment_durations_ns, strict=True)
    ):
        relaxing = {q: pending.pop(q) for q in moment.qubits if pending.get(q, 0) > 0}
        yield moment, relaxing, [depolarizing_probability(op, device) for op in moment]
        for q, final in last.items():
            if q in pending or (q in moment.qubits and index < final):
                pending[q] = pending.get(q, 0.0) + duration


def _relaxation(t_ns: float, qubit: QubitCal) -> list[cirq.Gate]:
    """Amplitude damping (T1) then, if T2 < 2·T1, pure dephasing, for ``t_ns``."""
    amplitude, phase = relaxation_rates(t_ns, qubit)
    channels: list[cirq.Gate] = [cirq.amplitude_damp(amplitude)]
    if phase is not None:
        channels.append(cirq.phase_damp(phase))
    return channels


def relaxation_rates(t_ns: float, qubit: QubitCal) -> tuple[float, float | None]:
    """The amplitude damping of relaxing for ``t_ns``, and its pure dephasing (None when
    T2 ≥ 2·T1)."""
    t_us = t_ns / 1000
    amplitude = 1 - math.exp(-t_us / qubit.t1_us)
    dephasing_rate = 1 / qubit.t2_us - 1 / (2 * qubit.t1_us)
    if dephasing_rate <= 0:
        return amplitude, None
    return amplitude, 1 - math.exp(-2 * t_us * dephasing_rate)


def emulate(
    compiled: CompiledCircuit,
    device: Device,
    shots: int,
    *,
    seed: int,
    noiseless: bool = False,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Run the compiled circuit with the device's noise and return counts.

    Only the physical qubits the circuit touches are simulated (compacted to a small
    register). Up to ``DENSITY_MATRIX_QUBITS`` qubits with terminal measurements, the noisy
    density matrix is computed once and the shots are sampled from its diagonal: the
    same distribution as trajectories, without a simulation per shot. Otherwise qsim runs
    noisy trajectories (:func:`qubus.circuits.simulate.run` picks the simulator for circuits with
    classically controlled operations).

    Args:
        compiled: The output of ``compile_for_device`` for this device.
        device: The device profile (its noise).
        shots: Number of repetitions.
        seed: Seeds the simulator and the readout flips.
        noiseless: Skip every noise channel and readout flip (checks compilation).
        progress: Called with (shots done, shots) as trajectories finish.

    Returns:
        Counts keyed by bit strings in the ``qubus.circuits.simulate`` convention.
    """
    if not noiseless and uses_density_matrix(compiled):
        probs, qubits = _final_probabilities(compiled, device)
        return DensityReadout.of(compiled, device, qubits).counts(probs, shots, seed=seed)
    circuit, keys = _register_circuit(compiled, device, noiseless=noiseless)
    if not keys:
        return {"": shots}
    rng = np.random.default_rng(seed)
    simulator_seed = int(rng.integers(2**31))
    terminal = exact_form(circuit)
    if terminal is not None:
        count = trajectory_count(register_width(terminal), shots, noisy=not noiseless)
        bits = sample_trajectories(
            terminal, keys, shots, trajectories=count, rng=rng, progress=progress
        )
    else:
        bits = bits_from_result(run(circuit, shots, seed=simulator_seed), keys)
    if not noiseless:
        bits = readout_flips(bits, _readout_qubits(compiled, keys), device, rng)
    return counts_from_bits(bits)


@dataclass(frozen=True)
class DensityReadout:
    """How :func:`emulate` reads shots off the diagonal of a register it simulates as one
    density matrix (``uses_density_matrix``).

    Attributes:
        bits: Each basis state's measured bits, ``(2^qubits, Σ widths)``, unflipped.
        readout_qubits: The physical qubit behind each bit column (its readout errors).
        device: The device (its readout errors).
    """

    bits: np.ndarray
    readout_qubits: list[int]
    device: Device

    @staticmethod
    def of(compiled: CompiledCircuit, device: Device, qubits: list[cirq.Qid]) -> DensityReadout:
        """The readout of ``compiled`` whose register is ``qubits`` (as
        ``_final_probabilities`` gives them). Kept (``READOUTS`` of them) for a compilation of
        a known shape (``CompiledCircuit.shape``, one per routing and calibration) and
        register: its measurements are the shape's."""
        key = None if compiled.shape is None else (compiled.shape, tuple(qubits))
        if key is not None and (kept := _readouts.get(key)) is not None:
            return kept
        keys = measurement_keys(compiled.circuit)
        states = np.arange(2 ** len(qubits))
        bits = bit_columns(states, _measurements(compiled.circuit), keys, qubits)
        bits.setflags(write=False)
        readout = DensityReadout(bits, _readout_qubits(compiled, keys), device)
        if key is not None:
            _readouts.put(key, readout)
        return readout

    def counts(self, probs: np.ndarray, shots: int, *, seed: int) -> dict[str, int]:
        """``shots`` shots drawn from the diagonal ``probs``, each bit through its readout
        flips."""
        if self.bits.shape[1] == 0:
            return {"": shots}
        rng = np.random.default_rng(seed)
        rng.integers(2**31)  # emulate's simulator seed, drawn first on every path
        drawn = rng.choice(probs.size, size=shots, p=probs / probs.sum())
        return counts_from_bits(
            readout_flips(self.bits[drawn], self.readout_qubits, self.device, rng)
        )


READOUTS = 1024
"""Readouts kept per process (``DensityReadout.of``)."""

_readouts = Lru(READOUTS)


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
    circuit = compiled.circuit
    keys = measurement_keys(circuit)
    if not keys:
        return {"": 1.0}
    if not uses_density_matrix(compiled):
        return None
    probs, qubits = _final_probabilities(compiled, device)
    states = np.arange(probs.size)
    columns = bit_columns(states, _measurements(circuit), keys, qubits).astype(np.int64)
    width = columns.shape[1]
    index = columns @ (1 << np.arange(width - 1, -1, -1))
    dense = np.bincount(index, weights=probs / probs.sum(), minlength=2**width)
    dense = read_out(dense, readout_matrices(_readout_qubits(compiled, keys), device))
    return {format(i, f"0{width}b"): float(v) for i, v in enumerate(dense) if v > 0}


def emulated_as_tree(compiled: CompiledCircuit, device: Device) -> bool:
    """Whether :func:`emulate` runs this circuit's noisy trajectories as a tree (the cost
    model prices independent ones: ``qubus.devices.cost``)."""
    if uses_density_matrix(compiled):
        return False
    circuit, keys = _register_circuit(compiled, device, noiseless=False)
    terminal = exact_form(circuit) if keys else None  # nothing measured: no trajectories
    return terminal is not None and runs_as_tree(terminal)


def emulated_trajectory_distributions(
    compiled: CompiledCircuit, device: Device, trajectories: int, *, seed: int
) -> Iterator[np.ndarray]:
    """Each noisy trajectory's exact output distribution, readout errors included, where
    :func:`emulate` runs trajectories on a terminal-measurement form of the circuit.

    Their mean is the distribution :func:`emulate` samples its shots from, with the spread of
    a mean over trajectories instead of shot noise: for comparing the emulator with another
    (``benchmarks/emulate_vs_aer.py``) where shots are too costly.

    Yields:
        Per trajectory, the probabilities of the bit strings (first bit most significant).

    Raises:
        ValueError: The circuit is simulated as one density matrix (use
            :func:`emulated_distribution`) or has no terminal-measurement form.
    """
    circuit, keys = _register_circuit(compiled, device, noiseless=False)
    terminal = exact_form(circuit)
    if uses_density_matrix(compiled) or terminal is None:
        raise ValueError("the emulator runs no trajectories of a terminal form here")
    flips = readout_matrices(_readout_qubits(compiled, keys), device)
    rng = np.random.default_rng(seed)
    for dense in trajectory_distributions(terminal, keys, trajectories, rng=rng):
        yield read_out(dense, flips)


def readout_matrices(qubits: list[int], device: Device) -> list[np.ndarray]:
    """Each physical qubit's readout flips as a 2×2 matrix, [read][true]."""
    return [
        np.array([[1 - c.p01, c.p10], [c.p01, 1 - c.p10]])
        for c in (device.qubits[q] for q in qubits)
    ]


def read_out(dense: np.ndarray, flips: list[np.ndarray]) -> np.ndarray:
    """A distribution of measured bits (the first bit most significant) through every bit's
    readout flips, ``flips[k]`` the [read][true] matrix of bit k."""
    dense = dense.reshape((2,) * len(flips))
    for k, matrix in enumerate(flips):
        dense = np.moveaxis(np.tensordot(matrix, dense, axes=([1], [k])), 0, k)
    return dense.ravel()


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


def uses_density_matrix(compiled: CompiledCircuit) -> bool:
    """Whether the noisy register is simulated once as a density matrix (the noise channels
    never follow a qubit's last operation, so the compiled circuit decides)."""
    return len(compiled.physical_qubits) <= DENSITY_MATRIX_QUBITS and terminal_only(
        compiled.circuit, resets=True
    )


def _final_probabilities(
    compiled: CompiledCircuit, device: Device
) -> tuple[np.ndarray, list[cirq.Qid]]:
    """Diagonal of the exact noisy density matrix before the measurements, and its qubit order:
    the qubits the circuit touches, in the order of ``compiled.physical_qubits`` (the first is
    the most significant bit of an index).

    In numpy (``qubus.devices.densitymatrix``); the channels are cirq's and so is the
    diagonal, to rounding (``tests/unit/test_densitymatrix.py``). One product per gate made
    this 4–10× faster than ``cirq.DensityMatrixSimulator`` with the channels in closed form,
    from 4 to 8 qubits (which ran 7 and 8 before).
    """
    touched = compiled.circuit.all_qubits()
    qubits = [q for p in compiled.physical_qubits if (q := cirq.LineQubit(p)) in touched]
    return _numpy_probabilities(compiled, device, qubits), qubits


def _numpy_probabilities(
    compiled: CompiledCircuit, device: Device, qubits: list[cirq.Qid]
) -> np.ndarray:
    """:func:`_final_probabilities` in numpy: the products of :func:`density_steps`, one per
    multi-qubit gate (``qubus.devices.densitymatrix``)."""
    index = {q: i for i, q in enumerate(qubits)}
    rho = DensityMatrix(len(qubits))
    for step in density_steps(compiled, device, superoperator):
        rho.evolve(step.superoperator(fuse), [index[q] for q in step.qubits])
    return rho.probabilities()


Term = TypeVar("Term")
"""A one-qubit operation's superoperator, or what stands for it (a sweep's one-qubit runs,
``qubus.devices.sweepemulation``)."""


@dataclass(frozen=True)
class DensityStep(Generic[Term]):
    """One superoperator product of the noisy density-matrix evolution.

    Attributes:
        qubits: The qubits it acts on.
        before: Per qubit, what was held back on it, in order (superoperators, or terms
            standing for them), to apply first; None when nothing was.
        matrix: The superoperator after those (a gate fused with the relaxation and the
            depolarizing around it); None when the step only applies what was held.
    """

    qubits: tuple[cirq.Qid, ...]
    before: tuple[tuple[np.ndarray | Term, ...], ...] | None
    matrix: np.ndarray | None

    def superoperator(self, fused: Callable[..., np.ndarray]) -> np.ndarray:
        """The step's superoperator (or a stack of them), ``fused(*terms)`` the product of
        one qubit's held terms in order."""
        if self.before is None:
            return self.matrix  # type: ignore[return-value]
        before = on_each([fused(*terms) if terms else _IDENTITY for terms in self.before])
        return before if self.matrix is None else self.matrix @ before


def density_steps(
    compiled: CompiledCircuit, device: Device, one_qubit: Callable[[cirq.Operation], Term]
) -> list[DensityStep[Term]]:
    """The noisy density-matrix evolution of ``compiled`` as products, one per multi-qubit
    gate, then one per qubit for what is left.

    A gate's superoperator is fused from its qubits' relaxation before it, the gate and its
    depolarizing after it. What happens to one qubit alone (its one-qubit gates with their
    noise, its relaxation) commutes with everything on the other qubits, so it is held back
    and folded into the qubit's next multi-qubit gate, or applied on its own at the end
    (measurements are terminal). Held superoperators that follow each other are multiplied
    at once; a one-qubit operation is held as ``one_qubit(op)``.
    """
    held: dict[cirq.Qid, list[np.ndarray | Term]] = {}

    def hold(q: cirq.Qid, term: np.ndarray | Term) -> None:
        terms = held.setdefault(q, [])
        if isinstance(term, np.ndarray) and terms and isinstance(terms[-1], np.ndarray):
            terms[-1] = term @ terms[-1]
        else:
            terms.append(term)

    steps: list[DensityStep[Term]] = []
    for moment, relaxing, probabilities in moment_noise(compiled, device):
        for q, t_ns in relaxing.items():
            amplitude, phase = relaxation_rates(t_ns, device.qubits[q.x])
            hold(q, damping(amplitude, phase or 0.0))
        for op, p in zip(moment, probabilities, strict=True):
            if measures(op):
                continue
            after = depolarizing(p, len(op.qubits)) if p > 0 else None
            if len(op.qubits) == 1:
                (q,) = op.qubits
                hold(q, one_qubit(op))
                if after is not None:
                    hold(q, after)
                continue
            before = None
            if any(q in held for q in op.qubits):
                before = tuple(tuple(held.pop(q, [])) for q in op.qubits)
            steps.append(DensityStep(tuple(op.qubits), before, fuse(superoperator(op), after)))
    steps += [DensityStep((q,), (tuple(terms),), None) for q, terms in held.items()]
    return steps


_IDENTITY = np.eye(4)
"""The superoperator of doing nothing to one qubit."""


def _measurements(circuit: cirq.AbstractCircuit) -> list[cirq.Operation]:
    return [op for op in circuit.all_operations() if measures(op)]


def _readout_qubits(compiled: CompiledCircuit, keys: list[tuple[str, int]]) -> list[int]:
    """The physical qubit behind every bit column (the last measurement of each key)."""
    last: dict[str, tuple[int, ...]] = {}
    for op in compiled.circuit.all_operations():
        inner = op.without_classical_controls()
        if isinstance(inner.gate, cirq.MeasurementGate):
            last[inner.gate.key] = tuple(q.x for q in inner.qubits)
    return bit_qubits(last, keys)


def bit_qubits(last: dict[str, tuple[int, ...]], keys: list[tuple[str, int]]) -> list[int]:
    """The physical qubit behind every bit column, from each key's last measured qubits.

    Args:
        last: Measurement key → the physical qubits of its last measurement.
        keys: The measurement keys with their widths, in bit-string order (where a key's
            last measurement is narrower than its width, its last qubit fills the rest).
    """
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
