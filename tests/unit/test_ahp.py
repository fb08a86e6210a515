"""AHP: principal eigenvector weights and Saaty's consistency check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qubus.errors import QubusError
from qubus.scheduling.ahp import (
    RANDOM_INDEX,
    SCORE_CRITERIA,
    SCORE_JUDGEMENTS,
    InconsistentJudgements,
    analyse,
    comparison_matrix,
)
from qubus.scheduling.scoring import AHP, DEFAULT_WEIGHTS, TERM_WEIGHTS


def test_consistent_matrix_gives_the_weights_it_was_built_from() -> None:
    # A[i][j] = w_i / w_j for w = (1/2, 1/4, 1/8, 1/8): every ratio is on Saaty's scale.
    result = analyse(
        ["a", "b", "c", "d"],
        {("a", "b"): 2, ("a", "c"): 4, ("a", "d"): 4, ("b", "c"): 2, ("b", "d"): 2, ("c", "d"): 1},
    )
    assert result.weights == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.125, "d": 0.125})
    assert result.lambda_max == pytest.approx(4.0)
    assert result.ci == pytest.approx(0.0, abs=1e-9) and result.cr == pytest.approx(0.0, abs=1e-9)


def test_textbook_three_criteria_example() -> None:
    # The classic 3×3 example [[1, 1/3, 1/2], [3, 1, 3], [2, 1/3, 1]]:
    # weights 0.157, 0.594, 0.249; λmax 3.054; CR 0.046.
    result = analyse(["a", "b", "c"], {("b", "a"): 3, ("a", "c"): 1 / 2, ("b", "c"): 3})
    assert [round(result.weights[k], 3) for k in "abc"] == [0.157, 0.594, 0.249]
    assert result.lambda_max == pytest.approx(3.0536, abs=1e-4)
    assert result.cr == pytest.approx(0.046, abs=1e-3)


def test_matrix_is_reciprocal() -> None:
    matrix = comparison_matrix(["a", "b", "c"], {("b", "a"): 3, ("a", "c"): 1 / 2, ("b", "c"): 3})
    assert np.allclose(matrix * matrix.T, 1.0)
    assert matrix[1, 0] == 3 and matrix[0, 1] == pytest.approx(1 / 3)


def test_circular_judgements_are_refused_with_their_cr() -> None:
    # a ≫ b ≫ c ≫ a: as inconsistent as three criteria get.
    with pytest.raises(InconsistentJudgements, match="CR = ") as caught:
        analyse(["a", "b", "c"], {("a", "b"): 9, ("b", "c"): 9, ("c", "a"): 9})
    assert caught.value.code == "ahp.inconsistent"


@pytest.mark.parametrize(
    ("judgements", "match"),
    [
        ({("a", "b"): 10, ("a", "c"): 1, ("b", "c"): 1}, "Saaty's scale"),
        ({("a", "b"): 2.5, ("a", "c"): 1, ("b", "c"): 1}, "Saaty's scale"),
        ({("a", "b"): 2, ("b", "a"): 1 / 2, ("b", "c"): 1}, "judged twice"),
        ({("a", "b"): 2, ("a", "c"): 1}, "not judged"),
        ({("a", "x"): 2, ("a", "c"): 1, ("b", "c"): 1}, "cannot judge"),
    ],
)
def test_malformed_judgements_are_refused(judgements, match) -> None:
    with pytest.raises(QubusError, match=match) as caught:
        analyse(["a", "b", "c"], judgements)
    assert caught.value.code == "ahp.judgements"


def test_random_index_is_saatys_table() -> None:
    assert RANDOM_INDEX[3] == 0.58 and RANDOM_INDEX[6] == 1.24 and RANDOM_INDEX[10] == 1.49


def test_default_weights_are_the_ahp_priorities_of_the_score_judgements() -> None:
    result = analyse(SCORE_CRITERIA, SCORE_JUDGEMENTS)
    assert result.cr < 0.1
    assert AHP.cr == pytest.approx(0.003, abs=5e-4)
    for term, weight in result.weights.items():
        assert getattr(DEFAULT_WEIGHTS, TERM_WEIGHTS[term]) == pytest.approx(weight)
    assert math.fsum(result.weights.values()) == pytest.approx(1.0)
    ranked = sorted(result.weights, key=result.weights.__getitem__, reverse=True)
    assert ranked[0] == "qnc" and ranked[-1] == "novelty"
    assert result.weights["qnc"] > 3 * result.weights["meta"] > 3 * result.weights["novelty"]
