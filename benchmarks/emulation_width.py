"""Noisy emulation time against width, 4 to 24 qubits: qubus and qiskit-aer, plotted.

Usage:
    python benchmarks/emulation_width.py --out PATH.png [--shots 1000] [--aer-seconds 20]
        [--aer-max-width 20] [--aer-methods automatic matrix_product_state]
        [--widths 4 8 12 16 20 24] [--json]

For each width ``n`` a GHZ chain on ``n`` qubits followed by a layer of ``rx(0.3)`` and
measurement of every qubit is compiled by qubus for the 27-qubit ``ibm_hanoi`` and emulated
with its noise by qubus (density matrix up to 8 qubits, qsim trajectories above, shared as a
tree where few channels draw an error) and by aer with the same noise model
(``emulate_vs_aer``'s translation, noise model and :func:`emulate_vs_aer.aer_run`: aer runs the
shots that fit in ``--aer-seconds`` of simulation and the rest of its time is extrapolated
from its time per shot, which the plot marks with the shots run), once per method of
``--aer-methods`` (``emulate_vs_aer.aer_simulator``): ``automatic`` is aer's state vector
above 8 qubits, ``matrix_product_state`` its tensor network, whose shots cost with the
entanglement instead of 2^n (a GHZ chain's is low). Wider than ``--aer-max-width``, where one
state-vector shot takes many minutes here, the state vector is not run: its time is scaled
from the previous width (:func:`scaled_aer_s`) and the plot says so; the tensor network runs
at every width. Prints one line per width and writes the plot (log time against width) to
``--out``. Timings share two cores with whatever else runs. ``docs/emulation-width.png`` and
its figures in docs/architecture.md (*Performance and capacity*) are from ``--shots 200
--aer-seconds 10``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from emulate_vs_aer import (  # noqa: E402
    AER_METHODS,
    WIDE_NODE,
    aer_run,
    fake_backend,
    noise_model,
    qiskit_circuit,
)
from emulation_cost import ghz_layer  # noqa: E402

from qubus.devices.compile import compile_for_device  # noqa: E402
from qubus.devices.emulation import emulate  # noqa: E402
from qubus.devices.profiles import load_device  # noqa: E402

TENSOR_NETWORK = "matrix_product_state"
"""aer's method whose memory does not grow as 2^n: run at every width."""


def scaled_aer_s(measured: dict, method: str, width: int, operations: int, shots: int) -> float:
    """aer's state-vector time at a width too wide to run, scaled from a measured narrower
    row: its time per shot × 2^(extra qubits) × the ratio of operations, its fixed cost × that
    ratio."""
    more = operations / measured["operations"]
    aer = measured["aer"][method]
    per_shot = aer["aer_per_shot_s"] * 2.0 ** (width - measured["width"]) * more
    return aer["aer_fixed_s"] * more + per_shot * shots


def described(run: dict, shots: int) -> str:
    """How an aer time was obtained, when not by running every shot."""
    if run["aer_shots_run"] >= shots:
        return ""
    if run["aer_shots_run"]:
        return f" (extrapolated from {run['aer_shots_run']} shots)"
    return f" (scaled from {run['aer_scaled_from']} qubits, not run)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shots", type=int, default=1000)
    parser.add_argument("--aer-seconds", type=float, default=20.0)
    parser.add_argument("--aer-max-width", type=int, default=20)
    parser.add_argument(
        "--aer-methods",
        nargs="+",
        choices=AER_METHODS,
        default=["automatic", TENSOR_NETWORK],
    )
    parser.add_argument("--widths", type=int, nargs="+", default=[4, 8, 12, 16, 20, 24])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.aer_methods = list(dict.fromkeys(args.aer_methods))  # at most the three, each once
    command = shlex.join(["python", "benchmarks/emulation_width.py", *sys.argv[1:]])
    if not args.json:
        print(f"$ {command}")
    device = load_device(WIDE_NODE)
    backend = fake_backend(WIDE_NODE)
    model = noise_model(backend, device)  # the profile's gate durations, as qubus times them
    rows = []
    for n in args.widths:
        compiled = compile_for_device(ghz_layer(n), device)
        started = time.perf_counter()
        emulate(compiled, device, args.shots, seed=args.seed)
        qubus_s = time.perf_counter() - started
        circuit = qiskit_circuit(compiled, backend, device)
        row = {"width": n, "qubus_s": qubus_s, "operations": len(circuit.data), "aer": {}}
        for method in args.aer_methods:
            if n <= args.aer_max_width or method == TENSOR_NETWORK:
                aer = aer_run(circuit, model, args.shots, args.seed, args.aer_seconds, method)
                run = {"aer_s": aer.seconds, "aer_shots_run": aer.shots_run}
                run |= {"aer_per_shot_s": aer.per_shot_s, "aer_fixed_s": aer.fixed_s}
            else:
                measured = [r for r in rows if "aer_per_shot_s" in r["aer"][method]]
                if not measured:
                    parser.error(f"--widths: a width up to --aer-max-width must come before {n}")
                aer_s = scaled_aer_s(measured[-1], method, n, len(circuit.data), args.shots)
                run = {"aer_s": aer_s, "aer_scaled_from": measured[-1]["width"], "aer_shots_run": 0}
            row["aer"][method] = run
        rows.append(row)
        if not args.json:
            print(
                f"{n:2} qubits: qubus {qubus_s:8.2f} s"
                + "".join(
                    f"  aer {method} {run['aer_s']:10.2f} s{described(run, args.shots)}"
                    for method, run in row["aer"].items()
                ),
                flush=True,
            )
    figure, axes = plt.subplots(figsize=(6, 4))
    widths = [r["width"] for r in rows]
    axes.plot(widths, [r["qubus_s"] for r in rows], "o-", label="qubus")
    for method, style in zip(args.aer_methods, ("s--", "^:", "d-."), strict=False):
        runs = [r["aer"][method] for r in rows]
        axes.plot(widths, [a["aer_s"] for a in runs], style, label=f"qiskit-aer ({method})")
        for r, a in zip(rows, runs, strict=True):
            if a["aer_shots_run"] < args.shots:
                axes.annotate(
                    f"{a['aer_shots_run']} shots run" if a["aer_shots_run"] else "scaled, not run",
                    (r["width"], a["aer_s"]),
                    textcoords="offset points",
                    xytext=(4, -10),
                    fontsize=7,
                )
    axes.set_yscale("log")
    axes.set_xlabel("qubits (GHZ chain + rx layer, ibm_hanoi noise)")
    axes.set_ylabel(f"wall time for {args.shots} shots (s)")
    axes.set_title(
        "Noisy emulation time against width\n(aer: beyond the shots run, extrapolated"
        " from its time per shot)",
        fontsize=10,
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)
    if args.json:
        print(
            json.dumps(
                {"command": command, "shots": args.shots, "rows": rows, "plot": str(args.out)}
            )
        )
    else:
        print(f"plot written to {args.out}")


if __name__ == "__main__":
    main()
