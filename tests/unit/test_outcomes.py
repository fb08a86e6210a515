"""Bayesian calibration of predicted against measured fidelity (``qubus.scheduling.outcomes``)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from qubus.bus.messages import Features
from qubus.scheduling.outcomes import (
    FORGET,
    META_SCALE,
    PRIOR_ALPHA,
    PRIOR_BETA,
    PRIOR_MEAN,
    PRIOR_PRECISION,
    RECENT,
    CalibrationState,
    calibrate,
    circuit_class,
    observe,
    posterior,
)


def features(qubits: int, two_qubit_gates: int) -> Features:
    return Features(
        qubits=qubits,
        clbits=qubits,
        depth=1,
        gate_counts={},
        two_qubit_gates=two_qubit_gates,
        multi_qubit_gates=0,
        measured_qubits=[],
        classical_control=False,
        interaction_graph=[],
        fingerprint="f",
    )


TASK_IDS = itertools.count()


def observed(pairs: list[tuple[float, float]], state: CalibrationState | None = None):
    for i, (x, y) in enumerate(pairs):
        state = observe(
            state,
            node="n",
            cls="c",
            task_id=f"t{next(TASK_IDS)}",
            predicted=x,
            measured=y,
            now=float(i),
        )
        assert state is not None
    return state


@pytest.mark.parametrize(
    ("qubits", "two_qubit", "expected"),
    [
        (2, 1, "narrow.sparse"),
        (4, 4, "narrow.mixed"),
        (5, 30, "small.dense"),
        (10, 9, "medium.sparse"),
        (16, 16, "medium.mixed"),
        (17, 0, "wide.sparse"),
    ],
)
def test_circuit_classes_bucket_width_and_two_qubit_density(qubits, two_qubit, expected) -> None:
    assert circuit_class(features(qubits, two_qubit)) == expected


def test_without_outcomes_the_prediction_stands_with_low_confidence() -> None:
    calibrated = calibrate(None, 0.9)
    assert calibrated.qnc == pytest.approx(0.9)
    # Prior predictive: t with 2·α0 dof, scale² = β0/α0·(1 + φΛ0⁻¹φ).
    scale2 = PRIOR_BETA / PRIOR_ALPHA * (1 + 1 + 4 * 0.81)
    std = math.sqrt(scale2 * 2 * PRIOR_ALPHA / (2 * PRIOR_ALPHA - 2))
    assert calibrated.std == pytest.approx(std)
    assert calibrated.meta == pytest.approx(math.exp(-std / META_SCALE))
    assert 0.5 < calibrated.meta < 0.6


def test_posterior_is_the_weighted_batch_posterior_of_every_outcome() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0.3, 1.0, 40)
    y = 0.05 + 0.85 * x + rng.normal(0, 0.02, 40)
    state = observed(list(zip(x, y, strict=True)))
    # The same posterior computed at once, outcome i weighted FORGET^(age).
    w = FORGET ** np.arange(39, -1, -1)
    design = np.column_stack([np.ones(40), x])
    precision = PRIOR_PRECISION + design.T @ (w[:, None] * design)
    mean = np.linalg.solve(precision, PRIOR_PRECISION @ PRIOR_MEAN + design.T @ (w * y))
    beta = PRIOR_BETA + 0.5 * (
        (w * y * y).sum() + PRIOR_MEAN @ PRIOR_PRECISION @ PRIOR_MEAN - mean @ precision @ mean
    )
    post = posterior(state)
    assert post.mean == pytest.approx(mean)
    assert post.precision == pytest.approx(precision)
    assert post.alpha == pytest.approx(PRIOR_ALPHA + w.sum() / 2)
    assert post.beta == pytest.approx(beta)


def test_a_biased_model_is_corrected_and_confidence_grows() -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(0.4, 1.0, 60)
    state = observed(list(zip(x, 0.1 + 0.8 * x + rng.normal(0, 0.01, 60), strict=True)))
    for predicted in (0.4, 0.7, 1.0):
        calibrated = calibrate(state, predicted)
        # Within the posterior's spread of the truth (the prior shrinks the slope a little).
        assert calibrated.qnc == pytest.approx(0.1 + 0.8 * predicted, abs=0.03)
        assert calibrated.std < 0.04
        assert calibrated.meta > 0.8 > calibrate(None, predicted).meta
    # Where the model is furthest off, calibration removes most of its error.
    assert abs(calibrate(state, 1.0).qnc - 0.9) < abs(1.0 - 0.9) / 3


def test_calibration_follows_a_drifting_node() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(0.5, 1.0, 150)
    before = observed([(v, v) for v in x[:50]])
    assert calibrate(before, 0.8).qnc == pytest.approx(0.8, abs=0.01)
    after = observed([(v, v - 0.15) for v in x[50:]], before)
    assert calibrate(after, 0.8).qnc == pytest.approx(0.65, abs=0.02)


def test_a_task_is_counted_once_and_the_recent_ids_are_bounded() -> None:
    state = observed([(0.8, 0.7)])
    again = observe(
        state, node="n", cls="c", task_id=state.recent[-1], predicted=0.8, measured=0.7, now=9.0
    )
    assert again is None
    many = observed([(0.8, 0.7)] * (RECENT + 5), state)
    assert len(many.recent) == RECENT and many.outcomes == RECENT + 6
    assert many.n == pytest.approx(sum(FORGET**k for k in range(RECENT + 6)))


def test_calibrated_fidelity_stays_a_fidelity() -> None:
    state = observed([(0.9, 1.0)] * 30)
    assert calibrate(state, 1.0).qnc <= 1.0
    low = observed([(0.2, 0.0)] * 30)
    assert calibrate(low, 0.0).qnc >= 0.0
