"""Bayesian optimisation: the Gaussian process, expected improvement, and weight tuning."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qubus.errors import QubusError
from qubus.scheduling.scoring import DEFAULT_WEIGHTS, TERM_WEIGHTS, V_TERMS, Weights
from qubus.scheduling.tuning import (
    BOUNDS,
    GaussianProcess,
    expected_improvement,
    maximise,
    tune_weights,
)


def quadratic(x: np.ndarray) -> float:
    """Maximum 0 at (0.3, −0.2)."""
    return -((x[0] - 0.3) ** 2 + (x[1] + 0.2) ** 2)


def test_gp_interpolates_and_is_unsure_far_from_data() -> None:
    x = np.linspace(0.0, 0.5, 8)[:, None]
    y = np.sin(6 * x[:, 0])
    model = GaussianProcess(seed=0).fit(x, y)
    mean, std = model.predict(np.array([[0.25], [0.95]]))
    assert mean[0] == pytest.approx(math.sin(1.5), abs=0.02)
    assert std[0] < 0.05 < std[1]


def test_expected_improvement_rewards_a_higher_mean_and_more_uncertainty() -> None:
    ei = expected_improvement(np.array([0.0, 0.5, 0.0, -5.0]), np.array([0.1, 0.1, 1.0, 1e-9]), 0.0)
    assert ei[1] > ei[0] and ei[2] > ei[0]
    assert ei[3] == pytest.approx(0.0, abs=1e-12)
    # Far above the best with no uncertainty, EI is the gain (less ξ).
    certain = expected_improvement(np.array([1.0]), np.array([1e-9]), 0.0, xi=0.01)
    assert certain[0] == pytest.approx(0.99)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bayesian_optimisation_beats_random_search_on_the_same_budget(seed: int) -> None:
    bounds = [(-1.0, 1.0), (-1.0, 1.0)]
    history = maximise(quadratic, bounds, budget=15, seed=seed)
    assert len(history) == 15
    best = max(history, key=lambda e: e.value)
    rng = np.random.default_rng(seed)
    random_best = max(quadratic(rng.uniform(-1.0, 1.0, 2)) for _ in range(15))
    assert best.value > random_best
    assert best.value > -0.005  # within 0.07 of the optimum
    assert all(-1.0 <= v <= 1.0 for e in history for v in e.x)


def test_the_same_seed_gives_the_same_search() -> None:
    bounds = [(-1.0, 1.0), (-1.0, 1.0)]
    first = maximise(quadratic, bounds, budget=6, seed=4)
    assert maximise(quadratic, bounds, budget=6, seed=4) == first


def _objective(weights: Weights) -> float:
    """Best at w_qnc = 0.6 (of V's weights) and β = 3."""
    return -((weights.w_qnc - 0.6) ** 2) - ((weights.beta - 3.0) / 10) ** 2


def test_tuning_improves_on_the_start_and_leaves_pinned_weights_alone() -> None:
    best, steps = tune_weights(
        _objective, DEFAULT_WEIGHTS, pinned={"w_meta", "kappa"}, budget=14, seed=0
    )
    # The start is evaluated first.
    assert steps[0].weights.model_dump() == pytest.approx(DEFAULT_WEIGHTS.model_dump())
    assert _objective(best) > _objective(DEFAULT_WEIGHTS)
    assert _objective(best) == max(step.value for step in steps)
    for step in steps:
        assert step.weights.w_meta == DEFAULT_WEIGHTS.w_meta
        assert step.weights.kappa == DEFAULT_WEIGHTS.kappa
        assert step.weights.time_ref_s == DEFAULT_WEIGHTS.time_ref_s
        v_sum = math.fsum(getattr(step.weights, TERM_WEIGHTS[t]) for t in V_TERMS)
        assert v_sum == pytest.approx(1.0)  # the V weights keep the start's total
        for name, (low, high) in BOUNDS.items():
            if name not in {TERM_WEIGHTS[t] for t in V_TERMS}:
                assert low <= getattr(step.weights, name) <= high


def test_tuning_with_every_weight_pinned_is_refused() -> None:
    with pytest.raises(QubusError) as caught:
        tune_weights(_objective, DEFAULT_WEIGHTS, pinned=set(BOUNDS), budget=5, seed=0)
    assert caught.value.code == "tuning.nothing_free"
