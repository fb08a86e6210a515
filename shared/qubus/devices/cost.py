"""What an emulation will cost on this machine, estimated before it runs.

A QPU node gives each task a time budget from this estimate instead of one fixed wall, and
refuses up front (``qpu.too_large``, the estimate in the message) a task whose estimate exceeds
the node's limit; the noise service marks such a node unfit for the task so that the allocator
does not place it there (the estimate is computed once per circuit and node, from the compiled
circuit the noise service builds anyway).

The model follows :func:`qubus.devices.emulation.emulate`'s methods, with ``g`` the compiled
circuit's operations (the noise channels scale with them: about 4.7 noisy operations per
compiled one on the dev circuits) and ``w`` the simulated width:

* ``density_matrix`` (up to ``DENSITY_MATRIX_QUBITS`` qubits, terminal measurements):
  ``DENSITY_S_PER_OP_ENTRY · g · 4^w``.
* ``trajectories`` (everything else; a dynamic circuit's width counts an ancilla per
  measurement and reset, as its deferred form does): ``TRANSLATE_S_PER_OP · g`` once, then per
  trajectory ``TRAJECTORY_S + AMPLITUDE_S_PER_OP · g · 2^w``, for
  :func:`qubus.devices.trajectories.trajectory_count` trajectories.

The constants but ``TRAJECTORY_S`` were fitted by ``python benchmarks/emulation_cost.py --fit``
on the development machine (2 shared cores, busy: the figures are pessimistic for an idle
one), which also prints each dev circuit's estimate against its measured time. The estimate
does not include cirq's fallback for dynamic circuits that cannot be deferred (none of the dev
circuits).
On an idle machine they overestimate 5–160× (session 8, load 2–3: a refit gives
``DENSITY_S_PER_OP_ENTRY`` 5.8e-9, ``TRANSLATE_S_PER_OP`` 7.7e-3, ``TRAJECTORY_S`` 8.8e-5,
``AMPLITUDE_S_PER_OP`` 4.3e-11, estimate/measured 0.41–2.71); they are kept because the
same circuits took 23–40× longer at load about 6 (session 6, with its code), where
``BUDGET_MARGIN`` × an idle-machine estimate would cut them off (``docs/architecture.md``,
cost model).
Memory is the state vector's (complex64) and the arrays sampled from it, about
``MEMORY_BYTES_PER_AMPLITUDE · 2^w``, plus the worker's own ``BASE_MEMORY_MB``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cirq

from qubus.devices.compile import CompiledCircuit
from qubus.devices.emulation import DENSITY_MATRIX_QUBITS, uses_density_matrix
from qubus.devices.trajectories import trajectory_count
from qubus.errors import QubusError

DENSITY_S_PER_OP_ENTRY = 3.7e-7
"""Seconds per compiled operation and density-matrix entry (fitted)."""

TRANSLATE_S_PER_OP = 2.1e-2
"""Seconds to build and translate the noisy circuit, per compiled operation (fitted)."""

TRAJECTORY_S = 6e-3
"""Fixed seconds of one trajectory: the qsim call, its noise channels on a narrow register,
its sampling. Measured, not fitted: ``qasmbench__ising_n10`` (10 qubits, 1,000 trajectories)
took 6.2 ms a trajectory on the busy machine, where the fit gave 0.12 ms and the goal run's
10-qubit circuits overran their 30 s budget."""

AMPLITUDE_S_PER_OP = 5.5e-10
"""Seconds per compiled operation and state-vector amplitude of one trajectory (fitted)."""

MEMORY_BYTES_PER_AMPLITUDE = 32
"""The state (8 bytes), its probabilities (4) and the marginal sampled from them (8), with
room for a copy."""

BASE_MEMORY_MB = 1500
"""Address space of a worker process before it simulates anything (cirq, qsim, numpy)."""

BUDGET_MARGIN = 4.0
"""A task's time budget is this many times its estimate (the machine is shared)..."""

MIN_BUDGET_S = 30.0
"""... and never less than this."""


@dataclass(frozen=True)
class EmulationCost:
    """The estimated cost of one emulation.

    Attributes:
        method: ``density_matrix`` or ``trajectories``.
        width: Qubits simulated.
        operations: Operations of the compiled circuit.
        trajectories: Trajectories run (1 for a density matrix).
        seconds: Estimated wall time on this machine.
        memory_mb: Estimated address space of the worker.
    """

    method: str
    width: int
    operations: int
    trajectories: int
    seconds: float
    memory_mb: float

    @property
    def budget_s(self) -> float:
        """The time the emulation is allowed (``time_budget``)."""
        return time_budget(self.seconds)

    def describe(self) -> str:
        """One line: method, size and estimate."""
        runs = f" × {self.trajectories} trajectories" if self.method == "trajectories" else ""
        return (
            f"{self.method.replace('_', ' ')} of {self.width} qubits, {self.operations} "
            f"operations{runs}: about {self.seconds:.3g} s and {self.memory_mb:.0f} MB"
        )


def time_budget(seconds: float) -> float:
    """The time an emulation estimated at ``seconds`` is allowed: ``BUDGET_MARGIN`` × the
    estimate, at least ``MIN_BUDGET_S``."""
    return max(MIN_BUDGET_S, BUDGET_MARGIN * seconds)


def emulation_cost(
    compiled: CompiledCircuit, shots: int, *, noiseless: bool = False
) -> EmulationCost:
    """The estimated cost of ``emulate(compiled, device, shots, noiseless=noiseless)``."""
    ops = list(compiled.circuit.all_operations())
    width = len(compiled.physical_qubits)
    if not noiseless and uses_density_matrix(compiled):
        seconds = DENSITY_S_PER_OP_ENTRY * len(ops) * 4.0**width
        memory = BASE_MEMORY_MB + 16 * 4.0**DENSITY_MATRIX_QUBITS / 2**20
        return EmulationCost("density_matrix", width, len(ops), 1, seconds, memory)
    if not compiled.circuit.are_all_measurements_terminal() or any(
        op.classical_controls for op in ops
    ):
        width += sum(1 for op in ops if cirq.is_measurement(op) or _is_reset(op))
    runs = trajectory_count(width, shots, noisy=not noiseless)
    per_trajectory = TRAJECTORY_S + AMPLITUDE_S_PER_OP * len(ops) * 2.0**width
    seconds = TRANSLATE_S_PER_OP * len(ops) + runs * per_trajectory
    memory = BASE_MEMORY_MB + MEMORY_BYTES_PER_AMPLITUDE * 2.0**width / 2**20
    return EmulationCost("trajectories", width, len(ops), runs, seconds, memory)


def refuse_too_large(cost: EmulationCost, *, max_s: float, memory_mb: int) -> None:
    """Raise ``qpu.too_large`` for an emulation over the node's time limit or memory.

    Raises:
        QubusError: ``qpu.too_large``, with the estimate in the message.
    """
    if cost.seconds > max_s:
        raise QubusError(
            f"emulation too large for this node: {cost.describe()}, over its limit of "
            f"{max_s:g} s (QUBUS_QPU_MAX_EMULATION_S)",
            code="qpu.too_large",
        )
    if cost.memory_mb > memory_mb:
        raise QubusError(
            f"emulation too large for this node: {cost.describe()}, over its memory of "
            f"{memory_mb} MB (QUBUS_SANDBOX_MEMORY_MB)",
            code="qpu.too_large",
        )


def _is_reset(op: cirq.Operation) -> bool:
    return isinstance(op.without_classical_controls().gate, cirq.ResetChannel)
