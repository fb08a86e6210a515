"""qubus's noisy emulation against an independent reference: qiskit-aer on IBM fake backends.

qiskit-aer's device noise model (``NoiseModel.from_backend_properties``, see
``benchmarks/emulate_vs_aer.py``) of qiskit-ibm-runtime's ``FakeNairobiV2``/``FakeManilaV2``
(offline calibration snapshots, the same files ours are copied from), with the gate durations
of qubus's profile, runs the circuit qubus compiled, translated gate by gate with idle time as
delays. On circuits narrow enough for a density matrix both exact distributions are compared
directly; otherwise both sample the same number of
shots; a chi-square test of homogeneity on the two count vectors (outcomes with fewer than 5
expected counts pooled) must not reject at p < 0.001: the distributions agree within shot
noise. The emulator before this one (depolarizing sized to the whole gate error on top of the
relaxation during the gate) fails it on fredkin, simon and basis_test (p ≤ 4e-5).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
from pathlib import Path

import cirq
import numpy as np
import pytest
from scipy.stats import chi2_contingency

from qubus.circuits import parse_qasm
from qubus.circuits.simulate import ideal_distribution
from qubus.devices.compile import compile_for_device
from qubus.devices.emulation import emulate
from qubus.devices.profiles import data_dir, load_device

pytest.importorskip("qiskit_aer")
pytest.importorskip("qiskit_ibm_runtime")

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT.parent / "shared" / "data" / "qasm" / "dev"
SHOTS = 4000
P_MIN = 1e-3


def _bench(name: str = "emulate_vs_aer"):  # noqa: ANN202 (the benchmark module)
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _bench()
exact = _bench("aer_exact")


def homogeneity_p(a: dict[str, int], b: dict[str, int]) -> float:
    """p-value of a chi-square test that two count vectors come from one distribution."""
    outcomes = sorted(set(a) | set(b))
    table = np.array([[a.get(k, 0) for k in outcomes], [b.get(k, 0) for k in outcomes]], float)
    expected = table.sum(axis=0) / 2
    rare = expected < 5
    if rare.any():
        table = np.column_stack([table[:, ~rare], table[:, rare].sum(axis=1)])
    if table.shape[1] < 2:
        return 1.0
    return float(chi2_contingency(table).pvalue)


@pytest.mark.parametrize("node", ["ibm_nairobi", "ibm_manila", "ibm_hanoi"])
def test_fake_backend_calibration_is_the_one_we_ship(node: str) -> None:
    backend = bench.fake_backend(node)
    name = node.removeprefix("ibm_")
    theirs = Path(inspect.getfile(type(backend))).parent / f"props_{name}.json"
    ours = data_dir() / "ibm" / f"props_{name}.json"
    assert json.loads(theirs.read_text()) == json.loads(ours.read_text())


@pytest.mark.parametrize(
    ("node", "circuit"),
    [
        ("ibm_nairobi", "qasmbench__cat_state_n4.qasm"),
        ("ibm_nairobi", "qasmbench__fredkin_n3.qasm"),
        ("ibm_nairobi", "qasmbench__simon_n6.qasm"),
        ("ibm_manila", "qasmbench__basis_test_n4.qasm"),
        ("ibm_manila", "qasmbench__qaoa_n3.qasm"),
    ],
)
def test_emulation_agrees_with_aer_within_shot_noise(node: str, circuit: str) -> None:
    device = load_device(node)
    compiled = compile_for_device(parse_qasm((DEV / circuit).read_text()), device)
    backend = bench.fake_backend(node)
    ours = emulate(compiled, device, SHOTS, seed=11)
    circuit = bench.qiskit_circuit(compiled, backend, device)
    theirs = bench.aer_counts(circuit, bench.noise_model(backend, device), SHOTS, seed=11)
    assert homogeneity_p(ours, theirs) > P_MIN


def _ghz_chain(n: int) -> cirq.Circuit:
    q = cirq.LineQubit.range(n)
    return cirq.Circuit(
        cirq.H(q[0]), [cirq.CNOT(q[i], q[i + 1]) for i in range(n - 1)], cirq.measure(*q, key="m")
    )


def test_aers_matrix_product_state_runs_the_same_shots_as_its_state_vector() -> None:
    # What makes --aer-method matrix_product_state a reference: the same noisy trajectories
    # (one per shot, Kraus relaxation) from the same random stream, only cheaper per shot.
    device = load_device(bench.WIDE_NODE)
    backend = bench.fake_backend(bench.WIDE_NODE)
    circuit = bench.qiskit_circuit(compile_for_device(_ghz_chain(8), device), backend, device)
    model = bench.noise_model(backend, device)
    methods = ("statevector", "matrix_product_state")
    state_vector, mps = (bench._aer_timed(circuit, model, 300, 5, m)[0] for m in methods)
    assert len(state_vector) > 10  # noisy: many outcomes, so equal counts are no coincidence
    assert state_vector == mps


def test_wide_trajectories_agree_with_aer_within_shot_noise() -> None:
    # A 10-qubit GHZ chain routed on the 27-qubit ibm_hanoi: qubus's qsim trajectories (one
    # per shot at this width) against aer's matrix-product-state trajectories.
    device = load_device(bench.WIDE_NODE)
    compiled = compile_for_device(_ghz_chain(10), device)
    assert len(compiled.physical_qubits) == 10
    backend = bench.fake_backend(bench.WIDE_NODE)
    ours = emulate(compiled, device, 2000, seed=11)
    circuit = bench.qiskit_circuit(compiled, backend, device)
    theirs = bench._aer_timed(
        circuit, bench.noise_model(backend, device), 2000, 11, "matrix_product_state"
    )[0]
    assert homogeneity_p(ours, theirs) > P_MIN


def test_exact_distribution_is_aers_density_matrix_with_the_profiles_durations() -> None:
    # Bernstein-Vazirani on 6 qubits of ibm_hanoi: 11 cx, 5 of them the way the calibration
    # reports 32-64 ns shorter than the edge's duration in the profile (the longer way's).
    device = load_device(bench.WIDE_NODE)
    backend = bench.fake_backend(bench.WIDE_NODE)
    logical = parse_qasm(exact.bernstein_vazirani(6))
    compiled = compile_for_device(logical, device)
    ideal = ideal_distribution(logical)
    ours = exact.qubus_distribution(compiled, device)
    same = bench.aer_distribution(
        bench.qiskit_circuit(compiled, backend, device), bench.noise_model(backend, device)
    )
    assert np.abs(ours - same).max() < 1e-9
    # With the backend's durations aer sizes a shorter-way cx's depolarizing for less
    # relaxation and idles the rest of the moment: more noise than the gate's reported error,
    # 0.0036 lower fidelity here, where qubus's profile has one duration per edge.
    shorter = bench.aer_distribution(
        bench.qiskit_circuit(compiled, backend), bench.noise_model(backend)
    )
    assert exact.hellinger(ours, ideal) - exact.hellinger(shorter, ideal) > 0.003
