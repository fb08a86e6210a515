"""Fidelity arithmetic on distributions and counts: plain Python and numpy, no simulator."""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Mapping, Sequence

import numpy as np

from qubus.bus.messages import NodePrediction, NoiseBudget


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
_SERIES_K = np.arange(1, _POISSON_TERMS, dtype=float)  # k = 0 adds √0 = 0
_SERIES_SQRT_K = np.sqrt(_SERIES_K)
_SERIES_LOG_FACTORIAL = np.array([math.lgamma(k + 1) for k in _SERIES_K])


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
    # Every term of every value at once, P(k) = exp(k·ln λ − λ − ln k!): a handful of numpy
    # calls where a loop over the terms was two per term (220 → 26 µs for four values).
    near = lam[small]
    with np.errstate(divide="ignore"):  # ln 0: each term of λ = 0 is exp(−∞) = 0
        log_pmf = np.multiply.outer(np.log(near), _SERIES_K) - near[:, None] - _SERIES_LOG_FACTORIAL
    out[small] = np.exp(log_pmf) @ _SERIES_SQRT_K
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
    return min(1.0, float(_overlap_terms(p, q, shots).sum()) ** 2)


def _overlap_terms(p: np.ndarray, q: np.ndarray, shots: int | None) -> np.ndarray:
    """Each outcome's term of :func:`hellinger_of_model`'s overlap (whose square it is)."""
    if shots is None:
        return np.sqrt(p * q)
    return np.sqrt(p) * expected_sqrt_poisson(shots * q) / math.sqrt(shots)


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
    if width <= DENSE_BITS:
        (fidelity,) = _dense_fidelities(budget, [ideal], width, shots)
        return fidelity
    p, bits = _outcomes(ideal, width)
    confusion = _confusion(budget, width)
    # A flip moves mass off a sparse distribution much as a scramble does.
    survival = math.prod(1 - chance for _, chance in (*budget.scrambles, *budget.flips))
    # R(u) is a product distribution: P(bit k reads b) = mean over prepared values.
    uniform = np.prod(confusion.mean(axis=2)[np.arange(width), bits], axis=1)
    q = survival * _confused(p, bits, confusion) + (1 - survival) * uniform
    return hellinger_of_model(p, q, shots)


def budget_fidelities(
    budget: NoiseBudget, ideals: Sequence[Mapping[str, float]], *, shots: int | None = None
) -> list[float]:
    """:func:`budget_fidelity` of each ideal distribution (a sweep's points). Distributions of
    one width up to ``DENSE_BITS`` go through the budget together, as one stack of dense
    arrays: for 200 six-bit points, one call instead of 200.

    Raises:
        ValueError: as :func:`budget_fidelity`.
    """
    width = _common_width(ideals)
    if 0 < width <= DENSE_BITS and width == len(budget.confusion):
        return _dense_fidelities(budget, ideals, width, shots)
    return [budget_fidelity(budget, ideal, shots=shots) for ideal in ideals]


def mean_predicted_fidelity(
    prediction: NodePrediction, ideals: Sequence[Mapping[str, float]], shots: int
) -> float:
    """The Hellinger fidelity expected of ``shots`` shots on the prediction's node: its noise
    budget applied to each ideal distribution (a sweep's points: :func:`budget_fidelities`),
    the mean over them; the prediction's own (the ESP) where it carries no budget."""
    if prediction.budget is None:
        return prediction.predicted_fidelity
    return statistics.fmean(budget_fidelities(prediction.budget, ideals, shots=shots))


def mean_predicted_fidelities(
    predictions: Sequence[NodePrediction], ideals: Sequence[Mapping[str, float]], shots: int
) -> list[float]:
    """:func:`mean_predicted_fidelity` of each prediction (one task's on every node). The
    budgets kept as matrices (``CHANNEL_BITS``) go through together: the distributions are
    read once, and one product takes them through every node's matrix."""
    width = _common_width(ideals)
    kept = [
        k
        for k, prediction in enumerate(predictions)
        if prediction.budget is not None
        and 0 < width <= CHANNEL_BITS
        and width == len(prediction.budget.confusion)
    ]
    fidelities: dict[int, float] = {}
    if kept:
        dense, ps, indices = _dense(ideals, width)
        channels = np.stack([_channel(*_channel_key(predictions[k].budget)) for k in kept])
        confused = dense @ channels  # (node, point, outcome)
        q = np.concatenate([confused[:, point, index] for point, index in enumerate(indices)], 1)
        for k, row in zip(kept, _point_fidelities(ps, q, shots), strict=True):
            fidelities[k] = statistics.fmean(row)
    return [
        fidelities[k] if k in fidelities else mean_predicted_fidelity(prediction, ideals, shots)
        for k, prediction in enumerate(predictions)
    ]


def _common_width(ideals: Sequence[Mapping[str, float]]) -> int:
    """The bits of every outcome of ``ideals``; −1 if they differ or one is empty."""
    widths = {len(next(iter(ideal))) if ideal else -1 for ideal in ideals}
    return widths.pop() if len(widths) == 1 else -1


def _outcomes(ideal: Mapping[str, float], width: int) -> tuple[np.ndarray, np.ndarray]:
    """The distribution's probabilities and its outcomes' bits, one row each."""
    p = np.fromiter(ideal.values(), dtype=float, count=len(ideal))
    bits = np.frombuffer("".join(ideal).encode(), dtype=np.uint8).reshape(-1, width) - 48
    return p, bits


def _confusion(budget: NoiseBudget, width: int) -> np.ndarray:
    """Each bit's read-out matrix, ``(width, 2, 2)``."""
    return np.array(budget.confusion, dtype=float).reshape(width, 2, 2)


def _dense_fidelities(
    budget: NoiseBudget, ideals: Sequence[Mapping[str, float]], width: int, shots: int | None
) -> list[float]:
    """:func:`budget_fidelity` of distributions of ``width`` bits (at most ``DENSE_BITS``),
    each a dense ``(2,) * width`` array in one stack: scrambles, flips and read-out act on
    every point at once, or up to ``CHANNEL_BITS`` as one matrix (``_channel``)."""
    dense, ps, indices = _dense(ideals, width)
    if width <= CHANNEL_BITS:
        confused = dense @ _channel(*_channel_key(budget))
    else:
        confused = _through(dense, budget.scrambles, budget.flips, _confusion(budget, width))
    q = np.concatenate([confused[point, index] for point, index in enumerate(indices)])
    return _point_fidelities(ps, q, shots).tolist()


def _dense(
    ideals: Sequence[Mapping[str, float]], width: int
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """The distributions as a stack of dense arrays ``(points, 2^width)``, with each one's
    probabilities and the indices of its outcomes in its row."""
    ps, indices = [], []
    dense = np.zeros((len(ideals), 2**width))
    place = 1 << np.arange(width - 1, -1, -1)
    for k, ideal in enumerate(ideals):
        p, bits = _outcomes(ideal, width)
        index = bits.astype(np.int64) @ place  # the leftmost bit is the most significant
        dense[k, index] = p
        ps.append(p)
        indices.append(index)
    return dense, ps, indices


def _point_fidelities(ps: list[np.ndarray], q: np.ndarray, shots: int | None) -> np.ndarray:
    """Each point's fidelity (last axis) from its probabilities ``ps`` and the modelled ones
    ``q`` at the same outcomes, all points' outcomes in a row (``(..., outcomes)``)."""
    terms = _overlap_terms(np.concatenate(ps), q, shots)
    starts = np.cumsum([0] + [len(p) for p in ps[:-1]])
    return np.minimum(1.0, np.add.reduceat(terms, starts, axis=-1) ** 2)


CHANNEL_BITS = 6
"""Widest outcomes for which a budget is made into one ``2^m × 2^m`` matrix (``_channel``,
32 KiB at 6 bits) and kept: applying the budget's scrambles, flips and read-out one by one to
a distribution of a few bits is some twenty numpy calls on a few numbers each, and fusion
applies each node's budget to every task's distribution. Circuits of one structure, such as
one circuit at other angles, mostly have the same budgets."""


@functools.lru_cache(maxsize=256)
def _channel(
    scrambles: tuple[tuple[tuple[int, ...], float], ...],
    flips: tuple[tuple[tuple[int, ...], float], ...],
    confusion: tuple[tuple[float, ...], ...],
) -> np.ndarray:
    """The budget as a matrix: row ``j`` is what it makes of outcome ``j`` alone, so that a
    stack of dense distributions times it is the stack through the budget."""
    width = len(confusion)
    matrix = np.array(confusion, dtype=float).reshape(width, 2, 2)
    channel = _through(np.eye(2**width), scrambles, flips, matrix)
    channel.setflags(write=False)
    return channel


def _channel_key(budget: NoiseBudget) -> tuple:
    """``budget``'s arguments to ``_channel``: its scrambles, flips and read-out as tuples."""
    return (
        tuple((tuple(axes), chance) for axes, chance in budget.scrambles),
        tuple((tuple(axes), chance) for axes, chance in budget.flips),
        tuple(map(tuple, budget.confusion)),
    )


def _through(
    dense: np.ndarray,
    scrambles: Sequence[tuple[Sequence[int], float]],
    flips: Sequence[tuple[Sequence[int], float]],
    confusion: np.ndarray,
) -> np.ndarray:
    """A stack of dense distributions, ``(points, 2^m)``, through scrambles, flips and
    read-out (``confusion``, ``(m, 2, 2)``)."""
    width = len(confusion)
    dense = dense.reshape((len(dense),) + (2,) * width)
    for axes, chance in scrambles:
        # Bit k is axis k + 1 of the stack (the leftmost bit is axis 1).
        if len(axes) == 1:
            mixed = chance * np.flip(dense, axis=axes[0] + 1)
        else:
            mixed = chance * dense.mean(axis=tuple(a + 1 for a in axes), keepdims=True)
        dense = dense * (1 - chance) + mixed
    for axes, chance in flips:
        mixed = chance * np.flip(dense, axis=tuple(a + 1 for a in axes))
        dense = dense * (1 - chance) + mixed
    return _confused_dense(dense, confusion).reshape(len(dense), -1)


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
    dense = np.zeros((1,) + (2,) * width)
    dense[(0, *bits.T)] = p
    return _confused_dense(dense, confusion)[(0, *bits.T)]


def _confused_dense(dense: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    """``R`` applied to a stack of dense ``(2,) * m`` distributions, ``(points, 2, …, 2)``,
    one 2×2 matrix per bit axis."""
    out = dense
    for k in range(dense.ndim - 1):
        # Axis k in the middle of a (before, 2, after) view; the matrix broadcasts over it.
        out = np.matmul(confusion[k], out.reshape(len(dense) * 2**k, 2, -1))
    return out.reshape(dense.shape)
