"""The hyper-score of one (task, QPU) pair, with its breakdown.

``V = w_logic·LogicScore + w_novelty·Novelty + w_impact·ln(Impact + 1) + w_repro·ΔRepro
+ w_meta·Meta + w_qnc·QNC``, then ``base = 100·[1 + σ(β·ln V + γ)^κ]`` with σ the logistic
function, so ``base`` lies in [100, 200]. The expected completion time ``t`` of the QPU (queue +
run) enters last, multiplicatively: ``hyperscore = base·exp(−w_time·t/time_ref_s)``. A
multiplicative factor keeps the score positive and makes ``w_time`` mean "a QPU ``time_ref_s``
busier is worth ``exp(−w_time)`` as much", whatever the scale of ``base``.

Only QNC (the predicted fidelity on that QPU) and the completion time differ between the QPUs a
task is scored on; the other terms set the task's level. The hyperscore is non-decreasing in
every input of V and non-increasing in the completion time.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

V_EPSILON = 1e-9
"""Floor of V before its logarithm: V is 0 when every weighted input is 0, and ln 0 is −∞.
At the floor, β·ln V + γ is so negative that σ is ≈ 0 and the base score is ≈ 100: the lowest."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Weights(_Frozen):
    """The tunable weights of the hyper-score.

    Attributes:
        w_logic: Weight of the logic checks' score.
        w_novelty: Weight of novelty (a circuit not seen before).
        w_impact: Weight of ln(priority + 1).
        w_repro: Weight of cross-simulator reproducibility.
        w_meta: Weight of the meta-optimisation's feedback.
        w_qnc: Weight of the predicted fidelity on the QPU.
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


DEFAULT_WEIGHTS = Weights(
    w_logic=0.15,
    w_novelty=0.10,
    w_impact=0.10,
    w_repro=0.15,
    w_meta=0.10,
    w_qnc=0.40,
    w_time=0.5,
    time_ref_s=60.0,
    beta=5.0,
    gamma=-math.log(2.0),
    kappa=2.0,
)
"""A hand-set prior until the weights are derived by AHP and tuned from outcomes (later issues).

The six V weights sum to 1, so V is at most 1 plus the impact term. QNC carries the most (0.40)
because it is the only V term that differs between QPUs, so it alone ranks them. β = 5,
γ = −ln 2 and κ = 2 are the values usually quoted with this hyper-score formula; they make
σ(β·ln V + γ) = V⁵/(V⁵ + 2), so V = 1 gives 1/3 and a base of 100·(1 + 1/9).
``w_time = 0.5`` with ``time_ref_s = 60`` makes a QPU one minute busier worth e^−0.5 ≈ 0.61
times as much.
"""


class ScoreInputs(_Frozen):
    """The inputs of one (task, QPU) score.

    Attributes:
        logic_score: Share of logic checks passed, in [0, 1].
        novelty: Novelty of the circuit, in [0, 1].
        impact: The task's priority, ≥ 0.
        repro: Cross-simulator reproducibility, in [0, 1].
        meta: Meta-optimisation feedback, in [0, 1].
        qnc: Predicted fidelity of the task on this QPU, in [0, 1].
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
    """

    terms: dict[str, float]
    v: float
    base: float
    time_penalty: float
    hyperscore: float


def _logistic(x: float) -> float:
    """σ(x) = 1/(1 + e^−x), without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def score(inputs: ScoreInputs, weights: Weights = DEFAULT_WEIGHTS) -> ScoreBreakdown:
    """Scores one (task, QPU) pair.

    Args:
        inputs: The task's and the QPU's figures.
        weights: The weights to apply.

    Returns:
        The breakdown; ``hyperscore`` is the ranking value.
    """
    terms = {
        "logic": weights.w_logic * inputs.logic_score,
        "novelty": weights.w_novelty * inputs.novelty,
        "impact": weights.w_impact * math.log1p(inputs.impact),
        "repro": weights.w_repro * inputs.repro,
        "meta": weights.w_meta * inputs.meta,
        "qnc": weights.w_qnc * inputs.qnc,
    }
    v = math.fsum(terms.values())
    sigma = _logistic(weights.beta * math.log(max(v, V_EPSILON)) + weights.gamma)
    base = 100.0 * (1.0 + sigma**weights.kappa)
    hyperscore = base * math.exp(
        -weights.w_time * inputs.expected_completion_s / weights.time_ref_s
    )
    return ScoreBreakdown(
        terms=terms, v=v, base=base, time_penalty=base - hyperscore, hyperscore=hyperscore
    )
