"""Noisy trajectories on qsim, each one's final state sampled for one or several shots.

The emulator (``qubus.devices.emulation``) sends here every register it does not simulate as
one density matrix: circuits with terminal measurements only, including dynamic circuits
brought to that form (``qubus.circuits.simulate.exact_form``: resets as SWAPs with fresh
ancillas, measurements deferred, which holds with noise channels on the system qubits too).

What makes it fast, and what each step changes:

* **Light cone** (exact): operations that cannot reach a measured qubit, walking the circuit
  backwards, are dropped, and so are the qubits only they touch. The measured marginal is
  unchanged (a channel outside the past light cone of the measured qubits does not act on
  their reduced state).
* **Phase damping as a mixture** (exact): ``cirq.phase_damp(γ)`` is the same channel as
  ``cirq.phase_flip((1 − √(1 − γ))/2)``, which qsim samples from fixed probabilities instead of
  computing a state norm for each Kraus operator. On the dev circuits this halves the time of
  a trajectory.
* **Gate fusion** (exact): qsim fuses the gates between channels into gates of up to
  ``FUSED_GATE_QUBITS`` qubits.
* **One translation**: the circuit is translated to qsim once and every trajectory runs from
  that translation with its own seed (``qsimcirq.QSimSimulator.simulate`` translates again on
  each call: 1.5 s for a 20-qubit, 2,000-operation circuit).
* **Sampling in two steps** (exact to rounding): a trajectory's shots are drawn from its
  final probabilities by block sums, then within one block (:func:`sample_states`), not by
  cumulative sums over all 2^w states for every trajectory.
* **Several shots per trajectory** (an approximation of the shot statistics, not of the
  distribution): ``T`` trajectories serve ``N`` shots, ``N/T`` sampled from each final state.
  Every shot is still distributed exactly as the noisy circuit's output (the mean over
  trajectories of their distributions), so the counts are unbiased; but shots of one trajectory
  share its errors. The frequency of an outcome of probability ``p`` has variance
  ``p(1 − p)/N + Var_t(p_t)·(1/T − 1/N)`` instead of ``p(1 − p)/N``, where ``p_t`` is its
  probability in one trajectory: at most ``N/T`` times the shot noise (when trajectories hit
  or miss the outcome entirely), and equal to it when the noise hardly varies the final
  state. :func:`trajectory_count` uses one trajectory per shot (exact statistics) for narrow
  registers, where a trajectory is cheap, and ``SHOTS_PER_TRAJECTORY`` shots per trajectory
  above. Without noise one state serves every shot, which is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import cirq
import numpy as np
import qsimcirq
from qsimcirq import qsim_circuit

SHOTS_PER_TRAJECTORY = 8
"""Shots sampled from each trajectory's final state on registers wider than
``EXACT_TRAJECTORY_QUBITS`` (module docstring: the variance this adds)."""

EXACT_TRAJECTORY_QUBITS = 12
"""Registers up to this width run one trajectory per shot (a trajectory of 12 qubits costs
well under a millisecond)."""

FUSED_GATE_QUBITS = 3
"""qsim's ``max_fused_gate_size``: gates between noise channels are fused into gates of up to
this many qubits (qsim's default, 2, took about twice as long on ``qasmbench__qram_n20``)."""

Progress = Callable[[int, int], None]
"""Called with (shots done, shots) as trajectories finish."""


def trajectory_count(width: int, shots: int, *, noisy: bool) -> int:
    """How many trajectories :func:`sample_trajectories` runs for ``shots`` shots of a register
    of ``width`` qubits: 1 without noise, one per shot up to ``EXACT_TRAJECTORY_QUBITS``
    qubits, else one per ``SHOTS_PER_TRAJECTORY`` shots."""
    if not noisy:
        return 1
    if width <= EXACT_TRAJECTORY_QUBITS:
        return shots
    return math.ceil(shots / SHOTS_PER_TRAJECTORY)


def light_cone(circuit: cirq.AbstractCircuit) -> cirq.Circuit:
    """The circuit without the operations that cannot affect a measurement (exact for the
    measured bits), each remaining moment kept in place."""
    reach: set[cirq.Qid] = set()
    kept: list[cirq.Moment] = []
    for moment in reversed(list(circuit)):
        ops = [op for op in moment if cirq.is_measurement(op) or reach.intersection(op.qubits)]
        for op in ops:
            reach.update(op.qubits)
        kept.append(cirq.Moment(ops))
    return cirq.Circuit(reversed(kept))


def register_width(circuit: cirq.AbstractCircuit) -> int:
    """Qubits :func:`sample_trajectories` simulates for a terminal-measurement circuit."""
    return len(light_cone(circuit).all_qubits())


def sample_trajectories(
    circuit: cirq.AbstractCircuit,
    keys: Sequence[tuple[str, int]],
    shots: int,
    *,
    trajectories: int,
    rng: np.random.Generator,
    progress: Progress | None = None,
) -> np.ndarray:
    """Measured bits of ``shots`` shots of a terminal-measurement circuit with noise channels.

    Args:
        circuit: Unitary operations, noise channels, and measurements at the end, each key
            once.
        keys: The measurement keys with their widths, in bit-string order.
        shots: Number of shots.
        trajectories: Trajectories to run (:func:`trajectory_count`); the shots are shared
            among them as evenly as possible.
        rng: Draws each trajectory's seed and its shots.
        progress: Called after each trajectory.

    Returns:
        ``(shots, Σ widths)`` uint8 bits, columns in ``keys`` order.

    Raises:
        ValueError: qsim cannot translate an operation of the circuit.
    """
    final, measured, kept = _final_marginal(circuit)
    trajectories = max(1, min(trajectories, shots))
    per_trajectory = np.full(trajectories, shots // trajectories)
    per_trajectory[: shots % trajectories] += 1
    seeds = rng.integers(2**31 - 1, size=trajectories)
    drawn = []
    done = 0
    for seed, count in zip(seeds, per_trajectory, strict=True):
        drawn.append(sample_states(final(int(seed)), int(count), rng))
        done += int(count)
        if progress is not None:
            progress(done, shots)
    return bit_columns(np.concatenate(drawn), measured, keys, kept)


def trajectory_distributions(
    circuit: cirq.AbstractCircuit,
    keys: Sequence[tuple[str, int]],
    trajectories: int,
    *,
    rng: np.random.Generator,
) -> Iterator[np.ndarray]:
    """Each trajectory's exact distribution of the measured bits, for measuring the emulator
    without shot noise (their mean is the noisy circuit's output distribution).

    Args:
        circuit: As for :func:`sample_trajectories`.
        keys: The measurement keys with their widths, in bit-string order.
        trajectories: Trajectories to run.
        rng: Draws each trajectory's seed.

    Yields:
        Per trajectory, the probabilities (float64) of the bit strings of ``keys``, indexed
        with the first bit most significant.
    """
    final, measured, kept = _final_marginal(circuit)
    columns = bit_columns(np.arange(2 ** len(kept)), measured, keys, kept).astype(np.int64)
    width = columns.shape[1]
    index = columns @ (1 << np.arange(width - 1, -1, -1))
    for seed in rng.integers(2**31 - 1, size=trajectories):
        yield np.bincount(index, weights=final(int(seed)), minlength=2**width)


def _final_marginal(
    circuit: cirq.AbstractCircuit,
) -> tuple[Callable[[int], np.ndarray], list[cirq.Operation], list[cirq.Qid]]:
    """qsim's trajectories of a terminal-measurement circuit, translated once.

    Returns:
        A function from a trajectory's seed to its final probabilities (float32) of the
        measured qubits' basis states; the terminal measurements; the measured qubits in the
        order of those states (the first the most significant bit).
    """
    cone = light_cone(circuit)
    measured = [op for op in cone.all_operations() if cirq.is_measurement(op)]
    body = cirq.Circuit(
        cirq.Moment(_as_mixture(op) for op in moment if not cirq.is_measurement(op))
        for moment in cone
    )
    body.append(cirq.I.on_each(*(cone.all_qubits() - body.all_qubits())))
    order = cirq.QubitOrder.DEFAULT.order_for(body.all_qubits())
    readout = list(dict.fromkeys(q for op in measured for q in op.qubits))
    unmeasured = tuple(i for i, q in enumerate(order) if q not in readout)
    kept = [q for q in order if q in readout]
    simulator = qsimcirq.QSimSimulator()
    options = {**simulator.qsim_options, "c": _translate(body, order), "f": FUSED_GATE_QUBITS}
    run = simulator._sim_module.qtrajectory_simulate_fullstate  # one translation, many seeds

    def final(seed: int) -> np.ndarray:
        state = run({**options, "s": seed}, 0).view(np.complex64)
        probs = np.square(state.real) + np.square(state.imag)
        if unmeasured:
            probs = probs.reshape((2,) * len(order)).sum(axis=unmeasured).ravel()
        return probs

    return final, measured, kept


def sample_states(probs: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` basis states drawn with probabilities proportional to ``probs``.

    Exact to rounding, in two steps: a block of about √n consecutive states by the blocks'
    cumulative sums, then a state of that block by its own. ``rng.choice(n, p=...)`` builds the
    cumulative sums of all n probabilities for every call: for a trajectory of 20 qubits
    sampled 8 times that was 9 ms, as long as qsim's trajectory itself
    (``mqtbench__ghz_20_indep``); this takes about 1 ms, most of it the probabilities.

    Args:
        probs: Non-negative weights of a power-of-two number of states (need not sum to 1).
        count: States to draw.
        rng: Draws them.

    Returns:
        ``count`` state indices (int64); a state of weight 0 is never drawn.
    """
    width = 1 << (probs.size.bit_length() - 1) // 2
    blocks = probs.reshape(-1, width)
    weights = blocks.sum(axis=1, dtype=np.float64)
    ends = np.cumsum(weights)
    u = np.minimum(rng.random(count) * ends[-1], np.nextafter(ends[-1], 0))
    block = np.searchsorted(ends, u, side="right")
    rest = u - (ends[block] - weights[block])
    states = np.empty(count, dtype=np.int64)
    for b in np.unique(block):
        chosen = block == b
        inner = np.cumsum(blocks[b], dtype=np.float64)
        last = np.flatnonzero(blocks[b])[-1]  # rounding must not step past the block's mass
        picked = np.minimum(np.searchsorted(inner, rest[chosen], side="right"), last)
        states[chosen] = b * width + picked
    return states


def bit_columns(
    states: np.ndarray,
    measured: Sequence[cirq.Operation],
    keys: Sequence[tuple[str, int]],
    qubits: Sequence[cirq.Qid],
) -> np.ndarray:
    """The measured bits, ``(len(states), Σ widths)``, of basis states (indices) of the
    register ``qubits`` (the first the most significant bit).

    Args:
        states: Basis state indices.
        measured: The terminal measurements, one per key.
        keys: The keys with their widths, in bit-string order; a key measured on fewer
            qubits than its width reads 0 in the rest (as ``bits_from_result``).
        qubits: The register's qubits.
    """
    registers = (states[:, None] >> np.arange(len(qubits) - 1, -1, -1)) & 1
    by_key = {op.gate.key: op for op in measured}
    position = {q: i for i, q in enumerate(qubits)}
    columns = [np.zeros((len(states), 0), dtype=np.int64)]
    for key, width in keys:
        op = by_key[key]
        flips = np.array(op.gate.full_invert_mask(), dtype=np.int64)
        bits = registers[:, [position[q] for q in op.qubits]] ^ flips
        columns.append(np.pad(bits, ((0, 0), (0, width - bits.shape[1]))))
    return np.concatenate(columns, axis=1).astype(np.uint8)


_CHANNELS = (cirq.DepolarizingChannel, cirq.AmplitudeDampingChannel, cirq.PhaseFlipChannel)
"""The noise channels of the emulator's trajectories (after :func:`_as_mixture`)."""


def _translate(circuit: cirq.Circuit, order: Sequence[cirq.Qid]) -> object:
    """``qsimcirq.QSimCircuit.translate_cirq_to_qtrajectory``, with each distinct channel's
    matrices computed once.

    qsimcirq asks cirq for every channel's mixture or Kraus operators and checks each matrix
    for unitarity, operation by operation; a two-qubit depolarizing channel builds its sixteen
    Pauli products anew each time. On a deep circuit with noise on every gate that took longer
    than all its trajectories. The emulator's channels (``_CHANNELS``) repeat a few parameter
    values, so their qsim data is cached by gate; gates are added as qsimcirq adds them.
    """
    noisy = qsim_circuit.qsim.NoisyCircuit()
    noisy.num_qubits = len(order)
    index = {q: i for i, q in enumerate(reversed(order))}  # qsim numbers qubits from the end
    channels: dict[cirq.Gate, list[tuple[float, np.ndarray, bool]]] = {}
    time = 0
    for moment in circuit:
        gates = []
        noise = []
        for op in moment:
            if isinstance(op.gate, _CHANNELS):
                noise.append(op)
            else:
                gates.append(cirq.decompose(op, fallback_decomposer=_as_matrix, keep=_translatable))
        for step in range(max((len(g) for g in gates), default=0)):
            for ops in gates:
                if step < len(ops):
                    qsim_circuit.add_op_to_circuit(ops[step], time + step, index, noisy)
        for op in noise:
            if op.gate not in channels:
                channels[op.gate] = _channel_data(op.gate)
            qubits = [index[q] for q in op.qubits]
            qsim_circuit.qsim.add_channel(time, qubits, channels[op.gate], noisy)
        time += max([len(g) for g in gates] + [1 if noise else 0])
    return noisy


def _channel_data(gate: cirq.Gate) -> list[tuple[float, np.ndarray, bool]]:
    """A channel as qsim takes it: per operator, its probability (a mixture's) or a lower bound
    of it (a Kraus operator's smallest singular value squared), its matrix as float32 pairs, and
    whether it is unitary."""
    if cirq.has_mixture(gate):
        operators = [(p, m) for p, m in cirq.mixture(gate)]
    else:
        operators = [(min(np.linalg.svd(m)[1]) ** 2, m) for m in cirq.kraus(gate)]
    return [
        (
            float(p),
            np.reshape(m, (-1,)).astype(np.complex64).view(np.float32),
            cirq.is_unitary(m),
        )
        for p, m in operators
    ]


def _translatable(op: cirq.Operation) -> bool:
    """Whether qsim has the operation's gate (or, controlled, its sub-operation's) natively."""
    if isinstance(op, cirq.ControlledOperation):
        simple = isinstance(op.control_values, cirq.ProductOfSums) and all(
            len(values) == 1 for values in op.control_values
        )  # qsim cannot control on several values (a deferred measurement of several bits)
        return simple and _translatable(op.sub_operation)
    return any(t in qsim_circuit.TYPE_TRANSLATOR for t in type(op.gate).mro())


def _as_matrix(op: cirq.Operation) -> cirq.Operation:
    """A gate qsim does not know, as its matrix."""
    return cirq.MatrixGate(cirq.unitary(op)).on(*op.qubits)


def _as_mixture(op: cirq.Operation) -> cirq.Operation:
    """The operation, with phase damping as the equal phase-flip mixture."""
    if isinstance(op.gate, cirq.PhaseDampingChannel):
        return cirq.phase_flip((1 - math.sqrt(1 - op.gate.gamma)) / 2).on(*op.qubits)
    return op
