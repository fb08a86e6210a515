"""Learning from outcomes: Bayesian calibration of predicted against measured fidelity.

For every QPU node and **circuit class** (``circuit_class``: width bucket × two-qubit density
bucket), measured fidelity ``y`` is modelled against the noise model's prediction ``x``
(``TaskCompleted.predicted_fidelity``: the prediction for the run as it happened) as a Bayesian
linear regression ``y = a + b·x + ε``, ``ε ~ N(0, σ²)``, with the conjugate
Normal-Inverse-Gamma prior

    (a, b) | σ² ~ N(m0, σ²·Λ0⁻¹),  σ² ~ InvGamma(α0, β0),
    m0 = (0, 1)      the model is right until outcomes say otherwise,
    Λ0 = diag(1, 1/4) prior standard deviations σ·1 for a and σ·2 for b,
    α0 = 2, β0 = 0.0025  prior mean of σ² 0.0025 (σ ≈ 0.05 fidelity).

An outcome adds ``(1, x)`` to the sufficient statistics ``n, Σx, Σx², Σy, Σxy, Σy²`` after
multiplying the old ones by ``FORGET`` (0.97): the data of about the last 33 outcomes count, so
the calibration follows a QPU that drifts. The posterior is the usual NIG update:

    Λn = Λ0 + XᵀX,  mn = Λn⁻¹(Λ0·m0 + Xᵀy),  αn = α0 + n/2,
    βn = β0 + (yᵀy + m0ᵀΛ0m0 − mnᵀΛn·mn)/2,

and the posterior predictive of ``y`` at a new prediction ``x`` is a Student-t with ``2αn``
degrees of freedom, mean ``(1, x)·mn`` and scale² ``(βn/αn)·(1 + (1, x)Λn⁻¹(1, x)ᵀ)``.

What fusion uses (``Calibrated``): **QNC** = the predictive mean clipped to [0, 1];
**Meta** = ``exp(−s/META_SCALE)`` with ``s`` the predictive standard deviation and
``META_SCALE`` = 0.2: 0.56 with no outcomes yet (s ≈ 0.11 at a prediction of 0.9), 0.88
after 20 outcomes that agree with their predictions within 0.02, 0.78 after 60 that scatter
by 0.05, 0.84 after 40 that all fall 0.2 short (a bias the calibration has learnt); the prior
on σ² and forgetting keep it below about 0.95.

The state of each (node, class) is a ``CalibrationState`` in KV ``qubus_calibration`` under
``<node>.<class>``, written by fusion's ``outcomes`` stage with compare-and-set; it remembers
the last ``RECENT`` task ids so that a redelivered ``completed`` event is not counted twice.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from pydantic import Field

from qubus.bus.messages import Features, Model

PRIOR_MEAN = np.array([0.0, 1.0])
PRIOR_PRECISION = np.diag([1.0, 0.25])
PRIOR_ALPHA = 2.0
PRIOR_BETA = 0.0025
FORGET = 0.97
META_SCALE = 0.2
RECENT = 64
"""Task ids a state remembers: at least the completions fusion's ``outcomes`` stage holds at
once (``OUTCOMES_CONCURRENCY``), which a replica that dies after writing their batch and before
acknowledging it has delivered again (32 until session 33, when it held one)."""

WIDTH_BUCKETS = ((4, "narrow"), (8, "small"), (16, "medium"))
"""Circuit widths up to each bound; wider circuits are ``wide``."""

DENSITY_BUCKETS = ((1.0, "sparse"), (4.0, "mixed"))
"""Two-qubit gates per qubit below each bound; more is ``dense``."""


def circuit_class(features: Features) -> str:
    """The circuit's class: ``<width>.<density>``, e.g. ``narrow.sparse`` (≤ 4 qubits, fewer
    than one two-qubit gate per qubit) or ``medium.dense`` (9–16 qubits, 4 or more)."""
    width = next((name for bound, name in WIDTH_BUCKETS if features.qubits <= bound), "wide")
    per_qubit = features.two_qubit_gates / max(features.qubits, 1)
    density = next((name for bound, name in DENSITY_BUCKETS if per_qubit < bound), "dense")
    return f"{width}.{density}"


def calibration_key(node: str, cls: str) -> str:
    """The state's key in KV ``qubus_calibration``."""
    return f"{node}.{cls}"


class CalibrationState(Model):
    """The decayed sufficient statistics of one (node, circuit class).

    Attributes:
        node: The QPU node.
        circuit_class: The circuit class (``circuit_class``).
        n: Outcomes counted (decayed).
        sx, sxx, sy, sxy, syy: Decayed sums of x, x², y, x·y, y² (x predicted, y measured).
        outcomes: Outcomes ever counted (not decayed).
        recent: The last ``RECENT`` task ids counted, newest last.
        updated_at: When the last outcome was counted (Unix time).
    """

    TYPE: ClassVar[str] = "calibration.state.v1"

    node: str
    circuit_class: str
    n: float = 0.0
    sx: float = 0.0
    sxx: float = 0.0
    sy: float = 0.0
    sxy: float = 0.0
    syy: float = 0.0
    outcomes: int = 0
    recent: list[str] = Field(default_factory=list)
    updated_at: float = 0.0


def observe(
    state: CalibrationState | None,
    *,
    node: str,
    cls: str,
    task_id: str,
    predicted: float,
    measured: float,
    now: float,
) -> CalibrationState | None:
    """The state after one outcome; None if ``task_id`` was already counted."""
    if state is None:
        state = CalibrationState(node=node, circuit_class=cls)
    if task_id in state.recent:
        return None
    x, y = predicted, measured
    return CalibrationState(
        node=node,
        circuit_class=cls,
        n=FORGET * state.n + 1.0,
        sx=FORGET * state.sx + x,
        sxx=FORGET * state.sxx + x * x,
        sy=FORGET * state.sy + y,
        sxy=FORGET * state.sxy + x * y,
        syy=FORGET * state.syy + y * y,
        outcomes=state.outcomes + 1,
        recent=[*state.recent, task_id][-RECENT:],
        updated_at=now,
    )


@dataclass(frozen=True)
class Posterior:
    """The Normal-Inverse-Gamma posterior of ``(a, b, σ²)``.

    Attributes:
        mean: Posterior mean of ``(a, b)``.
        precision: ``Λn`` (the coefficients' covariance is ``σ²·Λn⁻¹``).
        alpha: ``αn``.
        beta: ``βn``.
    """

    mean: np.ndarray
    precision: np.ndarray
    alpha: float
    beta: float

    def predictive(self, predicted: float) -> tuple[float, float]:
        """Mean and standard deviation of the measured fidelity at ``predicted``."""
        mean = float(self.mean[0] + predicted * self.mean[1])
        # φᵀ Λn⁻¹ φ for φ = (1, predicted), with the 2×2 inverse written out.
        (a, b), (_, d) = self.precision.tolist()
        spread = (d - 2.0 * b * predicted + a * predicted * predicted) / (a * d - b * b)
        scale2 = self.beta / self.alpha * (1.0 + spread)
        dof = 2.0 * self.alpha
        return mean, math.sqrt(scale2 * dof / (dof - 2.0))


def posterior(state: CalibrationState | None) -> Posterior:
    """The posterior given the state's outcomes (the prior when ``state`` is None); shared
    between calls with the same sums (fusion scores every node of every task with the
    calibration state it holds), so not to be modified."""
    if state is None:
        return _posterior(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    return _posterior(state.n, state.sx, state.sxx, state.sy, state.sxy, state.syy)


@functools.lru_cache(maxsize=1024)
def _posterior(n: float, sx: float, sxx: float, sy: float, sxy: float, syy: float) -> Posterior:
    xtx = np.array([[n, sx], [sx, sxx]])
    xty = np.array([sy, sxy])
    precision = PRIOR_PRECISION + xtx
    mean = np.linalg.solve(precision, PRIOR_PRECISION @ PRIOR_MEAN + xty)
    quadratic = syy + PRIOR_MEAN @ PRIOR_PRECISION @ PRIOR_MEAN - mean @ precision @ mean
    return Posterior(
        mean=mean,
        precision=precision,
        alpha=PRIOR_ALPHA + n / 2.0,
        beta=PRIOR_BETA + max(float(quadratic), 0.0) / 2.0,
    )


@dataclass(frozen=True)
class Calibrated:
    """A prediction through the calibration.

    Attributes:
        qnc: Calibrated predicted fidelity (predictive mean, clipped to [0, 1]).
        meta: Confidence ``exp(−std/META_SCALE)``, in (0, 1].
        std: Predictive standard deviation of the measured fidelity.
    """

    qnc: float
    meta: float
    std: float


def calibrate(state: CalibrationState | None, predicted: float) -> Calibrated:
    """The calibrated fidelity and the confidence in it for a raw prediction."""
    mean, std = posterior(state).predictive(predicted)
    return Calibrated(qnc=min(1.0, max(0.0, mean)), meta=math.exp(-std / META_SCALE), std=std)
