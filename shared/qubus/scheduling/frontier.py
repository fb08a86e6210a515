"""The fidelity–time frontier of the scheduling benchmark (``qubus bench schedule --frontier``).

The batch objective trades completion time against fidelity at λ seconds per unit of
fidelity (``qubus.scheduling.allocation``). Here the trade-off is swept on the benchmark's
replay (``qubus.scheduling.schedsim``): ``annealing`` optimises J at each λ of ``LAMBDAS``, and
``hyperscore`` scores nodes with the default weights' time reference scaled so that one unit
of fidelity is worth λ at the scorer's reference inputs (``fidelity_worth_s``). Every other
policy is one point at the workload's own λ. Each point is the replay's mean completion time
and the error rate of the measured fidelities (real noisy emulations, cached).

Two workloads are swept: the one given, and the same with wide task lengths
(``Workload.task_shots = "wide"``: shots drawn from 100 to 100,000; source in
``qubus.scheduling.schedsim``); the command line adds the QNet-NO setting
(``qubus.network.qnetbench.qnet_frontier``: predicted figures of one batch).
For each workload the report says which settings meet the AHMO claims against
``round_robin`` (≥ 35% higher throughput and ≥ 22% lower error rate) and the Qonductor claim
against ``least_loaded`` (mean completion ≤ 0.52× at ≤ 3% fidelity cost).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from qubus.bus.progress import Progress
from qubus.scheduling.allocation import POLICIES
from qubus.scheduling.schedsim import (
    DEV_QASM,
    Bench,
    Measurements,
    Workload,
    default_cache_dir,
    outcome_figures,
    vs_least_loaded,
    vs_round_robin,
)
from qubus.scheduling.scoring import (
    DEFAULT_WEIGHTS,
    REFERENCE_INPUTS,
    Weights,
    fidelity_worth_s,
)

LAMBDAS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
"""λ swept, seconds per unit of fidelity."""

SWEPT = ("hyperscore", "annealing")
"""Policies swept along λ; the others are single points."""


def weights_for(lam: float) -> Weights:
    """The default weights with the time reference scaled so that one unit of fidelity is
    worth ``lam`` seconds at ``REFERENCE_INPUTS``."""
    scale = lam / fidelity_worth_s(REFERENCE_INPUTS, DEFAULT_WEIGHTS)
    return DEFAULT_WEIGHTS.model_copy(update={"time_ref_s": DEFAULT_WEIGHTS.time_ref_s * scale})


def sweep(
    bench: Bench, measurements: Measurements, lambdas: Sequence[float] = LAMBDAS
) -> dict[str, Any]:
    """One workload's frontier: ``{"points": {POLICY: figures}, "sweeps": {POLICY: [figures
    with "lam"]}}`` (figures: ``qubus.scheduling.schedsim.outcome_figures``)."""
    base = bench.workload
    others = [name for name in POLICIES if name not in SWEPT]
    out: dict[str, Any] = {"points": {}, "sweeps": {name: [] for name in SWEPT}}
    with Progress(len(others) + len(SWEPT) * len(lambdas), "frontier") as progress:
        for name in others:
            out["points"][name] = outcome_figures(
                bench, bench.replay(name, reference=False), measurements
            )
            progress.advance()
        for lam in lambdas:
            bench.workload = replace(base, fidelity_weight_s=lam)
            bench.weights = weights_for(lam)
            for name in SWEPT:
                run = bench.replay(name, reference=False)
                figures = outcome_figures(bench, run, measurements)
                out["sweeps"][name].append({"lam": lam, **figures})
                progress.advance()
    bench.workload, bench.weights = base, DEFAULT_WEIGHTS
    out["claims"] = claims(out)
    return out


def claims(frontier: dict[str, Any]) -> list[dict[str, Any]]:
    """Every swept setting checked against the AHMO and Qonductor claims."""
    rr, ll = frontier["points"]["round_robin"], frontier["points"]["least_loaded"]
    rows = []
    for name, points in frontier["sweeps"].items():
        for point in points:
            ahmo, qonductor = vs_round_robin(name, point, rr), vs_least_loaded(name, point, ll)
            rows.append(
                {
                    "policy": name,
                    "lam": point["lam"],
                    "ahmo": ahmo.figure,
                    "ahmo_met": ahmo.met,
                    "qonductor": qonductor.figure,
                    "qonductor_met": qonductor.met,
                }
            )
    return rows


def run_frontier(
    workload: Workload,
    *,
    cache_dir: Path | None = None,
    qasm_dir: Path | None = DEV_QASM,
    qnet: Callable[[Sequence[float]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The frontier on the workload and on its wide-task-length twin: ``{"seed",
    "workloads": {"default"|"wide": {"workload": settings, ...sweep}}}``; with ``qnet`` (the
    network layer's ``qnet_frontier``, given the λs), the QNet-NO setting as ``"qnet"``."""
    measurements = Measurements(cache_dir or default_cache_dir(), shots=workload.shots)
    result: dict[str, Any] = {"seed": workload.seed, "workloads": {}}
    for label, variant in (("default", workload), ("wide", replace(workload, task_shots="wide"))):
        bench = Bench.prepare(variant, qasm_dir=qasm_dir)
        shots = sorted(task.shots for task in bench.tasks)
        result["workloads"][label] = {
            "workload": {**variant.__dict__, "shots_min": shots[0], "shots_max": shots[-1]},
            **sweep(bench, measurements),
        }
    if qnet is not None:
        entry = qnet(LAMBDAS)
        result["workloads"]["qnet"] = {"workload": None, **entry, "claims": claims(entry)}
    return result


def format_frontier(result: dict[str, Any]) -> str:
    """The frontier as text: per workload, the points, the sweeps and the claims."""
    lines = []
    for label, entry in result["workloads"].items():
        w = entry["workload"]
        title = (
            f"workload {label}: seed {result['seed']}, {w['tasks']} tasks on {w['qpus']} QPUs, "
            f"shots {w['shots_min']}–{w['shots_max']}"
            if w is not None
            else f"workload {label}: the QNet-NO setting (one batch; predicted figures)"
        )
        lines += [
            title,
            f"  {'policy':<16}{'λ (s)':>8}{'mean_jct':>10}{'error':>8}{'thru/s':>9}",
        ]
        for name, figs in entry["points"].items():
            lines.append(f"  {name:<16}{'-':>8}{_row(figs)}")
        for name, points in entry["sweeps"].items():
            lines += [f"  {name:<16}{p['lam']:>8g}{_row(p)}" for p in points]
        both = [c for c in entry["claims"] if c["ahmo_met"] and c["qonductor_met"]]
        ahmo = [c for c in entry["claims"] if c["ahmo_met"]]
        qonductor = [c for c in entry["claims"] if c["qonductor_met"]]
        lines += [
            f"  AHMO (vs round_robin) met at: {_settings(ahmo)}",
            f"  Qonductor (vs least_loaded) met at: {_settings(qonductor)}",
            f"  both met at: {_settings(both)}",
            "",
        ]
    return "\n".join(lines).rstrip()


def _row(figs: dict[str, float]) -> str:
    return f"{figs['mean_jct']:>10.1f}{figs['error_rate']:>8.3f}{figs['throughput']:>9.3f}"


def _settings(rows: list[dict[str, Any]]) -> str:
    return ", ".join(f"{c['policy']} λ={c['lam']:g}" for c in rows) or "no setting"


def plot_frontier(result: dict[str, Any]) -> Any:
    """Mean completion against error rate, one panel per workload: the swept policies as
    lines labelled with λ, the others as points. Returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = result["workloads"]
    fig, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.5))
    for ax, (label, entry) in zip(list(axes), workloads.items(), strict=True):
        for name, points in entry["sweeps"].items():
            x = [p["mean_jct"] for p in points]
            y = [p["error_rate"] for p in points]
            ax.plot(x, y, marker="o", label=name)
            for p in points:
                ax.annotate(f"{p['lam']:g}", (p["mean_jct"], p["error_rate"]), fontsize=7)
        for name, figs in entry["points"].items():
            ax.scatter(figs["mean_jct"], figs["error_rate"], marker="s", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("mean completion time (s, log)")
        ax.set_ylabel("error rate (1 − measured fidelity)")
        ax.set_title(f"{label} workload (λ in s per unit of fidelity)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
