"""Predicted against emulated Hellinger fidelity over the dev circuits × the default fleet.

Usage:
    python benchmarks/predict.py [--shots 4000] [--seed 1] [--max-qubits 14] [--json]

For every dev circuit that fits a node, the circuit is compiled for the node and emulated
(``qubus.noise.emulate``, ``--shots`` shots, seed ``--seed`` + the pair's index, printed);
measured = Hellinger fidelity of the counts against the ideal distribution. It is compared
with four predictors:

* ``esp``: the plain ESP (product of fidelities);
* ``esp_mix``: the ESP pushed through a global depolarizing mix with the ideal distribution
  (``qubus.fidelity.fidelity_with_ideal``), the previous predictor;
* ``model``: ``predict_fidelity(compiled, device, ideal)``, the modelled output distribution's
  Hellinger fidelity with infinitely many shots;
* ``model_shots``: the same with ``shots=``: the expected Hellinger fidelity of that many
  samples, which is what the emulation measures. Finite shots bias the measured value down
  (a perfect run of a broad distribution has H < 1): the ``ceiling`` column (noiseless
  emulation, same shots and seed) shows by how much; ``model_shots`` predicts that bias
  instead of correcting the measurement, so it is compared with the raw measurement.

Figures: mean |predicted − measured|; Spearman rank correlation across nodes per circuit (only
circuits that fit three or more nodes; nodes whose measured values tie within shot noise make
it noisy, so also: the fraction of node pairs of a circuit, among those whose measured values
differ by more than ``RESOLVED_SIGMAS`` binomial standard errors, that the predictor orders
the same way); prediction time against emulation time. Circuits are split by sorted name into
two halves (even and odd positions), reported apart: no parameter of the model was fitted to
either. Skipped: circuits that do not parse, have no measurements, use mid-circuit
measurement or classical control (they fall back to cirq's simulator, 30-100 s each), or
have more than ``--max-qubits`` qubits.

Timings share two cores with whatever else runs: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cirq
from scipy.stats import spearmanr

from qubus.circuits import parse_qasm
from qubus.compile import CompiledCircuit, compile_for_device
from qubus.devices import DEFAULT_FLEET, Device, load_device
from qubus.errors import QubusError
from qubus.fidelity import fidelity_with_ideal, hellinger_fidelity
from qubus.noise import emulate, esp, predict_fidelity
from qubus.simulate import ideal_distribution

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "qasm" / "dev"
PREDICTORS = ("esp", "esp_mix", "model", "model_shots")
TIMING_REPEATS = 5
RESOLVED_SIGMAS = 3.0
"""Two nodes' measured fidelities count as ordered when they differ by this many standard
errors; closer pairs are ties within shot noise."""


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


def timed(call: Callable[[], float], repeats: int) -> tuple[float, float]:
    """The call's value and its mean wall time over ``repeats`` calls."""
    started = time.perf_counter()
    for _ in range(repeats):
        value = call()
    return value, (time.perf_counter() - started) / repeats


def measure_pair(
    circuit: cirq.Circuit, ideal: dict[str, float], device: Device, shots: int, seed: int
) -> dict[str, float]:
    """Every predictor, the measurement, the noiseless ceiling and the times for one pair."""
    compiled: CompiledCircuit = compile_for_device(circuit, device)
    width = len(next(iter(ideal)))
    started = time.perf_counter()
    counts = emulate(compiled, device, shots, seed=seed)
    emulate_s = time.perf_counter() - started
    clean = emulate(compiled, device, shots, seed=seed, noiseless=True)
    row = {
        "measured": hellinger_fidelity(counts, ideal),
        "ceiling": hellinger_fidelity(clean, ideal),
        "emulate_s": emulate_s,
    }
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


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per predictor: mean absolute error and per-circuit Spearman across nodes."""
    out: dict[str, dict[str, float]] = {}
    by_circuit: dict[str, list[dict]] = {}
    for row in rows:
        by_circuit.setdefault(row["circuit"], []).append(row)
    for name in PREDICTORS:
        errors = [abs(r[name] - r["measured"]) for r in rows]
        rhos = []
        for group in by_circuit.values():
            if len(group) >= 3:
                rho = spearmanr([r[name] for r in group], [r["measured"] for r in group]).statistic
                rhos.append(float(rho))
        defined = [r for r in rhos if r == r]
        resolved = [
            (a[name] - b[name]) * (a["measured"] - b["measured"]) > 0
            for group in by_circuit.values()
            for i, a in enumerate(group)
            for b in group[i + 1 :]
            if abs(a["measured"] - b["measured"]) > RESOLVED_SIGMAS * pair_sigma(a, b)
        ]
        out[name] = {
            "mean_abs_error": statistics.fmean(errors),
            "max_abs_error": max(errors),
            "spearman_mean": statistics.fmean(defined) if defined else float("nan"),
            "spearman_min": min(defined) if defined else float("nan"),
            "spearman_circuits": len(rhos),
            "spearman_undefined": len(rhos) - len(defined),
            "resolved_pairs": len(resolved),
            "resolved_concordant": sum(resolved) / len(resolved) if resolved else float("nan"),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shots", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=1, help="pair i is emulated with seed + i")
    parser.add_argument("--max-qubits", type=int, default=14)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()

    devices = [load_device(node) for node in DEFAULT_FLEET]
    circuits, skipped = load_circuits(DEV, args.max_qubits)
    rows: list[dict] = []
    for position, (name, circuit) in enumerate(circuits.items()):
        ideal = ideal_distribution(circuit)
        for device in devices:
            if len(circuit.all_qubits()) > device.max_circuit_qubits:
                continue
            seed = args.seed + len(rows)
            row = measure_pair(circuit, ideal, device, args.shots, seed)
            row.update(circuit=name, node=device.id, seed=seed, half=position % 2, shots=args.shots)
            rows.append(row)
            if not args.json:
                print(
                    f"{name:40} {device.id:16} seed={seed:3} measured={row['measured']:.3f} "
                    f"ceiling={row['ceiling']:.3f} "
                    + " ".join(f"{p}={row[p]:.3f}" for p in PREDICTORS)
                    + f" emulate={row['emulate_s']:.2f}s predict={row['predict_s'] * 1e3:.2f}ms",
                    flush=True,
                )
    emulate_s = sum(r["emulate_s"] for r in rows)
    report = {
        "shots": args.shots,
        "seed": args.seed,
        "pairs": len(rows),
        "skipped": skipped,
        "all": summarise(rows),
        "half_0": summarise([r for r in rows if r["half"] == 0]),
        "half_1": summarise([r for r in rows if r["half"] == 1]),
        "timing": {
            "emulate_total_s": emulate_s,
            "predict_total_s": sum(r["predict_s"] for r in rows),
            "esp_total_s": sum(r["esp_s"] for r in rows),
            "speedup_total": emulate_s / sum(r["predict_s"] for r in rows),
            "speedup_min_pair": min(r["emulate_s"] / r["predict_s"] for r in rows),
            "esp_speedup_total": emulate_s / sum(r["esp_s"] for r in rows),
        },
        "rows": rows,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"\n{len(rows)} pairs, {args.shots} shots, seeds {args.seed}..{args.seed + len(rows) - 1}"
    )
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    for part in ("all", "half_0", "half_1"):
        print(
            f"\n{part}: predictor   mean|err|  max|err|  spearman mean/min (n, undefined)"
            "  resolved pairs ordered right"
        )
        for name, s in report[part].items():
            print(
                f"  {name:17} {s['mean_abs_error']:.4f}    {s['max_abs_error']:.3f}     "
                f"{s['spearman_mean']:.3f} / {s['spearman_min']:.3f} "
                f"({s['spearman_circuits']}, {s['spearman_undefined']})"
                f"      {s['resolved_concordant']:.3f} of {s['resolved_pairs']}"
            )
    t = report["timing"]
    print(
        f"\nemulation {t['emulate_total_s']:.1f} s, prediction {t['predict_total_s'] * 1e3:.1f} ms "
        f"(×{t['speedup_total']:.0f} faster; slowest pair ×{t['speedup_min_pair']:.0f}), "
        f"ESP {t['esp_total_s'] * 1e3:.1f} ms (×{t['esp_speedup_total']:.0f})"
    )


if __name__ == "__main__":
    main()
