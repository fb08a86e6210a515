"""Weights tuned on the scheduling benchmark (``qubus.scheduling.benchtune``), with a private
cache."""

from __future__ import annotations

import pytest

from qubus.circuits import circuit_to_json, parse_qasm
from qubus.circuits.simulate import ideal_distribution
from qubus.cli.weights import format_tuning
from qubus.errors import QubusError
from qubus.scheduling.benchtune import (
    BenchObjective,
    Outcome,
    outcome_objective,
    tune_on_bench,
    tune_on_outcomes,
)
from qubus.scheduling.schedsim import Workload
from qubus.scheduling.scoring import DEFAULT_WEIGHTS

WORKLOAD = Workload(seed=1, tasks=12, qpus=3, background=False)
GHZ = (
    'OPENQASM 2.0; include "qelib1.inc"; qreg q[3]; creg c[3]; '
    "h q[0]; cx q[0], q[1]; cx q[1], q[2]; measure q -> c;"
)
BELL = (
    'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; '
    "h q[0]; cx q[0], q[1]; measure q -> c;"
)


@pytest.fixture(scope="module")
def objective(tmp_path_factory) -> BenchObjective:
    return BenchObjective.for_workload(
        WORKLOAD, cache_dir=tmp_path_factory.mktemp("cache"), qasm_dir=None
    )


def test_the_bench_scores_with_its_weights(objective) -> None:
    bench = objective.bench
    pair = next(p for p in bench.pairs.values() if p.compiled is not None)
    default = bench._score(pair, "n", ready=12.0, depth=2, run_s=pair.run_s)
    bench.weights = DEFAULT_WEIGHTS.model_copy(update={"w_time": 0.0})
    try:
        blind = bench._score(pair, "n", ready=12.0, depth=2, run_s=pair.run_s)
    finally:
        bench.weights = DEFAULT_WEIGHTS
    assert default.terms["time_penalty"] > 0 and blind.terms["time_penalty"] == 0
    assert blind.hyperscore > default.hyperscore


def test_the_objective_follows_the_weights(objective) -> None:
    start = objective(DEFAULT_WEIGHTS)
    assert start < 0 and objective(DEFAULT_WEIGHTS) == start  # deterministic
    # Blind to time, the hyperscore policy piles tasks onto the best node: much worse.
    assert objective(DEFAULT_WEIGHTS.model_copy(update={"w_time": 0.0})) < start - 1.0


def test_tuning_on_the_bench_keeps_pins_and_judges_on_a_held_out_workload(tmp_path) -> None:
    result = tune_on_bench(
        WORKLOAD,
        DEFAULT_WEIGHTS,
        {"w_time", "beta"},
        budget=4,
        seed=0,
        holdout_seed=2,
        cache_dir=tmp_path,
        qasm_dir=None,
    )
    assert len(result.steps) == 4
    assert result.weights.w_time == DEFAULT_WEIGHTS.w_time
    assert result.weights.beta == DEFAULT_WEIGHTS.beta
    assert result.start_holdout < 0 and result.tuned_holdout < 0
    text = format_tuning(
        {
            "start_revision": 3,
            "start": DEFAULT_WEIGHTS.model_dump(),
            "weights": result.weights.model_dump(),
            "pinned": ["beta", "w_time"],
            "tuning": {"label": "bench seed 1", "values": [s.value for s in result.steps]},
            "holdout": {
                "label": "held-out seed 2",
                "start": result.start_holdout,
                "tuned": result.tuned_holdout,
            },
            "applied_revision": None,
        }
    )
    assert text.startswith("tuned from revision 3 on bench seed 1, 4 evaluations")
    assert text.splitlines()[1].startswith("held-out seed 2: start")
    assert "  beta" in text and text.splitlines()[-1].startswith("not stored")


def _outcomes(measured_on_manila: float) -> list[Outcome]:
    """Nine GHZ and Bell tasks, a second apart, alternating between two nodes."""
    ghz, bell = (parse_qasm(text) for text in (GHZ, BELL))
    circuits = [(circuit_to_json(c), ideal_distribution(c)) for c in (ghz, bell)]
    return [
        Outcome(
            task_id=f"t{i}",
            circuit=circuits[i % 2][0],
            ideal=circuits[i % 2][1],
            shots=500,
            arrival=1000.0 + i,
            node=node,
            measured=measured_on_manila if node == "ibm_manila" else 0.95,
        )
        for i, node in enumerate(["ibm_nairobi", "ibm_manila"] * 4 + ["ibm_nairobi"])
    ]


def test_outcomes_replay_with_their_measured_fidelities(tmp_path) -> None:
    good = outcome_objective(_outcomes(0.95), window_s=0.05, cache_dir=tmp_path)
    bad = outcome_objective(_outcomes(0.55), window_s=0.05, cache_dir=tmp_path)
    assert [d.id for d in good.bench.devices] == ["ibm_manila", "ibm_nairobi"]
    assert len(good.bench.circuits) == 2 and len(good.bench.tasks) == 9
    assert [t.arrival for t in good.bench.tasks] == [float(i) for i in range(9)]
    # Only the measured fidelity on ibm_manila differs: where the replay puts tasks there, the
    # objective falls by λ × 0.4 × their share.
    assert good(DEFAULT_WEIGHTS) > bad(DEFAULT_WEIGHTS)
    with pytest.raises(QubusError) as caught:
        outcome_objective([], window_s=0.05, cache_dir=tmp_path)
    assert caught.value.code == "tuning.outcomes"


def test_tuning_on_outcomes_holds_out_the_latest_tasks(tmp_path) -> None:
    outcomes = _outcomes(0.8)
    result = tune_on_outcomes(
        outcomes, DEFAULT_WEIGHTS, {"w_qnc"}, budget=3, seed=0, window_s=0.05, cache_dir=tmp_path
    )
    assert len(result.steps) == 3 and result.weights.w_qnc == DEFAULT_WEIGHTS.w_qnc
    held_out = outcome_objective(outcomes[6:], window_s=0.05, cache_dir=tmp_path)
    assert result.start_holdout == pytest.approx(held_out(DEFAULT_WEIGHTS))
    with pytest.raises(QubusError) as caught:
        tune_on_outcomes(outcomes[:5], DEFAULT_WEIGHTS, set(), budget=3, seed=0, window_s=0.05)
    assert caught.value.code == "tuning.outcomes"
