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
* **Shared trajectories** (exact): where few channels are likely to draw anything but their
  most likely operator (``mqtbench__ghz_20_indep``: a third of the trajectories draw none),
  the trajectories run as a tree (:meth:`_Register.branches`): every trajectory draws each
  channel's operator as qsim would, trajectories are simulated together while they drew the
  same operators and split where they differ, so a state is computed once per branch: the
  same final states as independent trajectories (``mqtbench__ghz_20_indep``, 500
  trajectories: 144 final states from 283 qsim runs of parts of the circuit, 3–4× faster).
  :func:`_branching_pays` picks it from the channels' probabilities; where most trajectories
  part early (deep or noisy circuits) the splits cost more than they share, and trajectories
  run independently.
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

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

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

BRANCHING_WORK = 0.3
""":func:`sample_trajectories` runs its trajectories as a tree (:meth:`_Register.branches`)
where that is estimated to apply at most this share of the gates of independent ones."""

BRANCHING_QUBITS = 24
"""Widest register run as a tree: a tree holds up to :func:`tree_states` states besides the
one qsim advances (3 at most on ``mqtbench__ghz_20_indep``; 8 bound 500 trajectories), which
the cost model counts on registers up to this width (``qubus.devices.cost.emulation_cost``); at
24 qubits a state is 128 MB."""

DRAW_BLOCK = 256
"""Numbers a branch of :meth:`_Register.branches` draws at a time: for this many
trajectories of it, one channel at a time, for one, this many channels."""

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


def tree_states(trajectories: int) -> int:
    """Most states :meth:`_Register.branches` holds at once for ``trajectories`` trajectories,
    besides the one it advances and the one it yields: one per split along the current path
    whose other parts are pending. Parts run smallest first, and every part but a split's
    largest has at most half its trajectories, so a path goes into such a part at most
    log2(trajectories) times; once it goes on into the largest, that split's state is no
    longer held."""
    return max(1, trajectories).bit_length() - 1


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
        rng: Draws each trajectory's seed (or operators) and its shots.
        progress: Called after each trajectory (each final state, where they share).

    Returns:
        ``(shots, Σ widths)`` uint8 bits, columns in ``keys`` order.

    Raises:
        ValueError: qsim cannot translate an operation of the circuit.
    """
    register = _Register.of(circuit)
    trajectories = max(1, min(trajectories, shots))
    per_trajectory = np.full(trajectories, shots // trajectories)
    per_trajectory[: shots % trajectories] += 1
    if _branching_pays(register):
        finals = (
            (register.probabilities(state), int(per_trajectory[group].sum()))
            for state, group in register.branches(trajectories, rng)
        )
    else:
        seeds = rng.integers(2**31 - 1, size=trajectories)
        finals = (
            (register.final(int(seed)), int(count))
            for seed, count in zip(seeds, per_trajectory, strict=True)
        )
    drawn = []
    done = 0
    for probs, count in finals:
        drawn.append(sample_states(probs, count, rng))
        done += count
        if progress is not None:
            progress(done, shots)
    return bit_columns(np.concatenate(drawn), register.measured, keys, register.kept)


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
    register = _Register.of(circuit)
    states = np.arange(2 ** len(register.kept))
    columns = bit_columns(states, register.measured, keys, register.kept).astype(np.int64)
    width = columns.shape[1]
    index = columns @ (1 << np.arange(width - 1, -1, -1))
    for seed in rng.integers(2**31 - 1, size=trajectories):
        yield np.bincount(index, weights=register.final(int(seed)), minlength=2**width)


@dataclass(frozen=True)
class _Register:
    """A terminal-measurement circuit translated once for qsim, run as independent
    trajectories (:meth:`final`) or as a tree of shared ones (:meth:`branches`).

    Attributes:
        steps: The body's gates and noise channels in qsim's order (:func:`_steps`).
        order: The simulated qubits, the first the most significant bit of a state.
        measured: The terminal measurements.
        kept: The measured qubits in the order of :meth:`probabilities`' states.
        unmeasured: Axes of a state (as a ``(2,) * width`` array) summed out of its
            probabilities.
        noisy: The whole body as one qsim noisy circuit.
        channels: The positions in ``steps`` of the channels.
        ends: Per channel, its operators' cumulative bounds (:class:`_Operator`), padded
            with infinity to the most operators of a channel.
    """

    steps: list[_Gate | _Channel]
    order: list[cirq.Qid]
    measured: list[cirq.Operation]
    kept: list[cirq.Qid]
    unmeasured: tuple[int, ...]
    noisy: object
    channels: np.ndarray
    ends: np.ndarray

    @classmethod
    def of(cls, circuit: cirq.AbstractCircuit) -> _Register:
        """The register of a terminal-measurement circuit with noise channels, only the
        measured qubits' light cone."""
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
        steps = _steps(body, order)
        channels = [i for i, step in enumerate(steps) if isinstance(step, _Channel)]
        widest = max((len(steps[i].operators) for i in channels), default=0)
        ends = np.full((len(channels), widest), np.inf)
        for row, i in zip(ends, channels, strict=True):
            bounds = np.cumsum([o.bound for o in steps[i].operators])
            row[: len(bounds)] = bounds
        noisy = _noisy_circuit(steps, order)
        return cls(steps, order, measured, kept, unmeasured, noisy, np.array(channels), ends)

    def final(self, seed: int) -> np.ndarray:
        """One trajectory's final probabilities (float32) of the measured qubits' states, run
        by qsim from ``seed``."""
        return self.probabilities(_qsim_run(self.noisy, 0, seed))

    def probabilities(self, state: np.ndarray) -> np.ndarray:
        """The measured qubits' probabilities in a (normalized) state of the register."""
        probs = np.square(state.real) + np.square(state.imag)
        if self.unmeasured:
            probs = probs.reshape((2,) * len(self.order)).sum(axis=self.unmeasured).ravel()
        return probs

    def branches(
        self, trajectories: int, rng: np.random.Generator
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``trajectories`` trajectories as a tree: each distinct final state once.

        All trajectories start as one branch. At each channel every trajectory of a branch
        draws its operator as qsim does (:meth:`_draw`). While they all draw the same
        operator by its bound it is only queued; where they part, or a draw depends on the
        state, the queue is run on qsim from the branch's state and the branch splits by
        operator, each part continuing from that state. Each trajectory draws its operators
        from the same distributions as qsim's own trajectories, and trajectories that drew
        the same operators end in the same state, so the final states with their
        trajectories are exactly what as many independent trajectories give; a state is
        computed once per branch instead of once per trajectory. A branch of one
        trajectory runs the rest of the circuit as qsim's own trajectory.

        Yields:
            Per leaf, its final state (complex64) and the trajectories (indices) that end
            in it. Parts are run smallest first, so at most :func:`tree_states` states of
            splits are held.
        """
        stack: list[tuple[np.ndarray | int, int, np.ndarray, list[_Step]]] = [
            (0, 0, np.arange(trajectories), [])
        ]
        while stack:
            state, position, group, queued = stack.pop()
            if len(group) == 1:  # qsim draws a lone trajectory's operators itself
                queued.extend(self.steps[position:])
                yield self._advance(state, queued, int(rng.integers(2**31 - 1))), group
                continue
            split = self._draw(position, group, queued, rng)
            state = self._advance(state, queued)
            if split is None:
                yield state, group
                continue
            position, picked = split
            step = self.steps[position]
            slow = picked < 0
            if slow.any():
                picked[slow] = step.resolve(self._reduced(state, step.qubits), slow.sum(), rng)
            operators, sizes = np.unique(picked, return_counts=True)
            for operator in operators[np.argsort(-sizes, kind="stable")]:
                part = group[picked == operator]
                stack.append((state, position + 1, part, [step.chosen[operator]]))

    def _draw(
        self, position: int, group: np.ndarray, queued: list[_Step], rng: np.random.Generator
    ) -> tuple[int, np.ndarray] | None:
        """Queue the steps from ``position`` on while the ``group``'s trajectories draw the
        same operator at each channel.

        A trajectory draws as qsim does: one uniform number, the first operator whose
        cumulative bound exceeds it, or, where the number is above their sum, by the state
        (:meth:`_Channel.resolve`). Numbers are drawn for ``DRAW_BLOCK`` / trajectories
        channels at a time (a large branch splits at almost every channel); those past a split
        are not used.

        Returns:
            None when every step is queued; else the position of the first channel where
            the trajectories part, and the operator each drew there (−1: by the state).
        """
        first = int(np.searchsorted(self.channels, position))
        block = max(1, DRAW_BLOCK // len(group))
        while first < len(self.channels):
            ends = self.ends[first : first + block]
            numbers = rng.random((len(group), len(ends)))
            picked = (numbers[:, :, None] >= ends[None]).sum(axis=2)
            picked[picked == np.isfinite(ends).sum(axis=1)] = -1
            parts = ((picked != picked[0]) | (picked < 0)).any(axis=0)
            agreed = int(np.argmax(parts)) if parts.any() else len(ends)
            for column, operator in enumerate(picked[0, :agreed], start=first):
                channel = int(self.channels[column])
                queued.extend(self.steps[position:channel])
                queued.append(self.steps[channel].chosen[operator])
                position = channel + 1
            if agreed < len(ends):
                channel = int(self.channels[first + agreed])
                queued.extend(self.steps[position:channel])
                return channel, picked[:, agreed]
            first += len(ends)
        queued.extend(self.steps[position:])
        return None

    def _advance(self, state: np.ndarray | int, queued: list[_Step], seed: int = 0) -> np.ndarray:
        """The state after the queued steps, from ``state`` (a state vector or 0 for the
        all-zero basis state), qsim drawing the operators of any whole channel from
        ``seed``."""
        if isinstance(state, np.ndarray) and not queued:
            return state
        return _qsim_run(_noisy_circuit(queued, self.order), state, seed)

    def _reduced(self, state: np.ndarray, qubits: Sequence[cirq.Qid]) -> np.ndarray:
        """The reduced density matrix (complex128) of ``qubits``, the first the most
        significant, in a state of the register."""
        axes = [self.order.index(q) for q in qubits]
        tensor = state.reshape((2,) * len(self.order))
        rows = np.moveaxis(tensor, axes, range(len(axes))).reshape(2 ** len(axes), -1)
        rho = (rows @ rows.conj().T).astype(np.complex128)
        return rho / np.trace(rho).real


def _branching_pays(register: _Register) -> bool:
    """Whether :meth:`_Register.branches` is expected to apply at most ``BRANCHING_WORK`` of
    the gates that independent trajectories apply, on at most ``BRANCHING_QUBITS`` qubits.

    A trajectory's gates count as shared only until its first channel operator other than
    the likeliest by its bound (pessimistic: trajectories that part the same way share more),
    and a split costs nothing here (optimistic: its state copies and Python cost more than a
    trajectory's gates on narrow registers, hence a share well below 1).
    """
    if len(register.order) > BRANCHING_QUBITS:
        return False
    steps = len(register.steps)
    on_main = 1.0
    work = 0.0
    for position, step in enumerate(register.steps):
        if isinstance(step, _Channel):
            stay = max(operator.bound for operator in step.operators)
            work += on_main * (1 - stay) * (steps - position) / steps
            on_main *= stay
    return work <= BRANCHING_WORK


def runs_as_tree(circuit: cirq.AbstractCircuit) -> bool:
    """Whether :func:`sample_trajectories` runs a terminal-measurement circuit's noisy
    trajectories as a tree (its noise, :func:`_branching_pays`)."""
    return _branching_pays(_Register.of(circuit))


def _qsim_run(noisy: object, state: np.ndarray | int, seed: int) -> np.ndarray:
    """qsim's trajectory of a noisy circuit from ``state`` (a state vector or a basis
    state's index), as complex64 amplitudes."""
    simulator = qsimcirq.QSimSimulator()
    options = {**simulator.qsim_options, "c": noisy, "f": FUSED_GATE_QUBITS, "s": seed}
    start = state.view(np.float32) if isinstance(state, np.ndarray) else state
    return simulator._sim_module.qtrajectory_simulate_fullstate(options, start).view(np.complex64)


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
        short = width - bits.shape[1]  # a key measured on fewer qubits reads 0 in the rest
        columns.append(np.pad(bits, ((0, 0), (0, short))) if short else bits)
    return np.concatenate(columns, axis=1).astype(np.uint8)


@dataclass(frozen=True)
class _Operator:
    """One operator of a noise channel as qsim samples it.

    Attributes:
        bound: Its probability (a mixture's unitary) or a lower bound of it (a Kraus
            operator's smallest singular value squared): qsim draws it with this probability
            without looking at the state.
        excess: ``K†K − bound·I``: the expectation of this in the channel qubits' state is the
            rest of its probability (zero for a unitary).
        qsim: Its matrix as float32 pairs.
        unitary: Whether it is unitary.
    """

    bound: float
    excess: np.ndarray
    qsim: np.ndarray
    unitary: bool


@dataclass(frozen=True)
class _Gate:
    """A gate of the body at qsim's time ``time``."""

    time: int
    op: cirq.Operation

    def add(self, noisy: object, index: dict[cirq.Qid, int]) -> None:
        """Append it to a qsim noisy circuit (qubit numbers in ``index``)."""
        qsim_circuit.add_op_to_circuit(self.op, self.time, index, noisy)


@dataclass(frozen=True)
class _Channel:
    """A noise channel of the body at qsim's time ``time``, on ``qubits``."""

    time: int
    qubits: tuple[cirq.Qid, ...]
    operators: tuple[_Operator, ...]

    def add(self, noisy: object, index: dict[cirq.Qid, int]) -> None:
        """Append it to a qsim noisy circuit (qubit numbers in ``index``)."""
        data = [(o.bound, o.qsim, o.unitary) for o in self.operators]
        qsim_circuit.qsim.add_channel(self.time, [index[q] for q in self.qubits], data, noisy)

    @functools.cached_property
    def chosen(self) -> tuple[_Chosen, ...]:
        """Per operator, the channel reduced to it, drawn with certainty (qsim applies it
        and, if it is not unitary, normalizes the state)."""
        return tuple(
            _Chosen(self.time, self.qubits, [(1.0, o.qsim, o.unitary)]) for o in self.operators
        )

    def resolve(self, rho: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
        """Operators for ``count`` trajectories whose number fell above the bounds' sum, in a
        state whose channel qubits have the reduced density matrix ``rho``: each operator
        with the rest of its probability (``Tr(excess·rho)``) over the rest of all, which
        is qsim's draw by norms given that the number is above the bounds."""
        rest = np.array([max(np.trace(o.excess @ rho).real, 0.0) for o in self.operators])
        if rest.sum() <= 0:  # the bounds sum to 1 but for rounding: a mixture
            rest = np.array([o.bound for o in self.operators])
        return rng.choice(len(rest), size=count, p=rest / rest.sum())


@dataclass(frozen=True)
class _Chosen:
    """A channel's one operator at qsim's time ``time`` on ``qubits``, as qsim's data."""

    time: int
    qubits: tuple[cirq.Qid, ...]
    data: list[tuple[float, np.ndarray, bool]]

    def add(self, noisy: object, index: dict[cirq.Qid, int]) -> None:
        """Append it to a qsim noisy circuit (qubit numbers in ``index``)."""
        qsim_circuit.qsim.add_channel(self.time, [index[q] for q in self.qubits], self.data, noisy)


_Step = _Gate | _Channel | _Chosen
"""What a qsim noisy circuit is built of here."""


_CHANNELS = (cirq.DepolarizingChannel, cirq.AmplitudeDampingChannel, cirq.PhaseFlipChannel)
"""The noise channels of the emulator's trajectories (after :func:`_as_mixture`)."""


def _translate(circuit: cirq.Circuit, order: Sequence[cirq.Qid]) -> object:
    """``qsimcirq.QSimCircuit.translate_cirq_to_qtrajectory`` with each distinct channel's
    matrices computed once (:func:`_steps`)."""
    return _noisy_circuit(_steps(circuit, order), order)


def _noisy_circuit(steps: Sequence[_Gate | _Channel], order: Sequence[cirq.Qid]) -> object:
    """A qsim noisy circuit of the steps on the register ``order``."""
    noisy = qsim_circuit.qsim.NoisyCircuit()
    noisy.num_qubits = len(order)
    index = {q: i for i, q in enumerate(reversed(order))}  # qsim numbers qubits from the end
    for step in steps:
        step.add(noisy, index)
    return noisy


def _steps(circuit: cirq.Circuit, order: Sequence[cirq.Qid]) -> list[_Gate | _Channel]:
    """The circuit's gates and channels in qsim's order, with qsim's times, as
    ``qsimcirq.QSimCircuit.translate_cirq_to_qtrajectory`` adds them.

    qsimcirq asks cirq for every channel's mixture or Kraus operators and checks each matrix
    for unitarity, operation by operation; a two-qubit depolarizing channel builds its sixteen
    Pauli products anew each time. On a deep circuit with noise on every gate that took longer
    than all its trajectories. The emulator's channels (``_CHANNELS``) repeat a few parameter
    values, so their operators are computed once per gate.
    """
    channels: dict[cirq.Gate, tuple[_Operator, ...]] = {}
    steps: list[_Gate | _Channel] = []
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
            steps.extend(_Gate(time + step, ops[step]) for ops in gates if step < len(ops))
        for op in noise:
            if op.gate not in channels:
                channels[op.gate] = _operators(op.gate)
            steps.append(_Channel(time, tuple(op.qubits), channels[op.gate]))
        time += max([len(g) for g in gates] + [1 if noise else 0])
    return steps


def _operators(gate: cirq.Gate) -> tuple[_Operator, ...]:
    """A channel's operators as qsim takes them (:class:`_Operator`)."""
    if cirq.has_mixture(gate):
        operators = [(p, m) for p, m in cirq.mixture(gate)]
    else:
        operators = [(min(np.linalg.svd(m)[1]) ** 2, m) for m in cirq.kraus(gate)]
    identity = np.eye(2 ** cirq.num_qubits(gate))
    return tuple(
        _Operator(
            bound=float(p),
            excess=np.zeros_like(identity) if unitary else m.conj().T @ m - p * identity,
            qsim=np.reshape(m, (-1,)).astype(np.complex64).view(np.float32),
            unitary=unitary,
        )
        for p, m in operators
        for unitary in [cirq.is_unitary(m)]
    )


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
