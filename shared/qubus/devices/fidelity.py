"""Fidelity arithmetic on distributions and counts: plain Python and numpy, no simulator."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from qubus.bus.messages import NoiseBudget


def hellinger_fidelity(counts: Mapping[str, float], dist: Mapping[str, float]) -> float:
    """Hellinger fidelity ``(Σ √(p·q))²`` of counts (normalised) against a distribution, at
    most 1 (rounding can take the sum of two equal distributions a hair above)."""
    total = sum(counts.values())
    if total <= 0:
        return 0.0
    overlap = sum(math.sqrt(n / total * dist.get(bits, 0.0)) for bits, n in counts.items())
    return min(1.0, overlap**2)


def fidelity_with_ideal(fidelity: float, ideal: Mapping[str, float], measured_bits: int) -> float:
    """Hellinger fidelity expected if a fraction ``1 − fidelity`` of shots were uniform noise.

    ``H ≈ (Σ_i √(p_i·(F·p_i + (1−F)/2^m)))²`` with ``F = fidelity`` and ``m = measured_bits``.
    An empty ``ideal`` returns ``fidelity`` unchanged.
    """
    if not ideal:
        return fidelity
    uniform = (1 - fidelity) * 2.0**-measured_bits
    overlap = sum(math.sqrt(p * (fidelity * p + uniform)) for p in ideal.values())
    return min(1.0, overlap**2)


_POISSON_TERMS = 80
"""Terms of the exact series for ``E[√X]``, ``X ~ Poisson(λ)``, used below
``_POISSON_SERIES_MAX`` (where P(X ≥ 80) < 2e-18)."""
_POISSON_SERIES_MAX = 25.0
_LOG_FACTORIALS = np.array([math.lgamma(k + 1) for k in range(_POISSON_TERMS)])


def expected_sqrt_poisson(lam: np.ndarray) -> np.ndarray:
    """``E[√X]`` for ``X ~ Poisson(λ)``, elementwise.

    Exact series for small ``λ``; above ``_POISSON_SERIES_MAX`` the asymptotic expansion
    ``√λ·(1 − 1/(8λ) − 7/(128λ²))``, whose error there is below 3e-5.
    """
    lam = np.asarray(lam, dtype=float)
    if lam.size and lam.min() >= _POISSON_SERIES_MAX:  # the usual case: every count large
        return np.sqrt(lam) * (1 - 1 / (8 * lam) - 7 / (128 * lam**2))
    out = np.empty_like(lam)
    small = lam < _POISSON_SERIES_MAX
    k = np.arange(_POISSON_TERMS)
    log_pmf = k * np.log(np.maximum(lam[small, None], 1e-300)) - lam[small, None] - _LOG_FACTORIALS
    out[small] = np.exp(log_pmf) @ np.sqrt(k)
    big = lam[~small]
    out[~small] = np.sqrt(big) * (1 - 1 / (8 * big) - 7 / (128 * big**2))
    return out


def hellinger_of_model(p: np.ndarray, q: np.ndarray, shots: int | None = None) -> float:
    """Hellinger fidelity of a modelled distribution ``q`` against ``p``, both on ``p``'s outcomes.

    Args:
        p: Ideal probabilities.
        q: Modelled probabilities of the same outcomes (mass elsewhere does not count).
        shots: If given, the expected Hellinger fidelity of ``shots`` samples of ``q``:
            ``(Σ √p_i · E[√n_i] / √shots)²`` with ``n_i ~ Poisson(shots·q_i)``, which leaves
            out only the small variance of the sum.

    Returns:
        A value in [0, 1].
    """
    if shots is None:
        overlap = float(np.sqrt(p * q).sum())
    else:
        overlap = float(np.sqrt(p) @ expected_sqrt_poisson(shots * q)) / math.sqrt(shots)
    return min(1.0, overlap**2)


DENSE_BITS = 20
"""Largest number of measured bits for which a budget's scrambles act on the dense ``2^m``
distribution; wider outputs use one global depolarizing mix of their total."""


def budget_fidelity(
    budget: NoiseBudget, ideal: Mapping[str, float], *, shots: int | None = None
) -> float:
    """Predicted Hellinger fidelity: the ideal distribution through a node's noise budget.

    Each scramble replaces its bits by uniform noise with its chance (one bit: a flip),
    keeping the other bits' joint distribution, and each flip flips its bits together with
    its chance; then every bit passes its read-out matrix.

    Args:
        budget: From ``qubus.devices.prediction.noise_budget`` for this circuit and node.
        ideal: The ideal distribution over the circuit's outcome strings.
        shots: If given, the expected Hellinger fidelity of that many samples.

    Raises:
        ValueError: The outcome strings and the budget disagree on the number of bits.
    """
    if not ideal:
        return 1.0
    outcomes = list(ideal)
    width = len(outcomes[0])
    if width != len(budget.confusion):
        raise ValueError(
            f"ideal bit strings have {width} bits, the circuit measures {len(budget.confusion)}"
        )
    if width == 0:
        return 1.0
    p = np.fromiter(ideal.values(), dtype=float, count=len(outcomes))
    bits = np.frombuffer("".join(outcomes).encode(), dtype=np.uint8).reshape(-1, width) - 48
    confusion = np.array(budget.confusion, dtype=float).reshape(width, 2, 2)
    if width <= DENSE_BITS:
        dense = np.zeros((2,) * width)
        dense[tuple(bits.T)] = p
        for axes, chance in budget.scrambles:
            # Bit k is axis k of the array (the leftmost bit is axis 0).
            if len(axes) == 1:
                mixed = chance * np.flip(dense, axis=axes[0])
            else:
                mixed = chance * dense.mean(axis=tuple(axes), keepdims=True)
            dense *= 1 - chance
            dense += mixed
        for axes, chance in budget.flips:
            mixed = chance * np.flip(dense, axis=tuple(axes))
            dense *= 1 - chance
            dense += mixed
        q = _confused_dense(dense, confusion)[tuple(bits.T)]
    else:
        # A flip moves mass off a sparse distribution much as a scramble does.
        survival = math.prod(1 - chance for _, chance in (*budget.scrambles, *budget.flips))
        # R(u) is a product distribution: P(bit k reads b) = mean over prepared values.
        uniform = np.prod(confusion.mean(axis=2)[np.arange(width), bits], axis=1)
        q = survival * _confused(p, bits, confusion) + (1 - survival) * uniform
    return hellinger_of_model(p, q, shots)


def _confused(p: np.ndarray, bits: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    """``(R p)`` at the outcomes of ``p`` (rows of ``bits``), exactly.

    Pairwise over outcomes when there are few; otherwise on the dense ``2^m`` array, one
    2×2 matrix per bit axis.
    """
    n, width = bits.shape
    if n * n <= 2**width:
        columns = np.arange(width)
        # factor[i, j, k] = M_k[bits_i[k], bits_j[k]]
        factor = confusion[columns, bits[:, None, :], bits[None, :, :]]
        return np.prod(factor, axis=2) @ p
    dense = np.zeros((2,) * width)
    dense[tuple(bits.T)] = p
    return _confused_dense(dense, confusion)[tuple(bits.T)]


def _confused_dense(dense: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    """``R`` applied to a dense ``(2,) * m`` distribution, one 2×2 matrix per bit axis."""
    out = dense
    for k in range(dense.ndim):
        # Axis k in the middle of a (before, 2, after) view; the matrix broadcasts over it.
        out = np.matmul(confusion[k], out.reshape(2**k, 2, -1))
    return out.reshape(dense.shape)
