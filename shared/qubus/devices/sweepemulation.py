"""A sweep's points emulated together on a QPU node: every point's noisy density matrix in
one batch (``qubus.circuits.batched``).

Compiling and emulating each point alone (``Template.bind`` then ``emulate``) repeats for
every point what depends only on the circuit's structure: the schedule, the durations, each
gate's noise and the walk through them, and the Python around each small matrix product. The
points of a sweep whose parameters are all in one-qubit gates share their routing
(``qubus.devices.compile.Template``); what a point's angles change is each run of one-qubit
gates that ``fill`` merges into one ``PhasedXZGate``: its matrix, whether it is dropped (an
identity) and how many pulses it costs. Points that agree on the last two (their *signature*)
compile to the same moments, durations and noise, so:

* each run's merged gate is computed once per distinct value of its own parameters (a grid
  repeats them), from the flattened circuit's values (``qubus.circuits.sweeps.FlatPoints``);
* per signature, one point is compiled as usual and its noisy evolution written down once
  (:class:`_Program`): ``qubus.devices.emulation.density_steps``, the walk ``emulate`` runs
  (relaxation, gates and depolarizing fused into one superoperator per two-qubit gate,
  one-qubit work held back and folded into the qubit's next two-qubit gate), with each run's
  number standing for its gate;
* the points of one signature then evolve together, each product one matrix product over
  their stack of density matrices (products on the same qubits multiplied first), and each
  point's shots are drawn from its diagonal as ``emulate`` draws them (``DensityReadout``).

The distributions are the per-point emulator's to rounding (``tests/unit/test_sweeps.py``);
points whose compiled register is not simulated as one density matrix are left to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cirq
import numpy as np

from qubus.circuits.batched import apply
from qubus.circuits.sweeps import FlatPoints, Unitaries
from qubus.devices.compile import CompiledCircuit, Run, Template, merged_gate, pulses
from qubus.devices.densitymatrix import fuse, superoperator
from qubus.devices.emulation import (
    DensityReadout,
    DensityStep,
    density_steps,
    uses_density_matrix,
)
from qubus.devices.profiles import Device

STACK_AMPLITUDES = 2**20
"""Density-matrix entries (points × 4^qubits) evolved at once: 16 MB, a few copies of which
a product makes; 256 points of 6 qubits, 16 of 8."""

DROPPED = -1
"""A run's pulses in a signature when its gates multiply to the identity (no gate)."""


@dataclass(frozen=True)
class _Merged:
    """One run's merged gate at some values of its parameters: its pulses (``DROPPED`` when
    there is no gate) and its superoperator."""

    pulses: int
    superoperator: np.ndarray | None


@dataclass(frozen=True)
class _Program:
    """The noisy evolution shared by the points of one signature.

    Attributes:
        compiled: One of its points compiled as usual (moments, durations: the others').
        qubits: The register, ``compiled.physical_qubits`` in order.
        steps: The products, in order; a run's number stands for its gate.
        readout: How shots are read off the diagonal.
    """

    compiled: CompiledCircuit
    qubits: list[cirq.Qid]
    steps: tuple[DensityStep[int], ...]
    readout: DensityReadout

    def probabilities(self, supers: Sequence[np.ndarray | None]) -> np.ndarray:
        """Each point's diagonal, ``(points, 2^qubits)``, ``supers[r]`` the ``(points, 4, 4)``
        superoperators of run ``r``'s gate (None for runs dropped here)."""
        points = next((len(s) for s in supers if s is not None), 1)
        n = len(self.qubits)
        index = {q: i for i, q in enumerate(self.qubits)}
        rho = np.zeros((points, 4**n), dtype=np.complex128)
        rho[:, 0] = 1.0
        rho = rho.reshape((points,) + (2,) * (2 * n))

        def fused(*terms: np.ndarray | int) -> np.ndarray:
            return fuse(*(supers[t] if isinstance(t, int) else t for t in terms))

        # A step's product waits in ``pending`` until a step on other but overlapping qubits
        # comes: steps on the same qubits (a SWAP's three CNOTs, CNOT-RZ-CNOT) multiply
        # into one, and the waiting products, on disjoint qubits, commute.
        pending: dict[tuple[int, ...], np.ndarray] = {}
        for step in self.steps:
            rows = [index[q] for q in step.qubits]
            step_axes = (*rows, *(n + r for r in rows))
            touched = set(step_axes)
            axes = next((a for a in pending if set(a) == touched), step_axes)
            matrix = _reordered(step.superoperator(fused), step_axes, axes)
            for other in [a for a in pending if a != axes and touched.intersection(a)]:
                rho = apply(rho, pending.pop(other), other)
            earlier = pending.get(axes)
            pending[axes] = matrix if earlier is None else matrix @ earlier
        for axes, matrix in pending.items():
            rho = apply(rho, matrix, axes)
        size = 2**n
        diagonal = np.diagonal(rho.reshape(points, size, size), axis1=1, axis2=2)
        return np.clip(diagonal.real, 0, None)


def _reordered(matrix: np.ndarray, axes: tuple[int, ...], order: tuple[int, ...]) -> np.ndarray:
    """A matrix (or a stack) on the tensor axes ``axes`` as the same matrix on them in the
    order ``order``."""
    if axes == order:
        return matrix
    m = len(axes)
    perm = [axes.index(a) for a in order]
    lead = matrix.shape[:-2]
    tensor = matrix.reshape(*lead, *(2,) * (2 * m))
    moved = [*range(len(lead)), *(len(lead) + p for p in perm), *(len(lead) + m + p for p in perm)]
    return tensor.transpose(moved).reshape(matrix.shape)


class SweepEmulator:
    """A template's points emulated together with a device's noise (module docstring)."""

    def __init__(self, template: Template, device: Device) -> None:
        self._template = template
        self._device = device
        slot = cirq.LineQubit(0)
        self._flat = FlatPoints(cirq.Circuit(cirq.Moment(g.on(slot)) for g in template.gates))
        self._slots = [Unitaries(moment.operations[0]) for moment in self._flat.circuit]
        self._runs: list[tuple[cirq.Qid, Run]] = [
            (qubit, run) for qubit, runs in template.routing.runs().items() for run in runs
        ]
        self._names = [
            sorted({n for f in run if isinstance(f, int) for n in self._slots[f].names})
            for _, run in self._runs
        ]
        self._merged: list[dict[tuple[float, ...], _Merged | None]] = [{} for _ in self._runs]
        self._programs: dict[tuple[int, ...], _Program | None] = {}

    def run(
        self, points: Sequence[Mapping[str, float]], shots: int, seeds: Sequence[int]
    ) -> list[tuple[dict[str, int], CompiledCircuit] | None]:
        """Each point's counts of ``shots`` shots (seeded as ``emulate`` seeds them) and a
        circuit compiled to its structure; None for a point to be compiled and emulated alone
        (a gate without a unitary, or a register not simulated as one density matrix)."""
        return [
            None
            if ran is None
            else (ran[1].readout.counts(ran[0], shots, seed=seed), ran[1].compiled)
            for ran, seed in zip(self.probabilities(points), seeds, strict=True)
        ]

    def probabilities(
        self, points: Sequence[Mapping[str, float]]
    ) -> list[tuple[np.ndarray, _Program] | None]:
        """Each point's diagonal of its noisy density matrix (as ``emulate`` computes it for
        the point compiled alone), with the program of its signature; None as in :meth:`run`."""
        groups: dict[tuple[int, ...], list[int]] = {}
        merged_at: list[list[_Merged | None]] = []
        for k, values in enumerate(self._flat.at(points)):
            merged = [self._merge(r, values) for r in range(len(self._runs))]
            merged_at.append(merged)
            if all(m is not None for m in merged):
                groups.setdefault(tuple(m.pulses for m in merged), []).append(k)  # type: ignore[union-attr]
        results: list[tuple[np.ndarray, _Program] | None] = [None] * len(points)
        for signature, members in groups.items():
            program = self._program(signature, points[members[0]])
            if program is None:
                continue
            step = max(1, STACK_AMPLITUDES >> (2 * len(program.qubits)))
            for first in range(0, len(members), step):
                stacked = members[first : first + step]
                supers = [
                    np.stack([merged_at[k][r].superoperator for k in stacked])  # type: ignore[union-attr]
                    if pulses_r != DROPPED
                    else None
                    for r, pulses_r in enumerate(signature)
                ]
                for k, probs in zip(stacked, program.probabilities(supers), strict=True):
                    results[k] = probs, program
        return results

    def _merge(self, r: int, values: Mapping[str, float]) -> _Merged | None:
        """Run ``r``'s merged gate at the point with these flat values (once per distinct
        value of its parameters); None when a gate of it has no unitary there."""
        key = tuple(values[name] for name in self._names[r])
        if key in self._merged[r]:
            return self._merged[r][key]
        qubit, run = self._runs[r]
        matrix = None
        for factor in run:
            if isinstance(factor, int):
                factor = self._slots[factor].of(values)
                if factor is None:
                    self._merged[r][key] = None
                    return None
            matrix = factor if matrix is None else factor @ matrix
        gate = merged_gate(matrix)
        merged = (
            _Merged(DROPPED, None)
            if gate is None
            # U ⊗ U* does not see the global phase that the gate drops.
            else _Merged(pulses(gate.on(qubit), self._device), np.kron(matrix, matrix.conj()))
        )
        self._merged[r][key] = merged
        return merged

    def _program(self, signature: tuple[int, ...], point: Mapping[str, float]) -> _Program | None:
        """The program of a signature, written once from ``point`` compiled as usual; None
        when its register is not simulated as one density matrix."""
        if signature not in self._programs:
            compiled = self._template.bind(point)
            self._programs[signature] = (
                _write_program(compiled, self._device, self._kept(signature))
                if uses_density_matrix(compiled)
                else None
            )
        return self._programs[signature]

    def _kept(self, signature: tuple[int, ...]) -> dict[cirq.Qid, list[int]]:
        """Each qubit's runs that have a gate, in order (``fill`` schedules each qubit's
        operations in their order)."""
        kept: dict[cirq.Qid, list[int]] = {}
        for r, ((qubit, _run), pulses_r) in enumerate(zip(self._runs, signature, strict=True)):
            if pulses_r != DROPPED:
                kept.setdefault(qubit, []).append(r)
        return kept


def _write_program(
    compiled: CompiledCircuit, device: Device, kept: dict[cirq.Qid, list[int]]
) -> _Program:
    """The program of ``compiled``: ``qubus.devices.emulation.density_steps`` with its
    ``PhasedXZGate`` s standing for the runs ``kept`` gives, in order."""
    qubits = [cirq.LineQubit(p) for p in compiled.physical_qubits]
    runs = {q: iter(rs) for q, rs in kept.items()}

    def one_qubit(op: cirq.Operation) -> int | np.ndarray:
        if isinstance(op.gate, cirq.PhasedXZGate):
            return next(runs[op.qubits[0]])
        return superoperator(op)

    return _Program(
        compiled,
        qubits,
        tuple(density_steps(compiled, device, one_qubit)),
        DensityReadout.of(compiled, device, qubits),
    )
