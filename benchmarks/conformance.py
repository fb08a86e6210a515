"""Conformance: every OpenQASM file of a folder through ``qubus.circuits.parse_qasm`` and qiskit.

Usage:
    python benchmarks/conformance.py FOLDER [FOLDER ...] [--json]

Every ``*.qasm`` file under each folder (recursively) is read by our parser and by qiskit:
``qiskit.qasm2.loads`` for a file that declares ``OPENQASM 2...`` (accepted if qiskit accepts it
with its original ``qelib1.inc`` or with its legacy extended gate set, which our ``qelib1.inc``
follows), ``qiskit.qasm3.loads`` (the ``qiskit-qasm3-import`` package) for any other. Printed per
folder: the files both accept, both reject, and the disagreements, grouped by reason (our error
code when only qiskit accepts, qiskit's exception type when only we do), each with its files and
both messages. A disagreement is not necessarily our bug: OpenQASM 3 constructs that qubus
rejects on purpose (loops, classical variables; ``qasm.unsupported``) or that qiskit's importer
lacks show up here too.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections import defaultdict
from pathlib import Path

from qiskit import qasm2, qasm3

from qubus.circuits import parse_qasm
from qubus.errors import QasmError

_OPENQASM_2 = re.compile(r"^\s*OPENQASM\s+2", re.MULTILINE)


def ours(text: str) -> str | None:
    """``None`` if our parser accepts the program, else ``"code: message"``."""
    try:
        parse_qasm(text)
    except QasmError as error:
        return f"{error.code}: {error.message} (line {error.line})"
    return None


def qiskits(text: str) -> str | None:
    """``None`` if qiskit accepts the program, else ``"ExceptionType: message"``."""
    if _OPENQASM_2.search(text):
        loaders = [
            lambda: qasm2.loads(text),
            lambda: qasm2.loads(text, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS),
        ]
    else:
        loaders = [lambda: qasm3.loads(text)]
    failure = None
    for load in loaders:
        try:
            load()
        except Exception as error:  # noqa: BLE001 (any failure of qiskit's is a rejection)
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            failure = failure or f"{type(error).__name__}: {first_line}"
            continue
        return None
    return failure


def compare(folder: Path) -> dict:
    """Both parsers on every ``.qasm`` file under ``folder``: counts and disagreements."""
    counts = {"files": 0, "both_accept": 0, "both_reject": 0, "disagree": 0}
    reasons: dict[str, list[dict[str, str]]] = defaultdict(list)
    for path in sorted(folder.rglob("*.qasm")):
        text = path.read_text(errors="replace")
        our_error, qiskit_error = ours(text), qiskits(text)
        counts["files"] += 1
        if our_error is None and qiskit_error is None:
            counts["both_accept"] += 1
        elif our_error is not None and qiskit_error is not None:
            counts["both_reject"] += 1
        else:
            counts["disagree"] += 1
            if our_error is not None:
                reason = f"only qiskit accepts ({our_error.split(':')[0]})"
            else:
                reason = f"only qubus accepts (qiskit: {qiskit_error.split(':')[0]})"
            reasons[reason].append(
                {"file": str(path.relative_to(folder)), "qubus": our_error, "qiskit": qiskit_error}
            )
    return {"folder": str(folder), **counts, "disagreements": dict(reasons)}


def main(argv: list[str] | None = None) -> int:
    """Compare every folder given and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders of .qasm files")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "benchmarks/conformance.py", *(argv or sys.argv[1:])])
    reports = [compare(folder) for folder in args.folders]
    if args.json:
        print(json.dumps({"command": command, "folders": reports}))
        return 0
    print(f"$ {command}")
    for report in reports:
        print(
            f"{report['folder']}: {report['files']} files, both accept {report['both_accept']}, "
            f"both reject {report['both_reject']}, disagree {report['disagree']}"
        )
        for reason, cases in sorted(report["disagreements"].items()):
            print(f"  {reason}: {len(cases)}")
            for case in cases:
                print(f"    {case['file']}")
                print(f"      qubus:  {case['qubus'] or 'accepted'}")
                print(f"      qiskit: {case['qiskit'] or 'accepted'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
