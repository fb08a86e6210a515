"""Weights records: operator changes, pins, and feedback nudges (``qubus.scheduling.weights``)."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from qubus.errors import QubusError
from qubus.scheduling.scoring import DEFAULT_WEIGHTS, TERM_WEIGHTS, V_TERMS, ScoreInputs, score
from qubus.scheduling.weights import (
    FEEDBACK_STEP,
    WeightsRecord,
    initial_record,
    nudged,
    parse_assignments,
    tuned,
    with_pins,
    with_values,
)

V_NAMES = [TERM_WEIGHTS[t] for t in V_TERMS]


def v_total(record: WeightsRecord) -> float:
    return math.fsum(getattr(record.weights, name) for name in V_NAMES)


def shapley_of_a_decision() -> dict[str, float]:
    inputs = ScoreInputs(
        logic_score=1.0,
        novelty=0.0,
        impact=0.0,
        repro=1.0,
        meta=0.3,
        qnc=0.9,
        expected_completion_s=30.0,
    )
    return score(inputs, DEFAULT_WEIGHTS, shapley=True).shapley


def test_the_initial_record_is_the_ahp_weights() -> None:
    record = initial_record(5.0)
    assert record.weights == DEFAULT_WEIGHTS and record.source == "ahp"
    assert record.pinned == [] and "CR" in record.note


def test_assignments_are_parsed_and_checked() -> None:
    assert parse_assignments(["w_qnc=0.5", "beta = 4"]) == {"w_qnc": 0.5, "beta": 4.0}
    with pytest.raises(QubusError) as syntax:
        parse_assignments(["w_qnc"])
    assert syntax.value.code == "weights.syntax"
    with pytest.raises(QubusError) as unknown:
        parse_assignments(["w_quality=1"])
    assert unknown.value.code == "weights.unknown" and "w_qnc" in unknown.value.message


def test_set_makes_a_validated_revision_even_of_a_pinned_weight() -> None:
    pinned = with_pins(initial_record(0.0), ["w_qnc"], pinned=True, now=1.0)
    record = with_values(pinned, {"w_qnc": 0.9, "kappa": 3.0}, now=2.0)
    assert record.weights.w_qnc == 0.9 and record.weights.kappa == 3.0
    assert record.source == "set" and record.pinned == ["w_qnc"] and record.updated_at == 2.0
    assert record.weights.w_logic == DEFAULT_WEIGHTS.w_logic
    with pytest.raises(QubusError) as invalid:
        with_values(record, {"w_time": -1.0}, now=3.0)
    assert invalid.value.code == "weights.invalid" and "w_time" in invalid.value.message


def test_pins_are_added_and_removed() -> None:
    record = with_pins(initial_record(0.0), ["w_qnc", "beta"], pinned=True, now=1.0)
    assert record.pinned == ["beta", "w_qnc"] and record.note == "pinned w_qnc, beta"
    assert with_pins(record, ["beta"], pinned=False, now=2.0).pinned == ["w_qnc"]
    with pytest.raises(QubusError):
        with_pins(record, ["w_nothing"], pinned=True, now=3.0)
    with pytest.raises(ValidationError):
        WeightsRecord(weights=DEFAULT_WEIGHTS, source="set", pinned=["nope"], updated_at=0.0)


def test_a_good_rating_strengthens_the_terms_that_drove_the_decision() -> None:
    shapley = shapley_of_a_decision()
    assert shapley["qnc"] > shapley["logic"] > 0 > shapley["time"]
    before = initial_record(0.0)
    after = nudged(before, shapley, 5, note="task t rated 5/5", now=1.0)
    assert after is not None and after.source == "feedback" and after.note == "task t rated 5/5"
    share = {name: getattr(after.weights, name) / v_total(after) for name in V_NAMES}
    old = {name: getattr(before.weights, name) / v_total(before) for name in V_NAMES}
    assert share["w_qnc"] > old["w_qnc"]  # the biggest driver gains
    assert share["w_novelty"] < old["w_novelty"]  # a term that did nothing loses its share
    assert after.weights.w_time < before.weights.w_time  # time argued against this choice
    assert v_total(after) == pytest.approx(v_total(before))  # renormalised
    # Bounded step: no weight moves by more than e^(2·step) before and after renormalising.
    for name in V_NAMES:
        ratio = getattr(after.weights, name) / getattr(before.weights, name)
        assert math.exp(-2 * FEEDBACK_STEP) <= ratio <= math.exp(2 * FEEDBACK_STEP)


def test_a_bad_rating_moves_the_other_way_and_a_neutral_one_not_at_all() -> None:
    shapley = shapley_of_a_decision()
    before = initial_record(0.0)
    after = nudged(before, shapley, 1, note="", now=1.0)
    assert after is not None
    assert after.weights.w_qnc < before.weights.w_qnc
    assert after.weights.w_time > before.weights.w_time
    assert nudged(before, shapley, 3, note="", now=1.0) is None
    with pytest.raises(QubusError) as caught:
        nudged(before, shapley, 6, note="", now=1.0)
    assert caught.value.code == "feedback.rating"


def test_feedback_never_changes_a_pinned_weight() -> None:
    shapley = shapley_of_a_decision()
    record = with_pins(initial_record(0.0), ["w_qnc", "w_time"], pinned=True, now=1.0)
    after = nudged(record, shapley, 5, note="", now=2.0)
    assert after is not None
    assert after.weights.w_qnc == record.weights.w_qnc
    assert after.weights.w_time == record.weights.w_time
    assert after.weights.w_logic != record.weights.w_logic
    # The unpinned V weights keep their total, so V's scale does not move.
    free = [name for name in V_NAMES if name != "w_qnc"]
    assert math.fsum(getattr(after.weights, n) for n in free) == pytest.approx(
        math.fsum(getattr(record.weights, n) for n in free)
    )
    every = with_pins(record, list(TERM_WEIGHTS.values()), pinned=True, now=3.0)
    assert nudged(every, shapley, 5, note="", now=4.0) is None


def test_a_zero_weight_stays_zero() -> None:
    record = with_values(initial_record(0.0), {"w_novelty": 0.0}, now=1.0)
    after = nudged(record, {**shapley_of_a_decision(), "novelty": 0.0}, 1, note="", now=2.0)
    assert after is not None and after.weights.w_novelty == 0.0


def test_tuned_weights_may_not_touch_pins() -> None:
    record = with_pins(initial_record(0.0), ["beta"], pinned=True, now=1.0)
    moved = DEFAULT_WEIGHTS.model_copy(update={"beta": 3.0})
    with pytest.raises(QubusError) as caught:
        tuned(record, moved, note="", now=2.0)
    assert caught.value.code == "weights.pinned"
    kept = DEFAULT_WEIGHTS.model_copy(update={"gamma": 0.5})
    assert tuned(record, kept, note="bo", now=2.0).source == "tuned"
