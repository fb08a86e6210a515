"""An exact density-matrix simulation of small noisy registers in numpy.

The emulator (``qubus.devices.emulation``) simulates registers of up to
``DENSITY_MATRIX_QUBITS`` qubits with terminal measurements once as a density matrix and samples
the shots from its diagonal. For the few-qubit circuits most tasks are, building a
``cirq.Circuit`` of noise moments and running ``cirq.DensityMatrixSimulator`` cost several times
the arithmetic itself (operation and moment validation, the ``act_on`` protocol per channel).
``DensityMatrix`` applies the same channels directly to a ``(2,)*2n`` complex128 tensor, each as
its superoperator on its qubits (:func:`superoperator`), a ``4^k × 4^k`` matrix acting on the
``k`` qubits' row and column axes with one BLAS product (``numpy.tensordot``):

* a unitary operation (any gate with ``cirq.unitary``) ``U ⊗ U*``, any other channel (a reset)
  ``Σ K ⊗ K*`` over its Kraus operators;
* amplitude then phase damping in closed form (:func:`damping`): ``ρ00 += a·ρ11``,
  ``ρ11 *= 1 − a``, the coherences ``*= √((1 − a)(1 − p))``;
* ``cirq.depolarize(p, n)`` in closed form (:func:`depolarizing`),
  ``ρ → (1 − λ)·ρ + λ·Tr_S(ρ) ⊗ I/d`` with ``λ = p·d²/(d² − 1)``.

Superoperators on the same qubits compose by matrix product, so the emulator applies each
compiled gate once, fused with the relaxation before it and the depolarizing after it
(:func:`fuse`): one product per gate instead of one per channel.

These are the same channels, in double precision, as cirq's Kraus operators
(``tests/unit/test_densitymatrix.py`` compares both on random states and on noisy compiled
circuits); the diagonal agrees with cirq's simulator to rounding.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import cirq
import numpy as np


@functools.lru_cache(maxsize=4096)
def damping(amplitude: float, phase: float) -> np.ndarray:
    """Superoperator of ``cirq.amplitude_damp(amplitude)`` then ``cirq.phase_damp(phase)``."""
    coherence = math.sqrt((1 - amplitude) * (1 - phase))
    return _frozen(
        np.array(
            [
                [1.0, 0.0, 0.0, amplitude],
                [0.0, coherence, 0.0, 0.0],
                [0.0, 0.0, coherence, 0.0],
                [0.0, 0.0, 0.0, 1 - amplitude],
            ]
        )
    )


@functools.lru_cache(maxsize=4096)
def depolarizing(p: float, n_qubits: int) -> np.ndarray:
    """Superoperator of ``cirq.depolarize(p, n_qubits)``: ``(1 − λ)·I + λ/d·|I⟩⟨I|``."""
    d = 2**n_qubits
    lam = p * d * d / (d * d - 1)
    identity = np.eye(d).ravel()
    return _frozen((1 - lam) * np.eye(d * d) + (lam / d) * np.outer(identity, identity))


def _frozen(matrix: np.ndarray) -> np.ndarray:
    """The matrix, read-only (it is cached and shared)."""
    matrix.setflags(write=False)
    return matrix


def superoperator(op: cirq.Operation) -> np.ndarray:
    """The ``4^k × 4^k`` superoperator of one operation on its ``k`` qubits, in their order.

    Rows and columns index ``(rows of the qubits…, columns of the qubits…)`` of the density
    matrix, row-major, so that two superoperators compose by matrix product. A gate's is
    computed once per process (the same few entanglers recur in every circuit).

    Raises:
        TypeError: the operation is neither unitary nor a channel.
    """
    if isinstance(op, cirq.GateOperation):
        return _gate_superoperator(op.gate)
    return _superoperator(op)


@functools.lru_cache(maxsize=1024)
def _gate_superoperator(gate: cirq.Gate) -> np.ndarray:
    return _frozen(_superoperator(gate))


def _superoperator(value: cirq.Operation | cirq.Gate) -> np.ndarray:
    if isinstance(value, cirq.Operation):
        gate, n = value.gate, len(value.qubits)
    else:
        gate, n = value, cirq.num_qubits(value)
    if isinstance(gate, cirq.DepolarizingChannel):
        return depolarizing(gate.p, n)
    if isinstance(gate, cirq.AmplitudeDampingChannel):
        return damping(gate.gamma, 0.0)
    if isinstance(gate, cirq.PhaseDampingChannel):
        return damping(0.0, gate.gamma)
    if (matrix := cirq.unitary(value, None)) is not None:
        return _sandwich(matrix, matrix)
    if cirq.has_kraus(value):  # e.g. a reset
        return sum(_sandwich(k, k) for k in cirq.kraus(value))
    raise TypeError(f"{value!r} is neither unitary nor a channel")


def _sandwich(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``kron(left, right*)``: the superoperator of ``ρ → left·ρ·right†``."""
    d = len(left)
    return (left[:, None, :, None] * right.conj()[None, :, None, :]).reshape(d * d, d * d)


def on_each(per_qubit: Sequence[np.ndarray]) -> np.ndarray:
    """One superoperator on ``k`` qubits from a one-qubit superoperator for each, in order.

    Each may be a stack of them (``(…, 4, 4)``, a sweep's points); the result is then the
    stack of each point's, the stacks broadcast together."""
    k = len(per_qubit)
    if k == 1:
        return per_qubit[0]
    # (…, row, column, row in, column in)
    tensors = [s.reshape(*s.shape[:-2], 2, 2, 2, 2) for s in per_qubit]
    operands: list = []
    for j, tensor in enumerate(tensors):
        operands += [tensor, [..., j, k + j, 2 * k + j, 3 * k + j]]
    stack = np.broadcast_shapes(*(s.shape[:-2] for s in per_qubit))
    return np.einsum(*operands, [..., *range(4 * k)]).reshape(*stack, 4**k, 4**k)


def fuse(*superoperators: np.ndarray | None) -> np.ndarray:
    """The superoperators on the same qubits applied in the order given (None skipped)."""
    present = [s for s in superoperators if s is not None]
    fused = present[0]
    for later in present[1:]:
        fused = later @ fused
    return fused


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
        self.evolve(superoperator(op), [index[q] for q in op.qubits])

    def evolve(self, matrix: np.ndarray, axes: Sequence[int]) -> None:
        """Apply a superoperator (as :func:`superoperator` orders it) on the qubits ``axes``:
        their row and column axes brought to the front, one matrix product, put back."""
        order, back = _orders(self.n, tuple(axes))
        shape = self.tensor.shape
        front = self.tensor.transpose(order).reshape(len(matrix), -1)
        self.tensor = (matrix @ front).reshape(shape).transpose(back)

    def probabilities(self) -> np.ndarray:
        """The diagonal: the probability of each basis state (negative rounding clipped)."""
        size = 2**self.n
        return np.clip(np.real(np.diagonal(self.tensor.reshape(size, size))), 0, None)


@functools.lru_cache(maxsize=4096)
def _orders(n: int, axes: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The axis order that brings qubits ``axes``' rows then columns to the front of an
    ``n``-qubit density tensor, and the order that puts them back."""
    touched = [*axes, *(n + a for a in axes)]
    order = (*touched, *(a for a in range(2 * n) if a not in touched))
    return order, tuple(int(i) for i in np.argsort(order))
