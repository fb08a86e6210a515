"""Predicted against emulated Hellinger fidelity over the dev circuits × the default fleet.

Usage:
    python benchmarks/predict.py [--shots 4000] [--seed 1] [--max-qubits 14] [--json]

For every dev circuit that fits a node, the circuit is compiled for the node and emulated
(``qubus.devices.emulation.emulate``, ``--shots`` shots, seed ``--seed`` + the pair's index,
printed); measured = Hellinger fidelity of the counts against the ideal distribution. Where the
emulator samples an exact density matrix (up to ``qubus.devices.emulation.DENSITY_MATRIX_QUBITS``
qubits), the distribution it samples is also taken whole
(``qubus.devices.emulation.emulated_distribution``):

* ``exact``: its Hellinger fidelity, the emulator's infinite-shot value, free of shot noise;
* ``exact_shots``: the expected Hellinger fidelity of ``--shots`` samples of it (the value the
  measurement scatters around, ``qubus.devices.fidelity.hellinger_of_model``).

Predictors:

* ``esp``: the plain ESP (product of fidelities);
* ``esp_mix``: the ESP pushed through a global depolarizing mix with the ideal distribution
  (``qubus.devices.fidelity.fidelity_with_ideal``), the predictor before the noise budget;
* ``model``: ``predict_fidelity(compiled, device, ideal)``, the modelled output distribution's
  Hellinger fidelity with infinitely many shots (compared with ``exact``);
* ``model_shots``: the same with ``shots=``: the expected Hellinger fidelity of that many
  samples, which is what the emulation measures. Finite shots bias the measured value down
  (a perfect run of a broad distribution has H < 1): the ``ceiling`` column (noiseless
  emulation, same shots and seed) shows by how much; ``model_shots`` predicts that bias
  instead of correcting the measurement, so it is compared with the raw measurement.

Figures, each against the measurement and, where every node of a circuit has one, against the
exact value: mean and largest |predicted − target|; Spearman rank correlation across nodes per
circuit (circuits that fit three or more nodes); the fraction of node pairs ordered the same
way among those whose targets differ by more than shot noise (``RESOLVED_SIGMAS`` binomial
standard errors of the measurement) or, for the exact values, by more than
``PRACTICAL_TIE``; each node's mean signed error against the exact values; and prediction
time against emulation time. Circuits are split into two halves by their position among all
dev files sorted by name (even and odd), reported apart: no parameter of the model was fitted
to either. Skipped: circuits that do not parse, have no measurements, use mid-circuit
measurement or classical control (they fall back to cirq's simulator, 30-100 s each), or have
more than ``--max-qubits`` qubits.

The ideal distribution of a circuit with a reset (``openqasm__qft``) is itself estimated from
``qubus.circuits.simulate.SAMPLED_SHOTS`` samples, which caps its exact fidelity near 0.9999.

Times are the best of ``EMULATE_REPEATS`` emulations and of ``TIMING_REPEATS`` predictions of
the same pair (no cache carries over between calls). They share two cores with whatever else
runs: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cirq
import numpy as np
from scipy.stats import spearmanr

from qubus.circuits import parse_qasm
from qubus.circuits.simulate import ideal_distribution
from qubus.devices.compile import CompiledCircuit, compile_for_device
from qubus.devices.emulation import emulate, emulated_distribution
from qubus.devices.fidelity import fidelity_with_ideal, hellinger_fidelity, hellinger_of_model
from qubus.devices.prediction import esp, predict_fidelity
from qubus.devices.profiles import DEFAULT_FLEET, Device, load_device
from qubus.errors import QubusError

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "qasm" / "dev"
PREDICTORS = ("esp", "esp_mix", "model", "model_shots")
EXACT_PREDICTORS = {"esp_mix": "exact", "model": "exact", "model_shots": "exact_shots"}
"""Predictor → the exact column it is compared with."""
TIMING_REPEATS = 5
"""Each prediction is timed this many times and its best time kept."""
EMULATE_REPEATS = 2
"""Each emulation (same seed, same counts) is timed this many times and its best time kept."""
RESOLVED_SIGMAS = 3.0
"""Two nodes' measured fidelities count as ordered when they differ by this many standard
errors; closer pairs are ties within shot noise."""
PRACTICAL_TIE = 1e-3
"""Exact fidelities closer than this count as a practical tie (reported apart, not a goal)."""

GOAL_MEAN_ERROR = 0.03
GOAL_SPEARMAN = 0.9
GOAL_SPEEDUP = 100.0


def load_circuits(folder: Path, max_qubits: int) -> tuple[dict[str, cirq.Circuit], dict[str, str]]:
    """The dev circuits kept, and why each other one was skipped."""
    kept: dict[str, cirq.Circuit] = {}
    skipped: dict[str, str] = {}
    for path in sorted(folder.glob("*.qasm*")):
        try:
            circuit = parse_qasm(path.read_text())
        except QubusError as exc:
            skipped[path.name] = f"does not parse ({exc.code})"
            continue
        ops = list(circuit.all_operations())
        if not any(cirq.is_measurement(op) for op in ops):
            skipped[path.name] = "no measurements"
        elif (
            any(op.classical_controls for op in ops) or not circuit.are_all_measurements_terminal()
        ):
            skipped[path.name] = "dynamic (cirq simulator fallback, slow)"
        elif len(circuit.all_qubits()) > max_qubits:
            skipped[path.name] = f"{len(circuit.all_qubits())} qubits > {max_qubits}"
        else:
            kept[path.name] = circuit
    return kept, skipped


def timed(call: Callable[[], object], repeats: int) -> tuple[object, float]:
    """The call's value and its best wall time over ``repeats`` calls (the least disturbed by
    whatever else shares the cores)."""
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        value = call()
        best = min(best, time.perf_counter() - started)
    return value, best


def measure_pair(
    circuit: cirq.Circuit, ideal: dict[str, float], device: Device, shots: int, seed: int
) -> dict[str, float | None]:
    """Every predictor, the measurement, its exact values, the noiseless ceiling and the
    times for one pair."""
    compiled: CompiledCircuit = compile_for_device(circuit, device)
    width = len(next(iter(ideal)))
    counts, emulate_s = timed(lambda: emulate(compiled, device, shots, seed=seed), EMULATE_REPEATS)
    clean = emulate(compiled, device, shots, seed=seed, noiseless=True)
    row: dict[str, float | None] = {
        "measured": hellinger_fidelity(counts, ideal),
        "ceiling": hellinger_fidelity(clean, ideal),
        "emulate_s": emulate_s,
        "exact": None,
        "exact_shots": None,
    }
    exact = emulated_distribution(compiled, device)
    if exact is not None:
        p = np.fromiter(ideal.values(), dtype=float, count=len(ideal))
        q = np.array([exact.get(bits, 0.0) for bits in ideal])
        row["exact"] = hellinger_fidelity(exact, ideal)
        row["exact_shots"] = hellinger_of_model(p, q, shots)
    row["esp"], row["esp_s"] = timed(lambda: esp(compiled, device), TIMING_REPEATS)
    row["esp_mix"] = fidelity_with_ideal(row["esp"], ideal, width)
    row["model"] = predict_fidelity(compiled, device, ideal)
    row["model_shots"], row["predict_s"] = timed(
        lambda: predict_fidelity(compiled, device, ideal, shots=shots), TIMING_REPEATS
    )
    return row


def pair_sigma(a: dict, b: dict) -> float:
    """Rough standard error of the difference of two measured fidelities (binomial)."""
    return math.sqrt(sum(r["measured"] * (1 - r["measured"]) / r["shots"] for r in (a, b)) + 1e-12)


def by_circuit(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["circuit"], []).append(row)
    return groups


def compare(rows: list[dict], name: str, target: str) -> dict[str, float]:
    """Predictor ``name`` against column ``target``: errors, per-circuit Spearman, pairs.

    Only pairs with a ``target`` value count, and for Spearman and pair ordering only
    circuits where every node has one.
    """
    nodes_of = {c: len(g) for c, g in by_circuit(rows).items()}
    rows = [r for r in rows if r[target] is not None]
    if not rows:
        return {}
    errors = [abs(r[name] - r[target]) for r in rows]
    rhos: dict[str, float] = {}
    groups = {c: g for c, g in by_circuit(rows).items() if len(g) == nodes_of[c] and len(g) >= 3}
    for circuit, group in groups.items():
        rho = spearmanr([r[name] for r in group], [r[target] for r in group]).statistic
        rhos[circuit] = float(rho)
    defined = {c: r for c, r in rhos.items() if r == r}

    def apart(a: dict, b: dict) -> bool:
        if target == "measured":
            return abs(a["measured"] - b["measured"]) > RESOLVED_SIGMAS * pair_sigma(a, b)
        return abs(a[target] - b[target]) > PRACTICAL_TIE

    pairs = [
        (a, b) for group in groups.values() for i, a in enumerate(group) for b in group[i + 1 :]
    ]
    resolved = [(a[name] - b[name]) * (a[target] - b[target]) > 0 for a, b in pairs if apart(a, b)]
    ordered = [(a[name] - b[name]) * (a[target] - b[target]) > 0 for a, b in pairs]
    below = sorted(c for c, r in defined.items() if r < GOAL_SPEARMAN)
    return {
        "pairs": len(rows),
        "mean_abs_error": statistics.fmean(errors),
        "max_abs_error": max(errors),
        "spearman_mean": statistics.fmean(defined.values()) if defined else float("nan"),
        "spearman_min": min(defined.values()) if defined else float("nan"),
        "spearman_circuits": len(rhos),
        "spearman_undefined": len(rhos) - len(defined),
        "spearman_below_goal": below,
        "node_pairs": len(ordered),
        "ordered_right": sum(ordered) / len(ordered) if ordered else float("nan"),
        "resolved_pairs": len(resolved),
        "resolved_concordant": sum(resolved) / len(resolved) if resolved else float("nan"),
    }


def node_bias(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per node: mean signed ``model − exact`` and mean ``|model − exact|``."""
    out = {}
    for node in dict.fromkeys(r["node"] for r in rows):
        diffs = [
            r["model"] - r["exact"] for r in rows if r["node"] == node and r["exact"] is not None
        ]
        if diffs:
            out[node] = {
                "pairs": len(diffs),
                "mean_signed": statistics.fmean(diffs),
                "mean_abs": statistics.fmean(abs(d) for d in diffs),
            }
    return out


def summarise(rows: list[dict]) -> dict[str, dict]:
    return {
        "measured": {name: compare(rows, name, "measured") for name in PREDICTORS},
        "exact": {name: compare(rows, name, target) for name, target in EXACT_PREDICTORS.items()},
        "node_bias": node_bias(rows),
    }


def timing(rows: list[dict]) -> dict[str, float | str | int]:
    emulate_s = sum(r["emulate_s"] for r in rows)
    predict_s = sum(r["predict_s"] for r in rows)
    ratios = sorted((r["emulate_s"] / r["predict_s"], r["circuit"], r["node"]) for r in rows)
    slow = [r for r in rows if r["emulate_s"] >= 0.1]
    return {
        "emulate_total_s": emulate_s,
        "predict_total_s": predict_s,
        "esp_total_s": sum(r["esp_s"] for r in rows),
        "speedup_total": emulate_s / predict_s,
        "speedup_min_pair": ratios[0][0],
        "speedup_min_pair_name": f"{ratios[0][1]} on {ratios[0][2]}",
        "speedup_median_pair": statistics.median(r for r, _, _ in ratios),
        "pairs_below_goal": sum(r < GOAL_SPEEDUP for r, _, _ in ratios),
        "pairs": len(ratios),
        "speedup_min_pair_emulate_ge_0.1s": min(
            (r["emulate_s"] / r["predict_s"] for r in slow), default=float("nan")
        ),
        "pairs_emulate_ge_0.1s": len(slow),
        "esp_speedup_total": emulate_s / sum(r["esp_s"] for r in rows),
    }


def print_table(title: str, table: dict[str, dict]) -> None:
    print(
        f"\n{title}\n  predictor     pairs  mean|err|  max|err|  spearman mean/min (circuits,"
        " undefined)  all node pairs ordered right  apart pairs ordered right"
    )
    for name, s in table.items():
        if not s:
            continue
        print(
            f"  {name:12} {s['pairs']:5}   {s['mean_abs_error']:.4f}    {s['max_abs_error']:.3f}"
            f"     {s['spearman_mean']:.3f} / {s['spearman_min']:.3f} ({s['spearman_circuits']},"
            f" {s['spearman_undefined']})            {s['ordered_right']:.3f} of"
            f" {s['node_pairs']:3}                  {s['resolved_concordant']:.3f} of"
            f" {s['resolved_pairs']}"
        )
        if s["spearman_below_goal"]:
            print(f"      below {GOAL_SPEARMAN}: {', '.join(s['spearman_below_goal'])}")


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shots", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=1, help="pair i is emulated with seed + i")
    parser.add_argument("--max-qubits", type=int, default=14)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    command = shlex.join(["python", "benchmarks/predict.py", *sys.argv[1:]])

    devices = [load_device(node) for node in DEFAULT_FLEET]
    circuits, skipped = load_circuits(DEV, args.max_qubits)
    rows: list[dict] = []
    if not args.json:
        print(f"$ {command}")
    # Halves by position among all dev files, so that the split does not depend on the filters.
    position = {path.name: i for i, path in enumerate(sorted(DEV.glob("*.qasm*")))}
    for name, circuit in circuits.items():
        ideal = ideal_distribution(circuit)
        for device in devices:
            if len(circuit.all_qubits()) > device.max_circuit_qubits:
                continue
            seed = args.seed + len(rows)
            row = measure_pair(circuit, ideal, device, args.shots, seed)
            half = position[name] % 2
            row.update(circuit=name, node=device.id, seed=seed, half=half, shots=args.shots)
            rows.append(row)
            if not args.json:
                exact = "     -" if row["exact"] is None else f"{row['exact']:.4f}"
                print(
                    f"{name:40} {device.id:16} seed={seed:3} measured={row['measured']:.4f} "
                    f"exact={exact} ceiling={row['ceiling']:.3f} "
                    + " ".join(f"{p}={row[p]:.4f}" for p in PREDICTORS)
                    + f" emulate={row['emulate_s']:.3f}s predict={row['predict_s'] * 1e3:.2f}ms"
                    f" ×{row['emulate_s'] / row['predict_s']:.0f}",
                    flush=True,
                )
    report = {
        "command": command,
        "shots": args.shots,
        "seed": args.seed,
        "pairs": len(rows),
        "skipped": skipped,
        "all": summarise(rows),
        "half_0": summarise([r for r in rows if r["half"] == 0]),
        "half_1": summarise([r for r in rows if r["half"] == 1]),
        "timing": timing(rows),
        "rows": rows,
    }
    report["goals"] = goals(report)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"\n{len(rows)} pairs, {args.shots} shots, seeds {args.seed}..{args.seed + len(rows) - 1}"
    )
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    for part in ("all", "half_0", "half_1"):
        print_table(
            f"{part}: against the measurement ({args.shots} shots)", report[part]["measured"]
        )
        print_table(
            f"{part}: against the exact emulator distribution (circuits ≤ 8 qubits; practical tie"
            f" {PRACTICAL_TIE})",
            report[part]["exact"],
        )
        bias = report[part]["node_bias"]
        print(
            "  model − exact per node (mean signed / mean abs): "
            + ", ".join(
                f"{n} {b['mean_signed']:+.4f}/{b['mean_abs']:.4f} ({b['pairs']})"
                for n, b in bias.items()
            )
        )
    t = report["timing"]
    print(
        f"\nemulation {t['emulate_total_s']:.1f} s, prediction {t['predict_total_s'] * 1e3:.1f} ms "
        f"(×{t['speedup_total']:.0f} faster; median pair ×{t['speedup_median_pair']:.0f}, slowest"
        f" pair ×{t['speedup_min_pair']:.0f}: {t['speedup_min_pair_name']}; "
        f"{t['pairs_below_goal']} of {t['pairs']} pairs below ×{GOAL_SPEEDUP:.0f}; among the"
        f" {t['pairs_emulate_ge_0.1s']} pairs whose emulation takes ≥ 0.1 s the slowest is"
        f" ×{t['speedup_min_pair_emulate_ge_0.1s']:.0f}), ESP {t['esp_total_s'] * 1e3:.1f} ms"
        f" (×{t['esp_speedup_total']:.0f})"
    )
    print(f"\nGoals ({command}):")
    for line in report["goals"]:
        print(f"  {line}")


def goals(report: dict) -> list[str]:
    """One line per goal of the issue, met or not, with its numbers."""
    measured = report["all"]["measured"]["model_shots"]
    exact = report["all"]["exact"]["model"]
    t = report["timing"]
    return [
        f"mean |predicted − measured| ≤ {GOAL_MEAN_ERROR}: "
        f"{verdict(measured['mean_abs_error'] <= GOAL_MEAN_ERROR)}"
        f" ({measured['mean_abs_error']:.4f} over {measured['pairs']} pairs, model_shots)",
        f"Spearman ≥ {GOAL_SPEARMAN} per circuit against the measurement: "
        f"{verdict(measured['spearman_min'] >= GOAL_SPEARMAN)} (mean"
        f" {measured['spearman_mean']:.3f}, min {measured['spearman_min']:.3f},"
        f" {len(measured['spearman_below_goal'])} of {measured['spearman_circuits']} circuits"
        f" below; pairs apart by > {RESOLVED_SIGMAS:.0f}σ ordered right:"
        f" {measured['resolved_concordant']:.3f} of {measured['resolved_pairs']})",
        f"Spearman ≥ {GOAL_SPEARMAN} per circuit against the exact emulator distribution: "
        f"{verdict(exact['spearman_min'] >= GOAL_SPEARMAN)} (mean {exact['spearman_mean']:.3f},"
        f" min {exact['spearman_min']:.3f}, {len(exact['spearman_below_goal'])} of"
        f" {exact['spearman_circuits']} circuits below: {', '.join(exact['spearman_below_goal'])};"
        f" pairs apart by > {PRACTICAL_TIE} ordered right: {exact['resolved_concordant']:.3f}"
        f" of {exact['resolved_pairs']})",
        f"prediction ≥ {GOAL_SPEEDUP:.0f}× faster than emulation, every pair: "
        f"{verdict(t['speedup_min_pair'] >= GOAL_SPEEDUP)} (slowest ×{t['speedup_min_pair']:.0f},"
        f" {t['pairs_below_goal']} of {t['pairs']} pairs below; overall"
        f" ×{t['speedup_total']:.0f}: {verdict(t['speedup_total'] >= GOAL_SPEEDUP)})",
    ]


if __name__ == "__main__":
    main()
