"""Weights tuned on the scheduling benchmark (``qubus.benchtune``), with a private cache."""

from __future__ import annotations

import pytest

from qubus.benchtune import BenchObjective, tune_on_bench
from qubus.cli_weights import format_tuning
from qubus.schedsim import Workload
from qubus.scoring import DEFAULT_WEIGHTS

WORKLOAD = Workload(seed=1, tasks=12, qpus=3, background=False)


@pytest.fixture(scope="module")
def objective(tmp_path_factory) -> BenchObjective:
    return BenchObjective(WORKLOAD, cache_dir=tmp_path_factory.mktemp("cache"), qasm_dir=None)


def test_the_bench_scores_with_its_weights(objective) -> None:
    bench = objective.bench
    pair = next(p for p in bench.pairs.values() if p.compiled is not None)
    default = bench._score(pair, "n", ready=12.0, depth=2)
    bench.weights = DEFAULT_WEIGHTS.model_copy(update={"w_time": 0.0})
    try:
        blind = bench._score(pair, "n", ready=12.0, depth=2)
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
    assert max(step.value for step in result.steps) >= result.steps[0].value
    assert result.weights.w_time == DEFAULT_WEIGHTS.w_time
    assert result.weights.beta == DEFAULT_WEIGHTS.beta
    assert result.start_holdout < 0 and result.tuned_holdout < 0
    text = format_tuning(
        {
            "start_revision": 3,
            "start": DEFAULT_WEIGHTS.model_dump(),
            "weights": result.weights.model_dump(),
            "pinned": ["beta", "w_time"],
            "tuning": {"seed": 1, "values": [s.value for s in result.steps]},
            "holdout": {"seed": 2, "start": result.start_holdout, "tuned": result.tuned_holdout},
            "applied_revision": None,
        }
    )
    assert text.startswith("tuned from revision 3 on bench seed 1, 4 evaluations")
    assert "  beta" in text and text.splitlines()[-1].startswith("not stored")
