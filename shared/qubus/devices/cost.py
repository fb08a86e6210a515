"""What an emulation will cost on this machine, estimated before it runs.

A QPU node gives each task a time budget from this estimate instead of one fixed wall, and
refuses up front (``qpu.too_large``, the estimate in the message) a task whose estimate exceeds
the node's limit; the noise service marks such a node unfit for the task so that the allocator
does not place it there (the estimate is computed once per circuit and node, from the compiled
circuit the noise service builds anyway). A circuit split across nodes is emulated by its lead
node as one circuit of every part and the protocol, one trajectory per shot: the same
trajectory terms price it (:func:`trajectories_cost`,
``qubus.network.distributed.SplitProgram.emulation_cost``), and the allocator leaves out split
plans over the nodes' :class:`Limits`.

The model follows :func:`qubus.devices.emulation.emulate`'s methods, with ``g`` the compiled
circuit's operations (the noise channels scale with them: about 4.7 noisy operations per
compiled one on the dev circuits) and ``w`` the simulated width; each term is a unit count
(``EmulationCost.terms``) times a constant of :class:`CostModel`:

* ``density_matrix`` (up to ``DENSITY_MATRIX_QUBITS`` qubits, terminal measurements):
  ``density_per_op · g + density_per_op_entry · g · 4^w``. Two terms, because one cannot fit
  both ends: a narrow register's time is numpy's overhead per superoperator product, a wide
  one's the 4^w entries (one constant per entry, fitted to 7–8 qubits, put a 6-qubit QAOA
  circuit at 83 ms against 3.5 ms measured).
* ``trajectories`` (everything else; a dynamic circuit's width is that of its deferred form's
  light cone, which the emulator simulates: ``bb84_n8`` is 16 qubits, not the 24 of an ancilla
  per measurement and reset, which is what is counted when it has no deferred form):
  ``translate_per_op · g`` once, then per trajectory
  ``trajectory_per_op · g + amplitude · 2^w + amplitude_per_op · g · 2^w
  + spilled_amplitude_per_op · g · max(0, 2^w − CACHED_AMPLITUDES)``, for
  :func:`qubus.devices.trajectories.trajectory_count` trajectories: qsim's cost of each gate
  and channel whatever the width (about 6 µs: a 10-qubit trajectory is mostly that), the final
  state's probabilities and the draw of its shots whatever the circuit (a 20-qubit GHZ circuit
  of 78 operations takes half as long a trajectory as a 20-qubit one of 459, not a sixth), the
  gates on the state, and what they cost more once the state outgrows the cache (a gate on a
  24-qubit state costs twice as much per amplitude as on a 20-qubit one).

The estimate is an **idle machine's wall time** (``IDLE``, fitted by ``python
benchmarks/emulation_cost.py --fit`` to the CPU times of dev circuits and GHZ chains up to 24
qubits on the 2-core development machine: a single-threaded emulation's CPU time is what its
wall time would be alone): it is what the allocator weighs and what
``QUBUS_QPU_MAX_EMULATION_S`` refuses, so the same circuit is refused or accepted whatever else
runs. The machine's load enters the **budget** instead (:func:`time_budget`): ``BUDGET_MARGIN``
× the estimate, at least ``MIN_BUDGET_S``, counted in CPU seconds of the worker process that
emulates (``WorkerPool.run``'s ``cpu_limit_s``). A single-threaded emulation that shares its
cores with others gets fewer CPU seconds per wall second, and its wall-clock limit stretches by
exactly that share, measured while it runs. That was chosen over the host's load average per
core, which lags a minute behind a burst (a dev-set run starts every node's worker at once),
counts the worker itself and cannot see nice levels or how the other processes share the cores;
and over a node's measured/estimated ratio on its recent runs, which knows nothing before the
first run and lags a run behind. What CPU time does not see (memory bandwidth and caches shared
with the other processes) is left to the margin. A worker that makes no progress at all
(stopped, or starved) is still stopped after ``MAX_SLOWDOWN`` × the budget of wall time.

The estimate does not include cirq's fallback for dynamic circuits that cannot be deferred
(none of the dev circuits). Memory is the state vector's (complex64) and the arrays sampled
from it, about ``MEMORY_BYTES_PER_AMPLITUDE · 2^w``, plus the worker's own ``BASE_MEMORY_MB``,
plus, on registers the trajectories may run as a tree (up to
``qubus.devices.trajectories.BRANCHING_QUBITS`` qubits: whether they do depends on the noise,
which the estimate does not see), the most states the tree holds
(``qubus.devices.trajectories.tree_states``, ``STATE_BYTES_PER_AMPLITUDE`` each). The time
still prices independent trajectories: a tree's is less (by 1.3–38× on the low-noise
``quantinuum_h1_1``, docs/architecture.md, *Sessions 15 and 16*).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

import cirq

from qubus.circuits.simulate import exact_form
from qubus.devices.compile import CompiledCircuit
from qubus.devices.emulation import DENSITY_MATRIX_QUBITS, uses_density_matrix
from qubus.devices.trajectories import (
    BRANCHING_QUBITS,
    register_width,
    trajectory_count,
    tree_states,
)
from qubus.errors import QubusError


@dataclass(frozen=True)
class CostModel:
    """Seconds per unit of each term of an estimate (module docstring).

    Attributes:
        density_per_op: Per compiled operation of a density-matrix emulation.
        density_per_op_entry: Per compiled operation and density-matrix entry (4^w).
        translate_per_op: Building and translating the noisy circuit for qsim, per operation.
        trajectory_per_op: Per compiled operation of one trajectory (qsim's gates and channels).
        amplitude: Per state amplitude (2^w) of one trajectory: its probabilities and shots.
        amplitude_per_op: Per compiled operation and state amplitude (2^w) of one trajectory.
        spilled_amplitude_per_op: Per compiled operation and state amplitude beyond
            ``CACHED_AMPLITUDES`` of one trajectory, on top of ``amplitude_per_op``.
    """

    density_per_op: float
    density_per_op_entry: float
    translate_per_op: float
    trajectory_per_op: float
    amplitude: float
    amplitude_per_op: float
    spilled_amplitude_per_op: float

    def seconds(self, terms: Mapping[str, float]) -> float:
        """The estimate of an emulation with these unit counts (``EmulationCost.terms``)."""
        return sum(getattr(self, name) * units for name, units in terms.items())

    @classmethod
    def names(cls) -> list[str]:
        """The constants' names, which are also the terms' names."""
        return [f.name for f in fields(cls)]


IDLE = CostModel(
    density_per_op=4.71e-5,
    density_per_op_entry=4.82e-9,
    translate_per_op=3.55e-4,
    trajectory_per_op=5.62e-6,
    amplitude=8.30e-9,
    amplitude_per_op=1.05e-10,
    spilled_amplitude_per_op=1.09e-10,
)
"""Fitted by ``python benchmarks/emulation_cost.py --shots 4000 --repeats 2 --fit`` to the
CPU times of the 16 of its 26 cases that do not run as a tree (session 16, load 2–3 with two
nice-19 aer runs beside): estimate/CPU time 0.68–1.55 for the density matrices, all under
0.2 s, and 0.81–1.57 for the trajectories, up to the 24-qubit chain; the 10 trees it
overestimates 1.3–38 times (``docs/architecture.md``, *Session 16*). Session 9's constants,
fitted to dev circuits of at most 20 qubits on nodes where most now run as trees, put the
routed wide ones on ``ibm_hanoi`` at 0.37–0.75 of their CPU time."""

SPLIT = replace(
    IDLE,
    translate_per_op=5.29e-12,
    trajectory_per_op=4.76e-6,
    amplitude=3.03e-8,
    amplitude_per_op=4.63e-10,
    spilled_amplitude_per_op=0.0,
)
"""The trajectory constants of a split run (``qubus.network.distributed.SplitProgram.
emulation_cost``; the density-matrix ones are ``IDLE``'s, unused), fitted by ``python -m
benchmarks.split_cost --fit --max-estimate 20`` to the CPU times of 10 dev circuits split two
ways (session 10, load 6.6–1.7): ``IDLE``'s constants were 0.14–1.27 of the measured CPU time,
falling with the width (0.14 for ``qram_n20``'s 22 qubits), these 0.77–1.35. A split run's qsim
trajectory cost about 7 times as much per operation and amplitude as a single node's by session
9's constants. It runs through ``qubus.circuits.simulate.run`` (qsim's default gate fusion,
every noise channel and protocol measurement on the whole state), where the single-node emulator
fuses gates up to 3 qubits, turns phase damping into a mixture of unitaries and simulates only
the measured qubits' light cone; which of these accounts for how much was not measured. It has
no term for a state beyond the cache (``spilled_amplitude_per_op`` 0): the cases it was fitted
to were of 22 qubits at most, and its per-amplitude constant is already 4.4 times ``IDLE``'s."""

CACHED_AMPLITUDES = 2**21
"""Amplitudes of a state whose gates cost ``amplitude_per_op`` each; beyond them each also costs
``spilled_amplitude_per_op``. 2^21 complex64 amplitudes are 16 MB, half the development
machine's 32 MB L3 cache; the GHZ chain of ``benchmarks/emulation_width.py`` on ``ibm_hanoi``
costs more per amplitude from 22 qubits on, by the same constant at 22 and 24 qubits with this
bound (``docs/architecture.md``, *Session 16*)."""

MEMORY_BYTES_PER_AMPLITUDE = 32
"""The state (8 bytes), its probabilities (4) and the marginal sampled from them (8), with
room for a copy."""

STATE_BYTES_PER_AMPLITUDE = 8
"""A state vector's amplitude (complex64): what each state a tree of trajectories holds costs."""

BASE_MEMORY_MB = 1500
"""Address space of a worker process before it simulates anything (cirq, qsim, numpy)."""

BUDGET_MARGIN = 4.0
"""A task's budget is this many times its estimate in CPU seconds of its worker (the estimate
is 0.8–1.6 times a trajectory run's CPU time on the dev circuits, and a CPU second went up to
1.5× less far at load 6–12, the caches and memory shared with the other processes)..."""

MIN_BUDGET_S = 30.0
"""... and never less than this."""

MAX_SLOWDOWN = 100.0
"""Wall time a run may take is at most this many times its budget, however little CPU its
worker got: the net under a worker that makes no progress at all."""


@dataclass(frozen=True)
class Budget:
    """The time an emulation is allowed.

    Attributes:
        cpu_s: CPU seconds of the worker process (the limit that counts: it stretches with the
            machine's load).
        wall_s: Wall-clock seconds, ``MAX_SLOWDOWN`` × ``cpu_s``.
        estimate_s: The idle estimate the budget was made from.
    """

    cpu_s: float
    wall_s: float
    estimate_s: float


@dataclass(frozen=True)
class EmulationCost:
    """The estimated cost of one emulation.

    Attributes:
        method: ``density_matrix`` or ``trajectories``.
        width: Qubits simulated.
        operations: Operations of the compiled circuit.
        trajectories: Trajectories run (1 for a density matrix).
        terms: Units of each of the model's terms (``CostModel``'s names): the estimate is
            their sum weighted by the model's constants.
        seconds: Estimated wall time on this machine, idle.
        memory_mb: Estimated address space of the worker.
    """

    method: str
    width: int
    operations: int
    trajectories: int
    terms: Mapping[str, float]
    seconds: float
    memory_mb: float

    @property
    def budget(self) -> Budget:
        """The time the emulation is allowed (``time_budget``)."""
        return time_budget(self.seconds)

    def describe(self) -> str:
        """One line: method, size and estimate."""
        runs = f" × {self.trajectories} trajectories" if self.method == "trajectories" else ""
        return (
            f"{self.method.replace('_', ' ')} of {self.width} qubits, {self.operations} "
            f"operations{runs}: about {self.seconds:.3g} s and {self.memory_mb:.0f} MB"
        )


def time_budget(seconds: float) -> Budget:
    """The time an emulation estimated at ``seconds`` (idle) is allowed: ``BUDGET_MARGIN`` ×
    the estimate of the worker's CPU time, at least ``MIN_BUDGET_S``, and ``MAX_SLOWDOWN``
    times that of wall time (module docstring: why CPU time)."""
    cpu_s = max(MIN_BUDGET_S, BUDGET_MARGIN * seconds)
    return Budget(cpu_s=cpu_s, wall_s=MAX_SLOWDOWN * cpu_s, estimate_s=seconds)


def emulation_cost(
    compiled: CompiledCircuit,
    shots: int,
    *,
    noiseless: bool = False,
    model: CostModel = IDLE,
) -> EmulationCost:
    """The estimated cost of ``emulate(compiled, device, shots, noiseless=noiseless)``, with
    ``model``'s constants (a benchmark prices a refit with its own); its memory counts the
    states a tree of its trajectories would hold (module docstring)."""
    ops = list(compiled.circuit.all_operations())
    g = len(ops)
    width = len(compiled.physical_qubits)
    if not noiseless and uses_density_matrix(compiled):
        terms = {"density_per_op": g, "density_per_op_entry": g * 4.0**width}
        memory = BASE_MEMORY_MB + 16 * 4.0**DENSITY_MATRIX_QUBITS / 2**20
        return EmulationCost("density_matrix", width, g, 1, terms, model.seconds(terms), memory)
    if not compiled.circuit.are_all_measurements_terminal() or any(
        op.classical_controls for op in ops
    ):
        deferred = exact_form(compiled.circuit)
        width = (
            register_width(deferred)
            if deferred is not None
            else width + sum(1 for op in ops if cirq.is_measurement(op) or _is_reset(op))
        )
    runs = trajectory_count(width, shots, noisy=not noiseless)
    cost = trajectories_cost(g, width, runs, model=model)
    if runs > 1 and width <= BRANCHING_QUBITS:
        held = tree_states(runs) * STATE_BYTES_PER_AMPLITUDE * 2.0**width / 2**20
        cost = replace(cost, memory_mb=cost.memory_mb + held)
    return cost


def trajectories_cost(
    operations: int, width: int, trajectories: int, *, model: CostModel = IDLE
) -> EmulationCost:
    """The estimated cost of ``trajectories`` qsim trajectories of a circuit of ``operations``
    compiled operations (its noise channels not counted: the constants include them) on
    ``width`` qubits, translated once: the trajectory method of :func:`emulation_cost`, and
    that of a split run (``qubus.network.distributed.SplitProgram.emulation_cost``)."""
    terms = {
        "translate_per_op": operations,
        "trajectory_per_op": trajectories * operations,
        "amplitude": trajectories * 2.0**width,
        "amplitude_per_op": trajectories * operations * 2.0**width,
        "spilled_amplitude_per_op": trajectories
        * operations
        * max(0.0, 2.0**width - CACHED_AMPLITUDES),
    }
    memory = BASE_MEMORY_MB + MEMORY_BYTES_PER_AMPLITUDE * 2.0**width / 2**20
    return EmulationCost(
        "trajectories", width, operations, trajectories, terms, model.seconds(terms), memory
    )


@dataclass(frozen=True)
class Limits:
    """The largest emulation a QPU node accepts.

    Attributes:
        max_s: Idle estimate, s (``QUBUS_QPU_MAX_EMULATION_S``).
        memory_mb: Address space of its worker process (``QUBUS_SANDBOX_MEMORY_MB``).
    """

    max_s: float
    memory_mb: int

    def exceeded(self, cost: EmulationCost) -> str | None:
        """Why an emulation is over these limits (its estimate and the limit), or None."""
        if cost.seconds > self.max_s:
            return (
                f"{cost.describe()}, over its limit of {self.max_s:g} s (QUBUS_QPU_MAX_EMULATION_S)"
            )
        if cost.memory_mb > self.memory_mb:
            return (
                f"{cost.describe()}, over its memory of {self.memory_mb} MB "
                "(QUBUS_SANDBOX_MEMORY_MB)"
            )
        return None


def refuse_too_large(cost: EmulationCost, *, max_s: float, memory_mb: int) -> None:
    """Raise ``qpu.too_large`` for an emulation over the node's time limit or memory.

    Raises:
        QubusError: ``qpu.too_large``, with the estimate in the message.
    """
    reason = Limits(max_s, memory_mb).exceeded(cost)
    if reason is not None:
        raise QubusError(f"emulation too large for this node: {reason}", code="qpu.too_large")


def _is_reset(op: cirq.Operation) -> bool:
    return isinstance(op.without_classical_controls().gate, cirq.ResetChannel)
