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
