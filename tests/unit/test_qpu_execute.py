"""A QPU node's run: its predicted fidelity is the one of the calibration and noise it ran with."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cirq
import pytest

from qubus.bus.workers import JobStopped, cpu_seconds
from qubus.circuits import circuit_to_json, load_circuit
from qubus.circuits.simulate import ideal_distribution
from qubus.devices.compile import compile_for_device
from qubus.devices.cost import (
    BASE_MEMORY_MB,
    BUDGET_MARGIN,
    CACHED_AMPLITUDES,
    IDLE,
    MAX_SLOWDOWN,
    MEMORY_BYTES_PER_AMPLITUDE,
    MIN_BUDGET_S,
    STATE_BYTES_PER_AMPLITUDE,
    CostModel,
    emulation_cost,
    refuse_too_large,
    time_budget,
    trajectories_cost,
)
from qubus.devices.emulation import emulated_as_tree
from qubus.devices.fidelity import hellinger_fidelity
from qubus.devices.prediction import predict_fidelity
from qubus.devices.profiles import drift_devices, load_device
from qubus.devices.trajectories import BRANCHING_QUBITS, tree_states
from qubus.errors import QubusError, SimulationError
from qubus_services.qpu.main import emulation_pool, execute

SHOTS = 2000


@pytest.fixture(scope="module")
def ghz() -> cirq.Circuit:
    q = cirq.LineQubit.range(3)
    return cirq.Circuit(
        cirq.H(q[0]), cirq.CNOT(q[0], q[1]), cirq.CNOT(q[1], q[2]), cirq.measure(*q, key="c")
    )


def test_prediction_is_computed_on_the_calibration_the_task_ran_on(ghz: cirq.Circuit) -> None:
    ideal = ideal_distribution(ghz)
    january, june = (d for i, d in enumerate(drift_devices("ibm_perth")) if i in (0, 170))
    predictions = []
    for device in (january, june):
        counts, _, predicted = execute(device, circuit_to_json(ghz), SHOTS, 7, False, ideal)
        compiled = compile_for_device(ghz, device)
        assert predicted == predict_fidelity(compiled, device, ideal, shots=SHOTS)
        assert hellinger_fidelity(counts, ideal) == pytest.approx(predicted, abs=0.05)
        predictions.append(predicted)
    assert predictions[0] != predictions[1]


def test_without_the_ideal_distribution_nothing_is_predicted(ghz: cirq.Circuit) -> None:
    device = next(drift_devices("ibm_perth"))
    counts, modelled_s, predicted = execute(device, circuit_to_json(ghz), 100, 7, False, None)
    assert predicted is None and sum(counts.values()) == 100 and modelled_s > 1.0


def test_noiseless_run_predicts_the_fidelity_of_perfect_samples(ghz: cirq.Circuit) -> None:
    ideal = ideal_distribution(ghz)
    device = next(drift_devices("ibm_perth"))
    counts, _, predicted = execute(device, circuit_to_json(ghz), SHOTS, 7, True, ideal)
    assert set(counts) == {"000", "111"}
    # Finite sampling alone keeps the expected Hellinger fidelity just below 1.
    assert 0.999 < predicted < 1.0
    assert hellinger_fidelity(counts, ideal) == pytest.approx(predicted, abs=2e-3)


async def test_emulation_past_its_time_limit_fails_naming_the_qpu_stage() -> None:
    q = cirq.LineQubit.range(5)
    layer = [cirq.H.on_each(*q), cirq.CNOT(q[0], q[1]), cirq.CNOT(q[2], q[3])]
    deep = cirq.Circuit(layer * 200, cirq.measure(*q))  # about half a second of emulation
    device = next(iter(drift_devices("ibm_perth")))
    pool = emulation_pool(memory_mb=4096)
    pool.start()
    try:
        with pytest.raises(SimulationError) as caught:
            await pool.run(
                execute, device, circuit_to_json(deep), 4000, 1, False, None, timeout_s=0.05
            )
    finally:
        pool.close()
    assert caught.value.code == "qpu.timeout"
    assert caught.value.message == "emulation exceeded its time limit of 0.05 s"


async def test_a_watched_emulation_reports_progress_and_stops_when_asked() -> None:
    """Thirteen-qubit trajectories, a few seconds of them (2,000,000 shots: this circuit's
    trajectories share most of their gates, 100,000 took 0.4 s): the watch sees the shots
    done grow, then stops the job, whose worker is replaced (the pool runs the next job)."""
    q = cirq.LineQubit.range(13)
    wide = cirq.Circuit([cirq.H.on_each(*q), cirq.CNOT(q[0], q[12])] * 20, cirq.measure(*q))
    device = load_device("quantinuum_h1_1")
    seen: list[float] = []

    async def watch(fraction: float) -> bool:
        seen.append(fraction)
        return fraction > 0

    pool = emulation_pool(memory_mb=4096)
    pool.start()
    try:
        with pytest.raises(JobStopped):
            await pool.run(
                execute,
                device,
                circuit_to_json(wide),
                2_000_000,
                1,
                False,
                None,
                timeout_s=600,
                watch=watch,
            )
        counts, _, _ = await pool.run(
            execute, device, circuit_to_json(wide), 10, 1, True, None, timeout_s=600
        )
    finally:
        pool.close()
    assert 0 < seen[-1] < 1
    assert sum(counts.values()) == 10


def test_the_estimate_names_the_method_and_refuses_what_is_over_the_limit() -> None:
    device = next(iter(drift_devices("ibm_perth")))
    q = cirq.LineQubit.range(3)
    small = compile_for_device(cirq.Circuit(cirq.H(q[0]), cirq.measure(*q)), device)
    assert emulation_cost(small, 1000).method == "density_matrix"
    assert emulation_cost(small, 1000, noiseless=True).trajectories == 1

    q = cirq.LineQubit.range(7)
    dynamic = cirq.Circuit(
        cirq.H(q[0]),
        cirq.measure(q[0], key="a"),
        cirq.X(q[1]).with_classical_controls("a"),
        cirq.measure(*q[1:], key="b"),
    )
    cost = emulation_cost(compile_for_device(dynamic, device), 1000)
    # As the emulator simulates it, deferred: an ancilla for the mid-circuit measurement only.
    assert (cost.method, cost.width) == ("trajectories", 7 + 1)

    cost = emulation_cost(compile_for_device(wide_ghz(7), device), 100_000)
    with pytest.raises(QubusError) as caught:
        refuse_too_large(cost, max_s=cost.seconds / 2, memory_mb=100_000)
    assert caught.value.code == "qpu.too_large"
    assert caught.value.message.startswith(f"emulation too large for this node: {cost.describe()}")
    with pytest.raises(QubusError, match="over its memory of 100 MB"):
        refuse_too_large(cost, max_s=cost.seconds * 2, memory_mb=100)


def test_the_estimate_is_the_sum_of_its_terms_weighted_by_the_models_constants() -> None:
    device = load_device("quantinuum_h1_1")
    narrow = compile_for_device(wide_ghz(4), device)
    wide = compile_for_device(wide_ghz(16), device)
    for compiled in (narrow, wide):
        cost = emulation_cost(compiled, 4000)
        assert set(cost.terms) <= set(CostModel.names())
        assert cost.seconds == pytest.approx(IDLE.seconds(cost.terms), rel=1e-12)
        assert all(getattr(IDLE, name) > 0 for name in cost.terms)
    # A narrow density matrix costs its operations at least, however few its entries.
    dm = emulation_cost(narrow, 4000)
    assert dm.method == "density_matrix"
    assert dm.terms == {
        "density_per_op": dm.operations,
        "density_per_op_entry": dm.operations * 4**4,
    }
    # Another model prices the same terms with its own constants (a benchmark's refit).
    doubled = CostModel(**{name: 2 * getattr(IDLE, name) for name in CostModel.names()})
    assert emulation_cost(wide, 4000, model=doubled).seconds == pytest.approx(
        2 * emulation_cost(wide, 4000).seconds
    )


def test_gates_on_a_state_beyond_the_cache_cost_more_per_amplitude() -> None:
    def per_amplitude_op(width: int) -> float:
        cost = trajectories_cost(100, width, 500)
        fixed = IDLE.translate_per_op * 100 + 500 * (IDLE.trajectory_per_op * 100)
        return (cost.seconds - fixed - 500 * IDLE.amplitude * 2**width) / (500 * 100 * 2**width)

    assert trajectories_cost(100, 21, 500).terms["spilled_amplitude_per_op"] == 0
    assert trajectories_cost(100, 24, 500).terms["spilled_amplitude_per_op"] == (
        500 * 100 * (2**24 - CACHED_AMPLITUDES)
    )
    assert per_amplitude_op(21) == pytest.approx(IDLE.amplitude_per_op)
    assert per_amplitude_op(24) > 1.5 * per_amplitude_op(21)


def test_the_emulator_says_which_runs_share_their_trajectories_as_a_tree(dev_qasm: Path) -> None:
    # What the cost model's fit leaves out (benchmarks/emulation_cost.py): a low-noise GHZ
    # chain on the ion trap runs as a tree; the routed, noisy Shor code on the heavy-hex
    # lattice and a register small enough for the density matrix do not.
    trap, lattice = load_device("quantinuum_h1_1"), load_device("ibm_hanoi")
    assert emulated_as_tree(compile_for_device(wide_ghz(16), trap), trap)
    qec = load_circuit((dev_qasm / "qasmbench__qec9xz_n17.qasm").read_text(), "qasm2")
    assert not emulated_as_tree(compile_for_device(qec, lattice), lattice)
    assert not emulated_as_tree(compile_for_device(wide_ghz(4), trap), trap)
    unmeasured = wide_ghz(16)[:-1]  # emulate returns at once: nothing to run
    assert not emulated_as_tree(compile_for_device(unmeasured, trap), trap)


def test_the_memory_counts_the_states_a_tree_of_trajectories_may_hold() -> None:
    device = load_device("ionq_aria")  # 25 qubits, all to all
    for width in (16, BRANCHING_QUBITS, BRANCHING_QUBITS + 1):
        cost = emulation_cost(compile_for_device(wide_ghz(width), device), 4000)
        assert (cost.method, cost.width, cost.trajectories) == ("trajectories", width, 500)
        per_amplitude = MEMORY_BYTES_PER_AMPLITUDE
        if width <= BRANCHING_QUBITS:  # 500 trajectories: at most 8 states held by splits
            per_amplitude += tree_states(500) * STATE_BYTES_PER_AMPLITUDE
        assert cost.memory_mb == pytest.approx(BASE_MEMORY_MB + per_amplitude * 2**width / 2**20)
    # Without noise one state serves every shot: no tree.
    noiseless = emulation_cost(compile_for_device(wide_ghz(16), device), 4000, noiseless=True)
    assert noiseless.memory_mb == BASE_MEMORY_MB + MEMORY_BYTES_PER_AMPLITUDE * 2**16 / 2**20


def test_the_budget_is_cpu_time_of_the_worker_with_a_wall_clock_net() -> None:
    assert time_budget(1.0).cpu_s == MIN_BUDGET_S
    long = time_budget(100.0)
    assert long.cpu_s == BUDGET_MARGIN * 100.0
    assert long.wall_s == MAX_SLOWDOWN * long.cpu_s


def spin(seconds: float) -> float:
    """Busy for ``seconds`` of wall time (a worker's job)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        pass
    return seconds


async def test_a_job_is_stopped_by_its_cpu_limit_not_by_time_it_waits() -> None:
    pool = emulation_pool(memory_mb=4096)
    pool.start()
    try:
        # Waiting uses no CPU: 1.5 s of wall time fits in 0.5 s of CPU.
        assert await pool.run(time.sleep, 1.5, timeout_s=30, cpu_limit_s=0.5) is None
        with pytest.raises(SimulationError) as caught:
            await pool.run(spin, 20.0, timeout_s=30, cpu_limit_s=0.5)
    finally:
        pool.close()
    assert caught.value.code == "qpu.timeout"
    assert caught.value.message == "emulation exceeded its time limit of 0.5 s of CPU"


def test_cpu_seconds_of_a_process_is_its_user_and_system_time() -> None:
    before, own = cpu_seconds(os.getpid()), time.process_time()
    while time.process_time() - own < 0.3:
        pass
    assert cpu_seconds(os.getpid()) - before == pytest.approx(0.3, abs=0.05)


def wide_ghz(n: int) -> cirq.Circuit:
    q = cirq.LineQubit.range(n)
    return cirq.Circuit(
        cirq.H(q[0]), [cirq.CNOT(q[i], q[i + 1]) for i in range(n - 1)], cirq.measure(*q)
    )
