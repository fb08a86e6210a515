"""The physics of a sweep (``qubus.circuits.sweeps``): every point's ideal distribution for the
sandbox, and every point's noisy run on a QPU node, each in one worker call."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import cirq

from qubus.bus.messages import SandboxEvaluation
from qubus.circuits import circuit_from_json, circuit_to_json
from qubus.circuits.simulate import ideal_distribution
from qubus.circuits.sweeps import Resolver
from qubus.devices.compile import CompiledCircuit, compile_for_device, compile_template
from qubus.devices.emulation import emulate, emulated_runtime_s
from qubus.devices.profiles import Device
from qubus.devices.sandbox import (
    SandboxLimits,
    check_limits,
    check_norm,
    check_numerics,
    evaluate,
    most_likely,
)


def evaluate_sweep(
    task_id: str,
    circuit_json: str,
    points: Sequence[Mapping[str, float]],
    shots: int,
    limits: SandboxLimits,
) -> SandboxEvaluation:
    """The sandbox's evaluation of a sweep: the first point's as for a task
    (``qubus.devices.sandbox.evaluate``: limits, numerics, ΔRepro, ideal counts), and every
    point's ideal distribution, each checked numerically, in ``sweep_ideals``.

    Raises:
        SimulationError: as ``evaluate``, for any point.
    """
    resolver = Resolver(circuit_from_json(circuit_json))
    first = evaluate(task_id, circuit_to_json(resolver.at(points[0])), shots, limits)
    ideals = [first.ideal]
    norm_error = first.norm_error
    for point in points[1:]:
        point_circuit = resolver.at(point)
        check_limits(point_circuit, limits)
        distribution = ideal_distribution(point_circuit, max_qubits=limits.max_qubits)
        norm_error = max(norm_error, check_norm(check_numerics(distribution)))
        ideals.append(most_likely(distribution, limits.max_outcomes))
    return first.model_copy(update={"sweep_ideals": ideals, "norm_error": norm_error})


class PointCompiler:
    """Compiles a sweep's points for a device: the circuit laid out and routed once and each
    point bound (``qubus.devices.compile.Template``) where its parameters are all in one-qubit
    gates, each point resolved and compiled otherwise."""

    def __init__(self, circuit: cirq.AbstractCircuit, device: Device) -> None:
        template = compile_template(circuit, device)
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


def point_compiler(circuit_json: str, device: Device) -> PointCompiler:
    """The point compiler of the circuit on the device's calibration, made once per worker
    process (``COMPILERS_KEPT`` at most; the oldest is dropped)."""
    key = (circuit_json, device.id, device.revision)
    compiler = _compilers.get(key)
    if compiler is None:
        if len(_compilers) >= COMPILERS_KEPT:
            del _compilers[next(iter(_compilers))]
        compiler = _compilers[key] = PointCompiler(circuit_from_json(circuit_json), device)
    return compiler


def run_points(
    device: Device,
    circuit_json: str,
    points: Sequence[Mapping[str, float]],
    shots: int,
    seeds: Sequence[int],
    noiseless: bool,
) -> tuple[list[dict[str, int]], float]:
    """Run every point of a sweep on the device's emulator (in the QPU's worker process).

    Returns:
        Each point's counts, and the modelled run time of their shots (``shots`` for every
        point: the points share the compiled structure, so their durations are equal),
        without the device's per-job overhead, which the job of the whole sweep or chunk
        counts once.
    """
    compiler = point_compiler(circuit_json, device)
    compiled = [compiler(point) for point in points]
    counts = [
        emulate(each, device, shots, seed=seed, noiseless=noiseless)
        for each, seed in zip(compiled, seeds, strict=True)
    ]
    shots_s = emulated_runtime_s(compiled[0], device, shots * len(points))
    return counts, shots_s - emulated_runtime_s(compiled[0], device, 0)
