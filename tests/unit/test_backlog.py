"""The allocator's view of each node's backlog: the node's last status plus what it sent since."""

from __future__ import annotations

import math

import pytest

from qubus.bus.messages import NodeStatus
from qubus.scheduling.allocation import Candidate, Decision, TaskRequest, decide, get_policy
from qubus.scheduling.backlog import Ledger, with_backlogs


def status(node: str, *, depth: int, mean_job_s: float, at: float) -> NodeStatus:
    return NodeStatus(
        node=node,
        kind="superconducting",
        n_qubits=5,
        max_circuit_qubits=5,
        device={},
        calibration_revision="r1",
        queue_depth=depth,
        mean_job_s=mean_job_s,
        busy=depth > 0,
        instance="i",
        updated_at=at,
    )


def candidate(node: str, **overrides: object) -> Candidate:
    values = {
        "node": node,
        "fits": True,
        "available": True,
        "queue_depth": 0,
        "expected_completion_s": 3.0,
        "run_s": 2.0,
        "predicted_fidelity": 0.9,
        "hyperscore": 150.0,
        "time_rate": 0.01,
    }
    return Candidate(**(values | overrides))


def test_a_node_s_backlog_is_its_status_s_plus_the_runs_sent_after_it() -> None:
    ledger = Ledger()
    ledger.record("a", at=10.0, run_s=2.0)
    ledger.record("a", at=20.0, run_s=3.0)
    ledger.record("b", at=20.0, run_s=5.0)
    first = ledger.backlogs(
        {
            "a": status("a", depth=2, mean_job_s=1.5, at=15.0),
            "b": status("b", depth=0, mean_job_s=1.0, at=25.0),
        }
    )
    assert first == {"a": pytest.approx(2 * 1.5 + 3.0), "b": 0.0}
    # A later status counts the second run in its depth: the ledger adds nothing more.
    assert ledger.backlogs({"a": status("a", depth=1, mean_job_s=1.5, at=21.0)}) == {"a": 1.5}
    # Nor does it bring forgotten runs back when a status older than them is read again.
    assert ledger.backlogs({"a": status("a", depth=1, mean_job_s=1.5, at=5.0)}) == {"a": 1.5}


def test_a_candidate_s_completion_and_hyperscore_follow_its_node_s_backlog() -> None:
    request = TaskRequest(
        task_id="t1",
        candidates=[
            candidate("a"),
            candidate("b", fits=False),
            candidate("c", expected_completion_s=4.0),
        ],
    )
    a, b, c = with_backlogs(request, {"a": 5.0, "b": 5.0}).candidates
    assert a.expected_completion_s == pytest.approx(7.0)
    assert a.queue_s == pytest.approx(5.0)
    assert a.hyperscore == pytest.approx(150.0 * math.exp(-0.01 * (5.0 - 1.0)))
    assert b == request.candidates[1]  # not eligible: left as fusion scored it
    assert c == request.candidates[2]  # no backlog known


def test_runs_sent_since_the_last_status_turn_a_task_to_another_node() -> None:
    better = candidate("a", predicted_fidelity=0.95, hyperscore=151.0)
    request = TaskRequest(task_id="t1", candidates=[better, candidate("b")])
    policy = get_policy("hyperscore")
    (alone,) = decide(policy, [request])
    assert isinstance(alone, Decision) and alone.node == "a"
    ledger = Ledger()
    for k in range(10):
        ledger.record("a", at=100.0 + k, run_s=2.0)
    statuses = {
        "a": status("a", depth=0, mean_job_s=2.0, at=99.0),
        "b": status("b", depth=0, mean_job_s=2.0, at=99.0),
    }
    (after,) = decide(policy, [with_backlogs(request, ledger.backlogs(statuses))])
    assert isinstance(after, Decision) and after.node == "b"
    assert after.expected_completion_s == pytest.approx(2.0)
