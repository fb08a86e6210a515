"""The hyper-score of one (task, QPU) pair, with its breakdown and Shapley attributions.

``V = w_logic·LogicScore + w_novelty·Novelty + w_impact·ln(Impact + 1) + w_repro·ΔRepro
+ w_meta·Meta + w_qnc·QNC``, then ``base = 100·[1 + σ(β·ln V + γ)^κ]`` with σ the logistic
function, so ``base`` lies in [100, 200]. The expected completion time ``t`` of the QPU (queue +
run) enters last, multiplicatively: ``hyperscore = base·exp(−w_time·t/time_ref_s)``. A
multiplicative factor keeps the score positive and makes ``w_time`` mean "a QPU ``time_ref_s``
busier is worth ``exp(−w_time)`` as much", whatever the scale of ``base``.

The terms, as fusion computes them for scheduling:

- **LogicScore** (``logic``): the weighted share of the logic checks the circuit passed
  (``TaskChecked.logic_score``, ``qubus.circuits.checks``), in [0, 1].
- **Novelty** (``novelty``): 1 − the largest cosine similarity of the circuit's feature vector
  with every circuit seen before (``qubus.circuits.novelty``), in [0, 1].
- **Impact** (``impact``): the task's declared priority, 0–10 (``SubmitRequest.priority``);
  V takes ``ln(Impact + 1)``, so 10 counts ln 11 ≈ 2.4 and 0 counts nothing.
- **ΔRepro** (``repro``): the Hellinger fidelity between two independent simulators' ideal
  distributions of the circuit (``SandboxEvaluation.repro``), in [0, 1].
- **Meta** (``meta``): the feedback loop's confidence in its fidelity prediction for this QPU
  and this class of circuit, from the posterior of the calibration of predicted against
  measured fidelity (``qubus.scheduling.outcomes``): ``exp(−s/0.2)`` with ``s`` the posterior
  predictive standard deviation of the measured fidelity; in (0, 1] (0.56 before any outcome).
- **QNC** (``qnc``): the calibrated predicted fidelity of the task on this QPU: the noise
  budget applied to the ideal distribution for the task's shots (``qubus.devices.fidelity``), mapped
  through that calibration's posterior mean; in [0, 1].
- **time** (``time``): the expected completion time on this QPU: queue depth × the node's
  mean job time + this task's modelled run time, in seconds.

QNC, Meta and the completion time differ between the QPUs a task is scored on; the other terms
set the task's level. The hyperscore is non-decreasing in every input of V and non-increasing
in the completion time.

**Shapley attributions** (``shapley``). The seven terms are the players of a cooperative game
whose value for a coalition ``S`` is the hyperscore computed with only the terms in ``S``
present: an absent V term contributes 0 to V, an absent time term costs nothing (factor 1).
The empty coalition's value is the **baseline** ``100·[1 + σ(β·ln V_EPSILON + γ)^κ]`` (≈ 100
for the default weights). Each term's Shapley value is its marginal contribution averaged over
every order of adding the terms (exact: all 2⁷ = 128 coalitions); they sum to
``hyperscore − baseline``, a term with weight or input 0 gets 0, the time term's is ≤ 0.

The default weights of V come from AHP (``qubus.scheduling.ahp.SCORE_JUDGEMENTS``); the time
penalty is a different unit (a factor per ``time_ref_s`` seconds): its reference is set so that,
for a typical task (``REFERENCE_INPUTS``), one unit of predicted fidelity is worth
``FIDELITY_WEIGHT_S`` (100 s) of completion time, the rate of the allocator's batch objective.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from qubus.scheduling.ahp import SCORE_CRITERIA, SCORE_JUDGEMENTS, analyse
from qubus.scheduling.outcomes import calibrate

V_EPSILON = 1e-9
"""Floor of V before its logarithm: V is 0 when every weighted input is 0, and ln 0 is −∞.
At the floor, β·ln V + γ is so negative that σ is ≈ 0 and the base score is ≈ 100: the lowest."""

V_TERMS = SCORE_CRITERIA
"""The terms of V, each weighted by ``w_<term>``."""

TERMS = (*V_TERMS, "time")
"""Every term of the hyperscore: the players of its Shapley attribution."""

TERM_WEIGHTS = {term: f"w_{term}" for term in TERMS}
"""The ``Weights`` field that weighs each term."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Weights(_Frozen):
    """The tunable weights of the hyper-score.

    Attributes:
        w_logic: Weight of the logic checks' score.
        w_novelty: Weight of novelty (a circuit not seen before).
        w_impact: Weight of ln(priority + 1).
        w_repro: Weight of cross-simulator reproducibility.
        w_meta: Weight of the calibration's confidence in this QPU's prediction.
        w_qnc: Weight of the calibrated predicted fidelity on the QPU.
        w_time: Strength of the completion-time penalty (0 ignores time).
        time_ref_s: Completion time that costs a factor ``exp(−w_time)``.
        beta: Slope β of the logistic in ln V.
        gamma: Offset γ of the logistic.
        kappa: Exponent κ that sharpens the top of the score.
    """

    w_logic: float = Field(ge=0)
    w_novelty: float = Field(ge=0)
    w_impact: float = Field(ge=0)
    w_repro: float = Field(ge=0)
    w_meta: float = Field(ge=0)
    w_qnc: float = Field(ge=0)
    w_time: float = Field(ge=0)
    time_ref_s: float = Field(gt=0)
    beta: float = Field(gt=0)
    gamma: float
    kappa: float = Field(gt=0)


class ScoreInputs(_Frozen):
    """The inputs of one (task, QPU) score.

    Attributes:
        logic_score: Share of logic checks passed, in [0, 1].
        novelty: Novelty of the circuit, in [0, 1].
        impact: The task's priority, ≥ 0.
        repro: Cross-simulator reproducibility, in [0, 1].
        meta: Confidence in the fidelity prediction for this QPU, in [0, 1].
        qnc: Calibrated predicted fidelity of the task on this QPU, in [0, 1].
        expected_completion_s: Expected queue wait plus run time on this QPU, ≥ 0.
    """

    logic_score: float = Field(ge=0, le=1)
    novelty: float = Field(ge=0, le=1)
    impact: float = Field(ge=0)
    repro: float = Field(ge=0, le=1)
    meta: float = Field(ge=0, le=1)
    qnc: float = Field(ge=0, le=1)
    expected_completion_s: float = Field(ge=0)


class ScoreBreakdown(_Frozen):
    """A score with everything that went into it.

    Attributes:
        terms: Each weighted term of V by name (logic, novelty, impact, repro, meta, qnc).
        v: Their sum, before the ``V_EPSILON`` floor.
        base: ``100·[1 + σ(β·ln V + γ)^κ]``, in [100, 200].
        time_penalty: Points the completion time costs: ``base − hyperscore``, ≥ 0.
        hyperscore: ``base·exp(−w_time·t/time_ref_s)``: the number policies rank by.
        baseline: The score with every term absent (the Shapley game's empty coalition).
        shapley: Each term's Shapley value (``TERMS``), summing to ``hyperscore − baseline``;
            empty unless asked for (``score(..., shapley=True)``).
    """

    terms: dict[str, float]
    v: float
    base: float
    time_penalty: float
    hyperscore: float
    baseline: float
    shapley: dict[str, float] = Field(default_factory=dict)


def weighted_terms(inputs: ScoreInputs, weights: Weights) -> dict[str, float]:
    """Each weighted term of V by name."""
    return {
        "logic": weights.w_logic * inputs.logic_score,
        "novelty": weights.w_novelty * inputs.novelty,
        "impact": weights.w_impact * math.log1p(inputs.impact),
        "repro": weights.w_repro * inputs.repro,
        "meta": weights.w_meta * inputs.meta,
        "qnc": weights.w_qnc * inputs.qnc,
    }


def _logistic(x: float) -> float:
    """σ(x) = 1/(1 + e^−x), without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _base(v: float, weights: Weights) -> float:
    """``100·[1 + σ(β·ln V + γ)^κ]`` with V floored at ``V_EPSILON``."""
    sigma = _logistic(weights.beta * math.log(max(v, V_EPSILON)) + weights.gamma)
    return 100.0 * (1.0 + sigma**weights.kappa)


def _qnc_slope(inputs: ScoreInputs, weights: Weights) -> float:
    """∂ ln(base)/∂ QNC: ``κ·σ^κ·(1 − σ)·β·w_qnc / (V·(1 + σ^κ))``."""
    v = max(math.fsum(weighted_terms(inputs, weights).values()), V_EPSILON)
    sigma = _logistic(weights.beta * math.log(v) + weights.gamma)
    power = sigma**weights.kappa
    return weights.kappa * power * (1 - sigma) * weights.beta * weights.w_qnc / (v * (1 + power))


def fidelity_worth_s(inputs: ScoreInputs, weights: Weights) -> float:
    """Seconds of completion time that one unit of QNC is worth to the hyperscore at
    ``inputs``: the completion time that lowers ``ln(hyperscore)`` as much as a unit of
    predicted fidelity (at the local slope) raises it; infinite without a time weight."""
    if weights.w_time == 0:
        return math.inf
    return _qnc_slope(inputs, weights) * weights.time_ref_s / weights.w_time


FIDELITY_WEIGHT_S = 100.0
"""λ: seconds of completion time one unit of predicted fidelity is worth (one second per
percentage point). The allocator's batch objective weighs fidelity by it
(``qubus.scheduling.allocation``) and the default time reference of the hyperscore is set from
it."""

REFERENCE_INPUTS = ScoreInputs(
    logic_score=1.0,
    novelty=0.0,
    impact=0.0,
    repro=1.0,
    meta=calibrate(None, 0.9).meta,
    qnc=0.9,
    expected_completion_s=0.0,
)
"""A typical task on a typical QPU: every check passed, seen before, no priority, a predicted
fidelity of 0.9, and Meta 0.56, its value before any outcome (``qubus.scheduling.outcomes``)."""

AHP = analyse(SCORE_CRITERIA, SCORE_JUDGEMENTS)
"""The AHP analysis behind ``DEFAULT_WEIGHTS`` (weights, λmax, CI, CR)."""

_AHP_WEIGHTS = Weights(
    **{TERM_WEIGHTS[term]: weight for term, weight in AHP.weights.items()},
    w_time=0.5,
    time_ref_s=1.0,
    beta=5.0,
    gamma=-math.log(2.0),
    kappa=2.0,
)

_MATCHED_TIME_REF_S = FIDELITY_WEIGHT_S / fidelity_worth_s(REFERENCE_INPUTS, _AHP_WEIGHTS)
"""``_AHP_WEIGHTS`` have ``time_ref_s = 1``: a unit of fidelity is worth λ at this reference."""

DEFAULT_WEIGHTS = _AHP_WEIGHTS.model_copy(update={"time_ref_s": _MATCHED_TIME_REF_S})
"""The initial weights: V's six weights are the AHP priorities of ``SCORE_JUDGEMENTS`` (they
sum to 1: qnc 0.407, logic, repro and meta 0.132 each, impact 0.127, novelty 0.069), so V is at
most 1 plus the impact term's excess. β = 5, γ = −ln 2 and κ = 2 are the values usually
quoted with this hyper-score formula; they make σ(β·ln V + γ) = V⁵/(V⁵ + 2), so V = 1 gives 1/3
and a base of 100·(1 + 1/9). ``w_time = 0.5``, and ``time_ref_s`` (about 1,500 s) is set so
that at ``REFERENCE_INPUTS`` one unit of fidelity is worth ``FIDELITY_WEIGHT_S`` of completion
time (``fidelity_worth_s``), as in the allocator's batch objective: with the time reference of
a minute it had before, a unit of fidelity was worth about 4 s there, and the hyperscore
policy placed tasks almost by completion time alone.
"""


def time_factor(inputs: ScoreInputs, weights: Weights) -> float:
    """``exp(−w_time·t/time_ref_s)``: the share of the base score the completion time leaves."""
    return math.exp(-weights.w_time * inputs.expected_completion_s / weights.time_ref_s)


def baseline_score(weights: Weights) -> float:
    """The score with every term absent: V at its floor and no time penalty."""
    return _base(0.0, weights)


def score(
    inputs: ScoreInputs, weights: Weights = DEFAULT_WEIGHTS, *, shapley: bool = False
) -> ScoreBreakdown:
    """Scores one (task, QPU) pair.

    Args:
        inputs: The task's and the QPU's figures.
        weights: The weights to apply.
        shapley: Also attribute the score to its terms (128 evaluations of the score).

    Returns:
        The breakdown; ``hyperscore`` is the ranking value.
    """
    terms = weighted_terms(inputs, weights)
    v = math.fsum(terms.values())
    base = _base(v, weights)
    hyperscore = base * time_factor(inputs, weights)
    return ScoreBreakdown(
        terms=terms,
        v=v,
        base=base,
        time_penalty=base - hyperscore,
        hyperscore=hyperscore,
        baseline=baseline_score(weights),
        shapley=shapley_values(inputs, weights) if shapley else {},
    )


def _coalitions(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``n`` players ``i``: the coalitions without it (indices, bit ``j`` is player
    ``j``), the same coalitions with it, and each one's Shapley share
    ``|S|!(n−|S|−1)!/n!``; arrays of shape ``(n, 2^(n−1))``."""
    share = [math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)]
    masks = np.arange(1 << n)
    without = np.array([masks[masks & (1 << i) == 0] for i in range(n)])
    weights = np.array([[share[int(m).bit_count()] for m in row] for row in without])
    return without, without | (1 << np.arange(n))[:, None], weights


_WITHOUT, _WITH, _SHARES = _coalitions(len(TERMS))
_MEMBERS = ((np.arange(1 << len(TERMS))[:, None] >> np.arange(len(TERMS))) & 1).astype(float)


def shapley_values(inputs: ScoreInputs, weights: Weights) -> dict[str, float]:
    """The exact Shapley value of each of ``TERMS`` in the hyperscore (module docstring): the
    score of all 128 coalitions at once (numpy), then each term's weighted marginal
    contributions.

    Returns:
        Term → its value in score points; the values sum to ``hyperscore − baseline``.
    """
    terms = weighted_terms(inputs, weights)
    v = _MEMBERS[:, : len(V_TERMS)] @ np.array([terms[t] for t in V_TERMS])
    x = weights.beta * np.log(np.maximum(v, V_EPSILON)) + weights.gamma
    sigma = np.exp(-np.logaddexp(0.0, -x))  # σ(x) without overflow
    base = 100.0 * (1.0 + sigma**weights.kappa)
    values = base * np.where(_MEMBERS[:, -1] == 1, time_factor(inputs, weights), 1.0)
    # Marginal contributions as differences: exactly 0 for a term that changes nothing.
    phi = (_SHARES * (values[_WITH] - values[_WITHOUT])).sum(axis=1)
    return dict(zip(TERMS, (float(x) for x in phi), strict=True))
