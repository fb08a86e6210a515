"""The emulation cost of split runs: ``SplitPlan.emulation_s`` against measured CPU time.

Usage:
    python -m benchmarks.split_cost [--shots 4000] [--max-estimate 30] [--held-out] [--fit]
                                    [--json]

Each case of ``CASES`` (a dev circuit and the nodes it is split over, two ways, its qubits
shared as evenly as the nodes allow: what ``--split 2`` plans) is planned by
``qubus.network.splitplan.make_plan`` with the default ring of links and run once with noise
as the lead QPU node runs it (``qubus.network.distributed.run_split`` with the links' expected
pair fidelities: building the program, the simulation, the readout errors and the
prediction, all in the node's time budget). The shots are ``--shots``, fewer where the plan's
estimate would pass ``--max-estimate`` seconds (estimate and run both grow in proportion to
the shots: one trajectory per shot), so that the widest cases stay short. Printed per case:
width, operations counted, the estimate (``SplitProgram.emulation_cost``, with the constants of
``qubus.devices.cost.SPLIT``), the measured CPU and wall time of the run and the ratio; then
the ratios' range and, for comparison, the plan's estimate at ``--shots`` and the same
circuit's single-node estimate on ``SINGLE_NODE``. With ``--fit`` the trajectory constants
are fitted to the measured CPU times as ``benchmarks/emulation_cost.py --fit`` fits the
single-node ones (``benchmarks.emulation_cost.fit``), to be copied into ``SPLIT``;
``--held-out`` runs ``HELD_OUT`` instead, circuits the fit has not seen.

The CPU time is this process's (qsim runs single-threaded, as in a QPU node's worker); it is
what an idle machine's wall time would be, and what the node's budget counts.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.emulation_cost import refit
from qubus.circuits import parse_qasm
from qubus.cli.common import number_in
from qubus.devices.compile import compile_for_device
from qubus.devices.cost import SPLIT, CostModel, emulation_cost
from qubus.devices.profiles import load_device
from qubus.network.distributed import run_split, split_program
from qubus.network.links import Topology
from qubus.network.splitplan import FleetView, link_fidelities, make_plan, partition_of

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "qasm" / "dev"
FLEET = ("ibm_nairobi", "ibm_manila", "quantinuum_h1_1", "ionq_aria")
SINGLE_NODE = "quantinuum_h1_1"
"""Where each circuit's single-node estimate is made (every case fits its 20 qubits)."""
CASES = (
    ("qasmbench__adder_n4.qasm", ("ibm_nairobi", "ibm_manila")),
    ("qasmbench__hhl_n7.qasm", ("ibm_nairobi", "ibm_manila")),
    ("qasmbench__qpe_n9.qasm", ("ibm_nairobi", "ibm_manila")),
    ("qasmbench__ising_n10.qasm", ("quantinuum_h1_1", "ibm_manila")),
    ("qasmbench__seca_n11.qasm", ("quantinuum_h1_1", "ibm_nairobi")),
    ("qasmbench__multiply_n13.qasm", ("quantinuum_h1_1", "ionq_aria")),
    ("qasmbench__bv_n14.qasm", ("quantinuum_h1_1", "ibm_nairobi")),
    ("qasmbench__qec9xz_n17.qasm", ("ionq_aria", "quantinuum_h1_1")),
    ("qasmbench__qft_n18.qasm", ("ionq_aria", "quantinuum_h1_1")),
    ("qasmbench__qram_n20.qasm", ("quantinuum_h1_1", "ibm_manila")),
)
HELD_OUT = (
    ("qasmbench__dnn_n8.qasm", ("ibm_nairobi", "ibm_manila")),
    ("qasmbench__adder_n10.qasm", ("ibm_nairobi", "ibm_manila")),
    ("mqtbench__vqe_su2_10_indep.qasm", ("quantinuum_h1_1", "ibm_manila")),
    ("qasmbench__multiplier_n15.qasm", ("quantinuum_h1_1", "ibm_nairobi")),
    ("mqtbench__ghz_20_indep.qasm3", ("quantinuum_h1_1", "ionq_aria")),
)


def measure(
    cases: Sequence[tuple[str, tuple[str, ...]]], shots: int, max_estimate_s: float
) -> list[dict]:
    """Plan, estimate and run each case."""
    fleet = FleetView(
        devices={node: load_device(node) for node in FLEET},
        queue_s=dict.fromkeys(FLEET, 0.0),
        topology=Topology.ring(list(FLEET)),
    )
    rows = []
    for name, nodes in cases:
        circuit = parse_qasm((DEV / name).read_text())
        full = make_plan(circuit, nodes, fleet, shots=shots, balanced=True, bound_time_s=0.0)
        assert full is not None, name
        runs = min(shots, max(1, int(shots * max_estimate_s / full.emulation_s)))
        devices = [fleet.devices[node] for node in nodes]
        figures = link_fidelities(fleet.topology, nodes, ideal=False)
        pair_fidelity = {pair: f for pair, (f, _) in figures.items()}
        partition = partition_of(circuit, full)
        cost = split_program(circuit, partition, devices, pair_fidelity).emulation_cost(runs)
        started, cpu_started = time.perf_counter(), time.process_time()
        run_split(circuit, partition, devices, pair_fidelity, runs, seed=1)
        cpu_s, wall_s = time.process_time() - cpu_started, time.perf_counter() - started
        single = emulation_cost(compile_for_device(circuit, fleet.devices[SINGLE_NODE]), shots)
        rows.append(
            {
                "circuit": name,
                "nodes": list(nodes),
                "ebits": full.ebits,
                "shots": runs,
                "method": cost.method,
                "tree": False,  # a split run's trajectories are independent
                "width": cost.width,
                "operations": cost.operations,
                "terms": dict(cost.terms),
                "estimate_s": cost.seconds,
                "cpu_s": cpu_s,
                "wall_s": wall_s,
                "estimate_at_shots_s": full.emulation_s,
                "single_node_estimate_s": single.seconds,
            }
        )
        print(
            f"  {name}: {runs} shots, estimate {cost.seconds:.2f} s, CPU {cpu_s:.2f} s",
            file=sys.stderr,
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shots", type=number_in(int, 1, None), default=4000)
    parser.add_argument("--max-estimate", type=number_in(float, 0.1, None), default=30.0)
    parser.add_argument("--held-out", action="store_true")
    parser.add_argument("--fit", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    command = shlex.join(["python", "-m", "benchmarks.split_cost", *sys.argv[1:]])
    rows = measure(HELD_OUT if args.held_out else CASES, args.shots, args.max_estimate)
    fitted = refit(rows) if args.fit else None
    if args.json:
        constants = None if fitted is None else vars(fitted)
        print(json.dumps({"command": command, "rows": rows, "fit": constants}))
        return
    print(f"$ {command}")
    for r in rows:
        print(
            f"{r['circuit']:30} {'+'.join(r['nodes']):27} ebits={r['ebits']:3} w={r['width']:2} "
            f"ops={r['operations']:4} shots={r['shots']:4}  estimate {r['estimate_s']:6.2f} s  "
            f"CPU {r['cpu_s']:6.2f} s wall {r['wall_s']:6.2f} s  /CPU "
            f"{r['estimate_s'] / r['cpu_s']:5.2f}"
            + (
                f"  refitted {r['refitted_estimate_s']:6.2f} s /CPU "
                f"{r['refitted_estimate_s'] / r['cpu_s']:5.2f}"
                if fitted
                else ""
            )
            + f"  | {args.shots} shots: split {r['estimate_at_shots_s']:7.1f} s, one node "
            f"{r['single_node_estimate_s']:6.2f} s"
        )
    for key in ("estimate_s", "refitted_estimate_s") if fitted else ("estimate_s",):
        ratios = [r[key] / r["cpu_s"] for r in rows]
        print(f"{key.removesuffix('_s')}/CPU: min {min(ratios):.2f}, max {max(ratios):.2f}")
    if fitted:
        for name in CostModel.names()[2:]:  # the trajectory constants
            print(f"{name}={getattr(fitted, name):.3g}  (SPLIT: {getattr(SPLIT, name):.3g})")


if __name__ == "__main__":
    main()
