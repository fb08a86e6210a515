"""The emulation cost model (``qubus.devices.cost``) against measured emulation times.

Usage:
    python benchmarks/emulation_cost.py [--shots 4000] [--fit] [--json]

Emulates dev circuits with noise (each on the node named in ``CASES``, one run each) and prints
per circuit: the method, width, operations and trajectories of ``emulation_cost``, its
estimate, the measured wall time and their ratio. With ``--fit`` it also fits the model's
constants to these measurements (least squares on the logarithm of time, per method) and
prints them, to be copied into ``qubus.devices.cost``. Timings share two cores with whatever
else runs: a busy machine gives pessimistic constants, which is the safe side for a budget.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from qubus.circuits import parse_qasm
from qubus.devices import cost as model
from qubus.devices.compile import compile_for_device
from qubus.devices.emulation import emulate
from qubus.devices.profiles import load_device

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "qasm" / "dev"
CASES = (
    ("qasmbench__hhl_n7.qasm", "ibm_nairobi"),
    ("qasmbench__qaoa_n6.qasm", "ibm_nairobi"),
    ("qasmbench__dnn_n8.qasm", "quantinuum_h1_1"),
    ("qiskit__example_if.qasm", "ibm_nairobi"),
    ("mqtbench__ghz_dynamic_6_indep.qasm3", "ibm_nairobi"),
    ("qasmbench__ising_n10.qasm", "quantinuum_h1_1"),
    ("qasmbench__multiply_n13.qasm", "quantinuum_h1_1"),
    ("qasmbench__bv_n14.qasm", "ibm_hanoi"),
    ("qasmbench__qec9xz_n17.qasm", "quantinuum_h1_1"),
    ("qasmbench__qft_n18.qasm", "ionq_aria"),
    ("qasmbench__qram_n20.qasm", "quantinuum_h1_1"),
)


def measure(shots: int) -> list[dict]:
    """Estimate and time each case."""
    rows = []
    for name, node in CASES:
        device = load_device(node)
        compiled = compile_for_device(parse_qasm((DEV / name).read_text()), device)
        estimate = model.emulation_cost(compiled, shots)
        started = time.perf_counter()
        emulate(compiled, device, shots, seed=1)
        rows.append(
            {
                "compiled": compiled,
                "circuit": name,
                "node": node,
                "method": estimate.method,
                "width": estimate.width,
                "operations": estimate.operations,
                "trajectories": estimate.trajectories,
                "estimate_s": estimate.seconds,
                "measured_s": time.perf_counter() - started,
            }
        )
    return rows


def fit(rows: list[dict]) -> dict[str, float]:
    """The model's constants that best fit the measured times (relative error)."""
    dm = [r for r in rows if r["method"] == "density_matrix"]
    tr = [r for r in rows if r["method"] == "trajectories"]
    density = float(
        np.exp(
            np.mean([np.log(r["measured_s"] / (r["operations"] * 4.0 ** r["width"])) for r in dm])
        )
    )

    def residuals(log_constants: np.ndarray) -> np.ndarray:
        translate, fixed, amplitude = np.exp(log_constants)
        predicted = [
            translate * r["operations"]
            + r["trajectories"] * (fixed + amplitude * r["operations"] * 2.0 ** r["width"])
            for r in tr
        ]
        return np.log(predicted) - np.log([r["measured_s"] for r in tr])

    start = np.log([model.TRANSLATE_S_PER_OP, model.TRAJECTORY_S, model.AMPLITUDE_S_PER_OP])
    translate, fixed, amplitude = np.exp(least_squares(residuals, start).x)
    return {
        "DENSITY_S_PER_OP_ENTRY": density,
        "TRANSLATE_S_PER_OP": float(translate),
        "TRAJECTORY_S": float(fixed),
        "AMPLITUDE_S_PER_OP": float(amplitude),
    }


def refitted_estimates(rows: list[dict], constants: dict[str, float], shots: int) -> list[float]:
    """Each row's estimate had ``qubus.devices.cost`` these constants instead of its own."""
    saved = {name: getattr(model, name) for name in constants}
    try:
        for name, value in constants.items():
            setattr(model, name, value)
        return [model.emulation_cost(r["compiled"], shots).seconds for r in rows]
    finally:
        for name, value in saved.items():
            setattr(model, name, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shots", type=int, default=4000)
    parser.add_argument("--fit", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    command = shlex.join(["python", "benchmarks/emulation_cost.py", *sys.argv[1:]])
    rows = measure(args.shots)
    fitted = fit(rows) if args.fit else None
    if fitted:
        for r, seconds in zip(rows, refitted_estimates(rows, fitted, args.shots), strict=True):
            r["refitted_estimate_s"] = seconds
    for r in rows:
        del r["compiled"]
    ratios = [r["estimate_s"] / r["measured_s"] for r in rows]
    if args.json:
        print(json.dumps({"command": command, "shots": args.shots, "rows": rows, "fit": fitted}))
        return
    print(f"$ {command}")
    for r, ratio in zip(rows, ratios, strict=True):
        print(
            f"{r['circuit']:38} {r['node']:16} {r['method']:14} w={r['width']:2} "
            f"ops={r['operations']:5} traj={r['trajectories']:5} "
            f"estimate {r['estimate_s']:7.2f} s  measured {r['measured_s']:7.2f} s  "
            f"estimate/measured {ratio:.2f}"
            + (
                f"  refitted {r['refitted_estimate_s']:7.2f} s, "
                f"{r['refitted_estimate_s'] / r['measured_s']:.2f}"
                if fitted
                else ""
            )
        )
    print(
        f"estimate/measured: min {min(ratios):.2f}, max {max(ratios):.2f} "
        f"(a budget is {model.BUDGET_MARGIN:g}× the estimate, at least {model.MIN_BUDGET_S:g} s)"
    )
    if fitted:
        refitted = [r["refitted_estimate_s"] / r["measured_s"] for r in rows]
        print(f"refitted estimate/measured: min {min(refitted):.2f}, max {max(refitted):.2f}")
        for name, value in fitted.items():
            print(f"{name} = {value:.3g}")


if __name__ == "__main__":
    main()
