"""``qubus bench schedule``: the allocator's policies compared on a simulated workload
(``qubus.scheduling.schedsim``); ``qubus.cli.main`` adds the parser and calls :func:`run`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from qubus.cli.common import UsageError

COLUMNS = (
    ("throughput", "thru/s", ".3f"),
    ("makespan", "makespan", ".0f"),
    ("mean_jct", "mean_jct", ".1f"),
    ("p95_jct", "p95_jct", ".1f"),
    ("mean_fidelity", "fidelity", ".3f"),
    ("error_rate", "error", ".3f"),
    ("utilisation", "util", ".3f"),
    ("max_wait", "max_wait", ".0f"),
    ("max_wait_long", "wait_long", ".0f"),
    ("decision_ms", "decide_ms", ".2f"),
    ("objective", "J_total", ".0f"),
    ("objective_gap_mean", "gap_mean", "+.1%"),
    ("objective_gap_max", "gap_max", "+.1%"),
    ("milp_speedup", "milp_x", ".1f"),
)
"""The text table's columns: figure, heading, format."""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``bench schedule`` to the ``qubus`` subcommands."""
    bench = sub.add_parser(
        "bench",
        help="benchmarks (bench schedule: allocation policies on a simulated workload)",
        description="Benchmarks that run without a stack.",
    )
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    schedule = kinds.add_parser(
        "schedule",
        help="replay a workload under every allocation policy and compare them",
        description="A discrete-event replay of the allocator's policies "
        "(qubus.scheduling.allocation) on "
        "a fleet built from real device profiles: real fidelity predictions of compiled "
        "circuits, measured fidelities from real noisy emulations (cached on disk, so a rerun "
        "is fast), Poisson or bursty arrivals decided in micro-batches, background queues "
        "replayed from real IBM data. Prints per policy: throughput, makespan, mean and p95 "
        "completion time, mean measured fidelity, error rate, utilisation, decision time, the "
        "batch objective J and its gap to milp's per batch, then the issue's goals, met or "
        "not. With --json, one object {seed, workload, policies: {NAME: {...}}}.",
    )
    schedule.add_argument("--json", action="store_true", help="print one JSON object")
    schedule.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    schedule.add_argument(
        "--policies",
        help="comma-separated policies of qubus.scheduling.allocation.POLICIES (default: all)",
    )
    schedule.add_argument("--qpus", type=int, default=8, help="fleet size, 1-32 (default 8)")
    schedule.add_argument("--tasks", type=int, default=64, help="tasks (default 64)")
    schedule.add_argument(
        "--arrivals", choices=["poisson", "bursty"], default="poisson", help="arrival process"
    )
    schedule.add_argument(
        "--rate", type=float, default=2.0, help="Poisson arrivals per second (default 2)"
    )
    schedule.add_argument(
        "--burst-gap", type=float, default=30.0, help="mean seconds between bursts (default 30)"
    )
    schedule.add_argument(
        "--window",
        type=float,
        default=10.0,
        help="simulated batching window, seconds (default 10)",
    )
    schedule.add_argument("--shots", type=int, default=1000, help="shots per task (default 1000)")
    schedule.add_argument(
        "--no-background", action="store_true", help="no background queues on the nodes"
    )
    schedule.add_argument(
        "--fidelity-weight",
        type=float,
        metavar="SECONDS",
        help="λ of the batch objective: seconds per unit of fidelity (default: "
        "qubus.scheduling.allocation.FIDELITY_WEIGHT_S, the allocator's own)",
    )
    schedule.add_argument(
        "--task-shots",
        choices=["fixed", "wide"],
        default="fixed",
        help="fixed: every task runs --shots; wide: shots drawn log-uniformly from 100 to "
        "100,000 (source in qubus.scheduling.schedsim)",
    )
    schedule.add_argument(
        "--node-order",
        choices=["fifo", "spt"],
        default="fifo",
        help="how nodes order waiting tasks across batches: fifo (decision order) or spt "
        "(shortest first, a task waiting over --starve-after first)",
    )
    schedule.add_argument(
        "--starve-after",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="with --node-order spt, a task waiting longer runs next (default 300)",
    )
    schedule.add_argument(
        "--frontier",
        action="store_true",
        help="instead: sweep λ for hyperscore and annealing on this workload and its "
        "wide-task-length twin; mean completion against error rate, every other policy a "
        "point (with --plot: the frontier's chart)",
    )
    schedule.add_argument(
        "--qnet",
        action="store_true",
        help="instead: the QNet-NO setting (4-32 nodes on ring-with-chords links, 8 and 64 "
        "tasks, some distributed): qaoa, greedy_fidelity, hyperscore, annealing and milp on J "
        "and time",
    )
    schedule.add_argument(
        "--decision-speed",
        action="store_true",
        help="instead: time hyperscore, annealing and milp on one batch of 8, 64 and 512 "
        "tasks and compare J with its exact minimum",
    )
    schedule.add_argument("--plot", type=Path, metavar="FILE.png", help="write a bar chart")
    schedule.add_argument(
        "--cache-dir",
        type=Path,
        help="emulation cache (default $QUBUS_STATE_DIR/cache/schedule, ~/.qubus/...)",
    )
    schedule.add_argument(
        "--qasm-dir",
        type=Path,
        help="dev set of QASM files to draw VQE/QAOA circuits from "
        "(default ../shared/data/qasm/dev beside the repository, if present)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``bench schedule`` and print its report (stdout) and seeds (stderr).

    Raises:
        UsageError: ``bench.args`` for an out-of-range option; ``policy.unknown``.
    """
    from qubus.scheduling import schedsim  # cirq and the emulators: imported only for this command
    from qubus.scheduling.allocation import FIDELITY_WEIGHT_S, POLICIES

    if not 1 <= args.qpus <= 32 or args.tasks < 1:
        raise UsageError("--qpus must be 1-32 and --tasks at least 1", code="bench.args")
    workload = schedsim.Workload(
        seed=args.seed,
        tasks=args.tasks,
        qpus=args.qpus,
        arrivals=args.arrivals,
        rate_per_s=args.rate,
        burst_gap_s=args.burst_gap,
        window_s=args.window,
        shots=args.shots,
        background=not args.no_background,
        task_shots=args.task_shots,
        node_order=args.node_order,
        starve_after_s=args.starve_after,
        fidelity_weight_s=(
            FIDELITY_WEIGHT_S if args.fidelity_weight is None else args.fidelity_weight
        ),
    )
    policies = list(POLICIES) if args.policies is None else args.policies.split(",")
    policies = [name for name in policies if name]
    unknown = [name for name in policies if name not in POLICIES]
    if unknown:
        raise UsageError(
            f"unknown policies {', '.join(unknown)} (valid: {', '.join(sorted(POLICIES))})",
            code="policy.unknown",
        )
    print(f"qubus bench schedule: seed {args.seed}", file=sys.stderr)
    qasm_dir = args.qasm_dir or schedsim.DEV_QASM
    if args.decision_speed:
        from qubus.scheduling.decisionspeed import decision_speed, format_speed

        speed = decision_speed(workload, qasm_dir=qasm_dir)
        print(json.dumps(speed) if args.json else format_speed(speed))
        return 0
    if args.qnet:
        from qubus.network.qnetbench import format_qnet, run_qnet

        qnet = run_qnet(seed=args.seed, qasm_dir=qasm_dir)
        print(json.dumps(qnet) if args.json else format_qnet(qnet))
        return 0
    if args.frontier:
        from qubus.cli.report import DPI
        from qubus.network.qnetbench import qnet_frontier
        from qubus.scheduling.frontier import format_frontier, plot_frontier, run_frontier

        frontier = run_frontier(
            workload,
            cache_dir=args.cache_dir,
            qasm_dir=qasm_dir,
            qnet=lambda lambdas: qnet_frontier(lambdas, seed=args.seed, qasm_dir=qasm_dir),
        )
        if args.plot is not None:
            plot_frontier(frontier).savefig(args.plot, dpi=DPI)
            print(f"qubus: plot in {args.plot}", file=sys.stderr)
        print(json.dumps(frontier) if args.json else format_frontier(frontier))
        return 0
    result = schedsim.run_bench(
        workload,
        policies,
        cache_dir=args.cache_dir,
        qasm_dir=qasm_dir,
    )
    if args.plot is not None:
        from qubus.cli.report import DPI, plot_bench

        plot_bench(result).savefig(args.plot, dpi=DPI)
        print(f"qubus: plot in {args.plot}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_result(result, schedsim.goals(result)))
    return 0


def format_result(result: dict[str, Any], goals: list[Any]) -> str:
    """The benchmark as text: the workload, one row per policy, then the goals."""
    w = result["workload"]
    arrivals = (
        f"Poisson {w['rate_per_s']:g}/s"
        if w["arrivals"] == "poisson"
        else f"bursty, {w['burst_gap_s']:g} s apart"
    )
    background = f"queues from bin {w['background_start_bin']}" if w["background"] else "none"
    lines = [
        f"seed {result['seed']}; {w['tasks']} tasks ({arrivals}, {w['shots']} shots) on "
        f"{w['qpus']} QPUs: {', '.join(w['nodes'])}",
        f"circuits: {', '.join(w['circuits'])}",
        f"{w['batches']} batches of {', '.join(map(str, w['batch_sizes']))} tasks "
        f"(window {w['window_s']:g} s); background: {background}; "
        f"J = Σ completion + {w['fidelity_weight_s']:g} s × Σ(1 − fidelity)",
        "",
        f"{'policy':<16}" + "".join(f"{heading:>11}" for _, heading, _ in COLUMNS),
    ]
    for name, figs in result["policies"].items():
        lines.append(
            f"{name:<16}" + "".join(f"{format(figs[key], fmt):>11}" for key, _, fmt in COLUMNS)
        )
    lines += ["", "goals:"]
    lines += [f"  [{'met' if g.met else 'NOT met'}] {g.claim}: {g.figure}" for g in goals]
    return "\n".join(lines)
