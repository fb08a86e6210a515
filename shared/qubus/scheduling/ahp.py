"""The Analytic Hierarchy Process (Saaty): weights from pairwise judgements.

An expert compares every pair of criteria on Saaty's 1–9 scale (1: equally important,
3: moderately, 5: strongly, 7: very strongly, 9: extremely more important; 2, 4, 6, 8 in
between; the reciprocal when the second criterion is the more important). The judgements fill
a positive reciprocal matrix ``A`` (``A[i][j]`` = how much more important ``i`` is than
``j``, ``A[j][i] = 1/A[i][j]``); the weights are its principal (Perron) eigenvector,
normalised to sum 1. A perfectly consistent matrix (``A[i][k] = A[i][j]·A[j][k]``) has the
principal eigenvalue ``λmax = n``; the excess measures inconsistency:
``CI = (λmax − n)/(n − 1)`` and ``CR = CI/RI(n)``, with ``RI`` Saaty's random index, the mean
CI of random reciprocal matrices. Judgements with ``CR ≥ 0.1`` are refused.

``SCORE_JUDGEMENTS`` are qubus's judgements of the six terms of the hyper-score's ``V``
(``qubus.scheduling.scoring``), from which ``DEFAULT_WEIGHTS`` derive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qubus.errors import QubusError

RANDOM_INDEX = (0.0, 0.0, 0.0, 0.58, 0.90, 1.12, 1.24, 1.32, 1.41, 1.45, 1.49)
"""Saaty's random index RI(n) for n = 0 … 10 criteria (Saaty 1980, table 1.7)."""

MAX_CR = 0.1
"""Largest consistency ratio accepted (Saaty's rule of thumb)."""

SAATY_SCALE = tuple(float(v) for v in range(1, 10))


class InconsistentJudgements(QubusError):
    """Pairwise judgements whose consistency ratio is ``MAX_CR`` or more."""

    code = "ahp.inconsistent"


@dataclass(frozen=True)
class AhpResult:
    """The weights of an AHP comparison and how consistent its judgements were.

    Attributes:
        weights: Each criterion's weight (the principal eigenvector), summing to 1.
        lambda_max: The matrix's principal eigenvalue.
        ci: Consistency index ``(λmax − n)/(n − 1)``.
        cr: Consistency ratio ``CI/RI(n)`` (0 for n ≤ 2, which are always consistent).
    """

    weights: dict[str, float]
    lambda_max: float
    ci: float
    cr: float


def comparison_matrix(
    criteria: Sequence[str], judgements: Mapping[tuple[str, str], float]
) -> np.ndarray:
    """The reciprocal matrix of ``judgements``.

    Args:
        criteria: The criteria, in the matrix's order.
        judgements: ``(a, b) → v``: ``a`` is ``v`` times as important as ``b``; ``v`` is on
            Saaty's scale (1–9 or its reciprocals). Exactly one of ``(a, b)`` and ``(b, a)``
            for every pair.

    Raises:
        QubusError: ``ahp.judgements`` for an unknown criterion, a value off the scale, or a
            pair judged twice or not at all.
    """
    index = {name: i for i, name in enumerate(criteria)}
    n = len(criteria)
    matrix = np.ones((n, n))
    judged: set[frozenset[str]] = set()
    for (a, b), value in judgements.items():
        if a not in index or b not in index or a == b:
            raise QubusError(f"cannot judge {a!r} against {b!r}", code="ahp.judgements")
        if not _on_scale(value):
            raise QubusError(
                f"judgement {a}/{b} = {value} is not on Saaty's scale (1..9 or 1/9..1)",
                code="ahp.judgements",
            )
        pair = frozenset((a, b))
        if pair in judged:
            raise QubusError(f"{a} and {b} are judged twice", code="ahp.judgements")
        judged.add(pair)
        matrix[index[a], index[b]] = value
        matrix[index[b], index[a]] = 1.0 / value
    missing = n * (n - 1) // 2 - len(judged)
    if missing:
        raise QubusError(f"{missing} pair(s) of criteria are not judged", code="ahp.judgements")
    return matrix


def _on_scale(value: float) -> bool:
    """Whether ``value`` or its reciprocal is one of Saaty's 1–9."""
    if value <= 0:
        return False
    whole = value if value >= 1 else 1.0 / value
    return any(abs(whole - v) < 1e-9 for v in SAATY_SCALE)


def principal_weights(matrix: np.ndarray) -> tuple[np.ndarray, float]:
    """The principal eigenvector of a positive reciprocal matrix, normalised to sum 1, and
    its eigenvalue (real and positive by Perron–Frobenius)."""
    values, vectors = np.linalg.eig(matrix)
    k = int(np.argmax(values.real))
    vector = np.abs(vectors[:, k].real)
    return vector / vector.sum(), float(values[k].real)


def analyse(criteria: Sequence[str], judgements: Mapping[tuple[str, str], float]) -> AhpResult:
    """The AHP weights of ``criteria`` from pairwise ``judgements``.

    Args:
        criteria: Between 1 and 10 criteria (the random index table's range).
        judgements: As for ``comparison_matrix``.

    Raises:
        QubusError: ``ahp.judgements`` (see ``comparison_matrix``), or for fewer than 1 or
            more than 10 criteria.
        InconsistentJudgements: ``CR ≥ MAX_CR``; the message gives the CR.
    """
    n = len(criteria)
    if not 1 <= n < len(RANDOM_INDEX):
        raise QubusError(f"AHP takes 1 to 10 criteria, not {n}", code="ahp.judgements")
    weights, lambda_max = principal_weights(comparison_matrix(criteria, judgements))
    ci = max(0.0, (lambda_max - n) / (n - 1)) if n > 1 else 0.0
    cr = ci / RANDOM_INDEX[n] if RANDOM_INDEX[n] else 0.0
    if cr >= MAX_CR:
        raise InconsistentJudgements(
            f"pairwise judgements are inconsistent: CR = {cr:.3f} (must be < {MAX_CR})"
        )
    return AhpResult(
        weights={name: float(w) for name, w in zip(criteria, weights, strict=True)},
        lambda_max=lambda_max,
        ci=ci,
        cr=cr,
    )


SCORE_CRITERIA = ("logic", "novelty", "impact", "repro", "meta", "qnc")
"""The terms of V, as named in ``qubus.scheduling.scoring`` (weight ``w_<term>``)."""

SCORE_JUDGEMENTS: dict[tuple[str, str], float] = {
    # QNC, the predicted fidelity on the QPU, is what a placement is for.
    ("qnc", "meta"): 3,  # a prediction matters more than our confidence in it: a node
    # known to deliver less must not beat one predicted to deliver clearly more
    ("qnc", "logic"): 3,
    ("qnc", "repro"): 3,
    ("qnc", "impact"): 4,
    ("qnc", "novelty"): 5,
    # Meta, the confidence in that prediction, is the other term that differs between QPUs;
    # as important as the task-level terms.
    ("meta", "logic"): 1,
    ("meta", "repro"): 1,
    ("meta", "impact"): 1,
    ("meta", "novelty"): 2,
    # The task-level terms: a correct, reproducible circuit first, then the user's priority,
    # then novelty (a new circuit is worth a little more attention, not a better QPU).
    ("logic", "repro"): 1,
    ("logic", "impact"): 1,
    ("logic", "novelty"): 2,
    ("repro", "impact"): 1,
    ("repro", "novelty"): 2,
    ("impact", "novelty"): 2,
}
"""qubus's pairwise judgements of the V terms on Saaty's scale (CR ≈ 0.003)."""
