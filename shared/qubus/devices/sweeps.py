"""The physics of a sweep (``qubus.circuits.sweeps``): every point's ideal distribution for the
sandbox, and every point's noisy run on a QPU node, each in one worker call."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

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


def compiled_points(
    circuit: cirq.AbstractCircuit, points: Sequence[Mapping[str, float]], device: Device
) -> Iterator[CompiledCircuit]:
    """Every point's circuit compiled for the device: laid out and routed once and bound per
    point (``qubus.devices.compile.Template``) where the circuit's parameters are all in
    one-qubit gates, each resolved and compiled otherwise."""
    template = compile_template(circuit, device)
    resolver = Resolver(circuit) if template is None else None
    for point in points:
        if resolver is not None:
            yield compile_for_device(resolver.at(point), device)
        else:
            yield template.bind(point)


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
    circuit = circuit_from_json(circuit_json)
    compiled = list(compiled_points(circuit, points, device))
    counts = [
        emulate(each, device, shots, seed=seed, noiseless=noiseless)
        for each, seed in zip(compiled, seeds, strict=True)
    ]
    shots_s = emulated_runtime_s(compiled[0], device, shots * len(points))
    return counts, shots_s - emulated_runtime_s(compiled[0], device, 0)
