"""Bayesian optimisation of the score weights: a Gaussian process with expected improvement.

``maximise`` looks for the maximum of an expensive, possibly noisy function ``f(x)`` on a box
with a fixed budget of evaluations: a Latin hypercube of starting points (after any given
ones), then, one evaluation at a time, the point of largest **expected improvement** over
the best value so far under a Gaussian-process model of ``f`` fitted to every evaluation.

The model (``GaussianProcess``): inputs scaled to the unit box, outputs standardised, a zero
mean, a Matérn 5/2 kernel with one length scale per input (ARD), a signal variance and a noise
variance; the hyperparameters maximise the log marginal likelihood (L-BFGS-B from several
starts, within bounds that keep the kernel well-conditioned). numpy and scipy only.

``tune_weights`` applies it to the hyper-score: the V weights, ``w_time``, β, γ and κ within
``BOUNDS``, pinned weights held at their start values, the objective (higher is better)
supplied by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from qubus.errors import QubusError
from qubus.scheduling.scoring import TERM_WEIGHTS, V_TERMS, Weights

JITTER = 1e-9
LOG_LENGTH = (math.log(0.02), math.log(5.0))
LOG_SIGNAL = (math.log(0.05), math.log(20.0))
LOG_NOISE = (math.log(1e-6), math.log(1.0))


def matern52(a: np.ndarray, b: np.ndarray, lengths: np.ndarray, signal: float) -> np.ndarray:
    """The Matérn 5/2 covariance between the rows of ``a`` and of ``b``."""
    diff = (a[:, None, :] - b[None, :, :]) / lengths
    r = np.sqrt(np.sum(diff * diff, axis=-1))
    s = math.sqrt(5.0) * r
    return signal * (1.0 + s + s * s / 3.0) * np.exp(-s)


class GaussianProcess:
    """A Gaussian-process regression on the unit box (see the module docstring).

    Args:
        restarts: Starts of the hyperparameter search (the first is a fixed middle point).
        seed: Seed of the other starts.
    """

    def __init__(self, *, restarts: int = 3, seed: int = 0) -> None:
        self._restarts = restarts
        self._rng = np.random.default_rng(seed)
        self._x = np.empty((0, 0))
        self._alpha = np.empty(0)
        self._chol = np.empty((0, 0))
        self._mean = 0.0
        self._scale = 1.0
        self.lengths = np.empty(0)
        self.signal = 1.0
        self.noise = 1e-4

    def _nll(self, theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
        """Negative log marginal likelihood of hyperparameters ``theta`` (logs of the length
        scales, the signal and the noise variance)."""
        d = x.shape[1]
        lengths, signal, noise = np.exp(theta[:d]), math.exp(theta[d]), math.exp(theta[d + 1])
        k = matern52(x, x, lengths, signal) + (noise + JITTER) * np.eye(len(x))
        try:
            chol = np.linalg.cholesky(k)
        except np.linalg.LinAlgError:
            return 1e10
        alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, y))
        return float(
            0.5 * y @ alpha + np.log(np.diag(chol)).sum() + 0.5 * len(x) * math.log(2 * math.pi)
        )

    def fit(self, x: np.ndarray, y: np.ndarray) -> GaussianProcess:
        """Fit the hyperparameters and condition on ``(x, y)`` (``x`` in the unit box)."""
        d = x.shape[1]
        self._mean = float(y.mean())
        self._scale = float(y.std()) or 1.0
        z = (y - self._mean) / self._scale
        bounds = [LOG_LENGTH] * d + [LOG_SIGNAL, LOG_NOISE]
        starts = [np.array([math.log(0.3)] * d + [0.0, math.log(1e-3)])]
        starts += [
            np.array([self._rng.uniform(lo, hi) for lo, hi in bounds])
            for _ in range(self._restarts - 1)
        ]
        best = min(
            (
                optimize.minimize(self._nll, s, args=(x, z), method="L-BFGS-B", bounds=bounds)
                for s in starts
            ),
            key=lambda result: result.fun,
        )
        theta = best.x
        self.lengths, self.signal, self.noise = (
            np.exp(theta[:d]),
            math.exp(theta[d]),
            math.exp(theta[d + 1]),
        )
        k = matern52(x, x, self.lengths, self.signal) + (self.noise + JITTER) * np.eye(len(x))
        self._chol = np.linalg.cholesky(k)
        self._alpha = np.linalg.solve(self._chol.T, np.linalg.solve(self._chol, z))
        self._x = x
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of ``f`` at the rows of ``x``."""
        cross = matern52(x, self._x, self.lengths, self.signal)
        mean = cross @ self._alpha
        v = np.linalg.solve(self._chol, cross.T)
        var = np.maximum(self.signal - np.sum(v * v, axis=0), 1e-12)
        return self._mean + self._scale * mean, self._scale * np.sqrt(var)


def expected_improvement(
    mean: np.ndarray, std: np.ndarray, best: float, *, xi: float = 0.01
) -> np.ndarray:
    """``E[max(f − best − ξ, 0)]`` for ``f ~ N(mean, std²)``: the expected improvement (for
    maximisation) with exploration margin ``ξ``."""
    gain = mean - best - xi
    z = gain / std
    return gain * stats.norm.cdf(z) + std * stats.norm.pdf(z)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of the objective: the point (in the caller's units) and its value."""

    x: tuple[float, ...]
    value: float


def maximise(
    f: Callable[[np.ndarray], float],
    bounds: Sequence[tuple[float, float]],
    *,
    budget: int,
    seed: int,
    initial: Sequence[Sequence[float]] = (),
    candidates: int = 2000,
) -> list[Evaluation]:
    """Bayesian optimisation of ``f`` on the box ``bounds`` (module docstring).

    Args:
        f: The objective; higher is better.
        bounds: ``(low, high)`` of each coordinate.
        budget: Evaluations of ``f`` in all, the initial ones included.
        seed: Seed of every random choice (same seed, same evaluations for a deterministic f).
        initial: Points to evaluate first, as given (clipped to the box; e.g. the current
            setting).
        candidates: Random points scored by expected improvement per step (the best few are
            then refined by L-BFGS-B).

    Returns:
        Every evaluation, in order.
    """
    low = np.array([lo for lo, _ in bounds], dtype=float)
    span = np.array([hi - lo for lo, hi in bounds], dtype=float)
    d = len(bounds)
    rng = np.random.default_rng(seed)
    n_start = min(budget, max(len(initial), d + 1, 3))
    unit = [np.clip((np.asarray(p, dtype=float) - low) / span, 0.0, 1.0) for p in initial]
    lhs = stats.qmc.LatinHypercube(d=d, seed=rng).random(max(n_start - len(unit), 0))
    unit += list(lhs)
    history: list[Evaluation] = []
    points: list[np.ndarray] = []
    model = GaussianProcess(seed=seed)
    for step in range(budget):
        if step < len(unit):
            u = unit[step]
        else:
            model.fit(np.array(points), np.array([e.value for e in history]))
            u = _next_point(model, max(e.value for e in history), d, rng, candidates)
        x = low + span * u if step >= len(initial) else np.clip(initial[step], low, low + span)
        history.append(Evaluation(tuple(float(v) for v in x), float(f(x))))
        points.append(u)
    return history


def _next_point(
    model: GaussianProcess, best: float, d: int, rng: np.random.Generator, candidates: int
) -> np.ndarray:
    """The point of the unit box with the largest expected improvement under ``model``."""

    def negative_ei(u: np.ndarray) -> float:
        mean, std = model.predict(u[None, :])
        return -float(expected_improvement(mean, std, best)[0])

    pool = rng.random((candidates, d))
    mean, std = model.predict(pool)
    ei = expected_improvement(mean, std, best)
    refined = [
        optimize.minimize(negative_ei, pool[i], method="L-BFGS-B", bounds=[(0.0, 1.0)] * d)
        for i in np.argsort(ei)[-3:]
    ]
    winner = min(refined, key=lambda result: result.fun)
    return np.clip(winner.x, 0.0, 1.0)


BOUNDS: dict[str, tuple[float, float]] = {
    **{TERM_WEIGHTS[term]: (0.01, 1.0) for term in V_TERMS},
    "w_time": (0.0, 2.0),
    "beta": (0.5, 10.0),
    "gamma": (-3.0, 3.0),
    "kappa": (0.5, 4.0),
}
"""The weights tuning may change and their ranges. ``time_ref_s`` is a unit, not tuned. The V
weights' floor keeps their sum positive before they are rescaled (``tune_weights``)."""


@dataclass(frozen=True)
class TuningStep:
    """One evaluated setting of the weights and its objective value."""

    weights: Weights
    value: float


def tune_weights(
    objective: Callable[[Weights], float],
    start: Weights,
    pinned: Collection[str],
    budget: int,
    seed: int,
) -> tuple[Weights, list[TuningStep]]:
    """The best weights found for ``objective`` by Bayesian optimisation.

    The free weights are those of ``BOUNDS`` not in ``pinned``. After each proposal the free V
    weights are rescaled so that the V weights sum to what they sum to in ``start``: the
    scale of V is γ's business (β·ln(cV) + γ = β·ln V + γ + β·ln c). ``start`` (clipped to
    ``BOUNDS``) is evaluated first, so the result is never worse than it on a deterministic
    objective.

    Args:
        objective: Higher is better (e.g. a replay of completed tasks through the scheduling
            simulator).
        start: The current weights.
        pinned: Weights never changed.
        budget: Evaluations of ``objective``, ``start``'s included.
        seed: Seed of the optimiser.

    Returns:
        The best weights evaluated and every evaluation in order.

    Raises:
        QubusError: ``tuning.nothing_free`` when every tunable weight is pinned;
            ``tuning.budget`` for a budget below 2.
    """
    free = [name for name in BOUNDS if name not in pinned]
    if not free:
        raise QubusError("every tunable weight is pinned", code="tuning.nothing_free")
    if budget < 2:
        raise QubusError(f"a budget of {budget} evaluations is too small", code="tuning.budget")
    base = start.model_dump()
    v_names = [TERM_WEIGHTS[term] for term in V_TERMS]
    v_total = math.fsum(base[name] for name in v_names)

    def weights_at(x: np.ndarray) -> Weights:
        values = {**base, **dict(zip(free, (float(v) for v in x), strict=True))}
        free_v = [name for name in v_names if name in free]
        free_sum = math.fsum(values[name] for name in free_v)
        room = v_total - math.fsum(values[name] for name in v_names if name not in free)
        if room > 0:
            values.update({name: values[name] * room / free_sum for name in free_v})
        return Weights.model_validate(values)

    evaluations = maximise(
        lambda x: objective(weights_at(x)),
        [BOUNDS[name] for name in free],
        budget=budget,
        seed=seed,
        initial=[[base[name] for name in free]],
    )
    steps = [TuningStep(weights_at(np.array(e.x)), e.value) for e in evaluations]
    return max(steps, key=lambda step: step.value).weights, steps
