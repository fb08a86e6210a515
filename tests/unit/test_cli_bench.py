"""`qubus bench schedule` on a tiny workload: the JSON contract, the text report, the plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qubus.cli.main import main

FIGURES = {
    "throughput",
    "makespan",
    "mean_jct",
    "p95_jct",
    "mean_fidelity",
    "utilisation",
    "decision_ms",
    "objective",
}
POLICIES = ["round_robin", "least_loaded", "hyperscore", "milp"]


def bench(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "bench",
        "schedule",
        "--seed",
        "3",
        "--tasks",
        "10",
        "--qpus",
        "4",
        "--shots",
        "200",
        "--policies",
        ",".join(POLICIES),
        "--cache-dir",
        str(tmp_path / "cache"),
        *extra,
    ]


def test_json_is_one_object_with_every_figure_per_policy(tmp_path, capsys) -> None:
    assert main(bench(tmp_path, "--json", "--arrivals", "bursty")) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)  # exactly one JSON document on stdout
    assert set(result) == {"seed", "workload", "policies"}
    assert result["seed"] == 3 and "seed 3" in out.err
    assert result["workload"]["arrivals"] == "bursty" and result["workload"]["qpus"] == 4
    assert list(result["policies"]) == POLICIES
    for name, figs in result["policies"].items():
        assert set(figs) >= FIGURES, name
        assert figs["throughput"] > 0 and figs["makespan"] > 0
        assert 0 < figs["mean_fidelity"] <= 1 and 0 < figs["utilisation"] <= 1
        assert figs["mean_jct"] <= figs["makespan"] and figs["decision_ms"] > 0
    # milp is the per-batch optimum of the objective every policy is scored on
    assert all(figs["objective_gap_max"] >= -1e-9 for figs in result["policies"].values())


def test_text_report_names_seed_policies_and_goals_and_the_plot_is_written(
    tmp_path, capsys
) -> None:
    plot = tmp_path / "bench.png"
    assert main(bench(tmp_path, "--no-background", "--plot", str(plot))) == 0
    out = capsys.readouterr().out
    assert out.startswith("seed 3; 10 tasks")
    assert "background: none" in out
    for name in POLICIES:
        assert f"\n{name} " in out
    assert "[met]" in out or "[NOT met]" in out
    assert "hyperscore vs round_robin" in out and "hyperscore vs milp" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("option", "code"),
    [(("--qpus", "33"), "bench.args"), (("--policies", "fifo"), "policy.unknown")],
)
def test_bad_options_are_refused(tmp_path, capsys, option, code) -> None:
    argv = bench(tmp_path)
    index = argv.index(option[0])
    argv[index + 1] = option[1]
    assert main(argv) == 2
    assert f"[{code}]" in capsys.readouterr().err


def test_wide_task_lengths_draw_shots_and_scale_run_times() -> None:
    from qubus.scheduling.schedsim import WIDE_SHOTS, Bench, Workload

    fixed = Bench.prepare(Workload(seed=3, tasks=40, qpus=4, shots=200), qasm_dir=None)
    wide = Bench.prepare(
        Workload(seed=3, tasks=40, qpus=4, shots=200, task_shots="wide"), qasm_dir=None
    )
    shots = [task.shots for task in wide.tasks]
    assert all(WIDE_SHOTS[0] <= n <= WIDE_SHOTS[1] for n in shots)
    assert max(shots) / min(shots) > 10
    assert [(t.circuit, t.arrival) for t in wide.tasks] == [
        (t.circuit, t.arrival) for t in fixed.tasks
    ]
    d = next(d for d in range(4) if wide.pairs[wide.tasks[0].circuit, d].compiled is not None)
    longer = max(
        range(40), key=lambda i: shots[i] if wide.pairs[wide.tasks[i].circuit, d].compiled else 0
    )
    assert wide.run_s(longer, d) > fixed.run_s(longer, d)


def test_frontier_sweeps_lambda_for_both_workloads_and_writes_the_plot(tmp_path, capsys) -> None:
    plot = tmp_path / "frontier.png"
    # Generated circuits only (an empty dev set), to keep the 16-node QNet-NO batch quick.
    options = ["--frontier", "--json", "--plot", str(plot), "--qasm-dir", str(tmp_path)]
    assert main([*bench(tmp_path, *options)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["workloads"]) == {"default", "wide", "qnet"}
    from qubus.scheduling.frontier import LAMBDAS

    for entry in result["workloads"].values():
        assert {"round_robin", "least_loaded", "milp"} <= set(entry["points"])
        for points in entry["sweeps"].values():
            assert [p["lam"] for p in points] == list(LAMBDAS)
        assert set(entry["sweeps"]) == {"hyperscore", "annealing"}
        assert len(entry["claims"]) == 2 * len(LAMBDAS)
        # From λ = 1 s to 3,000 s the error rate falls.
        for points in entry["sweeps"].values():
            assert points[-1]["error_rate"] < points[0]["error_rate"]
    assert plot.stat().st_size > 0


def run_queue(order: str, jobs: list[tuple[float, float]], bound: float = 300.0) -> list[float]:
    """Finish times of tasks (decided at, run s) on one node under ``order``."""
    from qubus.scheduling.schedsim import PolicyRun, Queues, Workload

    run = PolicyRun(nodes=[0] * len(jobs), finish=[0.0] * len(jobs))
    queues = Queues(Workload(node_order=order, starve_after_s=bound), 1, run)
    for i, (decided, run_s) in enumerate(jobs):
        queues.advance(decided)
        queues.add(0, i, earliest=decided, decided=decided, run_s=run_s)
    queues.advance(float("inf"))
    return run.finish


def test_spt_nodes_run_the_shortest_waiting_task_across_batches() -> None:
    # A long task runs from 0 to 10; a 50 s task and then a 1 s task wait for it.
    jobs = [(0.0, 10.0), (1.0, 50.0), (2.0, 1.0)]
    assert run_queue("fifo", jobs) == [10.0, 60.0, 61.0]
    assert run_queue("spt", jobs) == [10.0, 61.0, 11.0]


def test_spt_runs_a_task_waiting_past_the_bound_first() -> None:
    jobs = [(0.0, 10.0), (1.0, 50.0), (2.0, 1.0)]
    # At 10 s the 50 s task has waited 9 s: past a bound of 5 s it goes before the short one.
    assert run_queue("spt", jobs, bound=5.0) == [10.0, 60.0, 61.0]
