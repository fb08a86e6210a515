"""Fusion's scores without NATS: pilots, calibration, Shapley breakdowns (``node_scores``)."""

from __future__ import annotations

import math

import pytest

from qubus.bus.messages import (
    Features,
    NodePrediction,
    NodeStatus,
    NoiseEvaluation,
    SandboxEvaluation,
    TaskChecked,
    TaskOptions,
)
from qubus.scheduling.outcomes import calibrate, observe
from qubus.scheduling.pilots import PilotDescription
from qubus.scheduling.scoring import DEFAULT_WEIGHTS
from qubus_services.fusion.main import node_scores

NODES = {"alpha": (0.9, 0), "beta": (0.8, 3), "gamma": (0.95, 0)}
"""node → (ESP predicted fidelity, queue depth)."""


def checked(**options: object) -> TaskChecked:
    return TaskChecked(
        task_id="u.t1",
        circuit="{}",
        features=Features(
            qubits=3,
            clbits=3,
            depth=4,
            gate_counts={"h": 1, "cnot": 2},
            two_qubit_gates=2,
            multi_qubit_gates=0,
            measured_qubits=["q0", "q1", "q2"],
            classical_control=False,
            interaction_graph=[],
            fingerprint="f",
        ),
        options=TaskOptions(shots=100, priority=2, **options),
        checks=[],
        logic_score=1.0,
        novelty=0.5,
    )


def evaluations() -> tuple[SandboxEvaluation, NoiseEvaluation, dict[str, NodeStatus]]:
    sandbox = SandboxEvaluation(
        task_id="u.t1",
        ideal={"000": 0.5, "111": 0.5},
        ideal_counts={"000": 50, "111": 50},
        truncated_mass=0.0,
        norm_error=0.0,
        simulator="qsim",
        elapsed_s=0.01,
        repro=1.0,
    )
    noise = NoiseEvaluation(
        task_id="u.t1",
        predictions=[
            NodePrediction(node=node, fits=True, predicted_fidelity=f, expected_run_s=1.0)
            for node, (f, _) in NODES.items()
        ],
    )
    statuses = {
        node: NodeStatus(
            node=node,
            kind="test",
            n_qubits=5,
            max_circuit_qubits=5,
            device={},
            calibration_revision="r",
            queue_depth=depth,
            mean_job_s=2.0,
            busy=False,
            instance="i",
            updated_at=0.0,
        )
        for node, (_, depth) in NODES.items()
    }
    return sandbox, noise, statuses


def by_node(scores):
    return {s.node: s for s in scores}


def test_every_eligible_score_carries_inputs_terms_and_shapley() -> None:
    sandbox, noise, statuses = evaluations()
    scores = by_node(node_scores(checked(), sandbox, noise, statuses, DEFAULT_WEIGHTS))
    assert all(s.eligible for s in scores.values())
    beta = scores["beta"]
    assert beta.inputs["impact"] == 2.0 and beta.inputs["expected_completion_s"] == 7.0
    assert beta.expected_run_s == 1.0
    assert beta.inputs["qnc"] == pytest.approx(calibrate(None, 0.8).qnc)
    assert beta.inputs["meta"] == pytest.approx(calibrate(None, 0.8).meta)
    baseline = 100 * (1 + (1 / (1 + math.exp(-(5 * math.log(1e-9) - math.log(2))))) ** 2)
    assert math.fsum(beta.shapley.values()) == pytest.approx(beta.hyperscore - baseline)
    assert beta.shapley["time"] < 0 and beta.terms["time_penalty"] > 0


def test_a_pilot_excludes_nodes_outside_it_or_off_its_constraints() -> None:
    sandbox, noise, statuses = evaluations()
    pilot = PilotDescription(name="p", nodes=["alpha", "beta"], max_queue=2)
    scores = by_node(
        node_scores(checked(pilot="p"), sandbox, noise, statuses, DEFAULT_WEIGHTS, pilot=pilot)
    )
    assert scores["alpha"].eligible
    assert not scores["gamma"].eligible and scores["gamma"].reason == "not in pilot p"
    assert not scores["beta"].eligible and "queue depth 3 exceeds pilot p" in scores["beta"].reason
    assert scores["beta"].predicted_fidelity == 0.8 and scores["beta"].hyperscore == 0.0


def test_a_pilots_fidelity_floor_and_width_apply_to_the_calibrated_prediction() -> None:
    sandbox, noise, statuses = evaluations()
    floor = PilotDescription(name="p", nodes=list(NODES), min_fidelity=0.85)
    scores = by_node(node_scores(checked(), sandbox, noise, statuses, DEFAULT_WEIGHTS, pilot=floor))
    assert [n for n, s in scores.items() if s.eligible] == ["alpha", "gamma"]
    assert "below pilot p's 0.85" in scores["beta"].reason
    narrow = PilotDescription(name="p", nodes=list(NODES), max_qubits=2)
    scores = node_scores(checked(), sandbox, noise, statuses, DEFAULT_WEIGHTS, pilot=narrow)
    assert all(not s.eligible and "at most 2 qubits, task has 3" in s.reason for s in scores)


def test_a_calibration_that_distrusts_a_node_lowers_its_score() -> None:
    sandbox, noise, statuses = evaluations()
    plain = by_node(node_scores(checked(), sandbox, noise, statuses, DEFAULT_WEIGHTS))
    state = None
    for i in range(40):  # gamma delivers 0.2 less than predicted, every time
        state = observe(
            state,
            node="gamma",
            cls="narrow.sparse",
            task_id=f"u.t{i}",
            predicted=0.95,
            measured=0.75,
            now=0.0,
        )
    learnt = by_node(
        node_scores(
            checked(), sandbox, noise, statuses, DEFAULT_WEIGHTS, calibrations={"gamma": state}
        )
    )
    assert learnt["gamma"].inputs["qnc"] == pytest.approx(0.75, abs=0.02)
    assert learnt["gamma"].predicted_fidelity == 0.95  # the model's own prediction is kept
    assert learnt["gamma"].hyperscore < learnt["alpha"].hyperscore
    assert plain["gamma"].hyperscore > plain["alpha"].hyperscore
    assert learnt["alpha"].hyperscore == plain["alpha"].hyperscore


def test_pinned_and_offline_nodes_stay_ineligible() -> None:
    sandbox, noise, statuses = evaluations()
    del statuses["beta"]
    scores = by_node(node_scores(checked(node="alpha"), sandbox, noise, statuses, DEFAULT_WEIGHTS))
    assert scores["alpha"].eligible
    assert scores["beta"].reason == "node is offline"
    assert scores["gamma"].reason == "task is pinned to alpha"


def test_pilot_descriptions_are_validated() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PilotDescription(name="p", nodes=[])
    with pytest.raises(ValueError, match="must match"):
        PilotDescription(name="p", nodes=["Bad Node"])
    with pytest.raises(ValueError, match="name"):
        PilotDescription(name="P.x", nodes=["a"])
    assert PilotDescription(name="p", nodes=["b", "a", "b"]).nodes == ["a", "b"]


def test_a_pilots_preference_fills_in_for_a_task_that_sets_none() -> None:
    pilot = PilotDescription(name="p", nodes=list(NODES), prefer="fidelity")
    assert pilot.options_for(TaskOptions(shots=10)).prefer == "fidelity"
    assert pilot.options_for(TaskOptions(shots=10, prefer="time")).prefer == "time"
    plain = PilotDescription(name="p", nodes=list(NODES))
    assert plain.options_for(TaskOptions(shots=10)).prefer is None
