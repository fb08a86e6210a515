"""An exact density-matrix simulation of small noisy registers in numpy.

The emulator (``qubus.devices.emulation``) simulates registers of up to
``DENSITY_MATRIX_QUBITS`` qubits with terminal measurements once as a density matrix and samples
the shots from its diagonal. For the few-qubit circuits most tasks are, building a
``cirq.Circuit`` of noise moments and running ``cirq.DensityMatrixSimulator`` cost several times
the arithmetic itself (operation and moment validation, the ``act_on`` protocol per channel).
``DensityMatrix`` applies the same operations directly to a ``(2,)*2n`` complex128 tensor:

* a unitary operation (any gate with ``cirq.unitary``) as ``U ρ U†`` on its qubits' axes, any
  other channel (a reset) as ``Σ K ρ K†`` over its Kraus operators;
* amplitude then phase damping in closed form on the qubit's 2×2 blocks: ``ρ00 += a·ρ11``,
  ``ρ11 *= 1 − a``, the coherences ``*= √((1 − a)(1 − p))``;
* ``cirq.depolarize(p, n)`` in closed form, ``ρ → (1 − λ)·ρ + λ·Tr_S(ρ) ⊗ I/d`` with
  ``λ = p·d²/(d² − 1)``: one partial trace instead of ``4^n`` Kraus products.

These are the same channels, in double precision, as cirq's Kraus operators
(``tests/unit/test_densitymatrix.py`` compares both on random states and on noisy compiled
circuits); the diagonal agrees with cirq's simulator to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cirq
import numpy as np


class DensityMatrix:
    """The density matrix of ``n`` qubits, starting in ``|0…0⟩``; qubit ``i`` is row axis ``i``
    and column axis ``n + i`` (qubit 0 the most significant bit of an index, as cirq's)."""

    def __init__(self, n: int) -> None:
        self.n = n
        rho = np.zeros((2**n, 2**n), dtype=np.complex128)
        rho[0, 0] = 1.0
        self.tensor = rho.reshape((2,) * (2 * n))

    def apply(self, op: cirq.Operation, index: dict[cirq.Qid, int]) -> None:
        """Apply one operation (a noise channel of the emulator, or a unitary gate).

        Args:
            op: The operation; measurements are not operations here (terminal, sampled).
            index: Each qubit's position in the register.

        Raises:
            TypeError: the operation is neither unitary nor a channel.
        """
        axes = [index[q] for q in op.qubits]
        gate = op.gate
        if isinstance(gate, cirq.DepolarizingChannel):
            self.depolarize(gate.p, axes)
        elif isinstance(gate, cirq.AmplitudeDampingChannel):
            self.damp(axes[0], amplitude=gate.gamma, phase=0.0)
        elif isinstance(gate, cirq.PhaseDampingChannel):
            self.damp(axes[0], amplitude=0.0, phase=gate.gamma)
        elif (matrix := cirq.unitary(op, None)) is not None:
            self.tensor = self._sandwich(matrix, axes)
        elif cirq.has_kraus(op):  # e.g. a reset
            self.tensor = sum(self._sandwich(k, axes) for k in cirq.kraus(op))
        else:
            raise TypeError(f"{op!r} is neither unitary nor a channel")

    def _sandwich(self, matrix: np.ndarray, axes: Sequence[int]) -> np.ndarray:
        """``K ρ K†`` with ``K`` acting on the qubits ``axes`` (in its own qubit order).

        Two ``einsum`` contractions with the result's axes in place: no transposed copies, and
        no BLAS call (whose threads only contend on a busy machine at these sizes).
        """
        k, width = len(axes), 2 * self.n
        u = matrix.reshape((2,) * (2 * k))
        labels = list(range(width))
        fresh = list(range(width, width + k))
        rows = list(labels)
        for j, a in enumerate(axes):
            rows[a] = fresh[j]
        half = np.einsum(u, [*fresh, *axes], self.tensor, labels, rows)
        columns = [self.n + a for a in axes]
        both = list(labels)
        for j, c in enumerate(columns):
            both[c] = fresh[j]
        return np.einsum(u.conj(), [*fresh, *columns], half, labels, both)

    def damp(self, axis: int, *, amplitude: float, phase: float) -> None:
        """Amplitude damping by ``amplitude`` then phase damping by ``phase`` on one qubit."""
        tensor = self.tensor

        def block(row: int, column: int) -> tuple[slice | int, ...]:
            index: list[slice | int] = [slice(None)] * tensor.ndim
            index[axis], index[self.n + axis] = row, column
            return tuple(index)

        if amplitude:
            tensor[block(0, 0)] += amplitude * tensor[block(1, 1)]
            tensor[block(1, 1)] *= 1 - amplitude
        coherence = math.sqrt((1 - amplitude) * (1 - phase))
        tensor[block(0, 1)] *= coherence
        tensor[block(1, 0)] *= coherence

    def depolarize(self, p: float, axes: Sequence[int]) -> None:
        """``cirq.depolarize(p, len(axes))`` on the qubits ``axes``."""
        d = 2 ** len(axes)
        lam = p * d * d / (d * d - 1)
        all_axes = list(range(2 * self.n))
        traced = list(all_axes)
        for a in axes:
            traced[self.n + a] = a
        kept = [a for a in all_axes if a not in axes and a - self.n not in axes]
        reduced = np.einsum(self.tensor, traced, kept)
        operands: list = [reduced, kept]
        for a in axes:
            operands += [np.eye(2) / 2, [a, self.n + a]]
        mixed = np.einsum(*operands, all_axes)
        self.tensor = (1 - lam) * self.tensor + lam * mixed

    def probabilities(self) -> np.ndarray:
        """The diagonal: the probability of each basis state (negative rounding clipped)."""
        size = 2**self.n
        return np.clip(np.real(np.diagonal(self.tensor.reshape(size, size))), 0, None)
