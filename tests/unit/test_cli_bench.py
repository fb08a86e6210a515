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
