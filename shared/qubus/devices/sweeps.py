"""The physics of a sweep (``qubus.circuits.sweeps``): every point's ideal distribution for the
sandbox, and every point's noisy run on a QPU node, each in one worker call."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import cirq
import numpy as np

from qubus.bus.messages import SandboxEvaluation
from qubus.circuits import circuit_from_wire
from qubus.circuits.batched import apply
from qubus.circuits.simulate import TerminalReadout, exact_form, ideal_distribution
from qubus.circuits.sweeps import FlatPoints, Resolver, Unitaries
from qubus.devices.compile import CompiledCircuit, compile_for_device, compile_template
from qubus.devices.emulation import emulate, emulated_runtime_s
from qubus.devices.profiles import Device
from qubus.devices.sandbox import (
    SandboxLimits,
    check_norm,
    check_numerics,
    evaluate_circuit,
    most_likely,
)
from qubus.devices.sweepemulation import SweepEmulator
from qubus.errors import SimulationError


def evaluate_sweep(
    task_id: str,
    wire: str,
    points: Sequence[Mapping[str, float]],
    shots: int,
    limits: SandboxLimits,
) -> SandboxEvaluation:
    """The sandbox's evaluation of a sweep's ``points``: the first point's as for a task
    (``qubus.devices.sandbox.evaluate_circuit``: limits, numerics, ΔRepro, ideal counts), and every
    point's ideal distribution (:func:`sweep_ideals`), in ``sweep_ideals``.

    The points share the circuit's width and depth, so the first point's limits are every
    point's.

    Raises:
        SimulationError: as ``evaluate_circuit``, for any point.
    """
    circuit = circuit_from_wire(wire)
    first = evaluate_circuit(task_id, Resolver(circuit).at(points[0]), shots, limits)
    rest, norm_error = _checked_ideals(circuit, points[1:], limits)
    return first.model_copy(
        update={
            "sweep_ideals": [first.ideal, *rest],
            "norm_error": max(first.norm_error, norm_error),
        }
    )


def sweep_ideals(
    wire: str, points: Sequence[Mapping[str, float]], limits: SandboxLimits
) -> tuple[list[dict[str, float]], float]:
    """Each point's ideal distribution (at most ``limits.max_outcomes`` of its most likely
    outcomes), checked numerically, and the largest norm error among them: simulated
    together (:func:`sweep_distributions`) where the circuit allows, else each resolved
    circuit alone.

    Raises:
        SimulationError: a point's distribution fails the numerical checks.
    """
    return _checked_ideals(circuit_from_wire(wire), points, limits)


def _checked_ideals(
    circuit: cirq.Circuit, points: Sequence[Mapping[str, float]], limits: SandboxLimits
) -> tuple[list[dict[str, float]], float]:
    """:func:`sweep_ideals` of a decoded circuit."""
    distributions = sweep_distributions(circuit, points)
    if distributions is None:
        resolver = Resolver(circuit)
        distributions = [
            ideal_distribution(resolver.at(point), max_qubits=limits.max_qubits) for point in points
        ]
    ideals = []
    norm_error = 0.0
    for distribution in distributions:
        norm_error = max(norm_error, check_norm(check_numerics(distribution)))
        ideals.append(most_likely(distribution, limits.max_outcomes))
    return ideals, norm_error


SAMPLE_POINTS = 16
"""Points of a sweep whose ideal distributions come with the sandbox's evaluation, from which
fusion predicts each node's fidelity (the mean over them; for
``benchmarks.sweep.qaoa_circuit``'s 200 points, 0.953 against 0.947 over all on
``ibm_nairobi``); every point's follow in ``SweepIdeals``."""


def sample_points(points: int) -> list[int]:
    """The indexes of a sweep's sampled points (``SAMPLE_POINTS``): the first, the last and
    others evenly spaced between them; every point of a smaller sweep."""
    if points <= SAMPLE_POINTS:
        return list(range(points))
    step = (points - 1) / (SAMPLE_POINTS - 1)
    return [round(i * step) for i in range(SAMPLE_POINTS)]


BATCHED_MAX_QUBITS = 10
"""Widest circuit whose points :func:`sweep_distributions` simulates together; wider ones are
simulated point by point with qsim, whose kernels pay off there."""

BATCH_AMPLITUDES = 2**18
"""Amplitudes (points × 2^qubits) :func:`sweep_distributions` evolves at once: 4 MB."""


def sweep_distributions(
    circuit: cirq.AbstractCircuit, points: Sequence[Mapping[str, float]]
) -> list[dict[str, float]] | None:
    """Each point's ideal distribution, as ``qubus.circuits.simulate.ideal_distribution`` of
    the circuit resolved there gives it (to rounding: double precision here, single in qsim),
    with the points' state vectors evolved together (``qubus.circuits.batched``).

    A fixed gate's matrix is computed once for every point, a parameterised gate's once per
    distinct value of its parameters.

    Returns:
        The distributions in the order of ``points``; None for a circuit without an exact
        form of unitaries and terminal measurements, with a gate that is not unitary, or
        wider than ``BATCHED_MAX_QUBITS`` (simulate each point alone then).

    Raises:
        SimulationError: ``sandbox.keys`` when a qubit is measured under two keys;
            ``sandbox.numerical`` when a point's gate parameters are not finite (a value
            overflows: ``rz(2·gamma)`` at ``gamma`` = 1e308), as qsim's distribution of such a
            point fails the numerical checks.
    """
    if not points:
        return []
    exact = exact_form(circuit)
    if exact is None:
        return None
    qubits = sorted(exact.all_qubits())
    if len(qubits) > BATCHED_MAX_QUBITS:
        return None
    readout = TerminalReadout.of(exact, qubits)
    if readout is None:
        return [{"": 1.0} for _ in points]
    flat = FlatPoints(exact)
    values = flat.at(points)
    for point, point_values in zip(points, values, strict=True):
        if not all(math.isfinite(v) for v in point_values.values()):
            raise SimulationError(
                f"the point {dict(point)} gives its gates parameters that are not finite "
                f"({point_values})",
                code="sandbox.numerical",
            )
    ops = [op for op in flat.circuit.all_operations() if not cirq.is_measurement(op)]
    if not all(cirq.has_unitary(cirq.resolve_parameters(op, values[0])) for op in ops):
        return None
    index = {q: i for i, q in enumerate(qubits)}
    axes = [[index[q] for q in op.qubits] for op in ops]
    matrices = [Unitaries(op) for op in ops]
    step = max(1, BATCH_AMPLITUDES >> len(qubits))
    distributions: list[dict[str, float]] = []
    for first in range(0, len(points), step):
        batch = values[first : first + step]
        state = np.zeros((len(batch), 2 ** len(qubits)), dtype=np.complex128)
        state[:, 0] = 1.0
        state = state.reshape((len(batch),) + (2,) * len(qubits))
        for matrix, on in zip(matrices, axes, strict=True):
            state = apply(state, matrix.at(batch), on)
        distributions += readout.distributions(np.abs(state.reshape(len(batch), -1)) ** 2)
    return distributions


class PointCompiler:
    """Compiles a sweep's points for a device: the circuit laid out and routed once and each
    point bound (``qubus.devices.compile.Template``) where its parameters are all in one-qubit
    gates, each point resolved and compiled otherwise. With a template, the points are also
    emulated together (``emulator``, ``qubus.devices.sweepemulation``)."""

    def __init__(self, circuit: cirq.AbstractCircuit, device: Device) -> None:
        template = compile_template(circuit, device)
        self.emulator = None if template is None else SweepEmulator(template, device)
        if template is not None:
            self._compile: Callable[[Mapping[str, float]], CompiledCircuit] = template.bind
        else:
            resolver = Resolver(circuit)
            self._compile = lambda point: compile_for_device(resolver.at(point), device)

    def __call__(self, point: Mapping[str, float]) -> CompiledCircuit:
        return self._compile(point)


COMPILERS_KEPT = 4
"""Point compilers a worker process keeps (by circuit and device calibration): a chunk's
batches of points reuse its layout and routing."""
_compilers: dict[tuple[str, str, str], PointCompiler] = {}


def point_compiler(wire: str, device: Device) -> PointCompiler:
    """The point compiler of the circuit on the device's calibration, made once per worker
    process (``COMPILERS_KEPT`` at most; the oldest is dropped)."""
    key = (wire, device.id, device.revision)
    compiler = _compilers.get(key)
    if compiler is None:
        if len(_compilers) >= COMPILERS_KEPT:
            del _compilers[next(iter(_compilers))]
        compiler = _compilers[key] = PointCompiler(circuit_from_wire(wire), device)
    return compiler


def run_points(
    device: Device,
    wire: str,
    points: Sequence[Mapping[str, float]],
    shots: int,
    seeds: Sequence[int],
    noiseless: bool,
) -> tuple[list[dict[str, int]], float]:
    """Run every point of a sweep on the device's emulator (in the QPU's worker process):
    together where they can be (``SweepEmulator``), each compiled and emulated alone
    otherwise (noiseless runs, parameters outside one-qubit gates, registers run as
    trajectories).

    Returns:
        Each point's counts, and the modelled run time of their shots (``shots`` of each
        point at its own duration: a point's angles can drop a gate or change its pulses),
        without the device's per-job overhead, which the job of the whole sweep or chunk
        counts once.
    """
    compiler = point_compiler(wire, device)
    together = [None] * len(points)
    if compiler.emulator is not None and not noiseless:
        together = compiler.emulator.run(points, shots, seeds)
    counts: list[dict[str, int]] = []
    compiled: list[CompiledCircuit] = []
    for point, seed, ran in zip(points, seeds, together, strict=True):
        if ran is None:
            alone = compiler(point)
            ran = emulate(alone, device, shots, seed=seed, noiseless=noiseless), alone
        counts.append(ran[0])
        compiled.append(ran[1])
    overhead_s = emulated_runtime_s(compiled[0], device, 0)
    return counts, sum(emulated_runtime_s(c, device, shots) - overhead_s for c in compiled)
