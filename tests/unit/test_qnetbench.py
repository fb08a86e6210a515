"""The QNet-NO setting of `qubus bench schedule --qnet`: its instances and their model."""

from __future__ import annotations

import pytest

from qubus.network.links import LinkFigures, LinkPlan
from qubus.network.qnetbench import DISTRIBUTED_SHARE, EBITS, SHOTS, _candidate, instances
from qubus.scheduling.allocation import build_problem, get_policy
from qubus.scheduling.decisionspeed import exact_optimum
from qubus.scheduling.schedsim import Pair


@pytest.fixture(scope="module")
def batch():
    (instance,) = instances(nodes=(4,), tasks=(8,), qasm_dir=None)
    return instance


def test_an_instance_holds_its_tasks_and_some_distributed_ones(batch) -> None:
    assert (batch.nodes, batch.tasks, len(batch.requests)) == (4, 8, 8)
    assert 0 < batch.distributed <= int(8 * DISTRIBUTED_SHARE)
    assert all(len(r.candidates) == 4 for r in batch.requests)


def test_a_distributed_task_pays_for_its_partner_and_its_link() -> None:
    link = LinkPlan.of(LinkFigures(f0=0.9))
    pairs = {
        (0, 0): Pair(compiled=object(), predicted=0.9, run_s=4.0),  # type: ignore[arg-type]
        (0, 1): Pair(compiled=object(), predicted=0.8, run_s=6.0),  # type: ignore[arg-type]
    }
    partner = {"a": (1, link), "b": (0, link)}
    whole = _candidate(pairs, 0, 0, ["a", "b"], partner, distributed=False)
    spread = _candidate(pairs, 0, 0, ["a", "b"], partner, distributed=True)
    assert (whole.predicted_fidelity, whole.run_s) == (0.9, 4.0)
    assert spread.predicted_fidelity == pytest.approx(0.9 * 0.8 * link.fidelity**EBITS)
    assert spread.run_s == pytest.approx(6.0 + EBITS * SHOTS * link.latency_s)
    assert spread.node == "a" and spread.fits


def test_milp_reaches_the_exact_optimum_of_an_instance(batch) -> None:
    problem, _ = build_problem(batch.requests)
    assert problem is not None
    assignment = get_policy("milp").assign(problem)
    assert problem.objective(assignment) == pytest.approx(exact_optimum(problem), rel=1e-9)


def test_nodes_carry_fusion_scores_whose_time_dependence_follows_the_weights(batch) -> None:
    from qubus.scheduling.frontier import weights_for

    eager, patient = batch.scored(weights_for(10.0)), batch.scored(weights_for(1000.0))
    assert [r.task_id for r in eager] == [r.task_id for r in batch.requests]
    for fast, slow in zip(eager, patient, strict=True):
        for a, b in zip(fast.candidates, slow.candidates, strict=True):
            assert (a.node, a.fits, a.run_s) == (b.node, b.fits, b.run_s)
            if a.fits:
                # time is worth more at a small λ: the score falls faster with completion
                assert a.hyperscore > 0 and a.time_rate > b.time_rate > 0
