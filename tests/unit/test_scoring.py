"""The hyper-score and its breakdown."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from qubus.scoring import DEFAULT_WEIGHTS, ScoreInputs, Weights, score

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
    # One minute of completion time costs a factor exp(−0.5).
    later = score(unit_inputs(expected_completion_s=60.0))
    assert later.hyperscore == pytest.approx(1000 / 9 * math.exp(-0.5))
    assert later.time_penalty == pytest.approx(1000 / 9 * (1 - math.exp(-0.5)))


def test_terms_are_named_and_weighted() -> None:
    breakdown = score(unit_inputs(qnc=0.5, impact=0.0))
    assert set(breakdown.terms) == {"logic", "novelty", "impact", "repro", "meta", "qnc"}
    assert breakdown.terms["qnc"] == pytest.approx(0.2)
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
