"""The scheduling benchmark's replay: conservation, node timelines, determinism, the cache."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from qubus.devices.profiles import load_device
from qubus.scheduling.schedsim import (
    BASE_FLEET,
    Bench,
    Measurements,
    Workload,
    arrival_times,
    batches,
    fleet,
    make_tasks,
    run_bench,
    timed_decision,
    variant,
)

SMALL = Workload(seed=5, tasks=12, qpus=4, rate_per_s=1.5, window_s=4.0, shots=200)


@pytest.fixture(scope="module")
def bench() -> Bench:
    return Bench.prepare(SMALL, qasm_dir=None)


@pytest.mark.parametrize("policy", ["round_robin", "least_loaded", "hyperscore", "milp"])
def test_every_task_completes_once_and_nodes_never_run_two_at_a_time(
    bench: Bench, policy: str
) -> None:
    run = bench.replay(policy, reference=False)
    assert len(run.nodes) == len(run.finish) == len(bench.tasks)
    decided_at = {i: t for t, members in bench.batches for i in members}
    assert sorted(decided_at) == list(range(len(bench.tasks)))  # each task in one batch
    intervals: dict[int, list[tuple[float, float]]] = {}
    for i, (task, d, finish) in enumerate(zip(bench.tasks, run.nodes, run.finish, strict=True)):
        pair = bench.pairs[task.circuit, d]
        assert pair.compiled is not None, "a task ran on a node it does not fit"
        start = finish - pair.run_s
        wait = bench.background.wait_s(bench.devices[d].id, decided_at[i])
        assert start >= decided_at[i] + wait - 1e-9 >= task.arrival
        intervals.setdefault(d, []).append((start, finish))
    for spans in intervals.values():
        spans.sort()
        assert all(a[1] <= b[0] + 1e-9 for a, b in itertools.pairwise(spans))
    assert len(run.decision_ms) == len(run.objective) == len(bench.batches)


def test_replay_is_deterministic_for_a_seed(bench: Bench) -> None:
    first, second = bench.replay("annealing"), bench.replay("annealing")
    assert first.nodes == second.nodes and first.finish == second.finish
    assert first.objective == second.objective
    # each batch's J is at least milp's optimum on it
    assert all(j >= m - 1e-6 for j, m in zip(first.objective, first.milp_objective, strict=True))


def test_seeds_change_tasks_and_arrivals() -> None:
    one = make_tasks(Workload(seed=1, tasks=20), 10)
    again = make_tasks(Workload(seed=1, tasks=20), 10)
    other = make_tasks(Workload(seed=2, tasks=20), 10)
    assert one == again and one != other


def test_batches_respect_the_window_and_the_size_limit() -> None:
    workload = Workload(tasks=40, rate_per_s=4.0, window_s=3.0, max_batch=8)
    tasks = make_tasks(workload, 5)
    out = batches(tasks, workload)
    assert [i for _, members in out for i in members] == list(range(40))
    for decided, members in out:
        assert len(members) <= 8
        first = tasks[members[0]].arrival
        assert all(first <= tasks[i].arrival <= decided <= first + 3.0 for i in members)


def test_bursty_arrivals_come_in_bursts_of_at_least_eight() -> None:
    workload = Workload(tasks=60, arrivals="bursty", burst_gap_s=30.0)
    times = arrival_times(workload, np.random.default_rng(3))
    assert len(times) == 60 and np.all(np.diff(times) >= 0)
    starts = np.flatnonzero(np.diff(times) > 1.0) + 1  # where a burst begins, after the first
    sizes = np.diff(np.concatenate([[0], starts, [len(times)]]))
    assert len(sizes) >= 2 and all(8 <= s <= 32 for s in sizes[:-1])


def test_fleet_is_real_profiles_then_scaled_variants() -> None:
    devices = fleet(12)
    assert [d.id for d in devices[:10]] == list(BASE_FLEET)
    assert [d.id for d in devices[10:]] == ["ibm_nairobi-2", "quantinuum_h1_1-2"]
    base, copy = load_device("ibm_nairobi"), devices[10]
    assert copy.revision != base.revision
    factors = {
        round(c.one_qubit_error / b.one_qubit_error, 9)
        for b, c in zip(base.qubits, copy.qubits, strict=True)
        if b.one_qubit_error
    }
    assert len(factors) == 1 and 0.7 <= factors.pop() <= 1.4
    assert variant(base, 1) == copy  # fixed by the id, not by any seed
    assert {d.kind for d in devices[:4]} == {"superconducting", "trapped-ion"}


def test_measurements_are_cached_on_disk(bench: Bench, tmp_path: Path) -> None:
    circuit, device = bench.circuits[0], bench.devices[0]
    compiled = bench.pairs[0, 0].compiled
    first = Measurements(tmp_path, shots=SMALL.shots)
    assert not first.cached(circuit, device)
    value = first.fidelity(circuit, device, compiled)
    assert 0 < value <= 1
    (path,) = tmp_path.glob("*.json")
    record = json.loads(path.read_text())
    assert record["fingerprint"] == circuit.fingerprint and record["node"] == device.id
    path.write_text(json.dumps({**record, "fidelity": 0.123}))  # a rerun reads, not emulates
    assert Measurements(tmp_path, shots=SMALL.shots).fidelity(circuit, device, compiled) == 0.123
    assert not Measurements(tmp_path, shots=SMALL.shots + 1).cached(circuit, device)


def test_run_bench_reports_every_figure_and_milp_is_the_per_batch_optimum(
    tmp_path: Path,
) -> None:
    result = run_bench(SMALL, ["least_loaded", "milp"], cache_dir=tmp_path, qasm_dir=None)
    assert result["seed"] == SMALL.seed
    assert result["workload"]["tasks"] == SMALL.tasks
    assert sum(result["workload"]["batch_sizes"]) == SMALL.tasks
    for figs in result["policies"].values():
        assert 0 < figs["utilisation"] <= 1
        assert 0 < figs["mean_fidelity"] <= 1
        assert figs["throughput"] == pytest.approx(SMALL.tasks / figs["makespan"])
        assert figs["mean_jct"] <= figs["makespan"] and figs["p95_jct"] <= figs["makespan"]
        assert figs["objective_gap_max"] >= -1e-9
    assert list(tmp_path.glob("*.json"))


def test_a_timed_decision_is_the_policy_s_placement_and_says_of_how_many_runs(
    bench: Bench,
) -> None:
    from qubus.scheduling.allocation import build_problem, get_policy, place

    requests = bench.requests(range(6), 0.0, [0.0] * 4, [[] for _ in range(4)])
    problem, _ = build_problem(requests)
    assert problem is not None
    expected = place(get_policy("annealing"), problem)
    exact = timed_decision(get_policy("annealing"), requests, lam=problem.lam, runs=3)
    assert (exact.runs, exact.assignment) == (3, expected)
    # a budget adds runs to the three, never fewer
    budgeted = timed_decision(
        get_policy("annealing"), requests, lam=problem.lam, runs=3, budget_s=0.05
    )
    assert budgeted.runs >= 3 and budgeted.assignment == expected
