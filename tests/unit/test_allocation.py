"""Placement policies."""

from __future__ import annotations

from collections import Counter

import pytest

from qubus.allocation import (
    POLICIES,
    Candidate,
    HyperscorePolicy,
    Policy,
    RoundRobinPolicy,
    get_policy,
)
from qubus.errors import CircuitRejected, QubusError


def candidate(node: str, **overrides: object) -> Candidate:
    values = {
        "node": node,
        "fits": True,
        "available": True,
        "queue_depth": 0,
        "expected_completion_s": 1.0,
        "predicted_fidelity": 0.9,
        "hyperscore": 150.0,
    }
    return Candidate(**(values | overrides))


FLEET = [
    candidate("ibm_nairobi", hyperscore=140.0),
    candidate("quantinuum_h2_2", hyperscore=170.0),
    candidate("ionq_aria", hyperscore=160.0),
    candidate("ibm_manila", hyperscore=190.0, fits=False),
]


def test_hyperscore_picks_the_best_eligible_node() -> None:
    decision = HyperscorePolicy().choose("t1", FLEET)
    assert decision.node == "quantinuum_h2_2"
    assert decision.policy == "hyperscore"
    assert decision.ranking == [
        ("quantinuum_h2_2", 170.0),
        ("ionq_aria", 160.0),
        ("ibm_nairobi", 140.0),
    ]
    assert "170.00" in decision.reason and "ionq_aria" in decision.reason


def test_hyperscore_skips_unavailable_nodes() -> None:
    fleet = [*FLEET[:1], FLEET[1].model_copy(update={"available": False}), *FLEET[2:]]
    assert HyperscorePolicy().choose("t1", fleet).node == "ionq_aria"


def test_hyperscore_tie_goes_to_shorter_completion() -> None:
    fleet = [candidate("a", expected_completion_s=5.0), candidate("b", expected_completion_s=2.0)]
    assert HyperscorePolicy().choose("t1", fleet).node == "b"


def test_hyperscore_full_tie_goes_to_first_node_id() -> None:
    assert HyperscorePolicy().choose("t1", [candidate("b"), candidate("a")]).node == "a"


def test_round_robin_is_deterministic_per_task() -> None:
    policy = RoundRobinPolicy()
    assert policy.choose("task-42", FLEET) == RoundRobinPolicy().choose("task-42", FLEET[::-1])


def test_round_robin_ranking_is_a_rotation_of_eligible_nodes() -> None:
    decision = RoundRobinPolicy().choose("task-7", FLEET)
    order = ["ibm_nairobi", "ionq_aria", "quantinuum_h2_2"]
    start = order.index(decision.node)
    assert [node for node, _ in decision.ranking] == order[start:] + order[:start]
    assert decision.policy == "round_robin"


def test_round_robin_spreads_tasks_evenly_over_eligible_nodes() -> None:
    policy = RoundRobinPolicy()
    counts = Counter(policy.choose(f"task-{i}", FLEET).node for i in range(3_000))
    assert set(counts) == {"ibm_nairobi", "ionq_aria", "quantinuum_h2_2"}
    assert all(900 < n < 1_100 for n in counts.values())


@pytest.mark.parametrize("policy", [HyperscorePolicy(), RoundRobinPolicy()])
def test_no_eligible_node_rejects_naming_each_reason(policy: Policy) -> None:
    fleet = [
        candidate("a", fits=False),
        candidate("b", available=False),
        candidate("c", fits=False, available=False),
    ]
    with pytest.raises(CircuitRejected) as info:
        policy.choose("t1", fleet)
    assert info.value.code == "alloc.no_fit"
    message = info.value.message
    assert "a: the task does not fit" in message
    assert "b: unavailable" in message
    assert "c: the task does not fit and unavailable" in message


@pytest.mark.parametrize("policy", [HyperscorePolicy(), RoundRobinPolicy()])
def test_no_candidates_rejects(policy: Policy) -> None:
    with pytest.raises(CircuitRejected) as info:
        policy.choose("t1", [])
    assert info.value.code == "alloc.no_fit"


def test_repeated_node_is_an_error() -> None:
    with pytest.raises(QubusError) as info:
        HyperscorePolicy().choose("t1", [candidate("a"), candidate("a")])
    assert info.value.code == "alloc.duplicate_node"


def test_get_policy_by_name() -> None:
    assert set(POLICIES) == {"hyperscore", "round_robin"}
    for name in POLICIES:
        assert get_policy(name).name == name


def test_unknown_policy_lists_valid_names() -> None:
    with pytest.raises(QubusError) as info:
        get_policy("random")
    assert info.value.code == "policy.unknown"
    assert "hyperscore" in info.value.message and "round_robin" in info.value.message


def test_candidate_is_validated() -> None:
    with pytest.raises(ValueError, match="queue_depth"):
        candidate("a", queue_depth=-1)
