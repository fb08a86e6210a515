"""Per-client quotas: what ``QuotaLimits.admit`` lets in and what it refuses, with which code."""

from __future__ import annotations

import pytest

from qubus.bus.quota import QuotaLimits
from qubus.errors import QubusError

LIMITS = QuotaLimits(tasks=2, shots=1000, exempt=frozenset({"operator"}))


def places(*shots: int) -> dict[str, list[float]]:
    return {f"alice.t{k}": [s, 0.0] for k, s in enumerate(shots)}


def test_a_task_within_both_limits_is_admitted():
    LIMITS.admit("alice", places(400), 600)


def test_one_task_more_than_the_task_limit_is_refused_with_quota_tasks():
    with pytest.raises(QubusError) as refused:
        LIMITS.admit("alice", places(10, 10), 10)
    assert refused.value.code == "quota.tasks"
    assert "2 tasks in flight" in refused.value.message


def test_shots_that_would_pass_the_shot_limit_are_refused_with_quota_shots():
    with pytest.raises(QubusError) as refused:
        LIMITS.admit("alice", places(400), 601)
    assert refused.value.code == "quota.shots"
    assert "400 shots in flight" in refused.value.message


def test_a_task_larger_than_the_shot_limit_alone_says_to_ask_for_fewer_shots():
    with pytest.raises(QubusError) as refused:
        LIMITS.admit("alice", {}, 1001)
    assert refused.value.code == "quota.shots"
    assert "fewer shots" in refused.value.message


def test_an_exempt_user_has_no_limits():
    LIMITS.admit("operator", places(1000, 1000, 1000), 10**6)
