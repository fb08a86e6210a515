"""Fixtures shared by unit and system tests."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
DEV_QASM = SHARED_DATA / "qasm" / "dev"


@pytest.fixture(scope="session")
def dev_qasm() -> Path:
    """The 44 real circuits of ../shared/data/qasm/dev."""
    if not DEV_QASM.is_dir():
        pytest.fail(f"{DEV_QASM} is missing: tests expect ../shared beside the repository")
    return DEV_QASM


@pytest.fixture(scope="session")
def long_qasm(dev_qasm: Path) -> str:
    """A legal circuit long to parse and check, cheap to simulate: the Ising evolution of
    ising_n10 (490 operations on 10 qubits) seven times over, 3,400 operations."""
    lines = (dev_qasm / "qasmbench__ising_n10.qasm").read_text().splitlines()
    head = [line for line in lines if line.startswith(("OPENQASM", "include", "qreg", "creg"))]
    tail = [line for line in lines if line.startswith("measure")]
    gates = [line for line in lines if line not in head and line not in tail]
    return "\n".join(head + gates * 7 + tail)


@pytest.fixture(scope="session")
def dev_circuits(dev_qasm: Path) -> list:
    """The dev circuits our parser reads (every one but vqe_uccsd_n4, whose register is not
    declared), as ``cirq.Circuit`` s."""
    from qubus.circuits.qasm import parse_qasm
    from qubus.errors import QasmError

    circuits = []
    for path in sorted(dev_qasm.glob("*.qasm*")):
        try:
            circuits.append(parse_qasm(path.read_text()))
        except QasmError:
            continue
    return circuits
