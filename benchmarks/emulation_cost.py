"""The emulation cost model (``qubus.devices.cost``) against measured emulation times.

Usage:
    python benchmarks/emulation_cost.py [--shots 4000] [--repeats 1] [--fit] [--json]

Emulates dev circuits with noise (each on the node named in ``CASES``, and the wider GHZ chains
of ``CHAINS`` at ``CHAIN_SHOTS``; ``--repeats`` runs each,
keeping the one of least CPU time: the least disturbed by other processes) and prints
per circuit: the method, width, operations and trajectories of ``emulation_cost``, its
estimate, the measured wall and CPU time (of this process: the emulation is single-threaded,
so CPU ≈ wall on an idle machine and the gap is the time other processes took) and the
estimate's ratio to each. With ``--fit`` it also fits the model's constants to the measured
CPU times, which are what the wall times would be on an idle machine (least squares on the
logarithm of time, per method, over the terms the model reports in ``EmulationCost.terms``),
prints each case's refitted estimate and the constants, to be copied into
``qubus.devices.cost.IDLE``. The estimate is an idle machine's time, and the
budget adds the load (``qubus.devices.cost``); a quiet machine still fits best, since CPU
time also grows when other processes share the caches and memory bandwidth.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import cirq
import numpy as np
from scipy.optimize import least_squares, nnls

from qubus.circuits import parse_qasm
from qubus.cli.common import number_in
from qubus.devices.compile import compile_for_device
from qubus.devices.cost import BUDGET_MARGIN, IDLE, MIN_BUDGET_S, CostModel, emulation_cost
from qubus.devices.emulation import emulate, emulated_as_tree
from qubus.devices.profiles import load_device

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "qasm" / "dev"
CASES = (
    ("qasmbench__bell_n4.qasm", "ibm_nairobi"),
    ("qasmbench__adder_n4.qasm", "ibm_nairobi"),
    ("qasmbench__error_correctiond3_n5.qasm", "ibm_nairobi"),
    ("qasmbench__qaoa_n6.qasm", "ibm_nairobi"),
    ("qasmbench__hhl_n7.qasm", "ibm_nairobi"),
    ("qasmbench__bb84_n8.qasm", "quantinuum_h1_1"),
    ("qasmbench__dnn_n8.qasm", "quantinuum_h1_1"),
    ("qiskit__example_if.qasm", "ibm_nairobi"),
    ("mqtbench__ghz_dynamic_6_indep.qasm3", "ibm_nairobi"),
    ("qasmbench__qpe_n9.qasm", "quantinuum_h1_1"),
    ("qasmbench__ising_n10.qasm", "quantinuum_h1_1"),
    ("qasmbench__seca_n11.qasm", "quantinuum_h1_1"),
    ("qasmbench__multiply_n13.qasm", "quantinuum_h1_1"),
    ("qasmbench__bv_n14.qasm", "ibm_hanoi"),
    ("qasmbench__multiplier_n15.qasm", "quantinuum_h1_1"),
    ("qasmbench__qec9xz_n17.qasm", "quantinuum_h1_1"),
    ("qasmbench__qft_n18.qasm", "ionq_aria"),
    ("mqtbench__ghz_20_indep.qasm3", "quantinuum_h1_1"),
    ("qasmbench__qram_n20.qasm", "quantinuum_h1_1"),
    ("qasmbench__multiplier_n15.qasm", "ibm_hanoi"),
    ("qasmbench__qec9xz_n17.qasm", "ibm_hanoi"),
    ("qasmbench__qft_n18.qasm", "ibm_hanoi"),
    ("mqtbench__ghz_20_indep.qasm3", "ibm_hanoi"),
    ("qasmbench__qram_n20.qasm", "ibm_hanoi"),
)
"""Each dev circuit with the node it runs on. The wide ones also on ``ibm_hanoi``: routed on
its heavy-hex lattice they are longer and wider (SWAP paths) and too noisy for the tree."""

CHAINS = (22, 24)
"""Widths of ``ghz_layer`` on ``ibm_hanoi``: wider than any dev circuit (the widest simulates
21 qubits there), where the state outgrows the cache (``qubus.devices.cost.CACHED_AMPLITUDES``)."""

CHAIN_SHOTS = 400
"""Shots of each chain (50 trajectories): 24 qubits take about 45 s."""


def ghz_layer(n: int) -> cirq.Circuit:
    """GHZ on a chain of ``n`` qubits, ``rx(0.3)`` on each, every qubit measured."""
    q = cirq.LineQubit.range(n)
    return cirq.Circuit(
        cirq.H(q[0]),
        [cirq.CNOT(q[i], q[i + 1]) for i in range(n - 1)],
        cirq.rx(0.3).on_each(*q),
        cirq.measure(*q, key="m"),
    )


def case_list(shots: int) -> list[tuple[str, cirq.Circuit, str, int]]:
    """Each case's name, circuit, node and shots: ``CASES`` at ``shots``, then ``CHAINS``."""
    files = [(name, parse_qasm((DEV / name).read_text()), node, shots) for name, node in CASES]
    chains = [(f"ghz_layer({n})", ghz_layer(n), "ibm_hanoi", CHAIN_SHOTS) for n in CHAINS]
    return files + chains


def measure(shots: int, repeats: int) -> list[dict]:
    """Estimate and time each case (its run of least CPU time)."""
    rows = []
    for name, circuit, node, case_shots in case_list(shots):
        device = load_device(node)
        compiled = compile_for_device(circuit, device)
        estimate = emulation_cost(compiled, case_shots)
        runs = []
        for _ in range(repeats):
            started, cpu_started = time.perf_counter(), time.process_time()
            emulate(compiled, device, case_shots, seed=1)
            runs.append((time.process_time() - cpu_started, time.perf_counter() - started))
        cpu_s, wall_s = min(runs)
        rows.append(
            {
                "circuit": name,
                "node": node,
                "shots": case_shots,
                "method": estimate.method,
                "width": estimate.width,
                "operations": estimate.operations,
                "trajectories": estimate.trajectories,
                "tree": emulated_as_tree(compiled, device),
                "terms": dict(estimate.terms),
                "estimate_s": estimate.seconds,
                "measured_s": wall_s,
                "cpu_s": cpu_s,
            }
        )
    return rows


def fit(rows: list[dict]) -> CostModel:
    """The model's constants that best fit the measured CPU times of the runs it prices (not
    those run as a tree of trajectories, which the model prices as independent ones and
    which take 1.3–38 times less): per method, least squares
    on the logarithm of time (so an estimate 2× over weighs as much as one 2× under),
    started from the non-negative least-squares fit of the relative error. Each term is
    fitted in seconds of a typical case (its unit count divided by the median of those that
    have it), so that constants ten orders of magnitude apart move alike. A method no row
    measured, and a term no row has (``spilled_amplitude_per_op`` of narrow registers), keep
    ``IDLE``'s constants."""
    constants: dict[str, float] = {}
    priced = [r for r in rows if not r["tree"]]
    for method in sorted({r["method"] for r in priced}):
        mine = [r for r in priced if r["method"] == method]
        names = [n for n in mine[0]["terms"] if any(r["terms"][n] > 0 for r in mine)]
        units = np.array([[r["terms"][n] for n in names] for r in mine], dtype=float)
        typical = np.array([np.median(column[column > 0]) for column in units.T])
        cases = units / typical
        measured = np.array([r["cpu_s"] for r in mine])
        start, _ = nnls(cases / measured[:, None], np.ones(len(mine)))
        start = np.maximum(start, 1e-3 * start.max())  # a term nnls dropped starts small

        def residuals(
            log_s: np.ndarray, cases: np.ndarray = cases, measured: np.ndarray = measured
        ) -> np.ndarray:
            return np.log(cases @ np.exp(log_s)) - np.log(measured)

        seconds = np.exp(least_squares(residuals, np.log(start)).x)
        constants.update(zip(names, (seconds / typical).tolist(), strict=True))
    return replace(IDLE, **constants)


def refit(rows: list[dict]) -> CostModel:
    """The constants :func:`fit` finds, each row given its ``refitted_estimate_s``."""
    fitted = fit(rows)
    for r in rows:
        r["refitted_estimate_s"] = fitted.seconds(r["terms"])
    return fitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shots", type=number_in(int, 1, None), default=4000)
    parser.add_argument("--repeats", type=number_in(int, 1, None), default=1)
    parser.add_argument("--fit", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    command = shlex.join(["python", "benchmarks/emulation_cost.py", *sys.argv[1:]])
    rows = measure(args.shots, args.repeats)
    fitted = refit(rows) if args.fit else None
    if args.json:
        constants = None if fitted is None else vars(fitted)
        print(json.dumps({"command": command, "shots": args.shots, "rows": rows, "fit": constants}))
        return
    print(f"$ {command}")
    for r in rows:
        tree = "tree" if r["tree"] else ""
        print(
            f"{r['circuit']:38} {r['node']:16} {r['method']:14} w={r['width']:2} "
            f"ops={r['operations']:5} traj={r['trajectories']:5} {tree:4} "
            f"measured {r['measured_s']:6.2f} s CPU {r['cpu_s']:6.2f} s  "
            f"estimate {r['estimate_s']:7.2f} s /measured {r['estimate_s'] / r['measured_s']:6.2f} "
            f"/CPU {r['estimate_s'] / r['cpu_s']:6.2f}"
            + (
                f"  refitted {r['refitted_estimate_s']:6.2f} s /measured "
                f"{r['refitted_estimate_s'] / r['measured_s']:5.2f} /CPU "
                f"{r['refitted_estimate_s'] / r['cpu_s']:5.2f}"
                if fitted
                else ""
            )
        )
    print(
        f"(a budget is {BUDGET_MARGIN:g}× the estimate in CPU seconds of the worker, at least "
        f"{MIN_BUDGET_S:g} s)"
    )
    for key in ("estimate_s", "refitted_estimate_s") if fitted else ("estimate_s",):
        for against in ("measured_s", "cpu_s"):
            ratios = [r[key] / r[against] for r in rows]
            print(
                f"{key.removesuffix('_s')}/{against.removesuffix('_s')}: "
                f"min {min(ratios):.2f}, max {max(ratios):.2f}"
            )
    if fitted:
        for name in CostModel.names():
            print(f"{name}={getattr(fitted, name):.3g}  (IDLE: {getattr(IDLE, name):.3g})")


if __name__ == "__main__":
    main()
