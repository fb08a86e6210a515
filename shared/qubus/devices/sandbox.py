"""The sandbox's evaluation of a circuit: its ideal distribution, checked three ways.

:func:`evaluate` runs in the sandbox service's worker process (``qubus.bus.workers.WorkerPool``),
which enforces the wall-clock limit (``sandbox.timeout``) and the address-space limit
(``RLIMIT_AS``: ``sandbox.memory`` when an allocation fails). Before anything is simulated,
:func:`check_limits` refuses a circuit that is too wide (``sandbox.too_large``), too deep
(``sandbox.too_deep``), or whose state vectors would not fit in the address space the worker
has left (``sandbox.memory``). The last check matters because qsim does not raise on a failed
allocation: it aborts the worker, which the pool only notices as a time-out.

Checks of the result:

* **Numerics**: every probability finite and non-negative, and the norm error ``|1 − Σp|``
  (of qsim's distribution, and of the second simulator's unnormalised state) at most
  ``NORM_TOLERANCE``; otherwise the task fails with ``sandbox.numerical``.
* **ΔRepro**: the circuit is simulated again with cirq's own state-vector kernel (its
  simulator, or on small circuits ``cirq.apply_unitaries`` directly), in double
  precision and with an independent path from state vector to bit strings (the qubit order
  of the simulation puts the measured qubits first), and ``repro`` is the Hellinger fidelity
  between the two distributions. The second simulation is skipped, and the event says why,
  above ``REPRO_MAX_QUBITS`` qubits and for circuits without an exact form
  (``qubus.circuits.simulate.exact_form``); qsim's distribution of those is itself a 20,000-shot
  estimate.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass

import cirq
import numpy as np

from qubus.bus.ids import seed_for
from qubus.bus.messages import SandboxEvaluation
from qubus.circuits import circuit_from_wire
from qubus.circuits.packing import packed_depth
from qubus.circuits.simulate import (
    PROBABILITY_FLOOR,
    exact_form,
    ideal_distribution,
    measurement_keys,
    sample_counts,
)
from qubus.devices.fidelity import hellinger_fidelity
from qubus.errors import SimulationError

REPRO_MAX_QUBITS = 20
"""Widest circuit simulated a second time for ΔRepro. cirq's simulator takes about 0.1 s for
the 20-qubit dev circuits (qsim about half that) and 64 MB at this width; each further qubit
doubles both."""

DIRECT_MAX_QUBITS = 10
"""Widest circuit whose ΔRepro state is computed with ``cirq.apply_unitaries`` rather than
``cirq.Simulator``: on a 4-qubit circuit 0.12 ms against 1.2 ms of CPU (the simulator's
per-moment bookkeeping), on the 18-qubit QFT 0.83 s against 0.13 s (the simulator keeps
unentangled qubits in separate states)."""

NORM_TOLERANCE = 1e-4
"""Largest accepted ``|1 − Σp|``; double-precision state vectors stay below 1e-10."""

QSIM_BYTES_PER_AMPLITUDE = 32
"""Peak memory of an ideal qsim simulation per amplitude: the complex64 state, its copy in
numpy, and the float32 probabilities and their marginal."""

CIRQ_BYTES_PER_AMPLITUDE = 64
"""Peak memory of cirq's complex128 simulation per amplitude: state, buffer, final copy and
the float64 probabilities."""

THREAD_RESERVE_BYTES = 256 * 1024 * 1024
"""Address space kept free for the simulators' threads (stacks and malloc arenas)."""


@dataclass(frozen=True)
class SandboxLimits:
    """What one evaluation may use (from ``qubus.bus.config.Settings``).

    Attributes:
        max_qubits: Widest circuit simulated (``sandbox.too_large`` above it).
        max_depth: Deepest circuit simulated, in moments of its operations re-packed
            (``sandbox.too_deep`` above it).
        max_outcomes: Most likely outcomes kept in the event.
    """

    max_qubits: int
    max_depth: int
    max_outcomes: int


@dataclass(frozen=True)
class Repro:
    """The second simulator's verdict on a distribution.

    Attributes:
        fidelity: Hellinger fidelity between the two distributions; None when skipped.
        simulator: ``"cirq"``, or ``"skipped: <reason>"``.
        norm_error: ``|1 − ‖ψ‖²|`` of the second simulator's state (0 when skipped).
    """

    fidelity: float | None
    simulator: str
    norm_error: float = 0.0


def evaluate(task_id: str, wire: str, shots: int, limits: SandboxLimits) -> SandboxEvaluation:
    """:func:`evaluate_circuit` of a circuit given in its wire form (the worker process's
    job; ``qubus.circuits.ir.circuit_to_wire``)."""
    return evaluate_circuit(task_id, circuit_from_wire(wire), shots, limits)


def evaluate_circuit(
    task_id: str, circuit: cirq.AbstractCircuit, shots: int, limits: SandboxLimits
) -> SandboxEvaluation:
    """Check limits, simulate ideally with qsim, check the numbers and reproduce with cirq.

    Args:
        task_id: The task; also seeds the sample of ``shots`` ideal counts.
        circuit: The circuit.
        shots: Shots of the ideal sample.
        limits: Width, depth and outcome limits.

    Returns:
        The evaluation, keeping the ``limits.max_outcomes`` most likely outcomes.

    Raises:
        SimulationError: ``sandbox.too_large``, ``sandbox.too_deep``, ``sandbox.memory`` (the
            estimate does not fit) or ``sandbox.numerical``.
    """
    started = time.perf_counter()
    check_limits(circuit, limits)
    distribution = ideal_distribution(circuit, max_qubits=limits.max_qubits)
    repro = reproduce(circuit, distribution)
    norm_error = check_norm(max(check_numerics(distribution), repro.norm_error))
    total = sum(distribution.values())
    kept = most_likely(distribution, limits.max_outcomes)
    return SandboxEvaluation(
        task_id=task_id,
        ideal=kept,
        ideal_counts=sample_counts(distribution, shots, seed=seed_for(task_id, "ideal")),
        truncated_mass=max(0.0, total - sum(kept.values())),
        norm_error=norm_error,
        simulator="qsim",
        elapsed_s=time.perf_counter() - started,
        repro=repro.fidelity if repro.fidelity is not None else 1.0 - norm_error,
        repro_simulator=repro.simulator,
    )


def check_norm(norm_error: float) -> float:
    """``norm_error``, if within ``NORM_TOLERANCE``.

    Raises:
        SimulationError: ``sandbox.numerical`` beyond it.
    """
    if norm_error > NORM_TOLERANCE:
        raise SimulationError(
            f"probabilities sum to 1 ± {norm_error:.2g}, beyond the tolerance {NORM_TOLERANCE:g}",
            code="sandbox.numerical",
        )
    return norm_error


def most_likely(distribution: Mapping[str, float], n: int) -> dict[str, float]:
    """The ``n`` most likely outcomes of ``distribution``."""
    return dict(sorted(distribution.items(), key=lambda kv: -kv[1])[:n])


def check_limits(circuit: cirq.AbstractCircuit, limits: SandboxLimits) -> None:
    """Refuse a circuit the sandbox must not simulate, before simulating anything.

    Raises:
        SimulationError: ``sandbox.too_large`` (qubits), ``sandbox.too_deep`` (moments of
            the re-packed operations) or ``sandbox.memory`` (the state vectors would not fit
            under this process's ``RLIMIT_AS``).
    """
    n_qubits = len(circuit.all_qubits())
    if n_qubits > limits.max_qubits:
        raise SimulationError(
            f"{n_qubits} qubits exceed the sandbox's limit of {limits.max_qubits}",
            code="sandbox.too_large",
        )
    depth = packed_depth(list(circuit.all_operations()))
    if depth > limits.max_depth:
        raise SimulationError(
            f"depth {depth} exceeds the sandbox's limit of {limits.max_depth}",
            code="sandbox.too_deep",
        )
    per_amplitude = QSIM_BYTES_PER_AMPLITUDE
    if n_qubits <= REPRO_MAX_QUBITS:
        per_amplitude = max(per_amplitude, CIRQ_BYTES_PER_AMPLITUDE)
    needed = per_amplitude * 2**n_qubits + THREAD_RESERVE_BYTES
    available = address_space_left()
    if needed > available:
        raise SimulationError(
            f"simulating {n_qubits} qubits needs about {needed >> 20} MB but only "
            f"{max(0, available) >> 20} MB of the sandbox's memory limit is left",
            code="sandbox.memory",
        )


def address_space_left() -> float:
    """Bytes this process may still map under ``RLIMIT_AS`` (``inf`` without a limit)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return math.inf
    with open("/proc/self/statm") as statm:  # first field: mapped pages (VmSize)
        mapped = int(statm.read().split()[0]) * resource.getpagesize()
    return soft - mapped


def check_numerics(distribution: Mapping[str, float]) -> float:
    """The norm error ``|1 − Σp|`` of a distribution whose every entry is a probability.

    Raises:
        SimulationError: ``sandbox.numerical`` for a NaN, infinite or negative entry.
    """
    bad = [(bits, p) for bits, p in distribution.items() if not (math.isfinite(p) and p >= 0)]
    if bad:
        bits, p = bad[0]
        raise SimulationError(
            f"the simulation gave probability {p!r} to outcome {bits!r} "
            f"({len(bad)} invalid entries)",
            code="sandbox.numerical",
        )
    return abs(1.0 - math.fsum(distribution.values()))


def reproduce(circuit: cirq.AbstractCircuit, distribution: Mapping[str, float]) -> Repro:
    """Simulate the circuit with cirq and compare with ``distribution`` (ΔRepro).

    Returns:
        The Hellinger fidelity between the two distributions, or the reason it was skipped.
    """
    exact = _exact_form(circuit)
    if exact is None:
        return Repro(None, "skipped: no exact distribution (mid-circuit reset or measurement)")
    n_qubits = len(exact.all_qubits())
    if n_qubits > REPRO_MAX_QUBITS:
        return Repro(None, f"skipped: {n_qubits} qubits > {REPRO_MAX_QUBITS}")
    second, norm_error = cirq_distribution(exact)
    return Repro(hellinger_fidelity(distribution, second), "cirq", norm_error)


def _exact_form(circuit: cirq.AbstractCircuit) -> cirq.AbstractCircuit | None:
    """``qubus.circuits.simulate.exact_form``, when every operation is unitary and no qubit is
    measured twice (what :func:`cirq_distribution` needs); None otherwise."""
    exact = exact_form(circuit)
    if exact is None:
        return None
    measured: list[cirq.Qid] = []
    for op in exact.all_operations():
        if isinstance(op.gate, cirq.MeasurementGate):
            measured.extend(op.qubits)
        elif not cirq.has_unitary(op):
            return None
    return exact if len(measured) == len(set(measured)) else None


def cirq_distribution(circuit: cirq.AbstractCircuit) -> tuple[dict[str, float], float]:
    """The exact distribution of a circuit in exact form (see :func:`_exact_form`), by cirq.

    The state vector is simulated in double precision with the measured qubits first, in
    bit-string order, so that marginalising is one sum over the trailing axis. Up to
    ``DIRECT_MAX_QUBITS`` the operations' unitary effects are applied directly
    (``cirq.apply_unitaries``, the kernel under cirq's state-vector simulator); wider circuits
    go through the simulator itself, whose splitting of unentangled qubits pays off there.

    Returns:
        Bit string to probability (outcomes below ``PROBABILITY_FLOOR`` dropped; not
        renormalised), and ``|1 − ‖ψ‖²|`` of the final state.
    """
    measured: dict[str, cirq.Operation] = {}
    gates: list[cirq.Operation] = []
    for op in circuit.all_operations():
        if isinstance(op.gate, cirq.MeasurementGate):
            measured[op.gate.key] = op
        else:
            gates.append(op)
    order: list[cirq.Qid] = []
    mask = 0
    for key, _width in measurement_keys(circuit):
        op = measured[key]
        order.extend(op.qubits)
        for flip in op.gate.full_invert_mask():
            mask = mask << 1 | int(flip)
    rest = sorted(circuit.all_qubits() - set(order))
    qubits = [*order, *rest]
    if len(qubits) <= DIRECT_MAX_QUBITS:
        state = cirq.apply_unitaries(gates, qubits, cirq.ApplyUnitaryArgs.default(len(qubits)))
    else:
        simulator = cirq.Simulator(dtype=np.complex128)
        state = simulator.simulate(cirq.Circuit(gates), qubit_order=qubits).final_state_vector
    probs = np.abs(state.reshape(-1)) ** 2
    norm_error = abs(1.0 - float(probs.sum()))
    if not order:
        return {"": float(probs.sum())}, norm_error
    marginal = probs.reshape(2 ** len(order), -1).sum(axis=1)
    width = len(order)
    return {
        format(int(i) ^ mask, f"0{width}b"): float(marginal[i])
        for i in np.flatnonzero(marginal >= PROBABILITY_FLOOR)
    }, norm_error
