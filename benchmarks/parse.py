"""Parse time: ``qubus.circuits.parse_qasm`` against cirq's and qiskit's OpenQASM 2 importers.

Usage:
    python benchmarks/parse.py [--repeats 7] [--json]

The files are the dev files that cirq's importer accepts (``ok`` in the ``cirq_1.7.0_parse``
column of ``MANIFEST.tsv``; all OpenQASM 2.0). Each is read by three parsers, each producing
its own circuit object:

* qubus: ``qubus.circuits.parse_qasm`` (a ``cirq.Circuit``);
* cirq: ``cirq.contrib.qasm_import.circuit_from_qasm`` (a ``cirq.Circuit``);
* qiskit: ``qiskit.qasm2.loads`` with the legacy qelib1 instructions (its Rust parser, a
  ``QuantumCircuit``), as the reference tests read the files.

Every parser reads every file once before timing (cirq builds its grammar tables, qubus its
standard library). Then, ``--repeats`` times, the three parsers read each file in turn; a file's
time is the best of its repeats, a parser's total the sum over the files. Printed: the command,
each parser's total in milliseconds, the ratios cirq / qubus and qubus / qiskit, and the issue's
goals (``GOAL_VS_CIRQ``, ``GOAL_VS_QISKIT``) met or not. Timings share two cores with whatever
else runs: compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cirq.contrib.qasm_import import circuit_from_qasm
from qiskit import qasm2

from qubus.circuits import parse_qasm

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "qasm" / "dev"
GOAL_VS_CIRQ = 10.0
"""cirq time / qubus time the issue asks for at least."""
GOAL_VS_QISKIT = 3.0
"""qubus time / qiskit time the issue allows at most."""


def _qiskit(text: str) -> object:
    return qasm2.loads(text, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)


PARSERS: dict[str, Callable[[str], object]] = {
    "qubus": parse_qasm,
    "cirq": circuit_from_qasm,
    "qiskit": _qiskit,
}


def cirq_accepted_files() -> list[Path]:
    """The dev files whose manifest row says cirq's importer accepts them, sorted by name."""
    with (DEV / "MANIFEST.tsv").open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return sorted(DEV / row["file"] for row in rows if row["cirq_1.7.0_parse"].startswith("ok"))


def measure(texts: dict[str, str], repeats: int) -> dict[str, dict[str, float]]:
    """Best-of-``repeats`` seconds per parser and file, the parsers interleaved per file."""
    best = {name: dict.fromkeys(texts, float("inf")) for name in PARSERS}
    for text in texts.values():
        for parse in PARSERS.values():
            parse(text)
    for _ in range(repeats):
        for file, text in texts.items():
            for name, parse in PARSERS.items():
                start = time.perf_counter()
                parse(text)
                best[name][file] = min(best[name][file], time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed reads of each file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    files = cirq_accepted_files()
    texts = {path.name: path.read_text() for path in files}
    best = measure(texts, args.repeats)
    totals = {name: 1000 * sum(times.values()) for name, times in best.items()}
    vs_cirq = totals["cirq"] / totals["qubus"]
    vs_qiskit = totals["qubus"] / totals["qiskit"]
    report = {
        "command": shlex.join(["python", "benchmarks/parse.py", *(argv or sys.argv[1:])]),
        "files": len(files),
        "repeats": args.repeats,
        "total_ms": {name: round(total, 2) for name, total in totals.items()},
        "cirq_over_qubus": round(vs_cirq, 2),
        "qubus_over_qiskit": round(vs_qiskit, 2),
        "goal_vs_cirq_met": vs_cirq >= GOAL_VS_CIRQ,
        "goal_vs_qiskit_met": vs_qiskit <= GOAL_VS_QISKIT,
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"$ {report['command']}")
    print(f"{len(files)} dev files cirq accepts, best of {args.repeats} reads each, summed:")
    for name, total in totals.items():
        print(f"  {name:7s} {total:9.2f} ms")
    met = {True: "met", False: "NOT met"}
    print(
        f"cirq / qubus   = {vs_cirq:6.2f}x  (goal >= {GOAL_VS_CIRQ:g}x: "
        f"{met[report['goal_vs_cirq_met']]})"
    )
    print(
        f"qubus / qiskit = {vs_qiskit:6.2f}x  (goal <= {GOAL_VS_QISKIT:g}x: "
        f"{met[report['goal_vs_qiskit_met']]})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
