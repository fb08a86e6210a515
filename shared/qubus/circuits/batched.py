"""Many small simulations at once: a batch of tensors of qubits, one per point of a sweep.

A sweep's points share their circuit's structure and differ only in some gates' angles, so
every point's state vector (``qubus.devices.sweeps.sweep_distributions``) or noisy density
matrix (``qubus.devices.sweepemulation``) can be evolved together: a ``(points, 2, …, 2)``
tensor, each gate applied to all points with one matrix product, its matrix shared by every
point or one per point. On the small registers sweeps run, the Python around each product, not the
arithmetic, was most of a point's cost when each point was simulated alone.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np


def apply(tensor: np.ndarray, matrix: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """Apply a matrix to the axes ``axes`` of every point's tensor.

    Args:
        tensor: ``(points, 2, …, 2)``; axis ``i + 1`` is the tensor's axis ``i``.
        matrix: ``(d, d)`` shared by every point or ``(points, d, d)`` one per point, with
            ``d = 2 ** len(axes)`` and ``axes[0]`` its most significant bit.
        axes: The tensor axes the matrix acts on, in its order.

    Returns:
        The evolved tensor, of the same shape (a view on a new array).
    """
    order, back = _orders(tensor.ndim - 1, tuple(axes))
    front = tensor.transpose(order).reshape(tensor.shape[0], matrix.shape[-1], -1)
    return (matrix @ front).reshape(tensor.shape).transpose(back)


@functools.lru_cache(maxsize=4096)
def _orders(n: int, axes: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The order that brings ``axes`` of a batch of ``n``-axis tensors right after the batch
    axis, and the order that puts them back."""
    moved = [1 + a for a in axes]
    order = (0, *moved, *(a for a in range(1, n + 1) if a not in moved))
    return order, tuple(int(i) for i in np.argsort(order))
