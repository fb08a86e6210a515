"""The sandbox's evaluation: limits, numerical checks and ΔRepro against cirq's simulator."""

from __future__ import annotations

import math
import resource

import cirq
import pytest

from qubus.bus.workers import WorkerPool
from qubus.circuits import circuit_to_json
from qubus.circuits.simulate import ideal_distribution
from qubus.devices.sandbox import (
    REPRO_MAX_QUBITS,
    SandboxLimits,
    check_numerics,
    cirq_distribution,
    evaluate,
    reproduce,
)
from qubus.errors import SimulationError

Q = cirq.LineQubit.range(REPRO_MAX_QUBITS + 1)
LIMITS = SandboxLimits(max_qubits=12, max_depth=50, max_outcomes=4096)


def bell() -> cirq.Circuit:
    return cirq.Circuit(cirq.H(Q[0]), cirq.CNOT(Q[0], Q[1]), cirq.measure(Q[0], Q[1], key="c"))


def slow() -> cirq.Circuit:
    """Resets after measurements and classical control: sampled shot by shot, by cirq."""
    ops = []
    for _ in range(10):
        ops += [cirq.H(Q[0]), cirq.measure(Q[0], key="m"), cirq.reset(Q[0])]
    return cirq.Circuit(*ops, cirq.X(Q[0]).with_classical_controls("m"), cirq.measure(Q[0]))


def run(circuit: cirq.Circuit, limits: SandboxLimits = LIMITS):
    return evaluate("u.t-1", circuit_to_json(circuit), 1000, limits)


def mapped_mb() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize() >> 20


def test_bell_circuit_reproduces_exactly_on_cirq() -> None:
    result = run(bell())
    assert result.ideal == pytest.approx({"00": 0.5, "11": 0.5})
    assert result.repro == pytest.approx(1.0, abs=1e-9)
    assert result.repro_simulator == "cirq"
    assert result.norm_error < 1e-6
    assert sum(result.ideal_counts.values()) == 1000


def test_second_simulator_follows_the_bit_string_convention() -> None:
    circuit = cirq.Circuit(
        cirq.X(Q[1]),
        cirq.H(Q[3]),
        cirq.measure(Q[1], Q[0], Q[2], key="c_10", invert_mask=(False, False, True)),
        cirq.measure(Q[3], key="c_2"),
    )
    second, norm_error = cirq_distribution(circuit)
    assert second == pytest.approx(ideal_distribution(circuit))
    assert set(second) == {"0101", "1101"}
    assert norm_error < 1e-12


def test_repro_falls_when_the_distributions_disagree() -> None:
    repro = reproduce(bell(), {"00": 1.0})
    assert repro.fidelity == pytest.approx(0.5)


def test_classical_control_is_deferred_and_reproduces_exactly() -> None:
    circuit = cirq.Circuit(
        cirq.H(Q[0]),
        cirq.measure(Q[0], key="m"),
        cirq.X(Q[1]).with_classical_controls("m"),
        cirq.measure(Q[1], key="n"),
    )
    result = run(circuit)
    assert result.repro_simulator == "cirq"
    assert result.repro == pytest.approx(1.0, abs=1e-9)


def test_reset_of_a_fresh_qubit_does_not_prevent_reproduction() -> None:
    circuit = cirq.Circuit(cirq.reset(Q[0]), cirq.H(Q[0]), cirq.measure(Q[0], key="m"))
    result = run(circuit)
    assert result.repro_simulator == "cirq"
    assert result.repro > 0.999  # qsim's side is sampled: it does not drop the reset


def test_reset_after_use_is_reproduced_by_the_second_simulator() -> None:
    # The reset becomes a SWAP with a fresh ancilla and the first measurement is deferred, so
    # both simulators see an exact form.
    circuit = cirq.Circuit(
        cirq.H(Q[0]), cirq.measure(Q[0], key="a"), cirq.reset(Q[0]), cirq.measure(Q[0], key="b")
    )
    result = run(circuit)
    assert result.repro_simulator == "cirq"
    assert result.repro == pytest.approx(1.0, abs=1e-9)


def test_circuit_wider_than_the_repro_limit_skips_the_second_simulator() -> None:
    circuit = cirq.Circuit(cirq.X.on_each(*Q), cirq.measure(Q[0], key="c"))
    repro = reproduce(circuit, {"1": 1.0})
    assert repro.fidelity is None
    assert repro.simulator == f"skipped: {REPRO_MAX_QUBITS + 1} qubits > {REPRO_MAX_QUBITS}"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -0.25])
def test_invalid_probability_fails_the_numerical_check(bad: float) -> None:
    with pytest.raises(SimulationError) as caught:
        check_numerics({"0": 0.5, "1": bad})
    assert caught.value.code == "sandbox.numerical"


def test_norm_error_is_the_distance_of_the_sum_from_one() -> None:
    assert check_numerics({"0": 0.5, "1": 0.4}) == pytest.approx(0.1)


def test_too_many_qubits_fail_before_simulating() -> None:
    circuit = cirq.Circuit(cirq.H.on_each(*Q[:13]), cirq.measure(*Q[:13], key="c"))
    with pytest.raises(SimulationError) as caught:
        run(circuit)
    assert caught.value.code == "sandbox.too_large"
    assert "13 qubits exceed the sandbox's limit of 12" in caught.value.message


def test_too_deep_fails_before_simulating() -> None:
    circuit = cirq.Circuit([cirq.H(Q[0])] * 51, cirq.measure(Q[0], key="c"))
    with pytest.raises(SimulationError) as caught:
        run(circuit)
    assert caught.value.code == "sandbox.too_deep"
    assert "depth 52 exceeds the sandbox's limit of 50" in caught.value.message


async def test_slow_circuit_times_out_and_the_next_one_runs_in_a_fresh_worker() -> None:
    pool = WorkerPool(memory_mb=mapped_mb() + 2048, stage="sandbox", job="simulation")
    pool.start()
    try:
        with pytest.raises(SimulationError) as caught:
            await pool.run(evaluate, "u.t-1", circuit_to_json(slow()), 100, LIMITS, timeout_s=0.2)
        assert caught.value.code == "sandbox.timeout"
        result = await pool.run(
            evaluate, "u.t-2", circuit_to_json(bell()), 100, LIMITS, timeout_s=30
        )
        assert result.repro_simulator == "cirq"
    finally:
        pool.close()


async def test_state_beyond_the_memory_limit_fails_before_allocating() -> None:
    wide = SandboxLimits(max_qubits=30, max_depth=50, max_outcomes=16)
    circuit = cirq.Circuit(cirq.H.on_each(*cirq.LineQubit.range(25)), cirq.measure(Q[0]))
    pool = WorkerPool(memory_mb=mapped_mb() + 1024, stage="sandbox", job="simulation")
    pool.start()
    try:
        with pytest.raises(SimulationError) as caught:
            await pool.run(evaluate, "u.t-1", circuit_to_json(circuit), 100, wide, timeout_s=30)
        assert caught.value.code == "sandbox.memory"
        assert "simulating 25 qubits needs about 1280 MB" in caught.value.message
        result = await pool.run(evaluate, "u.t-2", circuit_to_json(bell()), 100, wide, timeout_s=30)
        assert result.ideal == pytest.approx({"00": 0.5, "11": 0.5})
    finally:
        pool.close()
