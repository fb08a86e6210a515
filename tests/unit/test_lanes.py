"""Which circuits go to a stage's heavy lane, and which worker pool a job of each weight gets."""

from __future__ import annotations

import pytest

from qubus.bus.workers import HEAVY_WORK, Lanes, is_heavy
from qubus.circuits import circuit_features, load_circuit


@pytest.mark.parametrize(
    ("name", "heavy"),
    [
        ("qasmbench__qft_n18.qasm", True),
        ("qasmbench__qram_n20.qasm", True),
        ("qasmbench__bell_n4.qasm", False),
        ("qasmbench__ising_n10.qasm", False),
        ("qasmbench__qec9xz_n17.qasm", False),
    ],
)
def test_wide_and_long_circuits_are_heavy(dev_qasm, name, heavy):
    features = circuit_features(load_circuit((dev_qasm / name).read_text(), "qasm2"))
    assert is_heavy(features) is heavy


def test_a_sweep_counts_the_work_of_every_point(dev_qasm):
    features = circuit_features(
        load_circuit((dev_qasm / "qasmbench__qec9xz_n17.qasm").read_text(), "qasm2")
    )
    work = sum(features.gate_counts.values()) * 2**features.qubits
    assert not is_heavy(features)
    assert is_heavy(features, points=HEAVY_WORK // work + 1)


def test_a_circuit_operation_is_heavy_whatever_its_size(dev_qasm):
    features = circuit_features(
        load_circuit((dev_qasm / "qasmbench__bell_n4.qasm").read_text(), "qasm2")
    )
    counts = {**features.gate_counts, "op": 1}
    assert is_heavy(features.model_copy(update={"gate_counts": counts}))


def test_heavy_jobs_get_their_own_pool_only_with_a_heavy_lane():
    laned = Lanes(heavy_lane=True, memory_mb=512, stage="sandbox", job="simulation")
    single = Lanes(heavy_lane=False, memory_mb=512, stage="sandbox", job="simulation")
    assert laned.pool(True) is not laned.pool(False)
    assert single.pool(True) is single.pool(False)
