"""The hyper-score and its breakdown."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from qubus.scheduling.scoring import (
    DEFAULT_WEIGHTS,
    FIDELITY_WEIGHT_S,
    REFERENCE_INPUTS,
    TERMS,
    V_TERMS,
    ScoreInputs,
    Weights,
    score,
    shapley_values,
    time_factor,
    weighted_terms,
)

unit = st.floats(min_value=0.0, max_value=1.0)
seconds = st.floats(min_value=0.0, max_value=1e5)
inputs = st.builds(
    ScoreInputs,
    logic_score=unit,
    novelty=unit,
    impact=st.floats(min_value=0.0, max_value=100.0),
    repro=unit,
    meta=unit,
    qnc=unit,
    expected_completion_s=seconds,
)
weights = st.builds(
    Weights,
    w_logic=unit,
    w_novelty=unit,
    w_impact=unit,
    w_repro=unit,
    w_meta=unit,
    w_qnc=unit,
    w_time=unit,
    time_ref_s=st.floats(min_value=1.0, max_value=3600.0),
    beta=st.floats(min_value=0.5, max_value=10.0),
    gamma=st.floats(min_value=-3.0, max_value=3.0),
    kappa=st.floats(min_value=0.5, max_value=3.0),
)


def unit_inputs(**overrides: float) -> ScoreInputs:
    values = {"logic_score": 1.0, "novelty": 1.0, "repro": 1.0, "meta": 1.0, "qnc": 1.0}
    return ScoreInputs(
        **{**values, "impact": math.e - 1, "expected_completion_s": 0.0, **overrides}
    )


def test_default_weights_favour_qnc_and_sum_to_one() -> None:
    v_weights = DEFAULT_WEIGHTS.model_dump(
        include={"w_logic", "w_novelty", "w_impact", "w_repro", "w_meta", "w_qnc"}
    )
    assert math.fsum(v_weights.values()) == pytest.approx(1.0)
    assert max(v_weights, key=v_weights.__getitem__) == "w_qnc"


def test_hand_computed_score() -> None:
    # Every term at 1 and ln(impact + 1) = 1: V = 1, σ(5·0 − ln 2) = 1/3, base = 100·(1 + 1/9).
    at_once = score(unit_inputs())
    assert at_once.v == pytest.approx(1.0)
    assert at_once.base == pytest.approx(1000 / 9)
    assert at_once.hyperscore == pytest.approx(1000 / 9)
    assert at_once.time_penalty == pytest.approx(0.0)
    # A completion time of time_ref_s costs a factor exp(−w_time) = exp(−0.5).
    later = score(unit_inputs(expected_completion_s=DEFAULT_WEIGHTS.time_ref_s))
    assert later.hyperscore == pytest.approx(1000 / 9 * math.exp(-0.5))
    assert later.time_penalty == pytest.approx(1000 / 9 * (1 - math.exp(-0.5)))


def test_default_time_reference_prices_fidelity_at_lambda() -> None:
    # At the reference inputs, 0.01 of predicted fidelity and 1 s (λ/100) of completion time
    # change the hyperscore by the same factor (finite differences, not the slope formula).
    def hyperscore(qnc: float, t: float) -> float:
        inputs = REFERENCE_INPUTS.model_copy(update={"qnc": qnc, "expected_completion_s": t})
        return score(inputs).hyperscore

    gain = math.log(hyperscore(0.905, 0.0) / hyperscore(0.895, 0.0))
    loss = math.log(hyperscore(0.9, 0.0) / hyperscore(0.9, FIDELITY_WEIGHT_S / 100))
    assert gain == pytest.approx(loss, rel=0.01)
    assert 1000 < DEFAULT_WEIGHTS.time_ref_s < 2000


def test_terms_are_named_and_weighted() -> None:
    breakdown = score(unit_inputs(qnc=0.5, impact=0.0))
    assert set(breakdown.terms) == {"logic", "novelty", "impact", "repro", "meta", "qnc"}
    assert breakdown.terms["qnc"] == pytest.approx(0.5 * DEFAULT_WEIGHTS.w_qnc)
    assert breakdown.terms["impact"] == 0.0


def test_zero_v_is_floored_to_the_lowest_score() -> None:
    zero = ScoreInputs(
        logic_score=0, novelty=0, impact=0, repro=0, meta=0, qnc=0, expected_completion_s=0
    )
    breakdown = score(zero)
    assert breakdown.v == 0.0
    assert breakdown.base == pytest.approx(100.0)


@given(inputs, weights)
def test_terms_sum_to_v(case: ScoreInputs, w: Weights) -> None:
    breakdown = score(case, w)
    assert math.fsum(breakdown.terms.values()) == pytest.approx(breakdown.v)


@given(inputs, weights)
def test_base_is_between_100_and_200_and_time_only_lowers_it(case: ScoreInputs, w: Weights) -> None:
    breakdown = score(case, w)
    assert 100.0 <= breakdown.base <= 200.0
    assert 0.0 <= breakdown.hyperscore <= breakdown.base
    assert breakdown.base - breakdown.time_penalty == pytest.approx(breakdown.hyperscore)


@given(inputs, weights, unit)
def test_higher_fidelity_never_lowers_the_score(case: ScoreInputs, w: Weights, qnc: float) -> None:
    low, high = sorted((case.qnc, qnc))
    worse = score(case.model_copy(update={"qnc": low}), w)
    better = score(case.model_copy(update={"qnc": high}), w)
    assert better.hyperscore >= worse.hyperscore


@given(inputs, weights, seconds)
def test_longer_completion_never_raises_the_score(case: ScoreInputs, w: Weights, t: float) -> None:
    short, long = sorted((case.expected_completion_s, t))
    sooner = score(case.model_copy(update={"expected_completion_s": short}), w)
    later = score(case.model_copy(update={"expected_completion_s": long}), w)
    assert later.hyperscore <= sooner.hyperscore


def test_fidelity_strictly_ranks_otherwise_equal_qpus() -> None:
    assert score(unit_inputs(qnc=0.9)).hyperscore > score(unit_inputs(qnc=0.8)).hyperscore


def test_time_strictly_ranks_otherwise_equal_qpus() -> None:
    sooner = score(unit_inputs(expected_completion_s=1.0))
    assert sooner.hyperscore > score(unit_inputs(expected_completion_s=2.0)).hyperscore


@pytest.mark.parametrize(
    ("field", "value"),
    [("qnc", 1.5), ("qnc", -0.1), ("impact", -1.0), ("expected_completion_s", -1.0)],
)
def test_inputs_out_of_range_are_rejected(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        unit_inputs(**{field: value})


def test_weights_are_validated() -> None:
    with pytest.raises(ValidationError, match="w_qnc"):
        DEFAULT_WEIGHTS.model_validate({**DEFAULT_WEIGHTS.model_dump(), "w_qnc": -1.0})


# ---------------------------------------------------------------- Shapley attributions


def _coalition_score(present: set[str], case: ScoreInputs, w: Weights) -> float:
    """The score with only ``present`` terms, written out from the formula (the game's value)."""
    v = sum(value for term, value in weighted_terms(case, w).items() if term in present)
    sigma = 1 / (1 + math.exp(-(w.beta * math.log(max(v, 1e-9)) + w.gamma)))
    base = 100 * (1 + sigma**w.kappa)
    return base * (time_factor(case, w) if "time" in present else 1.0)


def test_shapley_matches_the_average_over_every_order_of_the_terms() -> None:
    case = unit_inputs(qnc=0.7, meta=0.4, novelty=0.2, impact=3.0, expected_completion_s=40.0)
    totals = dict.fromkeys(TERMS, 0.0)
    orders = list(itertools.permutations(TERMS))
    for order in orders:
        present: set[str] = set()
        for term in order:
            before = _coalition_score(present, case, DEFAULT_WEIGHTS)
            present.add(term)
            totals[term] += _coalition_score(present, case, DEFAULT_WEIGHTS) - before
    expected = {term: total / len(orders) for term, total in totals.items()}
    assert shapley_values(case, DEFAULT_WEIGHTS) == pytest.approx(expected, rel=1e-9)


@given(inputs, weights)
def test_shapley_values_sum_to_the_score_above_the_baseline(case: ScoreInputs, w: Weights) -> None:
    breakdown = score(case, w, shapley=True)
    assert set(breakdown.shapley) == set(TERMS)
    assert math.fsum(breakdown.shapley.values()) == pytest.approx(
        breakdown.hyperscore - breakdown.baseline, abs=1e-7
    )


@given(inputs, weights)
def test_v_terms_never_count_against_a_score_and_time_never_for_it(
    case: ScoreInputs, w: Weights
) -> None:
    attributions = shapley_values(case, w)
    assert all(attributions[term] >= -1e-9 for term in V_TERMS)
    assert attributions["time"] <= 1e-9


def test_terms_that_contribute_equally_get_equal_shares() -> None:
    w = DEFAULT_WEIGHTS.model_copy(update={"w_logic": 0.2, "w_repro": 0.2})
    case = unit_inputs(logic_score=0.6, repro=0.6, expected_completion_s=10.0)
    attributions = shapley_values(case, w)
    assert attributions["logic"] == pytest.approx(attributions["repro"])
    assert attributions["logic"] > 0


def test_absent_terms_get_nothing() -> None:
    w = DEFAULT_WEIGHTS.model_copy(update={"w_novelty": 0.0})
    attributions = shapley_values(unit_inputs(meta=0.0, expected_completion_s=0.0), w)
    assert attributions["novelty"] == 0.0  # weight 0
    assert attributions["meta"] == 0.0  # input 0
    assert attributions["time"] == 0.0  # no completion time
    assert attributions["qnc"] > attributions["logic"] > 0  # bigger weight, bigger share


def test_scores_carry_no_attribution_unless_asked() -> None:
    assert score(unit_inputs()).shapley == {}
